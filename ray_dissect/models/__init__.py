"""The network under study: building it (`build`: torchvision, factories, checkpoints, layer
listing), the demo zoo (`zoo`), the hooked activation extractor with its preprocessing
(`extract`), and forward passes cut after chosen modules (`truncate`). May import: `spec`,
`errors`.
"""
