"""The records a job writes: versioned pydantic schemas (`schema`; `schemas/` is generated
from them), builders from search results (`build`), JSON Lines and schema IO (`io`).
May import: `explain`, `concepts`, `datasets`, `storage`, `errors`.
"""
