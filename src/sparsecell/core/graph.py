"""Seeded Leiden community detection on a weighted graph (igraph), one copy for every stage."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import scipy.sparse as sp


def leiden(
    adjacency: Any,
    resolution: float = 1.0,
    *,
    random_state: int = 0,
    objective: str = "modularity",
    n_iterations: int = -1,
) -> np.ndarray:
    """Leiden communities of a symmetric weighted graph, deterministic for a seed.

    Parameters
    ----------
    adjacency
        ``(n, n)`` symmetric SciPy sparse (or dense) matrix of non-negative weights; only
        the upper triangle is read.
    resolution
        Resolution parameter (larger: more, smaller communities).
    random_state
        Seed of igraph's random number generator (restored afterwards).
    objective
        ``"modularity"`` or ``"CPM"``.
    n_iterations
        Leiden iterations; negative runs until stable.

    Returns
    -------
    numpy.ndarray
        ``int64`` community of every node.
    """
    import igraph as ig

    A = sp.csr_matrix(adjacency)
    coo = sp.triu(A, k=1).tocoo()
    g = ig.Graph(n=A.shape[0], edges=list(zip(coo.row.tolist(), coo.col.tolist(), strict=True)))
    g.es["weight"] = coo.data.tolist()
    ig.set_random_number_generator(random.Random(random_state))
    try:
        part = g.community_leiden(
            objective_function=objective,
            resolution=resolution,
            weights="weight",
            n_iterations=n_iterations,
        )
    finally:
        ig.set_random_number_generator(random)
    return np.asarray(part.membership, dtype=np.int64)


__all__ = ["leiden"]
