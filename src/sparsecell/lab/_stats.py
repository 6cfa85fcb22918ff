"""Private numerics shared by the lab metrics: input coercion, column statistics,
unit-by-unit correlations, k-nearest neighbours and exact optimal transport.

Matrices are handled as either a dense ``float64`` :class:`numpy.ndarray` or a
``float64`` :class:`scipy.sparse.csr_matrix`; on the CPU nothing here densifies a sparse
input except where the result is itself dense and no larger than ``p × q`` (on a torch
device, see :mod:`._accel`, sparse inputs are densified there).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._errors import SparsecellError
from .._sparse import canonical_csr

Matrix = np.ndarray | sp.csr_matrix

#: A column whose standard deviation is at most this fraction of its root mean square is
#: treated as constant ("dead"). Float64 rounding leaves a constant column with a relative
#: std of about 1e-8 (sqrt of machine epsilon), so 1e-6 separates the two safely.
DEAD_RTOL = 1e-6

#: Entries of the row blocks in which ``n · ma mbᵀ`` is subtracted from a dense product.
_OUTER_BLOCK_ELEMS = 1 << 20

#: Largest ``lcm(p, q)`` for which unequal-size exact OT is solved as an assignment problem
#: on replicated units (faster than the LP up to here).
_LSA_MAX = 8192


# --------------------------------------------------------------------------- input


def _from_torch(x: Any) -> Matrix:
    import torch

    x = x.detach().cpu()
    if x.layout == torch.strided:
        return x.to(torch.float64).numpy()
    if x.layout != torch.sparse_coo:
        x = x.to_sparse_coo()
    x = x.coalesce()
    idx = x.indices().numpy()
    vals = x.values().to(torch.float64).numpy()
    if x.ndim != 2:
        raise SparsecellError(
            f"a torch sparse tensor with {x.ndim} dimensions was given",
            "pass a 2-D (samples × units) tensor",
        )
    return sp.csr_matrix((vals, (idx[0], idx[1])), shape=tuple(x.shape))


def _is_torch(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "detach")


def as_matrix(x: Any, name: str, *, allow_1d: bool = False) -> Matrix:
    """Coerce ``x`` (numpy, scipy.sparse, torch dense/sparse, array-like) to float64.

    Sparse inputs become CSR, everything else a C-contiguous ndarray. With ``allow_1d``
    a vector becomes an ``(n, 1)`` column. Raises :class:`SparsecellError` for
    non-numeric, empty, wrongly shaped or non-finite input.
    """
    if x is None:
        raise SparsecellError(f"{name} is missing", f"pass {name} as a 2-D array")
    if _is_torch(x):
        x = _from_torch(x)
    if sp.issparse(x):
        if x.ndim != 2:
            raise SparsecellError(f"{name} must be 2-D", "pass a samples × units matrix")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise SparsecellError(f"{name} has non-real dtype {x.dtype}", "pass real numbers")
        out = canonical_csr(x, np.float64)
        if not np.all(np.isfinite(out.data)):
            raise SparsecellError(
                f"{name} contains NaN or infinite values", "remove or impute those entries"
            )
    else:
        arr = np.asarray(x)
        if (
            arr.dtype == object
            or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool)
            or np.issubdtype(arr.dtype, np.complexfloating)
        ):
            raise SparsecellError(
                f"{name} is not a real numeric array (dtype {arr.dtype})",
                "pass floats, e.g. np.asarray(x, dtype=float)",
            )
        if arr.ndim == 1 and allow_1d:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise SparsecellError(
                f"{name} must be 2-D (samples × units), got shape {arr.shape}",
                "reshape it to (n_samples, n_units)",
            )
        out = np.ascontiguousarray(arr, dtype=np.float64)
        if not np.all(np.isfinite(out)):
            raise SparsecellError(
                f"{name} contains NaN or infinite values", "remove or impute those entries"
            )
    if out.shape[0] == 0 or out.shape[1] == 0:
        raise SparsecellError(f"{name} is empty (shape {out.shape})", "pass a non-empty matrix")
    return out


def as_vector(x: Any, name: str) -> np.ndarray:
    """Coerce a per-sample variable (array, list, pandas Series, torch) to float64 1-D."""
    if x is None:
        raise SparsecellError(f"{name} is missing", f"pass {name} as one value per sample")
    if _is_torch(x):
        x = x.detach().cpu().numpy()
    if sp.issparse(x):
        x = x.toarray()
    arr = np.asarray(x)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise SparsecellError(
            f"{name} must be one value per sample, got shape {arr.shape}", "pass a 1-D array"
        )
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise SparsecellError(
            f"{name} is not numeric (dtype {arr.dtype})",
            "encode it as numbers (e.g. a rate, a score or category codes)",
        )
    out = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise SparsecellError(
            f"{name} contains NaN or infinite values", "drop those samples or impute them"
        )
    return out


def check_same_n(a: Matrix | np.ndarray, b: Matrix | np.ndarray, na: str, nb: str) -> int:
    """The common number of rows, or a clear error."""
    if a.shape[0] != b.shape[0]:
        raise SparsecellError(
            f"{na} has {a.shape[0]} samples but {nb} has {b.shape[0]}",
            "rows must be the same samples in the same order",
        )
    return int(a.shape[0])


def check_folds(n: int, folds: int) -> None:
    if not isinstance(folds, int | np.integer) or folds < 2:
        raise SparsecellError(f"folds must be an integer >= 2, got {folds!r}", "pass e.g. folds=5")
    if n < folds:
        raise SparsecellError(
            f"{n} samples cannot be split into {folds} folds",
            f"pass at least {folds} samples or fewer folds",
        )


def check_k(n: int, k: int, what: str = "k") -> None:
    if not isinstance(k, int | np.integer) or k < 1:
        raise SparsecellError(f"{what} must be a positive integer, got {k!r}", "pass e.g. k=10")
    if k >= n:
        raise SparsecellError(
            f"{what}={k} neighbours need more than {k} samples, got {n}",
            f"pass k < {n}",
        )


def unknown(kind: str, value: str, known: list[str]) -> SparsecellError:
    return SparsecellError(f"unknown {kind} {value!r}", "choose one of: " + ", ".join(known))


# --------------------------------------------------------------------------- statistics


def column_stats(X: Matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column means, population standard deviations and root mean squares."""
    n = X.shape[0]
    if sp.issparse(X):
        mean = np.asarray(X.sum(axis=0)).ravel() / n
        msq = np.asarray(X.multiply(X).sum(axis=0)).ravel() / n
        var = np.maximum(msq - mean**2, 0.0)
        return mean, np.sqrt(var), np.sqrt(msq)
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    rms = np.sqrt(np.mean(X**2, axis=0))
    return mean, std, rms


def live_mask(std: np.ndarray, rms: np.ndarray) -> np.ndarray:
    """Columns whose variance is not zero up to rounding (see :data:`DEAD_RTOL`)."""
    return std > DEAD_RTOL * rms


def drop_dead(X: Matrix) -> tuple[Matrix, np.ndarray]:
    """``X`` without its constant columns, and the boolean mask of kept columns."""
    _, std, rms = column_stats(X)
    keep = live_mask(std, rms)
    if keep.all():
        return X, keep
    return X[:, np.flatnonzero(keep)], keep


def centered_cross(
    A: Matrix, B: Matrix, ma: np.ndarray, mb: np.ndarray, dev: Any = None
) -> np.ndarray:
    """Dense ``(A - 1 ma)ᵀ (B - 1 mb)`` (p × q) without centring a sparse operand
    (on the torch device ``dev`` when given, see :mod:`._accel`)."""
    if dev is not None:
        from . import _accel

        return _accel.numpy(_accel.cross(A, B, ma, mb, dev))
    n = A.shape[0]
    a_sp, b_sp = sp.issparse(A), sp.issparse(B)
    if not a_sp and not b_sp:
        return (A - ma).T @ (B - mb)
    if a_sp and not b_sp:
        # Σ_i a_i (b_i - mb) equals Σ_i (a_i - ma)(b_i - mb) exactly.
        return np.asarray(A.T @ (B - mb))
    if b_sp and not a_sp:
        return np.asarray(B.T @ (A - ma)).T
    # Σ_i a_i b_iᵀ − n ma mbᵀ, the outer product subtracted a block of rows at a time (no
    # second p × q array: at 8192 × 8192 units each one costs 0.5 GiB and ~0.5 s). Aᵀ as
    # CSR makes the product CSR and its dense form C-ordered, so row blocks are contiguous.
    C = (A.T.tocsr() @ B).toarray()
    step = max(1, _OUTER_BLOCK_ELEMS // max(len(mb), 1))
    for s in range(0, len(ma), step):
        C[s : s + step] -= (n * ma[s : s + step])[:, None] * mb[None, :]
    return C


def correlations(A: Matrix, B: Matrix, dev: Any = None) -> np.ndarray:
    """Pearson correlation of every column of ``A`` with every column of ``B`` (p × q).

    Built from standardised columns in one product (on the torch device ``dev`` when
    given); the largest object made is p × q. A pair involving a column that is constant
    on these rows gets correlation 0.
    """
    n = A.shape[0]
    ma, sa, ra = column_stats(A)
    mb, sb, rb = column_stats(B)
    inv_a, inv_b = np.zeros(len(sa)), np.zeros(len(sb))
    live_a, live_b = live_mask(sa, ra), live_mask(sb, rb)
    inv_a[live_a] = 1.0 / (n * sa[live_a])
    inv_b[live_b] = 1.0 / sb[live_b]
    C = centered_cross(A, B, ma, mb, dev)
    C *= inv_a[:, None]  # in place: at 8192 × 8192 units every p × q pass costs ~0.2 s
    C *= inv_b[None, :]
    return np.clip(C, -1.0, 1.0, out=C)


def gram_frob_sq(
    X: Matrix, mean: np.ndarray, block_elems: int = 1_000_000, dev: Any = None
) -> float:
    """``‖X_cᵀ X_c‖_F² = ‖X_c X_cᵀ‖_F²`` of the column-centred ``X``.

    Uses the smaller of the ``p × p`` and ``n × n`` Gram matrices, built in blocks of at
    most ``block_elems`` entries, and never centres a sparse ``X`` (on the torch device
    ``dev`` when given: the whole Gram matrix there).
    """
    if dev is not None:
        from . import _accel

        G = _accel.gram(X, mean, dev).flatten()
        return float(G @ G)  # no second copy of the Gram matrix
    n, p = X.shape
    total = 0.0
    if p <= n:
        b = max(1, block_elems // p)
        Xc = X if sp.issparse(X) else X - mean
        for s in range(0, p, b):
            e = min(p, s + b)
            if sp.issparse(X):
                blk = (X[:, s:e].T @ X).toarray()
                blk -= n * np.outer(mean[s:e], mean)
            else:
                blk = Xc[:, s:e].T @ Xc
            total += float(np.einsum("ij,ij->", blk, blk))
        return total
    b = max(1, block_elems // n)
    if sp.issparse(X):
        xm = np.asarray(X @ mean).ravel()
        mm = float(mean @ mean)
        Xt = X.T.tocsc()
    else:
        Xc = X - mean
    for s in range(0, n, b):
        e = min(n, s + b)
        if sp.issparse(X):
            blk = (X[s:e] @ Xt).toarray()
            blk -= xm[s:e, None]
            blk -= xm[None, :]
            blk += mm
        else:
            blk = Xc[s:e] @ Xc.T
        total += float(np.einsum("ij,ij->", blk, blk))
    return total


def row_sq_norms_centered(X: Matrix, mean: np.ndarray) -> np.ndarray:
    """``‖x_i - mean‖²`` for every row, without centring a sparse ``X``."""
    if sp.issparse(X):
        sq = np.asarray(X.multiply(X).sum(axis=1)).ravel()
        return np.maximum(sq - 2.0 * np.asarray(X @ mean).ravel() + mean @ mean, 0.0)
    return np.sum((X - mean) ** 2, axis=1)


def centred_gram(X: Matrix, mean: np.ndarray, dev: Any = None) -> Any:
    """The smaller Gram matrix of the column-centred ``X``: ``X̃ᵀX̃`` (p × p) when
    ``p ≤ n``, else ``X̃X̃ᵀ`` (n × n). A sparse ``X`` is never centred (the mean terms are
    subtracted from its sparse products). On a torch device ``dev``: a tensor there
    (:func:`._accel.gram`)."""
    if dev is not None:
        from . import _accel

        return _accel.gram(X, mean, dev)
    n, p = X.shape
    if p <= n:
        if sp.issparse(X):
            G = np.asarray((X.T @ X).toarray())
            G -= n * np.outer(mean, mean)
            return G
        Xc = X - mean
        return Xc.T @ Xc
    if sp.issparse(X):
        xm = np.asarray(X @ mean).ravel()
        K = np.asarray((X @ X.T).toarray())
        K -= xm[:, None]
        K -= xm[None, :]
        K += mean @ mean
        return K
    Xc = X - mean
    return Xc @ Xc.T


def centered_singular_values_sq(X: Matrix, center: bool = True, dev: Any = None) -> np.ndarray:
    """Squared singular values of the (optionally column-centred) ``X``, from the
    smaller of its two Gram matrices (:func:`centred_gram`; formed and decomposed on the
    torch device ``dev`` when given)."""
    mean = column_stats(X)[0] if center else np.zeros(X.shape[1])
    G = centred_gram(X, mean, dev)
    if dev is not None:
        import torch

        from . import _accel

        # its lower triangle: products of the same rows, symmetric to rounding
        ev = _accel.numpy(torch.linalg.eigvalsh(G, UPLO="L"))
    else:
        ev = np.linalg.eigvalsh((G + G.T) / 2.0)
    return np.clip(ev[::-1], 0.0, None)


# --------------------------------------------------------------------------- neighbours


def knn_indices(X: Matrix, k: int, metric: str = "euclidean", dev: Any = None) -> np.ndarray:
    """Indices (n × k) of each sample's ``k`` nearest other samples (self excluded).

    Exact brute-force search (see :mod:`sparsecell.lab._knn`): euclidean, squared
    euclidean and cosine distances by low-precision screening with exact re-ranking (dense)
    or a sparse Gram kernel (CSR); other metrics through
    :class:`sklearn.neighbors.NearestNeighbors`. The query point is never its own
    neighbour, even when it has exact duplicates; ties go to the smaller index. With a
    torch device ``dev`` the search runs there.
    """
    from . import _knn

    check_k(X.shape[0], k)
    return _knn.knn_indices(X, k, metric, dev=dev)


def set_overlap(i1: np.ndarray, i2: np.ndarray) -> np.ndarray:
    """Per row, the size of the intersection of two index sets of equal width."""
    both = np.sort(np.concatenate([i1, i2], axis=1), axis=1)
    return np.sum(both[:, 1:] == both[:, :-1], axis=1)


# --------------------------------------------------------------------------- transport


def transport_plan(C: np.ndarray) -> np.ndarray:
    """Exact plan ``P`` (p × q, rows sum to 1/p, columns to 1/q) maximising ``Σ P ∘ C``.

    Equal sizes: a permutation by :func:`scipy.optimize.linear_sum_assignment`.
    Unequal sizes: with ``L = lcm(p, q)`` each source unit is replicated ``L/p`` times and
    each target ``L/q`` times; the transportation polytope with these integer supplies has
    integral vertices, so an optimal assignment of the copies is an optimal plan (used when
    ``L`` ≤ 8192; the replicated cost matrix takes ``8 L²`` bytes). Otherwise the
    transportation LP is solved exactly by HiGHS. When POT is installed, its network simplex
    (``ot.emd``) solves the unequal case directly: exact, and milliseconds where the
    replicated assignment takes seconds.
    """
    from scipy.optimize import linear_sum_assignment, linprog

    p, q = C.shape
    if p == q:
        r, c = linear_sum_assignment(C, maximize=True)
        P = np.zeros((p, q))
        P[r, c] = 1.0 / p
        return P
    try:  # POT's network simplex (C++), exact and fast at any size; optional dependency
        import ot

        return np.asarray(
            ot.emd(np.full(p, 1.0 / p), np.full(q, 1.0 / q), -C + C.max(), numItermax=10**8)
        )
    except ImportError:
        pass
    L = p * q // math.gcd(p, q)
    if L <= _LSA_MAX:
        ri = np.repeat(np.arange(p), L // p)
        ci = np.repeat(np.arange(q), L // q)
        r, c = linear_sum_assignment(C[np.ix_(ri, ci)], maximize=True)
        P = np.zeros((p, q))
        np.add.at(P, (ri[r], ci[c]), 1.0 / L)
        return P
    # Supplies q per source and p per target (total p·q): integral, well scaled.
    row_con = sp.kron(sp.eye(p), np.ones((1, q)))
    col_con = sp.kron(np.ones((1, p)), sp.eye(q))
    A_eq = sp.vstack([row_con, col_con]).tocsr()
    b_eq = np.r_[np.full(p, float(q)), np.full(q, float(p))]
    res = linprog(-C.ravel(), A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if res.status != 0:  # pragma: no cover - the transportation LP is always feasible
        raise SparsecellError(f"optimal transport LP failed: {res.message}", "report this bug")
    return np.maximum(res.x.reshape(p, q), 0.0) / (p * q)
