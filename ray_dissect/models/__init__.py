"""The network under study: building it (`build`: torchvision, factories, checkpoints, layer
listing), the demo zoo (`zoo`), and the hooked activation extractor with its preprocessing
(`extract`). May import: `spec`, `errors`.
"""
