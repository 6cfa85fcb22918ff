"""GW-map's large-scale path: quantised entropic GW with block-wise cell-level refinement.

Memory grows linearly in the number of cells for a fixed mean cluster size
(``O((n + m)·(r + s·c̄) + K²)``, ``s ≤ max_partners`` kept partner anchors per anchor,
``c̄`` cells per cluster); no ``n × m`` object is ever built. The scheme (``docs/gwmap.md``,
"Large-scale path"):

1. **Quantise** each side with k-means (seeded) into ``K`` cells-of-cells; the centroids
   are the *anchors*, a cluster's mass is the marginal mass of its cells.
2. **Coarse GW**: the dense entropic solver (``solve(method="dense")``) on the ``K_x × K_y``
   anchors, with costs of the same kind as the cells' (squared / plain Euclidean between
   centroids, or kNN-geodesic on a kNN graph of the centroids) scaled by their
   mass-weighted mean, so ``epsilon`` means what it means for the mean-scaled dense
   problem. Result: an anchor coupling ``P``.
3. **Sparse anchor support.** Each image anchor keeps the RNA anchors that hold
   ≥ 1 − δ of its mass under ``P`` (plus every RNA anchor's best partner); ``P`` is
   rescaled on that support (Sinkhorn) to the clusters' masses, and the last residual
   (~1e-10) is routed by the north-west corner rule, so the sparse ``P̃`` has exactly
   the cluster masses as marginals.
4. **Cell-level plans.** Each cell gets its *anchor profile*, its cost to every anchor of
   its own side; through ``P`` the two sides' profiles live in one space (an RNA cell's
   profile is carried to the image anchors by the barycentric map of ``P``; the weighted
   squared distance between profiles is, up to a per-cell term, the linearised GW cost
   of sending one cell to the other given ``P``), centred, PCA-reduced to ``r`` dims.
   For every image anchor ``p``, its cells are coupled with the cells of its kept RNA
   anchors ``q`` by a small log-domain entropic OT on those features, row marginal the
   cells' weights ``a``, column marginal ``P̃_pq · b_y / b(q)``; each block plan is
   rounded to its marginals exactly (Altschuler, Weed & Rigollet 2017). The union of the
   blocks therefore has exactly the marginals ``a`` and ``b``. ``refine=False`` spreads
   the block uniformly instead (the cluster-level coupling of quantised GW, Chowdhury,
   Miller & Needham 2021); the entropic blocks measured slightly better
   (``docs/gwmap.md``).

Why this and not low-rank GW (Scetbon, Peyré & Cuturi 2022): low-rank GW needs factored
costs (squared Euclidean) or a low-rank approximation of each cost matrix, and its
coupling has rank ``r``, which blurs cell-level matches (a rank-``r`` coupling transfers
labels well but ranks true partners poorly); kNN-geodesic costs, the seed paper's
choice, have no cheap factorisation. Quantisation keeps any cost and reuses the dense
solver unchanged (unbalanced, fused-by-labels, semi-relaxed pass through; for the
relaxed problems the cell marginals are those ``P`` gives each cluster, shared by cell
weight).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .._errors import SparsecellError
from ._weights import cell_weights

log = logging.getLogger(__name__)

_SUPPORTED_COSTS = ("sqeuclidean", "euclidean", "knn_geodesic")
_BLOCK = 2048  # rows per block in the cell-level passes


# --------------------------------------------------------------------------- inputs


def _points(g: Any, side: str) -> tuple[np.ndarray, str, int | None, float]:
    """(points float64, cost, k, scale) of a Geometry (or of a bare point array)."""
    if isinstance(g, np.ndarray) or (hasattr(g, "shape") and not hasattr(g, "cost")):
        pts, cost, k, scale = g, "sqeuclidean", None, None
    else:
        pts = getattr(g, "points", None)
        cost = getattr(g, "cost", None)
        k = getattr(g, "k", None)
        scale = getattr(g, "scale", None)
        if pts is None:
            raise SparsecellError(
                f"the quantized GW path needs the {side} side's points, but its geometry "
                f"holds only a {cost or 'precomputed'} cost matrix",
                "build the geometry from points (geometry(X, cost=...)) or use method='dense'",
            )
    if cost not in _SUPPORTED_COSTS:
        raise SparsecellError(
            f"the quantized GW path does not support cost={cost!r} ({side} side)",
            f"use one of {', '.join(_SUPPORTED_COSTS)} or method='dense'",
        )
    if sp.issparse(pts):
        pts = pts.toarray()
    if hasattr(pts, "detach"):
        pts = pts.detach().cpu().numpy()
    pts = np.asarray(pts, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < 2:
        raise SparsecellError(
            f"the {side} side's points must be a 2-D array of at least 2 cells, "
            f"got shape {pts.shape}",
            "pass cells × dims",
        )
    if not np.all(np.isfinite(pts)):
        raise SparsecellError(
            f"the {side} side's points hold NaN or inf", "remove or impute those cells"
        )
    sc = float(scale) if scale is not None and np.isfinite(scale) and scale > 0 else 1.0
    return pts, cost, k, sc


# --------------------------------------------------------------------------- quantise


def _quantise(
    X: np.ndarray, w: np.ndarray, K: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means (weighted by the marginal) → (labels, centroids, cluster masses).

    Empty clusters are dropped and the labels renumbered.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    n = X.shape[0]
    if K >= n:
        labels = np.arange(n)
        return labels, X.copy(), w.copy()
    sw = w * (n / w.sum())
    if n > 200_000:
        km = MiniBatchKMeans(
            n_clusters=K,
            random_state=seed,
            n_init=1,
            batch_size=max(4096, 3 * K),
            max_iter=50,
        )
    else:
        km = KMeans(n_clusters=K, random_state=seed, n_init=1, max_iter=100, tol=1e-5)
    labels = km.fit_predict(X, sample_weight=sw)
    mass = np.bincount(labels, weights=w, minlength=K)
    used = np.flatnonzero(mass > 0)
    remap = np.full(K, -1)
    remap[used] = np.arange(used.size)
    labels = remap[labels]
    # centroids recomputed from the final labels (weighted means)
    cent = np.zeros((used.size, X.shape[1]))
    np.add.at(cent, labels, X * w[:, None])
    cent /= mass[used][:, None]
    return labels, cent, mass[used]


# --------------------------------------------------------------------------- costs


def _sq_dist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return np.maximum(d, 0.0)


def _centroid_cost(C: np.ndarray, cost: str, k: int | None, seed: int) -> np.ndarray:
    """Raw (unscaled) anchor-to-anchor cost, same kind as the cells' cost."""
    if cost == "sqeuclidean":
        return _sq_dist(C, C)
    if cost == "euclidean":
        return np.sqrt(_sq_dist(C, C))
    from .geometry import knn_geodesic

    kk = int(k) if k else 15
    return np.asarray(knn_geodesic(C, k=min(kk, C.shape[0] - 1), seed=seed), dtype=np.float64)


class _Profiles:
    """Cost from every cell to its side's anchors, computed block by block.

    ``sqeuclidean`` / ``euclidean``: exact. ``knn_geodesic``: the cell's Euclidean
    offset from its own centroid plus the centroid graph's geodesic from there,
    ``‖x_i − c_{l(i)}‖ + G(l(i), p)`` (a path through the cell's anchor).
    """

    def __init__(
        self,
        X: np.ndarray,
        labels: np.ndarray,
        cent: np.ndarray,
        cost: str,
        G: np.ndarray | None,
        scale: float,
    ) -> None:
        self.X, self.labels, self.cent, self.cost = X, labels, cent, cost
        self.G, self.scale = G, scale
        self.c2 = (cent * cent).sum(1)
        if cost == "knn_geodesic":
            diff = X - cent[labels]
            self.offset = np.sqrt((diff * diff).sum(1))

    def raw(self, sel: slice | np.ndarray) -> np.ndarray:
        if self.cost == "knn_geodesic":
            return self.offset[sel, None] + self.G[self.labels[sel]]
        A = self.X[sel]
        d = (A * A).sum(1)[:, None] + self.c2[None, :] - 2.0 * (A @ self.cent.T)
        d = np.maximum(d, 0.0)
        return d if self.cost == "sqeuclidean" else np.sqrt(d)

    bandwidth: float | None = None

    def block(self, sel: slice | np.ndarray) -> np.ndarray:
        v = self.raw(sel) / self.scale
        return v if self.bandwidth is None else np.exp(-v / self.bandwidth)


def _profile_stats(prof: _Profiles, w: np.ndarray, mass: np.ndarray) -> tuple[float, np.ndarray]:
    """Scale (mass-weighted mean cell-to-anchor cost: the 'mean' rule) and the
    cell-weighted mean profile (raw units)."""
    n = prof.X.shape[0]
    mean = np.zeros(prof.cent.shape[0])
    for s in range(0, n, _BLOCK):
        e = min(n, s + _BLOCK)
        mean += w[s:e] @ prof.raw(slice(s, e))
    mean /= w.sum()
    val = float(mean @ mass) / mass.sum()
    return (val if val > 0 and np.isfinite(val) else 1.0), mean


def _weighted_mean_block(prof: _Profiles, w: np.ndarray) -> np.ndarray:
    """Cell-weighted mean of the (transformed) profiles."""
    n = prof.X.shape[0]
    mean = np.zeros(prof.cent.shape[0])
    for s in range(0, n, _BLOCK):
        e = min(n, s + _BLOCK)
        mean += w[s:e] @ prof.block(slice(s, e))
    return mean / w.sum()


# --------------------------------------------------------------------------- coarse solve


def _coarse_fused(
    M: Any,
    labels_x: Any,
    labels_y: Any,
    lx: np.ndarray,
    ly: np.ndarray,
    wx: np.ndarray,
    wy: np.ndarray,
    Kx: int,
    Ky: int,
) -> np.ndarray | None:
    """Cluster-level feature cost: from cell labels (majority per cluster) or from M."""
    if labels_x is not None or labels_y is not None:
        if labels_x is None or labels_y is None:
            raise SparsecellError(
                "fused quantized GW needs labels on both sides", "pass labels_x and labels_y"
            )
        from .geometry import label_cost

        maj_x = _majority(labels_x, lx, wx, Kx, "labels_x")
        maj_y = _majority(labels_y, ly, wy, Ky, "labels_y")
        return np.asarray(label_cost(maj_x, maj_y), dtype=np.float64)
    if M is None:
        return None
    if sp.issparse(M):
        M = M.tocsr()
    else:
        M = np.asarray(M, dtype=np.float64)
    if M.shape != (lx.size, ly.size):
        raise SparsecellError(
            f"M has shape {M.shape}, expected {(lx.size, ly.size)}", "pass an n × m cost"
        )
    Ax = sp.csr_matrix((wx, (lx, np.arange(lx.size))), shape=(Kx, lx.size))
    Ay = sp.csr_matrix((wy, (np.arange(ly.size), ly)), shape=(ly.size, Ky))
    Mc = np.asarray((Ax @ M) @ Ay if sp.issparse(M) else Ax @ (M @ Ay), dtype=np.float64)
    mx = np.asarray(Ax.sum(1)).ravel()
    my = np.asarray(Ay.sum(0)).ravel()
    Mc = Mc / np.outer(mx, my)
    if not np.all(np.isfinite(Mc)):
        raise SparsecellError("M holds NaN or inf", "check the feature cost")
    return Mc


def _majority(labels: Any, lab: np.ndarray, w: np.ndarray, K: int, name: str) -> np.ndarray:
    vals = np.asarray(labels.to_numpy() if hasattr(labels, "to_numpy") else labels, dtype=object)
    if vals.shape[0] != lab.size:
        raise SparsecellError(
            f"{name} has {vals.shape[0]} entries for {lab.size} cells", "one label per cell"
        )
    cats, codes = np.unique(vals.astype(str), return_inverse=True)
    counts = np.zeros((K, cats.size))
    np.add.at(counts, (lab, codes), w)
    return cats[np.argmax(counts, axis=1)]


# --------------------------------------------------------------------------- refinement


def _anchor_support(P: np.ndarray, delta: float, max_partners: int | None = None) -> np.ndarray:
    """Mask of the largest entries of each row of ``P`` holding ≥ 1 − δ of its mass,
    plus every column's largest entry (so every anchor on both sides keeps a partner)."""
    if delta <= 0 and max_partners is None:
        return P > 0
    order = np.argsort(-P, axis=1, kind="stable")
    srt = np.take_along_axis(P, order, axis=1)
    cum = np.cumsum(srt, axis=1)
    need = (1.0 - delta) * P.sum(1, keepdims=True)
    keep_sorted = (cum - srt) < need  # entries before the running sum crosses the bar
    keep_sorted[:, 0] = True
    if max_partners is not None:
        keep_sorted[:, int(max_partners) :] = False
    mask = np.zeros_like(P, dtype=bool)
    np.put_along_axis(mask, order, keep_sorted, axis=1)
    mask[np.argmax(P, axis=0), np.arange(P.shape[1])] = True
    return mask & (P > 0)


def _scale_to_marginals(
    Q: np.ndarray, r: np.ndarray, c: np.ndarray, n_iter: int = 5000, tol: float = 1e-13
) -> tuple[np.ndarray, bool, int, float]:
    """Sinkhorn scaling of a non-negative matrix (fixed zero pattern) to marginals r, c."""
    u = np.ones(Q.shape[0])
    v = np.ones(Q.shape[1])
    tot = max(float(r.sum()), 1e-300)
    err = math.inf
    it = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        for it in range(1, n_iter + 1):
            qv = Q @ v
            u = np.where(qv > 0, r / qv, 0.0)
            qu = Q.T @ u
            v = np.where(qu > 0, c / qu, 0.0)
            if it % 10 == 0 or it == n_iter:
                rows = u * (Q @ v)
                err = float(np.abs(rows - r).sum() / tot)
                if err < tol:
                    break
    return (u[:, None] * Q) * v[None, :], err < tol, it, err


def _northwest_corner(r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A transport plan between non-negative vectors of equal sums with at most
    ``len(r) + len(c) − 1`` entries (north-west corner rule), as (rows, cols, values)."""
    ri, ci = np.flatnonzero(r > 0), np.flatnonzero(c > 0)
    rr, cc = r[ri].copy(), c[ci].copy()
    cc *= rr.sum() / cc.sum() if cc.sum() > 0 else 0.0
    out_r, out_c, out_v = [], [], []
    i = j = 0
    while i < rr.size and j < cc.size:
        v = min(rr[i], cc[j])
        out_r.append(ri[i])
        out_c.append(ci[j])
        out_v.append(v)
        rr[i] -= v
        cc[j] -= v
        if rr[i] <= cc[j]:
            i += 1
        else:
            j += 1
    return np.asarray(out_r, dtype=np.int64), np.asarray(out_c, dtype=np.int64), np.asarray(out_v)


def _sparsify_anchor_coupling(
    P: np.ndarray, r: np.ndarray, c: np.ndarray, delta: float, max_partners: int | None = None
) -> tuple[sp.csr_matrix, float, dict[str, Any]]:
    """Keep, per image anchor, the RNA anchors holding ≥ 1 − δ of its mass (and every
    column's largest entry), rescale ``P`` on that support towards the marginals
    ``(r, c)`` (Sinkhorn), then make them exact: shrink over-full rows/columns and route
    the small residual by the north-west corner rule (at most ``K_x + K_y − 1`` extra
    pairs). If the support is far from feasible (residual > 1e-3), δ shrinks."""
    info: dict[str, Any] = {}
    d_used = delta
    Q = P
    for d in (delta, delta / 10, 0.0):
        mask = _anchor_support(P, d, max_partners)
        Q, ok, it, err = _scale_to_marginals(np.where(mask, P, 0.0), r, c, n_iter=2000, tol=1e-10)
        info = {"iterations": it, "anchor_scaling_error": err, "pairs": int(mask.sum())}
        d_used = d
        if err < 1e-3:
            break
    if not np.all(np.isfinite(Q)):
        raise SparsecellError(
            "the coarse coupling cannot be rescaled to the cell marginals",
            "raise epsilon or check the marginals a, b",
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        rs = Q.sum(1)
        Q = Q * np.where(rs > r, r / rs, 1.0)[:, None]
        cs = Q.sum(0)
        Q = Q * np.where(cs > c, c / cs, 1.0)[None, :]
    er = np.maximum(r - Q.sum(1), 0.0)
    ec = np.maximum(c - Q.sum(0), 0.0)
    Qs = sp.coo_matrix(Q)
    if er.sum() > 0 and ec.sum() > 0:
        i, j, v = _northwest_corner(er, ec)
        Qs = sp.coo_matrix(
            (
                np.concatenate([Qs.data, v]),
                (np.concatenate([Qs.row, i]), np.concatenate([Qs.col, j])),
            ),
            shape=P.shape,
        )
    Qs = Qs.tocsr()
    Qs.sum_duplicates()
    Qs.eliminate_zeros()
    info["pairs"] = int(Qs.nnz)
    return Qs, d_used, info


def _round_to_marginals(T: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Altschuler, Weed & Rigollet (2017) rounding: a plan with exactly the marginals
    ``r``, ``c`` (equal totals), close to ``T`` in L1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rs = T.sum(1)
        T = T * np.where(rs > r, r / rs, 1.0)[:, None]
        cs = T.sum(0)
        T = T * np.where(cs > c, c / cs, 1.0)[None, :]
    er = r - T.sum(1)
    ec = c - T.sum(0)
    s = er.sum()
    if s > 0:
        T = T + np.outer(er, ec) / s
    return T


def _block_sinkhorn(
    C: np.ndarray, r: np.ndarray, c: np.ndarray, eps: float, n_iter: int
) -> np.ndarray:
    """Log-domain entropic OT on a small dense block, rounded to exact marginals."""
    from scipy.special import logsumexp

    mean = float(C.mean())
    logK = -C / (eps * (mean if mean > 0 else 1.0))
    with np.errstate(divide="ignore"):
        logr, logc = np.log(r), np.log(c)
    f = np.zeros(C.shape[0])
    g = np.zeros(C.shape[1])
    tot = float(r.sum())
    for it in range(n_iter):
        f = logr - logsumexp(logK + g[None, :], axis=1)
        g = logc - logsumexp(logK + f[:, None], axis=0)
        if it % 10 == 9:
            rows = np.exp(logK + f[:, None] + g[None, :]).sum(1)
            if np.abs(rows - r).sum() < 1e-9 * tot:
                break
    T = np.exp(logK + f[:, None] + g[None, :])
    T[~np.isfinite(T)] = 0.0
    return _round_to_marginals(T, r, c)


def _cell_plans(
    Ps: sp.csr_matrix,
    lx: np.ndarray,
    ly: np.ndarray,
    rx: np.ndarray,
    cy: np.ndarray,
    F: np.ndarray | None,
    G: np.ndarray | None,
    eps: float,
    n_iter: int,
) -> sp.csr_matrix:
    """Cell-level coupling: for each image anchor ``p``, its cells against the cells of its
    kept RNA anchors ``q``, row marginal ``rx`` (the cells' share of ``Σ_q P_pq``), column
    marginal ``P_pq · cy_y / cy(q)``. Uniform within the block (``F is None``: the
    cluster-level coupling) or an entropic plan on the profile features. The union of the
    blocks has exactly the marginals ``rx``, ``cy``."""
    n, m = lx.size, ly.size
    Kx, Ky = Ps.shape
    ox = np.argsort(lx, kind="stable")
    sx = np.searchsorted(lx[ox], np.arange(Kx + 1))
    oy = np.argsort(ly, kind="stable")
    sy = np.searchsorted(ly[oy], np.arange(Ky + 1))
    cq = np.bincount(ly, weights=cy, minlength=Ky)
    rows_l, cols_l, vals_l = [], [], []
    for p in range(Kx):
        lo, hi = Ps.indptr[p], Ps.indptr[p + 1]
        if hi == lo:
            continue
        qs, pw = Ps.indices[lo:hi], Ps.data[lo:hi]
        xi = ox[sx[p] : sx[p + 1]]
        yj = np.concatenate([oy[sy[q] : sy[q + 1]] for q in qs])
        share = np.concatenate(
            [
                np.full(sy[q + 1] - sy[q], w / cq[q] if cq[q] > 0 else 0.0)
                for q, w in zip(qs, pw, strict=True)
            ]
        )
        cvec = cy[yj] * share
        tot = float(cvec.sum())
        rsum = float(rx[xi].sum())
        if tot <= 0 or rsum <= 0:
            continue
        rvec = rx[xi] * (tot / rsum)
        if F is None:
            B = np.outer(rvec, cvec) / tot
        else:
            d = (F[xi] ** 2).sum(1)[:, None] + (G[yj] ** 2).sum(1)[None, :] - 2.0 * F[xi] @ G[yj].T
            B = _block_sinkhorn(np.maximum(d, 0.0), rvec, cvec, eps, n_iter)
        nz = B > 0
        ii, jj = np.nonzero(nz)
        rows_l.append(xi[ii])
        cols_l.append(yj[jj])
        vals_l.append(B[nz])
    T = sp.csr_matrix(
        (np.concatenate(vals_l), (np.concatenate(rows_l), np.concatenate(cols_l))), shape=(n, m)
    )
    T.sum_duplicates()
    return T


# --------------------------------------------------------------------------- objective


def _mc_objective(
    T: sp.csr_matrix,
    X: np.ndarray,
    Y: np.ndarray,
    cost: str,
    sx: float,
    sy: float,
    n_samples: int,
    seed: int,
) -> tuple[float, float]:
    """Monte-Carlo estimate (and its standard error) of Σ (Cx_ik − Cy_jl)² T_ij T_kl."""
    rng = np.random.default_rng(seed)
    coo = T.tocoo()
    p = coo.data / coo.data.sum()
    mass = float(coo.data.sum())
    e1 = rng.choice(p.size, size=n_samples, p=p)
    e2 = rng.choice(p.size, size=n_samples, p=p)
    i, j, kk, ll = coo.row[e1], coo.col[e1], coo.row[e2], coo.col[e2]
    dx = ((X[i] - X[kk]) ** 2).sum(1)
    dy = ((Y[j] - Y[ll]) ** 2).sum(1)
    if cost == "euclidean":
        dx, dy = np.sqrt(dx), np.sqrt(dy)
    v = (dx / sx - dy / sy) ** 2
    return float(v.mean()) * mass**2, float(v.std() / math.sqrt(n_samples)) * mass**2


# --------------------------------------------------------------------------- entry point


def default_n_clusters(n: int) -> int:
    """Auto ``K``: ``max(min(n // 5, 2000), min(n // 20, 5000))``, at least 64, at most ``n``.

    Five cells per anchor up to 10k cells, then 2,000 anchors, then twenty cells per anchor
    from 40k to 100k cells (5,000 anchors): the cell-level blocks (``n · max_partners · m/K``
    entries) stay linear in ``n`` up to 100k while the dense anchor problem (``K²``) stays
    small. Measured at 100k × 100k (benchmarks/RESULTS.md): K = 5,000 peaks at 6.9 GiB with
    FOSCTTM 0.316, K = 2,000 at 11.8 GiB with 0.346; the larger coarse problem costs time
    (pass ``n_clusters=2000`` for the faster, heavier variant).
    """
    return int(min(n, max(64, min(n // 5, 2000), min(n // 20, 5000))))


def solve_quantized(
    x: Any,
    y: Any,
    a: Any = None,
    b: Any = None,
    *,
    epsilon: float = 5e-3,
    problem: str = "balanced",
    tau: float | None = None,
    M: Any = None,
    alpha: float = 0.5,
    labels_x: Any = None,
    labels_y: Any = None,
    n_clusters: int | tuple[int, int] | None = None,
    k: int = 10,
    n_components: int = 64,
    refine: bool = True,
    refine_epsilon: float = 0.05,
    refine_iter: int = 300,
    pair_mass_tol: float = 1e-3,
    max_partners: int | None = 32,
    objective_samples: int = 200_000,
    return_coarse: bool = False,
    profile_kernel: float | None = None,
    backend: str = "torch",
    device: Any = None,
    dtype: Any = None,
    max_iter: int = 100,
    tol: float = 1e-7,
    seed: int = 0,
    progress: bool = False,
    **kw: Any,
) -> Any:
    """Entropic GW between two large point clouds with memory linear in the cell counts.

    Parameters
    ----------
    x, y
        ``Geometry`` objects with ``points`` (cost ``"sqeuclidean"``, ``"euclidean"`` or
        ``"knn_geodesic"``) or bare ``n × d`` arrays (squared Euclidean).
    a, b
        Cell marginals (default uniform).
    epsilon
        Entropic regularisation of the coarse problem, on mean-scaled anchor costs.
    problem, tau, alpha
        Passed to the coarse solve (``"balanced"``, ``"unbalanced"``, ``"semirelaxed"``,
        ``"fused"``). Fused needs ``labels_x``/``labels_y`` (each cluster takes its
        mass-weighted majority label; cost ``label_cost``) or an ``n × m`` ``M``
        (averaged over cluster pairs; only where an ``n × m`` matrix fits in memory).
    labels_x, labels_y
        Cell labels for the fused problem.
    n_clusters
        Anchors per side ``K`` (or ``(K_x, K_y)``); default :func:`default_n_clusters`.
    k
        Kept for compatibility (the former kNN refinement's candidates per cell); unused.
    n_components
        PCA dimensions of the anchor profiles (the refinement's cell features).
    refine
        ``True`` (default): within each image anchor's block, an entropic plan on the
        anchor-profile features; ``False``: the cluster-level coupling (cells spread in
        proportion to their weights over their cluster pair). Both have exact marginals.
    refine_epsilon
        Entropy of the within-block plans, relative to the block's mean cost.
    refine_iter
        Maximum Sinkhorn iterations per block (then rounded to exact marginals).
    pair_mass_tol
        δ: each image anchor keeps the RNA anchors holding ≥ 1 − δ of its coarse mass.
    max_partners
        At most this many RNA anchors per image anchor (the largest ``P_pq``; ``None``: no
        cap). Bounds memory and time at ``O(n · max_partners · m / K_y)``; the coupling is
        rescaled to exact marginals on the kept pairs.
    profile_kernel
        Experimental: use Gaussian-kernel anchor profiles ``exp(−d / h)`` (``h`` = this
        factor × the mean cost to the nearest anchor) instead of the raw costs; more
        local, but not better on average in our measurements (see ``docs/gwmap.md``).
    objective_samples
        Monte-Carlo samples for the cell-level GW objective (Euclidean costs; for
        kNN-geodesic costs the coarse objective is reported, see ``params``).
    return_coarse
        Also put the anchor coupling and the cells' cluster labels in
        ``params["coarse"]`` (``coupling``, ``labels_x``, ``labels_y``; ``K_x × K_y``).
    backend, device, dtype, max_iter, tol
        Passed to the coarse dense solve.
    seed
        Seeds k-means, the PCA subsample and the objective estimate.
    progress
        Show progress bars.

    Returns
    -------
    GWSolution
        ``coupling`` is an ``n × m`` ``scipy.sparse.csr_matrix``; ``method="quantized"``;
        ``trace``/``converged``/``n_iter``/``epsilon`` are the coarse solve's; ``params``
        holds ``K``, ``k``, per-phase timings and the refinement's diagnostics.
    """
    from .solve import GWSolution, solve

    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    warnings_: list[str] = []

    X, cost_x, kx, scale_x = _points(x, "image (x)")
    Y, cost_y, ky, scale_y = _points(y, "RNA (y)")
    if cost_x != cost_y:
        raise SparsecellError(
            f"the two geometries use different costs ({cost_x} vs {cost_y})",
            "build both with the same cost",
        )
    cost = cost_x
    n, m = X.shape[0], Y.shape[0]
    wa = cell_weights(a, n, "a")
    wb = cell_weights(b, m, "b")
    if problem == "balanced" and not math.isclose(wa.sum(), wb.sum(), rel_tol=1e-6):
        raise SparsecellError(
            f"balanced GW needs equal total masses (a sums to {wa.sum():.6g}, b to {wb.sum():.6g})",
            "normalise a and b, or use problem='unbalanced'",
        )
    if n_clusters is None:
        Kx, Ky = default_n_clusters(n), default_n_clusters(m)
    elif isinstance(n_clusters, tuple | list):
        Kx, Ky = (int(v) for v in n_clusters)
    else:
        Kx = Ky = int(n_clusters)
    for K, nn, side in ((Kx, n, "image (x)"), (Ky, m, "RNA (y)")):
        if K < 2 or K > nn:
            raise SparsecellError(
                f"n_clusters={K} is out of range for the {side} side's {nn} cells",
                f"choose 2 <= n_clusters <= {nn}",
            )
    if not isinstance(k, int | np.integer) or not 1 <= k <= m:
        raise SparsecellError(f"k={k!r} is out of range", f"choose 1 <= k <= {m}")
    if not (np.isfinite(refine_epsilon) and refine_epsilon > 0):
        raise SparsecellError(f"refine_epsilon={refine_epsilon!r}", "pass a positive float")
    if not (np.isfinite(pair_mass_tol) and 0.0 <= pair_mass_tol < 1.0):
        raise SparsecellError(f"pair_mass_tol={pair_mass_tol!r}", "pass 0 <= pair_mass_tol < 1")
    if max_partners is not None and (
        not isinstance(max_partners, int | np.integer) or max_partners < 1
    ):
        raise SparsecellError(f"max_partners={max_partners!r}", "pass a positive int or None")
    if not isinstance(refine_iter, int | np.integer) or refine_iter < 1:
        raise SparsecellError(f"refine_iter={refine_iter!r}", "pass a positive integer")

    # 1. quantise --------------------------------------------------------------------
    t0 = time.perf_counter()
    lx, cx, mx = _quantise(X, wa, Kx, seed)
    ly, cy, my = _quantise(Y, wb, Ky, seed + 1)
    timings["quantise_s"] = time.perf_counter() - t0
    if progress:
        log.info("quantized GW: %d / %d anchors", cx.shape[0], cy.shape[0])

    # 2. coarse GW ------------------------------------------------------------------
    t0 = time.perf_counter()
    Gx_raw = _centroid_cost(cx, cost, kx, seed)
    Gy_raw = _centroid_cost(cy, cost, ky, seed)
    sgx = float(mx @ Gx_raw @ mx) / mx.sum() ** 2
    sgy = float(my @ Gy_raw @ my) / my.sum() ** 2
    if not (sgx > 0 and sgy > 0):
        raise SparsecellError(
            "all anchors coincide on one side (zero coarse cost)",
            "the points carry no geometry: check the inputs",
        )
    timings["coarse_cost_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    from .geometry import geometry

    gx = geometry(C=Gx_raw / sgx, cost="precomputed", scale=None)
    gy = geometry(C=Gy_raw / sgy, cost="precomputed", scale=None)
    Mc = None
    coarse_problem = problem
    if problem == "fused":
        Mc = _coarse_fused(M, labels_x, labels_y, lx, ly, wa, wb, cx.shape[0], cy.shape[0])
        if Mc is None:
            raise SparsecellError(
                "problem='fused' needs a feature cost", "pass labels_x/labels_y or M"
            )
    coarse = solve(
        gx,
        gy,
        mx,
        my,
        epsilon=epsilon,
        problem=coarse_problem,
        tau=tau,
        M=Mc,
        alpha=alpha,
        method="dense",
        backend=backend,
        device=device,
        dtype=dtype,
        max_iter=max_iter,
        tol=tol,
        seed=seed,
        progress=progress,
        **kw,
    )
    P = coarse.coupling
    P = np.asarray(P.toarray() if sp.issparse(P) else P, dtype=np.float64)
    if not np.all(np.isfinite(P)):
        raise SparsecellError(
            "the coarse GW coupling holds NaN or inf", "raise epsilon or use dtype=float64"
        )
    warnings_.extend(coarse.warnings)
    timings["coarse_solve_s"] = time.perf_counter() - t0

    # 3. anchor profiles -> shared space ----------------------------------------------
    t0 = time.perf_counter()
    rp = P.sum(1)  # image-anchor mass under P (= mx when balanced)
    cq = P.sum(0)
    if not refine:
        F = Gm = None
        r, explained = 0, float("nan")
        prof_x = prof_y = None
    else:
        keep = rp > 1e-12 * max(rp.max(), 1e-300)
        if keep.sum() < 2:
            raise SparsecellError(
                "the coarse coupling moved (almost) no mass", "raise tau or epsilon"
            )
        prof_x = _Profiles(X, lx, cx, cost, Gx_raw if cost == "knn_geodesic" else None, 1.0)
        prof_y = _Profiles(Y, ly, cy, cost, Gy_raw if cost == "knn_geodesic" else None, 1.0)
        prof_x.scale, mean_x = _profile_stats(prof_x, wa, mx)
        prof_y.scale, mean_y = _profile_stats(prof_y, wb, my)
        mean_x, mean_y = mean_x / prof_x.scale, mean_y / prof_y.scale
        if profile_kernel is not None:
            for prof in (prof_x, prof_y):
                sub = _rows(prof, np.arange(0, prof.X.shape[0], max(1, prof.X.shape[0] // 2000)))
                prof.bandwidth = float(profile_kernel) * float(sub.min(1).mean() + 1e-12)
            mean_x = _weighted_mean_block(prof_x, wa)
            mean_y = _weighted_mean_block(prof_y, wb)
        sq = np.sqrt(rp[keep])
        Wx = np.zeros((cx.shape[0], int(keep.sum())))  # d_i -> sqrt(rp) ⊙ d_i (kept anchors)
        Wx[np.flatnonzero(keep), np.arange(int(keep.sum()))] = sq
        Wy = P[keep].T / sq[None, :]  # e_j -> (e_j P^T) / sqrt(rp)

        rng = np.random.default_rng(seed)
        ns_x = min(n, 10_000)
        ns_y = min(m, 10_000)
        sx_idx = np.sort(rng.choice(n, ns_x, replace=False))
        sy_idx = np.sort(rng.choice(m, ns_y, replace=False))
        Fs = _rows(prof_x, sx_idx) @ Wx
        Gs = _rows(prof_y, sy_idx) @ Wy
        # each side centred on its own mean profile: the barycentric side's profiles carry a
        # per-anchor offset (the spread of the anchor's image under P) that would otherwise
        # favour some RNA cells for every image cell (hubs)
        shift_x = mean_x @ Wx
        shift_y = mean_y @ Wy
        S = np.vstack([Fs - shift_x, Gs - shift_y])
        r = int(min(n_components, S.shape[1], S.shape[0] - 1))
        from sklearn.decomposition import PCA

        pca = PCA(n_components=r, svd_solver="randomized", random_state=seed).fit(S)
        V = pca.components_.T  # kept × r
        explained = float(pca.explained_variance_ratio_.sum())
        del S, Fs, Gs
        tdt = torch.float32 if dtype in (None, "float32", torch.float32) else torch.float64
        F = _project(prof_x, Wx @ V, shift_x @ V, tdt)
        Gm = _project(prof_y, Wy @ V, shift_y @ V, tdt)
    timings["profiles_s"] = time.perf_counter() - t0

    # 4. sparse anchor support, then cell-level plans per image anchor ---------------------
    t0 = time.perf_counter()
    if problem == "balanced":
        r_t, c_t = mx, my  # exact cell marginals a, b
    else:
        r_t, c_t = rp, cq  # the relaxed problems: the coarse coupling's own marginals
    Ps, delta_used, psk = _sparsify_anchor_coupling(P, r_t, c_t, float(pair_mass_tol), max_partners)
    timings["anchor_support_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rx = wa * (r_t / mx)[lx]
    cy_t = wb * (c_t / my)[ly]
    if refine:
        Fn, Gn = F.numpy().astype(np.float64), Gm.numpy().astype(np.float64)
    else:
        Fn = Gn = None
    del F, Gm
    T = _cell_plans(Ps, lx, ly, rx, cy_t, Fn, Gn, float(refine_epsilon), int(refine_iter))
    data = T.data
    if not np.all(np.isfinite(data)):
        raise SparsecellError("the refined coupling holds NaN", "raise refine_epsilon")
    colsum = np.asarray(T.sum(0)).ravel()
    rowsum = np.asarray(T.sum(1)).ravel()
    col_err = float(np.abs(colsum - cy_t).sum() / max(cy_t.sum(), 1e-300))
    row_err = float(np.abs(rowsum - rx).sum() / max(rx.sum(), 1e-300))
    uncovered = float((colsum == 0).mean())
    sk = {"iterations": psk["iterations"]}
    timings["refine_s"] = time.perf_counter() - t0
    if max(col_err, row_err) > 1e-6:
        msg = (
            f"quantized GW: marginal residual row {row_err:.2e}, column {col_err:.2e} "
            "(relative to the mass); raise refine_iter"
        )
        log.warning(msg)
        warnings_.append(msg)

    # 5. objective ---------------------------------------------------------------------
    t0 = time.perf_counter()
    ent = float(-(T.data * np.log(T.data)).sum())
    if cost in ("sqeuclidean", "euclidean") and objective_samples > 0:
        obj, obj_se = _mc_objective(T, X, Y, cost, scale_x, scale_y, int(objective_samples), seed)
        obj_kind = "cell-level Monte-Carlo estimate"
    else:
        obj, obj_se = float(coarse.objective), float("nan")
        obj_kind = "coarse (anchor-level) objective"
    timings["objective_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_all

    params = {
        "n_clusters": (int(cx.shape[0]), int(cy.shape[0])),
        "k": int(k),
        "n_components": r,
        "pca_explained": explained,
        "refine_epsilon": float(refine_epsilon),
        "refine": bool(refine),
        "pair_mass_tol": float(delta_used),
        "anchor_pairs": int(Ps.nnz),
        "max_partners": max_partners,
        "anchor_scaling_iterations": sk["iterations"],
        "refine_row_error": row_err,
        "refine_column_error": col_err,
        "uncovered_columns": uncovered,
        "cost": cost,
        "problem": problem,
        "coarse_epsilon": float(coarse.epsilon),
        "coarse_objective": float(coarse.objective),
        "coarse_params": coarse.params,
        "objective_kind": obj_kind,
        "objective_stderr": obj_se,
        "profile_scales": (prof_x.scale, prof_y.scale) if refine else None,
        "anchor_cost_scales": (sgx, sgy),
        "timings": timings,
        "seed": seed,
    }
    if return_coarse:
        params["coarse"] = {"coupling": P, "labels_x": lx, "labels_y": ly}
    return GWSolution(
        coupling=T,
        objective=obj,
        entropy=ent,
        trace=list(coarse.trace),
        converged=bool(coarse.converged),
        n_iter=int(coarse.n_iter),
        epsilon=float(coarse.epsilon),
        method="quantized",
        backend=coarse.backend,
        params=params,
        warnings=warnings_,
    )


def _rows(prof: _Profiles, idx: np.ndarray) -> np.ndarray:
    """Profiles of selected cells, block by block."""
    return np.vstack([prof.block(idx[s : s + _BLOCK]) for s in range(0, idx.size, _BLOCK)])


def _project(prof: _Profiles, W: np.ndarray, shift: np.ndarray, dt: torch.dtype) -> torch.Tensor:
    n = prof.X.shape[0]
    out = torch.empty((n, W.shape[1]), dtype=dt)
    for s in range(0, n, _BLOCK):
        e = min(n, s + _BLOCK)
        out[s:e] = torch.from_numpy(prof.block(slice(s, e)) @ W - shift)
    return out


__all__ = ["default_n_clusters", "solve_quantized"]
