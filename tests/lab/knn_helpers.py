"""Brute-force references and hard geometries for the kNN tests (CPU and device)."""

from __future__ import annotations

import numpy as np


def brute_knn(X: np.ndarray, k: int) -> np.ndarray:
    """Exact float64 direct-difference distances, ties to the smaller index."""
    n = X.shape[0]
    out = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        diff = X - X[i]
        d = np.einsum("ij,ij->i", diff, diff)
        d[i] = np.inf
        out[i] = np.lexsort((np.arange(n), d))[:k]
    return out


def brute_ranks(R: np.ndarray, nbr: np.ndarray) -> np.ndarray:
    """Stable-sort rank (1 = nearest) of each given neighbour among all others."""
    n = R.shape[0]
    out = np.empty_like(nbr)
    for i in range(n):
        diff = R - R[i]
        d = np.einsum("ij,ij->i", diff, diff)
        d[i] = np.inf
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(d, kind="stable")] = np.arange(1, n + 1)
        out[i] = rank[nbr[i]]
    return out


def geometries() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 400
    centres = rng.standard_normal((8, 96)) * 5.0
    dup = rng.standard_normal((n // 4, 64))
    return {
        "gaussian": rng.standard_normal((n, 128)),
        "offset": rng.standard_normal((n, 96)) + 1e3,  # huge mean: centring must save it
        "low_rank": rng.standard_normal((n, 3)) @ rng.standard_normal((3, 80)),
        "clusters": centres[rng.integers(0, 8, n)] + 1e-3 * rng.standard_normal((n, 96)),
        "duplicates": dup[rng.integers(0, n // 4, n)],  # every point has exact copies
        "integer_grid": rng.integers(0, 3, (n, 40)).astype(float),  # many exact ties
        "identical": np.ones((n, 50)),
        "scaled_tiny": rng.standard_normal((n, 64)) * 1e-30,
        "scaled_huge": rng.standard_normal((n, 64)) * 1e30,
    }
