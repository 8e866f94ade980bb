"""Concept masks as label sets: the label-set concept index built per image shard and merged
(`index`), and unit masks (upsampled, thresholded activation maps as per-label-set pixel
counts, `masks`, evaluated tile by tile without upsampling whole maps, `tiles`, counted per
label set, `counting`).
May import: `datasets`, `storage`, `errors`.
"""
