"""Private numerics shared by the lab metrics: input coercion, column statistics,
unit-by-unit correlations, k-nearest neighbours and exact optimal transport.

Matrices are handled as either a dense ``float64`` :class:`numpy.ndarray` or a
``float64`` :class:`scipy.sparse.csr_matrix`; nothing here densifies a sparse input
except where the result is itself dense and no larger than ``p × q``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._errors import SparsecellError

Matrix = np.ndarray | sp.csr_matrix

#: A column whose standard deviation is at most this fraction of its root mean square is
#: treated as constant ("dead"). Float64 rounding leaves a constant column with a relative
#: std of about 1e-8 (sqrt of machine epsilon), so 1e-6 separates the two safely.
DEAD_RTOL = 1e-6

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
        out = sp.csr_matrix(x, dtype=np.float64)
        out.sum_duplicates()
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


def centered_cross(A: Matrix, B: Matrix, ma: np.ndarray, mb: np.ndarray) -> np.ndarray:
    """Dense ``(A - 1 ma)ᵀ (B - 1 mb)`` (p × q) without centring a sparse operand."""
    n = A.shape[0]
    a_sp, b_sp = sp.issparse(A), sp.issparse(B)
    if not a_sp and not b_sp:
        return (A - ma).T @ (B - mb)
    if a_sp and not b_sp:
        # Σ_i a_i (b_i - mb) equals Σ_i (a_i - ma)(b_i - mb) exactly.
        return np.asarray(A.T @ (B - mb))
    if b_sp and not a_sp:
        return np.asarray(B.T @ (A - ma)).T
    return np.asarray((A.T @ B).toarray()) - n * np.outer(ma, mb)


def correlations(A: Matrix, B: Matrix) -> np.ndarray:
    """Pearson correlation of every column of ``A`` with every column of ``B`` (p × q).

    Built from standardised columns in one product; the largest object made is p × q.
    A pair involving a column that is constant on these rows gets correlation 0.
    """
    n = A.shape[0]
    ma, sa, ra = column_stats(A)
    mb, sb, rb = column_stats(B)
    sa = np.where(live_mask(sa, ra), sa, 0.0)
    sb = np.where(live_mask(sb, rb), sb, 0.0)
    cross = centered_cross(A, B, ma, mb)
    denom = n * np.outer(sa, sb)
    with np.errstate(divide="ignore", invalid="ignore"):
        C = np.where(denom > 0, cross / np.where(denom > 0, denom, 1.0), 0.0)
    return np.clip(C, -1.0, 1.0)


def gram_frob_sq(X: Matrix, mean: np.ndarray, block_elems: int = 1_000_000) -> float:
    """``‖X_cᵀ X_c‖_F² = ‖X_c X_cᵀ‖_F²`` of the column-centred ``X``.

    Uses the smaller of the ``p × p`` and ``n × n`` Gram matrices, built in blocks of at
    most ``block_elems`` entries, and never centres a sparse ``X``.
    """
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


def centered_singular_values_sq(X: Matrix, center: bool = True) -> np.ndarray:
    """Squared singular values of the (optionally column-centred) ``X``, from the
    smaller of its two Gram matrices."""
    n, p = X.shape
    mean = column_stats(X)[0] if center else np.zeros(p)
    if p <= n:
        if sp.issparse(X):
            G = np.asarray((X.T @ X).toarray()) - n * np.outer(mean, mean)
        else:
            Xc = X - mean
            G = Xc.T @ Xc
    else:
        if sp.issparse(X):
            xm = np.asarray(X @ mean).ravel()
            G = np.asarray((X @ X.T).toarray()) - xm[:, None] - xm[None, :] + mean @ mean
        else:
            Xc = X - mean
            G = Xc @ Xc.T
    ev = np.linalg.eigvalsh((G + G.T) / 2.0)
    return np.clip(ev[::-1], 0.0, None)


# --------------------------------------------------------------------------- neighbours


def knn_indices(X: Matrix, k: int, metric: str = "euclidean") -> np.ndarray:
    """Indices (n × k) of each sample's ``k`` nearest other samples (self excluded).

    Exact brute-force search (see :mod:`sparsecell.lab._knn`): euclidean, squared
    euclidean and cosine distances by low-precision screening with exact re-ranking (dense)
    or a sparse Gram kernel (CSR); other metrics through
    :class:`sklearn.neighbors.NearestNeighbors`. The query point is never its own
    neighbour, even when it has exact duplicates; ties go to the smaller index.
    """
    from . import _knn

    check_k(X.shape[0], k)
    return _knn.knn_indices(X, k, metric)


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


# --------------------------------------------------------------------------- ridge

#: Inner cross-validation modes of :func:`ridge_cv`.
RIDGE_INNER: tuple[str, ...] = ("loo", "gcv")

#: GCV, covariance basis: a target whose unpenalised residual ``‖ỹ‖² − Σ_k c_k²`` (plus
#: its smallest shrinkage term) is below this fraction of ``‖ỹ‖²`` is fitted almost
#: exactly; the difference has then lost most of its digits (its rounding error is about
#: ``1e-15 ‖ỹ‖²``), so that residual is recomputed from the data ...
_GCV_EXACT_RTOL = 1e-6
#: ... for as many such targets (worst first) as fit in this many multiply-adds
#: (``n · p`` each); the others keep the difference, floored at 0.
_GCV_EXACT_BUDGET = 1e11


def _dense_rows(Y: Matrix, s: int, e: int, cols: np.ndarray | None = None) -> np.ndarray:
    """Rows ``s:e`` (and columns ``cols``) of ``Y`` as a dense array (a copy)."""
    blk = Y[s:e] if cols is None else Y[s:e][:, cols]
    return blk.toarray() if sp.issparse(blk) else np.array(blk, dtype=np.float64)


def _centered_sq_norms(Y: Matrix, my: np.ndarray, block_elems: int) -> np.ndarray:
    """``‖y_j − my_j‖²`` of every column, summed from non-negative terms (a sparse ``Y``
    from its stored entries plus ``(n − nnz_j) my_j²``; a dense one in row blocks)."""
    n, q = Y.shape
    if sp.issparse(Y):
        idx = Y.indices
        d = Y.data - my[idx]
        nnz = np.bincount(idx, minlength=q)
        return np.bincount(idx, weights=d * d, minlength=q) + (n - nnz) * my**2
    out = np.zeros(q)
    b = max(1, block_elems // max(q, 1))
    for s in range(0, n, b):
        blk = Y[s : s + b] - my
        out += np.einsum("ij,ij->j", blk, blk)
    return out


def _exact_unpenalised_residuals(
    X: Matrix,
    Y: Matrix,
    mx: np.ndarray,
    my: np.ndarray,
    V: np.ndarray,
    lam: np.ndarray,
    R: np.ndarray,
    cols: np.ndarray,
    block_elems: int,
) -> np.ndarray:
    """``‖ỹ_j − X̃ b_j‖²`` for the columns ``cols``, ``b_j = V diag(1/λ) R_j`` the
    unpenalised (minimum-norm) fit, from residuals formed in blocks of rows and columns."""
    n = X.shape[0]
    out = np.zeros(len(cols))
    cb = max(1, min(len(cols), block_elems // max(X.shape[1], 1)))
    for c0 in range(0, len(cols), cb):
        J = cols[c0 : c0 + cb]
        W = V @ (R[:, J] / lam[:, None])  # p × |J|
        shift = mx @ W
        b = max(1, block_elems // max(len(J), X.shape[1], 1))
        for s in range(0, n, b):
            e = min(n, s + b)
            res = _dense_rows(Y, s, e, J) - my[J]
            res -= np.asarray(X[s:e] @ W) - shift
            out[c0 : c0 + len(J)] += np.einsum("ij,ij->j", res, res)
    return out


def ridge_cv(
    X: Matrix,
    Y: Matrix,
    alphas: np.ndarray,
    *,
    inner: str = "loo",
    alpha_per_target: bool = False,
    block_elems: int = 4_000_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression with an unpenalised intercept, penalty chosen by inner CV.

    With ``X̃``, ``Ỹ`` the column-centred data, the fit of penalty ``α`` has hat matrix
    ``H_α = 11ᵀ/n + X̃ (X̃ᵀX̃ + αI)⁻¹ X̃ᵀ`` (intercept included), ``tr H_α = 1 + Σ_k
    λ_k/(λ_k + α)`` over the eigenvalues ``λ_k`` of ``X̃ᵀX̃``. One eigendecomposition, of
    the smaller of the ``p × p`` covariance and the ``n × n`` Gram matrix ``X̃X̃ᵀ``, serves
    every penalty. Directions with eigenvalue ≤ 1e-12 of the largest carry no variance and
    get no weight (the minimum-norm solution).

    Parameters
    ----------
    X, Y
        ``(n, p)`` predictors and ``(n, q)`` targets, dense or CSR. Sparse matrices are
        never centred or densified (products are formed in row blocks of at most
        ``block_elems`` entries).
    alphas
        Candidate penalties.
    inner
        ``"loo"``: exact leave-one-out, the estimator of
        :class:`sklearn.linear_model.RidgeCV` (``cv=None``): residuals
        ``e_i / (1 − h_ii)``, ``h_ii = 1/n + x̃_iᵀ (X̃ᵀX̃ + αI)⁻¹ x̃_i``, for every sample,
        target and penalty; ``O(n · min(n, p) · q)`` per penalty.
        ``"gcv"``: generalised cross-validation (Golub, Heath & Wahba 1979),
        ``GCV(α, j) = (‖(I − H_α) y_j‖² / n) / (1 − tr H_α / n)²``, which approximates
        the LOO error by replacing every ``h_ii`` with their mean ``tr H_α / n``. The
        residual norms come from the coordinates ``c_kj`` of ``ỹ_j`` on the left singular
        vectors of ``X̃``, ``‖(I − H_α) ỹ_j‖² = e_j + Σ_k (α/(λ_k + α))² c_kj²`` with
        ``e_j`` the unpenalised residual, so each penalty costs ``O(min(n, p))`` per target
        and the whole search one eigendecomposition and one ``X̃ᵀỸ`` (or ``QᵀỸ``) product;
        with a sparse ``Y`` and ``n > p`` no ``n × q`` array is formed. Every term is
        non-negative, so the score stays accurate when the fit nearly interpolates (tiny
        ``α``): in the Gram basis ``e_j`` is the squared null-space part of ``ỹ_j``; in
        the covariance basis it is ``‖ỹ_j‖² − Σ_k c_kj²``, and targets for which that
        difference keeps less than 1e-6 of ``‖ỹ_j‖²`` get ``e_j`` recomputed from the
        data (``O(n · p)`` each, up to a budget of 1e11 multiply-adds; beyond it the
        difference is floored at 0).
    alpha_per_target
        Choose a penalty per target instead of one for all (by the summed score).
    block_elems
        Largest number of entries of a dense block formed from the rows of ``X`` or ``Y``.

    Returns
    -------
    coef, intercept, alpha, score
        ``(p, q)`` weights, ``(q,)`` intercepts, the chosen penalty (one per target
        with ``alpha_per_target``, else a length-1 array) and the score minimised by the
        choice for every penalty and target (``n_alphas × q``): the leave-one-out mean
        squared error (``"loo"``) or the GCV score (``"gcv"``); ``inf`` where undefined.
    """
    if inner not in RIDGE_INNER:
        raise unknown("ridge inner cross-validation", str(inner), list(RIDGE_INNER))
    n, p = X.shape
    q = Y.shape[1]
    alphas = np.asarray(alphas, dtype=np.float64).ravel()
    if sp.issparse(Y) and not Y.has_canonical_format:
        Y = Y.copy()
        Y.sum_duplicates()
    mx = column_stats(X)[0]
    my = np.asarray(Y.mean(axis=0), dtype=np.float64).ravel()
    score = np.zeros((len(alphas), q))
    if p <= n:
        if sp.issparse(X):
            G = np.asarray((X.T @ X).toarray())
            G -= n * np.outer(mx, mx)
        else:
            Xc = X - mx
            G = Xc.T @ Xc
            del Xc
        G += G.T
        G *= 0.5
        lam, V = np.linalg.eigh(G)
        del G
        keep = lam > 1e-12 * max(lam.max(), 0.0)
        lam, V = lam[keep], V[:, keep]
        R = V.T @ centered_cross(X, Y, mx, my)  # r × q; R_kj / √λ_k = c_kj
        if inner == "loo":
            shift = mx @ V
            b = max(1, block_elems // max(V.shape[1], q, 1))
            for s in range(0, n, b):
                e = min(n, s + b)
                U = np.asarray(X[s:e] @ V) - shift
                H = 1.0 / n + (U**2) @ (1.0 / (lam[:, None] + alphas[None, :]))
                Yb = _dense_rows(Y, s, e) - my
                for ia, a in enumerate(alphas):
                    resid = Yb - U @ (R / (lam + a)[:, None])
                    with np.errstate(divide="ignore", invalid="ignore"):
                        loo = resid / (1.0 - H[:, ia])[:, None]
                    score[ia] += np.sum(loo**2, axis=0)
        else:
            c2 = R**2 / lam[:, None]
            shrunk = _shrinkage(alphas, lam) ** 2 @ c2  # n_alphas × q
            ysq = _centered_sq_norms(Y, my, block_elems)
            e0 = ysq - c2.sum(axis=0)
            del c2
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = (e0 + shrunk.min(axis=0, initial=np.inf)) / ysq
            bad = np.flatnonzero((ysq > 0) & (rel < _GCV_EXACT_RTOL))
            bad = bad[np.argsort(rel[bad], kind="stable")]
            bad = bad[: int(_GCV_EXACT_BUDGET // max(n * p, 1))]
            e0 = np.where(ysq > 0, np.maximum(e0, 0.0), 0.0)
            if len(bad):
                e0[bad] = _exact_unpenalised_residuals(X, Y, mx, my, V, lam, R, bad, block_elems)
            score = e0[None, :] + shrunk

        def coef_for(a: np.ndarray) -> np.ndarray:  # a: (q,) penalties
            return V @ (R / (lam[:, None] + a[None, :]))

    else:
        if sp.issparse(X):
            xm = np.asarray(X @ mx).ravel()
            K = np.asarray((X @ X.T).toarray())
            K -= xm[:, None]
            K -= xm[None, :]
            K += mx @ mx
        else:
            Xc = X - mx
            K = Xc @ Xc.T
            del Xc
        K += K.T
        K *= 0.5
        lam, Q = np.linalg.eigh(K)
        del K
        keep = lam > 1e-12 * max(lam.max(), 0.0)
        if sp.issparse(Y):
            T = centered_cross(Q, Y, Q.mean(axis=0), my)  # QᵀỸ without centring Y
            ybar = np.zeros(q)
        else:
            Yc = Y - my
            T = Q.T @ Yc
            ybar = Yc.mean(axis=0)
            del Yc
        Qn, Tn = Q[:, ~keep], T[~keep]
        lam, Q, QtY = lam[keep], Q[:, keep], T[keep]
        del T
        if inner == "loo":
            # 1 - h_ii summed term by term over the full eigenbasis (the null space holds
            # the constant vector, whose 1/n is the intercept's share of h_ii): no
            # cancellation when the fit nearly interpolates (p > n, tiny α). Residuals
            # likewise: the null-space part minus the constant vector's, plus the shrunk
            # part, rather than Ỹ minus an almost equal fit.
            null_mass = np.sum(Qn**2, axis=1) - 1.0 / n
            null_resid = Qn @ Tn - ybar
            one_minus_h = null_mass[:, None] + Q**2 @ _shrinkage(alphas, lam).T
            for ia, a in enumerate(alphas):
                resid = null_resid + Q @ (QtY * (a / (lam + a))[:, None])
                with np.errstate(divide="ignore", invalid="ignore"):
                    loo = resid / one_minus_h[:, ia][:, None]
                score[ia] = np.sum(loo**2, axis=0)
        else:
            # Null-space part (the constant vector's share of it is 0: Ỹ is centred)
            # plus the shrunk part; both sums of squares.
            score = np.sum(Tn**2, axis=0)[None, :] + _shrinkage(alphas, lam) ** 2 @ QtY**2

        def coef_for(a: np.ndarray) -> np.ndarray:
            dual = Q @ (QtY / (lam[:, None] + a[None, :]))  # n × q
            return np.asarray(X.T @ dual) - np.outer(mx, dual.sum(axis=0))

    if inner == "loo":
        score /= n
    else:
        # n - tr H_α = (n - 1 - r) + Σ_k α/(λ_k + α), a sum of non-negative terms.
        df = max(n - 1 - len(lam), 0) + _shrinkage(alphas, lam).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = n * score / df[:, None] ** 2
    score = np.where(np.isfinite(score), score, np.inf)
    if alpha_per_target:
        chosen = alphas[np.argmin(score, axis=0)]
        coef = coef_for(chosen)
    else:
        chosen = alphas[[int(np.argmin(score.sum(axis=1)))]]
        coef = coef_for(np.full(q, chosen[0]))
    intercept = my - mx @ coef
    return coef, intercept, chosen, score


def _shrinkage(alphas: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """``α / (λ_k + α)`` for every penalty (rows) and eigenvalue (columns)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return alphas[:, None] / (lam[None, :] + alphas[:, None])
