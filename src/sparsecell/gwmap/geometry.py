"""Intra-domain costs for Gromov-Wasserstein: squared euclidean (factored), euclidean,
kNN-geodesic and precomputed matrices, with scaling.

A :class:`Geometry` holds one side of a GW problem: the points (kept for factored costs and
the quantized large-scale path) and, once materialised, the dense ``n × n`` cost, already
divided by ``scale``. The squared-euclidean cost is never materialised unless
:meth:`Geometry.dense` is asked for: the solvers use its rank-``d + 2`` factors
``C = A @ B.T`` instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from sparsecell._errors import SparsecellError

log = logging.getLogger(__name__)

COSTS = ("sqeuclidean", "euclidean", "knn_geodesic", "precomputed")
SCALES = ("mean", "max", "median")

_CHUNK = 2048  # rows per block when a pairwise statistic is computed without the n × n matrix
_MEDIAN_SAMPLES = 200_000  # pairs sampled for the median when the matrix is large


@dataclass
class Geometry:
    """One side of a GW problem: a cost on ``n`` points.

    Attributes
    ----------
    cost
        ``"sqeuclidean"``, ``"euclidean"``, ``"knn_geodesic"`` or ``"precomputed"``.
    points
        ``n × d`` float array (``None`` for a precomputed matrix).
    matrix
        Dense ``n × n`` cost, already divided by ``scale``, when materialised.
    scale
        The divisor applied to the raw cost (``1.0`` for ``scale=None``).
    k
        Neighbours of the kNN graph (``knn_geodesic`` only).
    warnings
        What was adapted while the cost was built (e.g. kNN components joined).
    """

    cost: str
    points: np.ndarray | None
    matrix: np.ndarray | None
    scale: float
    k: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        """Number of points."""
        if self.matrix is not None:
            return int(self.matrix.shape[0])
        assert self.points is not None
        return int(self.points.shape[0])

    def dense(self) -> np.ndarray:
        """The scaled ``n × n`` cost (materialised, and cached, if needed)."""
        if self.matrix is None:
            assert self.points is not None
            raw = _pairwise(self.points, squared=self.cost == "sqeuclidean")
            raw /= self.scale
            self.matrix = raw
        return self.matrix

    def factors(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(A, B)`` with ``dense() == A @ B.T`` for squared euclidean costs, else ``None``.

        ``‖x_i − x_k‖² = s_i + s_k − 2 x_i·x_k`` with ``s = ‖x‖²``, so
        ``A = [s, 1, −2x] / scale`` and ``B = [1, s, x]`` (``n × (d + 2)`` each).
        """
        if self.cost != "sqeuclidean" or self.points is None:
            return None
        X = self.points - self.points.mean(axis=0)  # centred: same cost, less cancellation
        s = np.einsum("ij,ij->i", X, X)[:, None]
        one = np.ones_like(s)
        A = np.hstack([s, one, -2.0 * X]) / self.scale
        B = np.hstack([one, s, X])
        return A, B

    @property
    def is_factored(self) -> bool:
        """Whether the solvers may use :meth:`factors` instead of the dense matrix."""
        return self.cost == "sqeuclidean" and self.points is not None and self.matrix is None


# --------------------------------------------------------------------------- constructors


def geometry(
    X: np.ndarray | None = None,
    *,
    cost: str = "sqeuclidean",
    C: np.ndarray | None = None,
    k: int = 15,
    scale: str | float | None = "mean",
    seed: int = 0,
) -> Geometry:
    """Build the intra-domain cost of one side of a GW problem.

    Parameters
    ----------
    X
        ``n × d`` points (cells × features, e.g. PCA coordinates).
    cost
        ``"sqeuclidean"`` (factored, never materialised unless asked), ``"euclidean"``,
        ``"knn_geodesic"`` (weighted shortest paths on the symmetrised kNN graph) or
        ``"precomputed"`` (give ``C``).
    C
        A precomputed symmetric ``n × n`` cost; implies ``cost="precomputed"``.
    k
        Neighbours for ``knn_geodesic``.
    scale
        Divide the cost by its ``"mean"`` (over all ``n²`` entries, diagonal included),
        ``"max"``, ``"median"`` (of the off-diagonal entries; sampled, seeded, when
        ``n² > 200,000``), by a positive float, or not at all (``None``).
    seed
        Seed for the sampled median and for tie-breaking in the kNN search.

    Returns
    -------
    Geometry
        With ``matrix`` set for euclidean, kNN-geodesic and precomputed costs, and only the
        points for squared euclidean.
    """
    if C is not None:
        if cost not in ("sqeuclidean", "precomputed"):
            raise SparsecellError(
                f"both C and cost={cost!r} given", "give either a precomputed C or points X"
            )
        M = _check_matrix(C)
        raw_scale = _scale_of_matrix(M, scale, seed)
        return Geometry("precomputed", None, M / raw_scale, raw_scale)
    if cost not in COSTS:
        raise SparsecellError(f"unknown cost {cost!r}", f"use one of {', '.join(COSTS)}")
    if cost == "precomputed":
        raise SparsecellError("cost='precomputed' needs C", "pass the n × n matrix as C=")
    if X is None:
        raise SparsecellError("no points given", "pass X (n × d) or a precomputed C")
    P = _check_points(X)
    if cost == "sqeuclidean":
        raw_scale = _scale_of_points(P, scale, seed, squared=True)
        return Geometry("sqeuclidean", P, None, raw_scale)
    if cost == "euclidean":
        D = _pairwise(P, squared=False)
        raw_scale = _scale_of_matrix(D, scale, seed)
        D /= raw_scale
        return Geometry("euclidean", P, D, raw_scale)
    # knn_geodesic
    notes: list[str] = []
    D = knn_geodesic(P, k=k, seed=seed, _notes=notes)
    raw_scale = _scale_of_matrix(D, scale, seed)
    D /= raw_scale
    return Geometry("knn_geodesic", P, D, raw_scale, k=k, warnings=notes)


def knn_geodesic(
    X: np.ndarray, k: int = 15, *, seed: int = 0, _notes: list[str] | None = None
) -> np.ndarray:
    """Geodesic distances: weighted shortest paths on the symmetrised kNN graph.

    Edges join each point to its ``k`` nearest neighbours (euclidean length); the graph is
    symmetrised (an edge in either direction counts). If the graph falls apart into several
    components, they are joined by their shortest inter-component edges (a minimum spanning
    tree over the components) and a warning is logged, so every distance is finite and
    none is silently replaced by a maximum.

    Parameters
    ----------
    X
        ``n × d`` points.
    k
        Neighbours per point (clipped to ``n − 1``).
    seed
        Unused by the exact search; kept for a uniform signature.

    Returns
    -------
    numpy.ndarray
        ``n × n`` float64 distances, symmetric, zero diagonal, all finite.
    """
    del seed
    P = _check_points(X)
    n = P.shape[0]
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise SparsecellError(f"k must be a positive integer, got {k!r}", "use e.g. k=15")
    kk = int(min(k, n - 1))
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=kk + 1).fit(P)
    dist, idx = nn.kneighbors(P)
    rows = np.repeat(np.arange(n), kk + 1)
    # duplicate points give zero-length edges, which a sparse graph cannot hold: use a tiny
    # positive length instead so that they stay connected (self-loops are removed below)
    w = dist.ravel().copy()
    w[w <= 0] = np.finfo(np.float64).tiny
    G = sp.csr_matrix((w, (rows, idx.ravel())), shape=(n, n))
    G.setdiag(0)
    G.eliminate_zeros()
    G = G.maximum(G.T).tocsr()
    n_comp, lab = csgraph.connected_components(G, directed=False)
    if n_comp > 1:
        G = _join_components(P, G, lab, n_comp)
        msg = (
            f"kNN graph (k={kk}) has {n_comp} disconnected components; joined them by their "
            "shortest inter-component edges (raise k to avoid this)"
        )
        log.warning(msg)
        if _notes is not None:
            _notes.append(msg)
    D = csgraph.shortest_path(G, method="D", directed=False)
    if not np.all(np.isfinite(D)):  # cannot happen after joining; guard anyway
        raise SparsecellError("kNN-geodesic distances are not all finite", "raise k")
    np.fill_diagonal(D, 0.0)
    return D


def label_cost(labels_x, labels_y) -> np.ndarray:
    """Label-mismatch cost for fused GW: 0 where labels match, 1 otherwise.

    Parameters
    ----------
    labels_x, labels_y
        Label per cell on each side (any hashable values; missing values never match).

    Returns
    -------
    numpy.ndarray
        ``n × m`` float64 matrix.
    """
    lx = np.asarray(labels_x, dtype=object).ravel()
    ly = np.asarray(labels_y, dtype=object).ravel()
    if lx.size == 0 or ly.size == 0:
        raise SparsecellError("empty label array", "give one label per cell on each side")
    cats, inv = np.unique(np.concatenate([lx, ly]).astype(str), return_inverse=True)
    del cats
    ix, iy = inv[: lx.size], inv[lx.size :]
    if not np.intersect1d(ix, iy).size:
        raise SparsecellError(
            "the two label sets share no category, so a label cost would be constant",
            "check that both sides use the same label names",
        )
    return (ix[:, None] != iy[None, :]).astype(np.float64)


# --------------------------------------------------------------------------- helpers


def _check_points(X) -> np.ndarray:
    try:
        P = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SparsecellError(f"points are not numeric: {e}", "pass an n × d float array") from e
    if P.ndim == 1:
        P = P[:, None]
    if P.ndim != 2:
        raise SparsecellError(f"points must be n × d, got shape {P.shape}", "pass a 2-D array")
    if P.shape[0] < 2:
        raise SparsecellError(f"need at least 2 points, got {P.shape[0]}", "pass more cells")
    if P.shape[1] < 1:
        raise SparsecellError("points have no features", "pass an n × d array with d ≥ 1")
    if not np.all(np.isfinite(P)):
        raise SparsecellError(
            "points contain NaN or inf", "drop or impute the affected cells first"
        )
    return P


def _check_matrix(C) -> np.ndarray:
    M = np.array(C, dtype=np.float64)  # a copy: it is scaled in place later
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise SparsecellError(f"C must be square n × n, got shape {M.shape}", "pass a cost matrix")
    if M.shape[0] < 2:
        raise SparsecellError(f"need at least 2 points, got {M.shape[0]}", "pass more cells")
    if not np.all(np.isfinite(M)):
        raise SparsecellError("C contains NaN or inf", "fill or drop the affected entries")
    tol = 1e-8 * max(float(np.abs(M).max()), 1e-300)
    if not np.allclose(M, M.T, rtol=0.0, atol=tol):
        raise SparsecellError("C is not symmetric", "symmetrise it, e.g. (C + C.T) / 2")
    return M


def _pairwise(P: np.ndarray, *, squared: bool) -> np.ndarray:
    s = np.einsum("ij,ij->i", P, P)
    D = s[:, None] + s[None, :] - 2.0 * (P @ P.T)
    np.maximum(D, 0.0, out=D)
    np.fill_diagonal(D, 0.0)
    if not squared:
        np.sqrt(D, out=D)
    return D


def _final_scale(value: float, how) -> float:
    if not np.isfinite(value) or value <= 0:
        raise SparsecellError(
            f"cannot scale the cost by its {how}: it is {value}",
            "check for duplicate points, or pass scale=None",
        )
    return float(value)


def _user_scale(scale) -> float | None:
    if scale is None:
        return 1.0
    if isinstance(scale, str):
        if scale not in SCALES:
            raise SparsecellError(
                f"unknown scale {scale!r}", "use 'mean', 'max', 'median', a float or None"
            )
        return None
    try:
        val = float(scale)
    except (TypeError, ValueError) as e:
        raise SparsecellError(f"scale must be a string, float or None, got {scale!r}") from e
    if not np.isfinite(val) or val <= 0:
        raise SparsecellError(f"scale must be positive, got {scale!r}", "pass e.g. scale='mean'")
    return val


def _scale_of_matrix(M: np.ndarray, scale, seed: int) -> float:
    fixed = _user_scale(scale)
    if fixed is not None:
        return fixed
    if scale == "mean":
        return _final_scale(float(M.mean()), scale)
    if scale == "max":
        return _final_scale(float(M.max()), scale)
    n = M.shape[0]
    if n * n <= _MEDIAN_SAMPLES:
        off = M[~np.eye(n, dtype=bool)]
        return _final_scale(float(np.median(off)), scale)
    i, j = _sample_pairs(n, seed)
    return _final_scale(float(np.median(M[i, j])), scale)


def _scale_of_points(P: np.ndarray, scale, seed: int, *, squared: bool) -> float:
    fixed = _user_scale(scale)
    if fixed is not None:
        return fixed
    n = P.shape[0]
    if scale == "mean" and squared:
        # mean over all n² pairs of ‖x_i − x_k‖² = 2 (mean ‖x‖² − ‖mean x‖²)
        mu = P.mean(axis=0)
        val = 2.0 * (float(np.einsum("ij,ij->", P, P)) / n - float(mu @ mu))
        return _final_scale(val, scale)
    if scale in ("mean", "max"):
        s = np.einsum("ij,ij->i", P, P)
        acc = 0.0
        for lo in range(0, n, _CHUNK):
            blk = s[lo : lo + _CHUNK, None] + s[None, :] - 2.0 * (P[lo : lo + _CHUNK] @ P.T)
            np.maximum(blk, 0.0, out=blk)
            if not squared:
                np.sqrt(blk, out=blk)
            acc = acc + float(blk.sum()) if scale == "mean" else max(acc, float(blk.max()))
        return _final_scale(acc / (n * n) if scale == "mean" else acc, scale)
    # median of off-diagonal entries, sampled
    i, j = _sample_pairs(n, seed)
    d = np.einsum("ij,ij->i", P[i] - P[j], P[i] - P[j])
    if not squared:
        d = np.sqrt(d)
    return _final_scale(float(np.median(d)), scale)


def _sample_pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if n * n <= _MEDIAN_SAMPLES:
        i, j = np.nonzero(~np.eye(n, dtype=bool))
        return i, j
    i = rng.integers(0, n, _MEDIAN_SAMPLES)
    j = (i + rng.integers(1, n, _MEDIAN_SAMPLES)) % n  # j != i
    return i, j


def _join_components(P: np.ndarray, G: sp.csr_matrix, lab: np.ndarray, n_comp: int):
    """Add the shortest inter-component edges of a minimum spanning tree over components."""
    members = [np.flatnonzero(lab == c) for c in range(n_comp)]
    best = np.full((n_comp, n_comp), np.inf)
    ends = {}
    for c1 in range(n_comp):
        A = P[members[c1]]
        sa = np.einsum("ij,ij->i", A, A)
        for c2 in range(c1 + 1, n_comp):
            B = P[members[c2]]
            sb = np.einsum("ij,ij->i", B, B)
            d2 = sa[:, None] + sb[None, :] - 2.0 * (A @ B.T)
            flat = int(np.argmin(d2))
            ia, ib = divmod(flat, B.shape[0])
            d = float(np.sqrt(max(d2[ia, ib], 0.0)))
            best[c1, c2] = best[c2, c1] = max(d, np.finfo(np.float64).tiny)
            ends[(c1, c2)] = (members[c1][ia], members[c2][ib])
    comp_graph = sp.csr_matrix(np.where(np.isfinite(best), best, 0.0))
    tree = csgraph.minimum_spanning_tree(comp_graph).tocoo()
    rows, cols, vals = [], [], []
    for c1, c2, w in zip(tree.row, tree.col, tree.data, strict=True):
        a, b = ends[(min(c1, c2), max(c1, c2))]
        rows += [a, b]
        cols += [b, a]
        vals += [w, w]
    extra = sp.csr_matrix((vals, (rows, cols)), shape=G.shape)
    return G.maximum(extra).tocsr()
