"""The procedural Broden-format dataset generator (`generate`) and its drawing primitives
(`drawing`). May import: `datasets.base`, `errors`; nothing from the pipeline.
"""
