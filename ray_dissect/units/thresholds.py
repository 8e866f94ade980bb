"""Per-unit activation thresholds.

The threshold of a unit is the exact ``1 - quantile`` quantile (linear interpolation, numpy's
default) of all its N x h x w activations at feature resolution, before upsampling. The
references estimate it with a streaming sketch (NetDissect-Lite reads index 994 of 1000
interpolated quantiles, i.e. about 0.99499 for quantile 0.005); the exact value is what their
sketch approximates. Non-finite activations (NaN, inf) are left out and counted.
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
    return out, nonfinite
