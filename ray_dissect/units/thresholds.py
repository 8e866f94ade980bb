"""Per-unit activation thresholds.

The threshold of a unit is the exact ``1 - quantile`` quantile (linear interpolation, numpy's
default) of all its N x h x w activations at feature resolution, before upsampling. The
references estimate it with a streaming sketch (NetDissect-Lite reads index 994 of 1000
interpolated quantiles, i.e. about 0.99499 for quantile 0.005); the exact value is what their
sketch approximates. Non-finite activations (NaN, inf) are left out and counted. A threshold
of zero is always +0.0 (-0.0 and +0.0 tie in every comparison, and which of them a sort or a
partition puts at a rank is arbitrary).
"""

from __future__ import annotations

import numpy as np


def unit_thresholds(acts: np.ndarray, quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``quantile`` threshold of each unit.

    Args:
        acts: (N, k, h, w) float32 activations of k units over all N images.
        quantile: the fraction of values above the threshold, in (0, 1).

    Returns:
        thresholds: (k,) float64; NaN for a unit with no finite value.
        nonfinite: (k,) int64 count of NaN/inf values per unit.

    Examples:
        >>> a = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
        >>> unit_thresholds(a, 0.1)[0]
        array([8.1])
    """
    k = acts.shape[1]
    out = np.full(k, np.nan)
    nonfinite = np.zeros(k, dtype=np.int64)
    for unit in range(k):  # one unit at a time: a float64 copy of one unit's values at most
        values = acts[:, unit].astype(np.float64).reshape(-1)
        ok = np.isfinite(values)
        nonfinite[unit] = values.size - int(ok.sum())
        if nonfinite[unit]:
            values = values[ok]
        if values.size:
            out[unit] = np.quantile(values, 1.0 - quantile)
    return out + 0.0, nonfinite  # -0.0 as 0.0: which zero a sort picks among ties is arbitrary


def device_thresholds(acts: np.ndarray, quantile: float, device: str
                      ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`unit_thresholds` with the units' values sorted on a torch ``device`` (a GPU
    actor's): the same (k,) float64 thresholds and (k,) int64 counts, bit for bit.

    Each unit's finite values are sorted on the device (non-finite ones made NaN, which
    ``torch.sort`` puts last); the two order statistics numpy's linear method interpolates
    come back to the host in float64 (float32 -> float64 is exact and keeps the order), where
    :func:`_lerp` interpolates them with numpy's own arithmetic.

    Args:
        acts: (N, k, h, w) float32 activations of k units over all N images.
        quantile: the fraction of values above the threshold, in (0, 1).
        device: a torch device (``"cuda"``; ``"cpu"`` runs the same code on the CPU).
    """
    import torch

    k = acts.shape[1]
    x = torch.as_tensor(np.ascontiguousarray(acts), device=device).transpose(0, 1).reshape(k, -1)
    finite = torch.isfinite(x)
    counts = finite.sum(dim=1).cpu().numpy().astype(np.int64)
    ordered = torch.sort(torch.where(finite, x, float("nan")), dim=1).values
    q = 1.0 - quantile
    plans = [_linear_ranks(int(n), q) for n in counts]
    picks = torch.as_tensor([(lo, hi) for lo, hi, _ in plans], dtype=torch.int64, device=device)
    pairs = ordered.gather(1, picks).cpu().numpy().astype(np.float64)
    out = np.array([_lerp(float(a), float(b), gamma) if lo < hi else float(b)
                    for (a, b), (lo, hi, gamma) in zip(pairs, plans, strict=True)])
    out[counts == 0] = np.nan
    return out + 0.0, x.shape[1] - counts


def _linear_ranks(n: int, q: float) -> tuple[int, int, float]:
    """The 0-based ranks ``lo`` <= ``hi`` numpy's linear method reads for the ``q`` quantile
    of ``n`` values and its weight ``gamma``, computed as numpy does (``lo == hi``: the value
    at that rank itself, the largest when the virtual index reaches it; (0, 0) when n = 0)."""
    virtual = (n - 1) * q
    if n == 0 or virtual >= n - 1:
        return max(n - 1, 0), max(n - 1, 0), 0.0
    below = int(np.floor(virtual))
    return below, below + 1, float(virtual - np.floor(virtual))


def _lerp(a: float, b: float, gamma: float) -> float:
    """numpy's ``_lerp`` of ``a`` <= ``b`` at ``gamma``: its float64 operations and branch."""
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma
