"""The error hierarchy of ray_dissect.

Every error a user can cause derives from :class:`RayDissectError`. Messages follow one
pattern: what was given, what was expected, and a hint naming the next step. The CLI prints
``str(error)`` on one line and exits with the class's ``exit_code`` (documented in the README).
"""

from __future__ import annotations

from typing import Any


class RayDissectError(Exception):
    """Base class: a failure the user can act on (not a bug in ray_dissect)."""

    exit_code = 1

    def __init__(self, what: str, *, given: Any = None, expected: str = "", hint: str = "") -> None:
        parts = [what]
        if given is not None:
            parts.append(f"got {given!r}")
        if expected:
            parts.append(f"expected {expected}")
        message = "; ".join(parts)
        if hint:
            message += f". Hint: {hint}"
        super().__init__(message)
        self.what, self.given, self.expected, self.hint = what, given, expected, hint

    def __str__(self) -> str:
        return str(self.args[0])


class SpecError(RayDissectError, ValueError):
    """The job spec is invalid (checked before any work starts)."""

    exit_code = 2


class LayerNotFoundError(SpecError, KeyError):
    """A layer named in the spec is not a module of the model."""


class DatasetError(RayDissectError, OSError):
    """The concept dataset is missing or malformed as a whole (single bad samples are recorded)."""

    exit_code = 3


class ModelError(RayDissectError):
    """The model could not be built or its weights could not be loaded."""

    exit_code = 4


class UserCodeError(ModelError):
    """A user-supplied model factory raised; the original exception is chained."""


class StoreError(RayDissectError, OSError):
    """The output directory or a Zarr store cannot be read or written."""

    exit_code = 5


class StageError(RayDissectError):
    """A pipeline stage failed on the cluster after its retries."""

    exit_code = 6
