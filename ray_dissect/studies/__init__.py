"""Studies that test what labels claim (threshold sweeps, range importance, ablation,
concept blackout, trained vs baseline). Pure numpy/torch.
May import: `records`, `explain`, `concepts`, `units`, `models`, `datasets`, `storage`, `errors`.
"""
