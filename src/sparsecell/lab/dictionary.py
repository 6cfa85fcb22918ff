"""Superposition diagnostics for a dictionary of feature directions.

A dictionary ``W`` has one feature direction per **row** (``n_features × d``), as an SAE
decoder or the feature matrix of :func:`sparsecell.datasets.sparse_features`. When
``n_features > d`` the directions cannot all be orthogonal; how close to orthogonal they
manage to be is measured against the Welch bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._errors import SparsecellError
from . import _stats as st


@dataclass(frozen=True)
class InterferenceResult:
    """Pairwise interference between the directions of a dictionary.

    Attributes
    ----------
    mean_abs_cos
        Mean ``|cos|`` over distinct pairs (``float(result)`` gives this).
    rms_cos
        Root mean square ``cos`` over distinct pairs; never below ``welch_bound``.
    max_abs_cos
        Largest ``|cos|`` (the coherence); never below ``welch_bound``.
    welch_bound
        ``sqrt((n - d) / (d (n - 1)))`` for ``n > d`` unit vectors in ``d`` dimensions,
        else 0.
    n_features
        Directions used (rows with zero norm are skipped).
    dim
        Ambient dimension ``d``.
    """

    mean_abs_cos: float
    rms_cos: float
    max_abs_cos: float
    welch_bound: float
    n_features: int
    dim: int

    def __float__(self) -> float:
        return float(self.mean_abs_cos)

    @property
    def ratio(self) -> float:
        """``rms_cos / welch_bound`` (≥ 1; 1 for an equiangular tight frame); inf when
        the bound is 0."""
        return float(self.rms_cos / self.welch_bound) if self.welch_bound > 0 else float("inf")


def _dictionary(W: Any) -> np.ndarray:
    W = st.as_matrix(W, "dictionary")
    return W.toarray() if sp.issparse(W) else W


def welch_bound(n: int, d: int) -> float:
    """Welch bound ``sqrt((n - d) / (d (n - 1)))`` on the coherence of ``n`` unit vectors in
    ``d`` dimensions (0 when ``n ≤ d``: orthogonal vectors exist).

    It bounds the largest ``|cos|`` and also the RMS ``cos`` over distinct pairs, because
    ``Σ_{i≠j} cos²_ij ≥ n²/d - n`` (the frame potential).

    Parameters
    ----------
    n
        Number of vectors.
    d
        Dimension.

    Returns
    -------
    float
        The bound.
    """
    if n < 2 or d < 1:
        raise SparsecellError(
            f"the Welch bound needs n >= 2 and d >= 1, got n={n}, d={d}",
            "pass at least two vectors",
        )
    return float(np.sqrt((n - d) / (d * (n - 1)))) if n > d else 0.0


def interference(W: Any, *, block_elems: int = 8_000_000) -> InterferenceResult:
    """Interference between feature directions: ``|cos|`` of every distinct pair.

    Rows are normalised to unit length; ``cos_ij = ŵ_i · ŵ_j``. The ``n × n`` Gram
    matrix is formed in row blocks (at most ``block_elems`` entries at once).

    Parameters
    ----------
    W
        ``(n_features, d)`` dictionary, one direction per row (numpy, scipy.sparse, torch).
    block_elems
        Memory limit of one block of cosines.

    Returns
    -------
    InterferenceResult
        Mean ``|cos|``, RMS and max ``|cos|``, and the Welch bound for comparison.
    """
    W = _dictionary(W)
    norms = np.linalg.norm(W, axis=1)
    Wn = W[norms > 0] / norms[norms > 0, None]
    n, d = Wn.shape
    if n < 2:
        raise SparsecellError(
            f"the dictionary has {n} non-zero direction(s)", "pass at least two non-zero rows"
        )
    b = max(1, min(n, block_elems // n))
    s_abs = s_sq = 0.0
    mx = 0.0
    for s0 in range(0, n, b):
        rows = np.arange(s0, min(n, s0 + b))
        G = Wn[rows] @ Wn.T
        G[np.arange(len(rows)), rows] = 0.0
        A = np.abs(G)
        s_abs += float(A.sum())
        s_sq += float(np.sum(G**2))
        mx = max(mx, float(A.max()))
    pairs = n * (n - 1)
    return InterferenceResult(
        mean_abs_cos=s_abs / pairs,
        rms_cos=float(np.sqrt(s_sq / pairs)),
        max_abs_cos=min(mx, 1.0),
        welch_bound=welch_bound(n, d),
        n_features=int(n),
        dim=int(d),
    )


def features_per_dimension(W: Any) -> float:
    """Features per dimension ``‖W‖_F² / d`` (Elhage et al. 2022, toy models of
    superposition).

    In a toy model a represented feature has a direction of norm about 1 and an ignored
    one norm about 0, so this counts represented features per hidden dimension (its
    inverse is their ``D*``, dimensions per feature). For a dictionary of unit-norm rows it
    is simply ``n_features / d``.

    Parameters
    ----------
    W
        ``(n_features, d)`` feature directions, one per row, **not** normalised.

    Returns
    -------
    float
        Features per dimension.
    """
    W = _dictionary(W)
    return float(np.sum(W**2) / W.shape[1])


def feature_dimensionality(W: Any, *, block_elems: int = 8_000_000) -> np.ndarray:
    """Fraction of a dimension each feature gets (Elhage et al. 2022).

    ``D_i = ‖w_i‖² / Σ_j (ŵ_i · w_j)²`` (the sum includes ``j = i``): 1 for a feature
    orthogonal to all others, ``1/m`` for ``m`` features sharing one direction
    (antipodal pairs give 1/2), 0 for a feature with zero norm.

    Parameters
    ----------
    W
        ``(n_features, d)`` feature directions, one per row, not normalised.
    block_elems
        Memory limit of one block of the ``n × n`` products.

    Returns
    -------
    numpy.ndarray
        ``n_features`` values in ``[0, 1]``.
    """
    W = _dictionary(W)
    n = W.shape[0]
    sq = np.sum(W**2, axis=1)
    norms = np.sqrt(sq)
    out = np.zeros(n)
    b = max(1, min(n, block_elems // max(n, 1)))
    for s0 in range(0, n, b):
        rows = np.arange(s0, min(n, s0 + b))
        live = norms[rows] > 0
        if not live.any():
            continue
        r = rows[live]
        proj = (W[r] / norms[r, None]) @ W.T
        out[r] = sq[r] / np.sum(proj**2, axis=1)
    return out
