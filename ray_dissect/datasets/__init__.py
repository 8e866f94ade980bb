"""Concept datasets (images with per-pixel or whole-image concept labels) behind one Protocol.

Holds: `base` (`ConceptDataset` and `ImageDataset` Protocols, `Sample`, `Vocabulary`,
`BadSampleError`, shared image and JSON readers), one module per format (`broden`, `coco`
with `coco_panoptic`, `images`: a folder of images without concepts, `pascal_part_reader`),
`sample_table` (`SampleTable`: a reader's samples as columnar arrays, built row by row, for
indexes of 100k+ images), `pascal_part` (PASCAL-Part `.mat` decoding and its part grouping,
used by its reader and the studies), `registry` (`open_dataset`: format name -> reader) and
`synthetic/` (the Broden-format generator). A new format is one reader module here plus its
entry (spec model, reader) in `spec.dataset.FORMATS`.
May import: `spec`, `storage`, `errors`.
"""
