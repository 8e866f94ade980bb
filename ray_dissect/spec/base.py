"""The pydantic base every spec model shares: frozen, unknown keys refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """A frozen spec model that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)
