"""Which per-pixel kernels run: numba's compiled ones, or the numpy reference.

:func:`kernel_name` decides once per call: ``numba`` when it imports, ``numpy`` otherwise or
when the environment variable ``RAY_DISSECT_KERNELS=numpy`` forces the reference. Kernels are
``numba.njit(cache=True, nogil=True)`` (:func:`jit`): compiled on first call and cached on
disk, and they release the GIL.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

KERNEL_ENV = "RAY_DISSECT_KERNELS"
"""Set to ``numpy`` to force the numpy reference even when numba imports."""

try:  # numba is a dependency, but the numpy path must keep working without it
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    HAVE_NUMBA = False


def kernel_name() -> str:
    """``"numba"`` when the compiled kernels are in use, else ``"numpy"`` (see
    :data:`KERNEL_ENV`)."""
    if not HAVE_NUMBA or os.environ.get(KERNEL_ENV, "").lower() == "numpy":
        return "numpy"
    return "numba"


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``numba.njit(cache=True, nogil=True)`` where numba imports; the plain function (never
    called: :func:`kernel_name` is ``numpy`` then) otherwise."""
    if not HAVE_NUMBA:  # pragma: no cover
        return fn
    return numba.njit(cache=True, nogil=True)(fn)


def inline_jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`jit` inlined into its compiled callers (numba's ``inline="always"``): a small
    helper called in an inner loop, whose array arguments would otherwise cost reference
    counting at every call."""
    if not HAVE_NUMBA:  # pragma: no cover
        return fn
    return numba.njit(cache=True, nogil=True, inline="always")(fn)
