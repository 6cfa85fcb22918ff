"""Exact k-nearest neighbours for the lab metrics, fast on one CPU.

Brute-force search is one ``n × n × p`` matrix product plus a selection per row; at
100k samples × 512 units that product is 10 TFLOP. Two paths keep it exact and cheap:

* **Dense input: low-precision screening, exact re-ranking.** The product runs in
  ``bfloat16`` on CPUs with native bf16 dot products (AVX512-BF16 / AMX; about 3.7× the
  float32 rate here), otherwise in ``float32``. Every screened squared distance comes with
  a rigorous rounding bound ``E_ij = κ ‖x_i‖‖x_j‖ + τ ‖x_j‖²`` (inputs rounded to the low
  precision, float32 accumulation over ``p`` terms, the output rounded; data centred first
  so the norms are small; a factor 2 of safety). Per row, the ``k`` smallest screened
  distances give an upper bound ``U_i`` of the true ``k``-th distance; every ``j`` whose
  lower bound ``D̃_ij − E_ij`` exceeds ``U_i`` is provably not a neighbour. The survivors
  (typically a few times ``k``) are re-ranked by their float64 distances computed as
  direct differences ``Σ (x_i − x_j)²``, which are more accurate than the
  ``‖x‖² + ‖y‖² − 2 x·y`` expansion scikit-learn uses. A block whose survivors exceed 2% of
  its pairs (degenerate geometry, e.g. many duplicates) is screened again one precision
  higher (bfloat16 → float32 → float64), so the result stays exact and the cost bounded.
* **Sparse input (CSR): the sparse Gram block, exact in float64.** ``x_i · x_j`` is
  accumulated over shared non-zero columns only (a numba kernel over the CSR rows and the
  CSC columns), so the work is ``Σ_c nnz(c)²`` rather than ``n² p``: ≈ 0.6 n² multiply-adds
  for SAE-like latents (31 of 8192 active) instead of 8192 n². Distances use the float64
  expansion, as scikit-learn does for sparse input. A sparse matrix dense enough that the
  product is cheaper densified goes through the dense path.

**On a torch device** (``dev``, a GPU): the dense path, with sparse input densified on
the device, screening in float32 with TF32 off (CUDA tensor cores do not promise the
IEEE float32 accumulation the bound assumes, so bfloat16 screening is CPU-only) and the
exact float64 re-ranking there too; the same code runs on ``torch.device("cpu")`` in the
tests.

Ties (equal distances) are broken by the smaller sample index; a sample is never its own
neighbour, even when it has exact duplicates. Metrics other than ``euclidean``,
``sqeuclidean`` and ``cosine`` (rows normalised, then euclidean) use
:class:`sklearn.neighbors.NearestNeighbors`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._errors import SparsecellError
from .._sparse import canonical_csr
from . import _accel

#: Metrics searched by the exact fast path (``cosine`` through normalised rows).
FAST_METRICS = ("euclidean", "sqeuclidean", "cosine")

#: Screening precisions, from the cheapest: (torch dtype name, unit roundoff of the inputs,
#: unit roundoff of the product's output, unit roundoff of the accumulation).
_PRECISIONS: dict[str, tuple[str, float, float, float]] = {
    "bfloat16": ("bfloat16", 2.0**-8, 2.0**-8, 2.0**-24),
    "float32": ("float32", 2.0**-24, 2.0**-24, 2.0**-24),
    "float64": ("float64", 2.0**-53, 2.0**-53, 2.0**-53),
}
_NEXT = {"bfloat16": "float32", "float32": "float64"}

#: Survivors of the screening above this fraction of a block's pairs send the block to the
#: next precision.
_MAX_SURVIVOR_FRACTION = 0.02

#: Screened bounds kept per row before falling back to a full comparison (at least 4k).
_SCREEN_WIDTH = 32

#: At most this many dimensions: the product is cheap, screen in float64 directly.
_FLOAT64_MAX_DIM = 32

#: Relative cost of one sparse multiply-add (scattered, float64) against one dense bf16
#: multiply-add in a blocked GEMM, measured on the 2-core development CPU (≈ 1 ns vs 6 ps).
_SPARSE_COST = 160.0


@contextlib.contextmanager
def _numba_threads_like_torch() -> Iterator[None]:
    """Run numba's parallel loops on no more threads than torch uses (restored after)."""
    import numba
    import torch

    saved = numba.get_num_threads()
    numba.set_num_threads(max(1, min(saved, torch.get_num_threads())))
    try:
        yield
    finally:
        numba.set_num_threads(saved)


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU has native bfloat16 dot products (Linux ``/proc/cpuinfo`` flags)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line.split()
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return False


def knn_indices(
    X: np.ndarray | sp.csr_matrix,
    k: int,
    metric: str = "euclidean",
    *,
    precision: str = "auto",
    block_elems: int = 1 << 26,
    dev: Any = None,
) -> np.ndarray:
    """Indices ``(n, k)`` of every sample's ``k`` nearest other samples, nearest first.

    Parameters
    ----------
    X
        ``(n, p)`` float64 samples (dense ndarray or CSR), as made by
        ``_stats.as_matrix``.
    k
        Number of neighbours (``1 ≤ k < n``; checked by the caller).
    metric
        ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"`` take the exact fast path; any
        other scikit-learn metric is passed to :class:`~sklearn.neighbors.NearestNeighbors`.
    precision
        Screening precision of the dense path: ``"auto"`` (bfloat16 where the CPU has
        native bf16, else float32; float64 up to 32 dimensions), ``"bfloat16"``,
        ``"float32"`` or ``"float64"``. Never changes the result, only the speed. On a
        CUDA device ``"auto"`` is float32 (float64 up to 32 dimensions), and bfloat16 is
        refused.
    block_elems
        Largest number of screened distances held at once (memory ≈ 10 bytes each).
    dev
        A torch device to search on (see :mod:`._accel`); ``None``: this CPU.

    Returns
    -------
    numpy.ndarray
        ``int64`` indices, row ``i`` sorted by distance from sample ``i``.
    """
    if metric not in FAST_METRICS:
        return _sklearn_knn(X, k, metric)
    if precision not in ("auto", *_PRECISIONS):
        raise SparsecellError(
            f"unknown kNN precision {precision!r}",
            "choose one of: auto, " + ", ".join(_PRECISIONS),
        )
    if metric == "cosine":
        unit = _unit_rows(X)
        if unit is None:  # a zero row has no direction: let scikit-learn define it
            return _sklearn_knn(X, k, metric)
        X = unit
    n, p = X.shape
    cuda = dev is not None and dev.type == "cuda"
    if cuda and precision == "bfloat16":
        raise SparsecellError(
            "bfloat16 kNN screening is CPU-only (CUDA tensor cores do not promise the float32 "
            "accumulation its exactness bound needs)",
            "pass precision='auto' or 'float32' on a GPU",
        )
    if sp.issparse(X) and dev is None:
        counts = np.bincount(X.indices, minlength=p).astype(np.float64)
        if _SPARSE_COST * float(counts @ counts) < float(n) * n * p or n * p > 2**31:
            return _sparse_knn(X, k, block_elems)
        X = X.toarray()
    if precision == "auto":
        if p <= _FLOAT64_MAX_DIM:
            precision = "float64"
        else:
            precision = "bfloat16" if native_bf16() and not cuda else "float32"
    return _dense_knn(X, k, precision, block_elems, dev)


def _sklearn_knn(X: Any, k: int, metric: str) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    try:
        nn = NearestNeighbors(n_neighbors=k, metric=metric).fit(X)
    except ValueError as e:
        raise SparsecellError(
            f"kNN metric {metric!r} failed: {e}", "pass metric='euclidean'"
        ) from None
    return nn.kneighbors(return_distance=False)


def _unit_rows(X: np.ndarray | sp.csr_matrix) -> np.ndarray | sp.csr_matrix | None:
    """Rows scaled to unit norm (euclidean order = cosine order), or None if a row is 0."""
    if sp.issparse(X):
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        if np.any(norms == 0):
            return None
        return sp.csr_matrix(sp.diags(1.0 / norms) @ X)
    norms = np.linalg.norm(X, axis=1)
    if np.any(norms == 0):
        return None
    return X / norms[:, None]


# --------------------------------------------------------------------------- selection


def _select(
    rows: np.ndarray, cols: np.ndarray, dist: np.ndarray, n_rows: int, k: int
) -> np.ndarray:
    """Per row, the ``k`` candidates of smallest ``dist`` (ties: smaller column first).

    ``rows`` are block-local row numbers; every row has at least ``k`` candidates.
    """
    order = np.lexsort((cols, dist, rows))
    starts = np.searchsorted(rows[order], np.arange(n_rows))
    return cols[order[starts[:, None] + np.arange(k)[None, :]]]


# --------------------------------------------------------------------------- dense path


def _dense_knn(
    X: np.ndarray | sp.csr_matrix, k: int, precision: str, block_elems: int, dev: Any = None
) -> np.ndarray:
    import torch

    from .._device import exact_matmul

    dev = torch.device("cpu") if dev is None else dev
    n, p = X.shape
    itemsize = {"bfloat16": 2, "float32": 4, "float64": 8}[precision]
    # the samples and their centred copy (float64), the two augmented screening matrices
    _accel.check_fits(16.0 * n * p + 2.0 * itemsize * n * (p + 2), dev, "the kNN search")
    Xt = _accel.whole(X, dev, "the kNN search")
    Xc = Xt - Xt.mean(dim=0)
    nx = torch.einsum("ij,ij->i", Xc, Xc)
    scale = float(nx.max().sqrt())
    out = np.empty((n, k), dtype=np.int64)
    if scale == 0.0:  # every sample equal: all distances tie, smaller index first
        base = np.arange(k + 1)
        for i in range(n):
            out[i] = base[base != i][:k] if i <= k else base[:k]
        return out
    Xc /= scale  # unit largest norm: no overflow or underflow in low precision
    nx /= scale**2
    b = int(max(1, min(n, block_elems // n)))
    cache: dict[str, Any] = {"X": Xt, "Xc": Xc, "nx": nx, "nx_np": _accel.numpy(nx)}
    with exact_matmul() if dev.type == "cuda" else contextlib.nullcontext():
        for s0 in range(0, n, b):
            rows = np.arange(s0, min(n, s0 + b))
            prec = precision
            while True:
                got = _screen_block(scale, rows, k, prec, cache, torch)
                if got is not None or prec == "float64":
                    break
                prec = _NEXT[prec]
            assert got is not None  # float64 never gives up
            out[rows] = got
    return out


def _error_constants(precision: str, p: int) -> tuple[float, float]:
    """``(κ, τ)`` of the bound ``|L̃_ij − L_ij| ≤ (κ s_i s_j + τ n_j) / 2`` (see
    :func:`_screen_block`; ``s`` the row norms, ``n = s²``, all norms ≤ 1)."""
    _, u, u_out, u_acc = _PRECISIONS[precision]
    gamma = (p + 2) * u_acc / (1.0 - (p + 2) * u_acc)  # accumulation over p + 2 terms
    kappa = 0.0
    for _ in range(4):  # κ appears in its own bound through the folded column; converges
        e_s = (
            4.0 * u + 2.0 * u * u + 2.0 * u * kappa + (2.0 + kappa) * (gamma + u_out) * (1 + u) ** 2
        )
        kappa = 2.0 * e_s
    e_n = u + (gamma + u_out) * (1.0 + u) ** 2
    return kappa, 2.0 * e_n


def _screen_block(
    scale: float,
    rows: np.ndarray,
    k: int,
    precision: str,
    cache: dict[str, Any],
    torch: Any,
) -> np.ndarray | None:
    """The ``k`` nearest neighbours of a block of rows, or None when the screening in
    ``precision`` leaves more than :data:`_MAX_SURVIVOR_FRACTION` of the pairs.

    Within row ``i`` the squared distance to ``j`` orders like ``D_ij = n_j − 2 x_i·x_j``
    (centred, scaled points; ``n_j = ‖x_j‖²``; the row's constant ``n_i`` dropped). One
    product in ``precision`` gives the lower bound ``L_ij = (1 − τ) n_j − 2 x_i·x_j −
    κ s_i s_j = D_ij − E_ij`` directly, from the augmented rows ``[x_i, 1, √κ s_i]`` and
    ``[−2 x_j, (1 − τ) n_j, −√κ s_j]``; ``κ, τ`` are twice the worst rounding error of
    that product, so the computed ``L̃ ≤ L + E/2 < D``. The ``K'`` smallest ``L̃`` of the
    row are measured exactly (float64 differences of the input rows); the ``k``-th
    smallest of those, ``U_i``, bounds the ``k``-th nearest distance from above, and every
    ``j`` with ``L̃_ij > U_i`` is farther than it. When the ``K'``-th smallest ``L̃`` is
    itself ``≤ U_i`` (rare), the row is compared in full. ``cache`` holds the float64
    samples ``X``, the centred, scaled ``Xc``, their squared norms ``nx`` (tensors on one
    device) and ``nx_np`` (numpy), and the augmented rows of every precision used so far.
    """
    Xc, nx, nx_np, X = cache["Xc"], cache["nx"], cache["nx_np"], cache["X"]
    n, p = Xc.shape
    dev = Xc.device
    name = _PRECISIONS[precision][0]
    kappa, tau = _error_constants(precision, p)
    if precision not in cache:  # rounded once from float64 to the screening dtype
        dt = getattr(torch, name)
        itemsize = torch.empty(0, dtype=dt).element_size()
        _accel.check_fits(2.0 * itemsize * n * (p + 2), dev, f"{name} kNN screening")
        s = nx.sqrt()
        left = torch.empty((n, p + 2), dtype=dt, device=dev)
        left[:, :p] = Xc
        left[:, p] = 1.0
        left[:, p + 1] = np.sqrt(kappa) * s
        right = torch.empty((n, p + 2), dtype=dt, device=dev)
        right[:, :p] = Xc
        right[:, :p] *= -2.0  # exact in any binary floating-point format
        right[:, p] = (1.0 - tau) * nx
        right[:, p + 1] = -np.sqrt(kappa) * s
        cache[precision] = (left, right)
    left, right = cache[precision]
    b = len(rows)
    ridx = torch.from_numpy(rows).to(dev)
    L = torch.mm(left[ridx], right.T)
    L[torch.arange(b, device=dev), ridx] = torch.inf
    wide = min(n - 1, max(_SCREEN_WIDTH, 4 * k))
    vals, near = torch.topk(L, wide, dim=1, largest=False, sorted=True)
    near = near.cpu().numpy()
    d = _exact_rows(X, rows, near)
    order = np.lexsort((near, d))  # per row: by distance, then index
    best = np.take_along_axis(near, order[:, :k], axis=1)
    # U_i in the units of L (scaled, row constant dropped), plus a float64 rounding margin
    upper = np.take_along_axis(d, order[:, k - 1 : k], axis=1)[:, 0] / scale**2 - nx_np[rows]
    upper += 1e-12 * (np.abs(upper) + nx_np[rows] + 1.0)
    if wide == n - 1:  # the screened list already holds every other sample
        return best
    # compare in the product's dtype: round the bound up (one dtype step is < 2^-7 |U|)
    up = torch.from_numpy(upper + np.abs(upper) * 2.0**-7 + 1e-30).to(dev, L.dtype)[:, None]
    full = torch.nonzero(vals[:, -1:] <= up, as_tuple=True)[0]
    if len(full):
        r_loc, cols = torch.nonzero(L[full] <= up[full], as_tuple=True)
        if precision != "float64" and len(cols) > _MAX_SURVIVOR_FRACTION * b * n:
            return None
        r_loc = r_loc.cpu().numpy().astype(np.int64)
        cols = cols.cpu().numpy().astype(np.int64)
        fr = full.cpu().numpy()
        dd = _exact_rows(X, rows[fr][r_loc], cols[:, None])[:, 0]
        best[fr] = _select(r_loc, cols, dd, len(fr), k)
    return best


def _exact_rows(X: Any, rows: np.ndarray, cols: np.ndarray, chunk_elems: int = 1 << 20) -> Any:
    """``‖X[rows[i]] − X[cols[i, m]]‖²`` (float64 differences), a ``cols``-shaped array.

    ``X`` is a float64 tensor on any device. On the CPU, chunks of about ``chunk_elems``
    gathered values (8 MiB) stay in cache; ``index_select`` gathers rows an order of
    magnitude faster than advanced indexing here. On a GPU the chunks are 16× larger.
    The squares are summed in an order fixed by ``p`` alone (on a GPU by
    :func:`_sum_last`), so equal pairs give bit-identical distances in any call: exact ties
    are found by ``==``.
    """
    import torch

    dev = X.device
    if dev.type != "cpu":
        chunk_elems *= 16
    w, p = cols.shape[1], X.shape[1]
    out = np.empty(cols.shape)
    c = max(1, chunk_elems // max(1, w * p))
    for s in range(0, len(rows), c):
        cc = torch.from_numpy(np.ascontiguousarray(cols[s : s + c]).ravel()).to(dev)
        G = torch.index_select(X, 0, cc).view(-1, w, p)
        G -= torch.index_select(X, 0, torch.from_numpy(rows[s : s + c]).to(dev))[:, None]
        G *= G
        # torch's CPU reduction sums a row in the same order whatever the batch shape;
        # CUDA's does not, so there the order is fixed by folding (slower on a CPU: +20%)
        out[s : s + c] = (G.sum(-1) if dev.type == "cpu" else _sum_last(G)).cpu().numpy()
    return out


def _sum_last(G: Any) -> Any:
    """Sum over the last axis of the scratch tensor ``G`` (overwritten) by folding: the
    part beyond the largest power of two below the length is added onto the front, until
    one column is left. Every step is an elementwise add, so the order depends on the
    length only, never on the batch shape, memory alignment or device, unlike a library
    reduction (CUDA's picks its order from the launch shape)."""
    p = G.shape[-1]
    while p > 1:
        h = 1 << ((p - 1).bit_length() - 1)  # the largest power of two below p
        G[..., : p - h] += G[..., h:p]  # p − h ≤ h: the two ranges never overlap
        p = h
    return G[..., 0]


# --------------------------------------------------------------------------- sparse path


@functools.lru_cache(maxsize=1)
def _sparse_kernel() -> Any:
    import numba

    @numba.njit(parallel=True, cache=True, nogil=True)
    def knn_rows(
        indptr, indices, data, cptr, crow, cval, nx, r0, acc, best_d, out
    ):  # pragma: no cover
        # per-row work arrays come from the caller: allocations inside prange may be
        # hoisted out of the loop and shared between threads
        b, n = acc.shape
        k = out.shape[1]
        for bi in numba.prange(b):
            g = acc[bi]
            g[:] = 0.0
            i = r0 + bi
            for t in range(indptr[i], indptr[i + 1]):
                c = indices[t]
                v = data[t]
                for u in range(cptr[c], cptr[c + 1]):
                    g[crow[u]] += v * cval[u]
            # the k smallest (n_j − 2 g_j, j), kept sorted; j ascending, so an equal
            # distance never displaces an earlier (smaller) index
            bd = best_d[bi]
            bj = out[i]
            bd[:] = np.inf
            bj[:] = -1
            for j in range(n):
                d = nx[j] - 2.0 * g[j]
                if d < bd[k - 1] and j != i:
                    m = k - 1
                    while m > 0 and bd[m - 1] > d:
                        bd[m] = bd[m - 1]
                        bj[m] = bj[m - 1]
                        m -= 1
                    bd[m] = d
                    bj[m] = j

    return knn_rows


def _sparse_knn(X: sp.csr_matrix, k: int, block_elems: int) -> np.ndarray:

    n = X.shape[0]
    X = canonical_csr(X, np.float64)
    C = X.tocsc()
    C.sort_indices()
    nx = np.asarray(X.multiply(X).sum(axis=1)).ravel()
    kernel = _sparse_kernel()
    b = int(max(1, min(n, block_elems // n)))
    acc = np.empty((b, n))
    best_d = np.empty((b, k))
    out = np.empty((n, k), dtype=np.int64)
    with _numba_threads_like_torch():
        for s0 in range(0, n, b):
            e = min(n, s0 + b)
            kernel(
                X.indptr,
                X.indices,
                X.data,
                C.indptr,
                C.indices,
                C.data,
                nx,
                s0,
                acc[: e - s0],
                best_d[: e - s0],
                out,
            )
    return out


# --------------------------------------------------------------------------- ranks


@functools.lru_cache(maxsize=1)
def _rank_kernel() -> Any:
    import numba

    @numba.njit(cache=True, nogil=True)
    def sq_dist(R, i, j):  # pragma: no cover
        acc = 0.0
        for c in range(R.shape[1]):
            t = R[i, c] - R[j, c]
            acc += t * t
        return acc

    @numba.njit(parallel=True, cache=True, nogil=True)
    def count_ranks(D, R, nxc, tol, exact, r0, nbr, out):  # pragma: no cover
        # exact: D[bi, q] = ‖x_q‖² − 2 x_i·x_q of the centred points (‖x_i − x_q‖² − ‖x_i‖²)
        # within tol[i] of exact; the thresholds and every distance within tol of one are
        # recomputed as squared differences of R. Otherwise D holds the distances as given.
        b, n = D.shape
        k = nbr.shape[1]
        for bi in numba.prange(b):
            i = r0 + bi
            row = D[bi]
            row[i] = np.inf
            for m in range(k):
                j = nbr[i, m]
                if exact:
                    t = sq_dist(R, i, j)
                    below = t - nxc[i] - tol[i]
                    above = t - nxc[i] + tol[i]
                else:
                    t = row[j]
                    below = t
                    above = t
                lo = 0
                hi = 0
                for q in range(n):
                    v = row[q]
                    lo += v < below
                    hi += v <= above
                less = lo
                ties = 0
                if hi - lo > 1:  # more than j itself at the threshold: decide one by one
                    for q in range(n):
                        v = row[q]
                        if v >= below and v <= above and q != j:
                            dq = sq_dist(R, i, q) if exact else v
                            if dq < t:
                                less += 1
                            elif dq == t and q < j:
                                ties += 1
                out[i, m] = less + ties + 1

    return count_ranks


def neighbour_ranks(
    R: np.ndarray | sp.csr_matrix,
    nbr: np.ndarray,
    metric: str = "euclidean",
    *,
    block_elems: int = 1 << 25,
    dev: Any = None,
) -> np.ndarray:
    """Rank of ``nbr[i, m]`` among sample ``i``'s neighbours in ``R`` (1 = nearest).

    The rank of a stable sort of ``i``'s distances to all other samples (ties: smaller
    index first), as :func:`sklearn.manifold.trustworthiness` uses, but counted instead
    of sorted: per row only the ``k`` given neighbours' ranks are needed, so each is
    ``1 +`` the number of samples strictly closer (plus tied ones of smaller index), a
    vectorised count (``O(n² k)`` compares, no ``n log n`` sort, no ``n × n`` matrix).
    Dense euclidean ``R``: distances in row blocks from one float64 product of the
    centred points, with a rounding bound; the thresholds, and every distance within the
    bound of one, are recomputed exactly as squared differences (exact ties stay ties).
    Other metrics and sparse ``R``: :func:`sklearn.metrics.pairwise_distances` blocks of
    at most ``block_elems`` entries. On a torch device ``dev`` (euclidean distances; a
    sparse ``R`` is densified there) see :func:`_device_ranks`.
    """
    import torch

    if dev is not None and metric in ("euclidean", "sqeuclidean"):
        return _device_ranks(R, nbr, dev, block_elems)

    n, p = R.shape
    out = np.empty(nbr.shape, dtype=np.int64)
    nbr = np.ascontiguousarray(nbr, dtype=np.int64)
    count_ranks = _rank_kernel()
    b = int(max(1, min(n, block_elems // n)))
    expansion = metric in ("euclidean", "sqeuclidean") and not sp.issparse(R)
    if expansion:
        R = np.ascontiguousarray(R, dtype=np.float64)
        Rc = torch.from_numpy(R - R.mean(axis=0))
        nxc = (Rc * Rc).sum(dim=1)
        # |fl(‖x_l‖² − 2 x_i·x_l) − exact| ≤ (p + 3) u (‖x_l‖² + 2‖x_i‖‖x_l‖); doubled
        tol = (4.0 * (p + 4) * 2.0**-53) * (nxc + nxc.max()).numpy() + 1e-300
        nxc_np = nxc.numpy()
    else:
        dummy, zeros = np.zeros((1, 1)), np.zeros(n)
    with _numba_threads_like_torch():
        for s0 in range(0, n, b):
            e = min(n, s0 + b)
            if expansion:
                D = torch.addmm(nxc[None, :], Rc[s0:e], Rc.T, alpha=-2.0).numpy()
                count_ranks(D, R, nxc_np, tol, True, s0, nbr, out)
            else:
                from sklearn.metrics import pairwise_distances

                D = pairwise_distances(R[s0:e], R, metric=metric)
                count_ranks(D, dummy, zeros, zeros, False, s0, nbr, out)
    return out


def _device_ranks(
    R: np.ndarray | sp.csr_matrix, nbr: np.ndarray, dev: Any, block_elems: int
) -> np.ndarray:
    """:func:`neighbour_ranks` for euclidean distances on a torch device.

    The same bound and exact re-check as the CPU kernel, arranged for a GPU: each row
    block of ``‖x_q‖² − 2 x_i·x_q`` (one float64 product of the centred points) is sorted
    once, and the counts below and up to each threshold's rounding band are two
    ``searchsorted`` calls. Thresholds whose band holds another sample besides the
    neighbour itself (ties, duplicates) are settled together, with exact squared
    differences summed in the same fixed order as the thresholds'.
    """
    import torch

    n, p = R.shape
    X = _accel.whole(R, dev, "the reference distances")
    _accel.check_fits(8.0 * n * p, dev, "the centred reference")
    Xc = X - X.mean(dim=0)
    nxc = torch.einsum("ij,ij->i", Xc, Xc)
    tol = (4.0 * (p + 4) * 2.0**-53) * (nxc + nxc.max()) + 1e-300
    out = np.empty(nbr.shape, dtype=np.int64)
    b = int(max(1, min(n, block_elems // n)))
    for s0 in range(0, n, b):
        e = min(n, s0 + b)
        rows = np.arange(s0, e)
        local = torch.arange(e - s0, device=dev)
        D = torch.addmm(nxc[None, :], Xc[s0:e], Xc.T, alpha=-2.0)
        D[local, local + s0] = torch.inf
        t_np = _exact_rows(X, rows, nbr[s0:e])
        t = torch.from_numpy(t_np).to(dev)
        below = t - (nxc[s0:e] + tol[s0:e])[:, None]
        above = t - (nxc[s0:e] - tol[s0:e])[:, None]
        Ds = torch.sort(D, dim=1).values
        lo = torch.searchsorted(Ds, below)  # samples surely closer than the neighbour
        hi = torch.searchsorted(Ds, above, right=True)
        del Ds
        rank = _accel.numpy(lo) + 1
        amb = torch.nonzero(hi - lo > 1)  # another sample within the band: settle exactly
        for c0 in range(0, len(amb), b):  # b bands of n at a time
            bi, m = amb[c0 : c0 + b].unbind(1)
            band = (D[bi] >= below[bi, m, None]) & (D[bi] <= above[bi, m, None])
            f, q = torch.nonzero(band, as_tuple=True)
            f, q = _accel.numpy(f), _accel.numpy(q)
            bi_np, m_np = _accel.numpy(bi), _accel.numpy(m)
            j = nbr[s0 + bi_np, m_np]
            keep = q != j[f]
            f, q = f[keep], q[keep]
            dq = _exact_rows(X, s0 + bi_np[f], q[:, None])[:, 0]
            tf, jf = t_np[bi_np[f], m_np[f]], j[f]
            closer = (dq < tf) | ((dq == tf) & (q < jf))
            rank[bi_np, m_np] += np.bincount(f, weights=closer, minlength=len(bi_np)).astype(
                np.int64
            )
        out[s0:e] = rank
    return out
