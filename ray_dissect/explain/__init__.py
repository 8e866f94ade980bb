"""What a unit detects: NetDissect scoring (`netdissect`), formulas (`formula`), the exact
beam search (`search`), admissible bounds and pruning (`heuristics`, `pruning`), the
guaranteed-optimal branch and bound with its certificate (`optimal`, `bounds`),
explanation metrics (`metrics`), concept masking (`masking`) and per-range explanations
(`ranges`).
May import: `concepts`, `units`, `models`, `datasets`, `errors`.
"""
