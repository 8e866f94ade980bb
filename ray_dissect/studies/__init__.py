"""Studies that test what labels claim: forward hooks that zero activations and the model's
decisions under them (`hooks`), their effects summed by concept presence (`effects`), concept
blackout copies and Delta/Pearson (`blackout`), trained vs baseline formulas (`compare`).
Pure numpy/torch; the stages that run them are in `pipeline/`.
May import: `records`, `job`, `explain`, `concepts`, `units`, `models`, `datasets`, `storage`,
`spec`, `errors`.
"""
