"""Ridge regression with the penalty chosen by inner cross-validation, for the lab.

:func:`ridge_cv` is the engine of :func:`sparsecell.lab.ridge` (and its inner CV): one
eigendecomposition serves every penalty; on the CPU sparse inputs are never centred or
densified whole; with a torch device the Gram matrix, its eigendecomposition and every
product of the size of the data run there (see :mod:`._accel`; with ``p > n`` a sparse
``X`` is densified on the device).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .._sparse import canonical_csr
from ._stats import Matrix, centered_cross, centred_gram, column_stats, unknown


class _On:
    """Where :func:`ridge_cv`'s dense linear algebra runs: numpy on this CPU
    (``dev=None``) or torch on a device. Arrays "on" it are numpy arrays or tensors."""

    def __init__(self, dev: Any) -> None:
        self.dev = dev

    def put(self, a: np.ndarray) -> Any:
        if self.dev is None:
            return a
        import torch

        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).to(self.dev)

    def index(self, mask: np.ndarray) -> Any:
        """A boolean mask as an index here."""
        if self.dev is None:
            return mask
        import torch

        return torch.from_numpy(np.flatnonzero(mask)).to(self.dev)

    def get(self, a: Any) -> np.ndarray:
        return a if self.dev is None else a.detach().cpu().numpy()

    def eigh(self, M: Any) -> tuple[np.ndarray, Any]:
        """Eigenvalues (numpy, ascending) and eigenvectors (here) of ``M``, symmetric up to
        rounding: symmetrised in place with numpy, its lower triangle read on a device."""
        if self.dev is None:
            M += M.T
            M *= 0.5
            lam, vec = np.linalg.eigh(M)
            return lam, vec
        import torch

        lam, vec = torch.linalg.eigh(M, UPLO="L")  # no symmetrised copy on the device
        return self.get(lam), vec

    def gram(self, X: Matrix, mx: np.ndarray) -> Any:
        """The smaller Gram matrix of ``X̃`` (:func:`._stats.centred_gram`)."""
        return centred_gram(X, mx, self.dev)

    def cross(self, A: Any, B: Matrix, ma: np.ndarray, mb: np.ndarray) -> Any:
        """``ÃᵀB̃``; ``A`` may be an array here."""
        if self.dev is None:
            return centered_cross(A, B, ma, mb)
        from . import _accel

        return _accel.cross(A, B, ma, mb, self.dev)

    def rows_times(self, X: Matrix, s: int, e: int, V: Any) -> Any:
        """``X[s:e] @ V``."""
        if self.dev is None:
            return np.asarray(X[s:e] @ V)
        from . import _accel

        return _accel.rows(X, s, e, self.dev) @ V

    def centred_rows(self, Y: Matrix, s: int, e: int, my: np.ndarray) -> Any:
        """``Y[s:e] − my``, dense."""
        if self.dev is None:
            return _dense_rows(Y, s, e) - my
        from . import _accel

        return _accel.rows(Y, s, e, self.dev) - self.put(my)

    def t_times(self, X: Matrix, D: Any) -> Any:
        """``Xᵀ D`` (``D`` here, ``n × q``)."""
        if self.dev is None:
            return np.asarray(X.T @ D)
        from . import _accel

        zeros = np.zeros(max(X.shape[1], D.shape[1]))
        return _accel.cross(X, D, zeros[: X.shape[1]], zeros[: D.shape[1]], self.dev)


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
    dev: Any = None,
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
        ``(n, p)`` predictors and ``(n, q)`` targets, dense or CSR. On the CPU sparse
        matrices are never centred or densified (products are formed in row blocks of at
        most ``block_elems`` entries).
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
    dev
        A torch device (see :mod:`._accel`) for the Gram matrix, its eigendecomposition,
        ``X̃ᵀỸ`` and the leave-one-out residuals, all in float64; ``None``: this CPU.

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
    if sp.issparse(Y):
        Y = canonical_csr(Y)
    mx = column_stats(X)[0]
    my = np.asarray(Y.mean(axis=0), dtype=np.float64).ravel()
    score = np.zeros((len(alphas), q))
    on = _On(dev)  # the same expressions run on numpy arrays or torch tensors
    if p <= n:
        lam, Vh = on.eigh(on.gram(X, mx))  # p × p
        keep = lam > 1e-12 * max(lam.max(), 0.0)
        lam, Vh = lam[keep], Vh[:, on.index(keep)]
        Rh = Vh.T @ on.cross(X, Y, mx, my)  # r × q; R_kj / √λ_k = c_kj
        R = on.get(Rh)
        if inner == "loo":
            lam_h, alphas_h = on.put(lam), on.put(alphas)
            shift = on.put(mx) @ Vh
            inv = 1.0 / (lam_h[:, None] + alphas_h[None, :])
            b = max(1, block_elems // max(len(lam), q, 1))
            with np.errstate(divide="ignore", invalid="ignore"):
                for s in range(0, n, b):
                    e = min(n, s + b)
                    U = on.rows_times(X, s, e, Vh) - shift
                    H = 1.0 / n + (U**2) @ inv
                    Yb = on.centred_rows(Y, s, e, my)
                    for ia in range(len(alphas)):
                        resid = Yb - U @ (Rh / (lam_h + alphas_h[ia])[:, None])
                        loo = resid / (1.0 - H[:, ia])[:, None]
                        score[ia] += on.get((loo**2).sum(0))
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
                V = on.get(Vh)
                e0[bad] = _exact_unpenalised_residuals(X, Y, mx, my, V, lam, R, bad, block_elems)
            score = e0[None, :] + shrunk

        def coef_for(a: np.ndarray) -> np.ndarray:  # a: (q,) penalties
            return on.get(Vh @ (Rh / (on.put(lam)[:, None] + on.put(a)[None, :])))

    else:
        K = on.gram(X, mx)  # n × n
        # K̃ = X̃X̃ᵀ has the constant vector c in its null space (K̃1 = 0). Built from a
        # sparse X (mean terms subtracted from XXᵀ), rounding leaves a constant component
        # of the size of the means: remove it (double centring) so that c is an
        # eigenvector of eigenvalue ~0 and lands among the null-space columns.
        K -= K.mean(0)[None, :]
        K -= K.mean(1)[:, None]
        lam, Qh = on.eigh(K)
        del K
        keep = lam > 1e-12 * max(lam.max(), 0.0)
        # With every eigenvector's mean removed, c's share drops out (to rounding): the
        # centred null-space columns Q'_n span the rest of the null space,
        # P_rest = Q'_n Q'_nᵀ; the kept columns, orthogonal to c, do not change.
        Qh -= Qh.mean(0)
        T = on.cross(Qh, Y, np.zeros(n), my)  # Q'ᵀỸ (a sparse Y is not centred)
        kh, nh = on.index(keep), on.index(~keep)
        Qn, Tn = Qh[:, nh], T[nh]
        lam, Qh, QtY = lam[keep], Qh[:, kh], T[kh]
        del T
        if inner == "loo":
            # 1 − h_ii = ‖P_rest e_i‖² + Σ_k Q_ik² α/(λ_k + α) and the residual
            # P_rest ỹ + Σ_k q_k α/(λ_k + α) q_kᵀỹ, sums of terms that are each small when
            # the fit nearly interpolates (p > n, tiny α), rather than 1 − (almost 1) and
            # Ỹ minus an almost equal fit; P_rest is 0 when X̃ has rank n − 1, and then so
            # are Q'_n and its terms, to rounding of their own size.
            null_mass = (Qn**2).sum(1)
            null_resid = Qn @ Tn
            shrink = on.put(_shrinkage(alphas, lam))
            one_minus_h = null_mass[:, None] + Qh**2 @ shrink.T
            with np.errstate(divide="ignore", invalid="ignore"):
                for ia in range(len(alphas)):
                    resid = null_resid + Qh @ (QtY * shrink[ia][:, None])
                    loo = resid / one_minus_h[:, ia][:, None]
                    score[ia] = on.get((loo**2).sum(0))
        else:
            # Null-space part ‖P_rest ỹ‖² (c's share is 0: Ỹ is centred) plus the shrunk
            # part; both sums of squares.
            shrink_sq = on.put(_shrinkage(alphas, lam) ** 2)
            score = on.get((Tn**2).sum(0)[None, :] + shrink_sq @ QtY**2)

        def coef_for(a: np.ndarray) -> np.ndarray:
            dual = Qh @ (QtY / (on.put(lam)[:, None] + on.put(a)[None, :]))  # n × q
            return on.get(on.t_times(X, dual)) - np.outer(mx, on.get(dual.sum(0)))

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
