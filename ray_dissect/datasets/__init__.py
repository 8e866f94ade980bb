"""Concept datasets (images with per-pixel or whole-image concept labels) behind one Protocol.

Holds: `base` (`ConceptDataset` and `ImageDataset` Protocols, `Sample`, `Vocabulary`,
`BadSampleError`, shared image and JSON readers), one module per format (`broden`, `coco`,
`coco_panoptic`), `pascal_part` (PASCAL-Part `.mat` decoding and its part grouping; its reader
joins the registry with the studies), `registry` (`open_dataset`: format name -> reader) and
`synthetic/` (the Broden-format generator). A new format is one module plus one registry entry.
May import: `spec`, `storage`, `errors`.
"""
