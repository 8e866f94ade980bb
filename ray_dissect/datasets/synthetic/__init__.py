"""The procedural Broden-format dataset generator (`generate`), its drawing primitives
(`drawing`) and the Broden-shaped 1,197-concept vocabulary (`broden_vocab`, drawn by
`broden_render`; `generate_dataset(..., vocabulary="broden")`); `default_vocab` holds the
default vocabulary's names, numbers and drawing constants, below all three.
May import: `datasets.base`, `errors`; nothing from the pipeline.
"""
