"""Cell weights (marginals) of a GW problem: one check for the dense and the quantized path."""

from __future__ import annotations

import numpy as np

from .._errors import SparsecellError


def cell_weights(w, n: int, name: str) -> np.ndarray:
    """Positive, finite weights of ``n`` cells (uniform ``1/n`` when ``w`` is None)."""
    if w is None:
        return np.full(n, 1.0 / n)
    arr = np.asarray(w, dtype=np.float64).ravel()
    if arr.shape != (n,):
        raise SparsecellError(
            f"{name} has {arr.size} weights for {n} cells", f"pass one weight per cell in {name}"
        )
    if not np.all(np.isfinite(arr)):
        raise SparsecellError(f"{name} contains NaN or inf", "pass finite weights")
    if np.any(arr <= 0):
        raise SparsecellError(
            f"{name} has {int((arr <= 0).sum())} non-positive weight(s)",
            "drop those cells or give them a small positive weight",
        )
    return arr
