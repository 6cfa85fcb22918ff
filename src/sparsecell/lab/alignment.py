"""Representational alignment between two representations of the same samples.

``A`` (n × p) and ``B`` (n × q) hold the same samples in their rows (cells, images,
stimuli) and units in their columns (neurons, embedding dimensions, SAE latents). The
mapping metrics (``semi_matching``, ``soft_matching``, ``ridge``) follow Longon, Klindt &
Khosla, *Superposition disentanglement of neural representations reveals hidden
alignment* (arXiv 2510.03186): dead (constant) units are dropped, the map is fitted on
the training folds of a seeded K-fold split over samples and scored on the held-out fold.
The other metrics fit nothing and are computed once on all samples.

Every function accepts dense numpy arrays, ``scipy.sparse`` matrices (kept sparse: column
statistics and unit correlations come from sparse products) and torch tensors. Every
metric takes ``device=``: ``None`` (default) computes on this CPU; a GPU (``"cuda"``,
``"auto"``) runs the unit products, Gram matrices, decompositions and neighbour searches
there, in float64 (see :mod:`sparsecell.lab._accel`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from .._errors import SparsecellError
from . import _accel, _ridge
from . import _stats as st

#: Alignment metrics fitted with cross-validation over samples.
CV_METRICS: tuple[str, ...] = ("semi_matching", "soft_matching", "ridge")
#: All alignment metrics understood by :func:`alignment`.
METRICS: tuple[str, ...] = CV_METRICS + (
    "cka",
    "cka_debiased",
    "rsa",
    "procrustes",
    "mutual_knn",
)

#: Ridge penalties searched by the inner cross-validation (1e-8 … 1e8, one per decade).
RIDGE_ALPHAS: np.ndarray = np.logspace(-8, 8, 17)
#: Inner cross-validation modes of :func:`ridge`.
RIDGE_INNER_CV: tuple[str, ...] = ("auto", "loo", "gcv")
#: ``inner_cv="auto"`` runs exact leave-one-out while its cost per fold,
#: ``n_train · min(n_train, p) · q · n_alphas`` multiply-adds, is at most this (about half
#: a CPU-minute per fold on 2 cores; 10k × 512 costs 3.6e10, 100k × 512 3.6e11, 10k
#: samples × 8192 SAE latents ~3e12), and generalised cross-validation above it.
RIDGE_LOO_BUDGET: float = 5e11


@dataclass(frozen=True, eq=False)
class AlignmentResult:
    """Score of one alignment metric.

    Attributes
    ----------
    score
        The metric's value: the mean over folds for cross-validated metrics, the value on
        all samples otherwise.
    per_fold
        Held-out score of every fold (empty for metrics that are not cross-validated).
    metric
        Name of the metric.
    n_units_a, n_units_b
        Units of ``A`` and ``B`` kept after dropping dead (constant) ones.
    folds
        Number of folds (0 when the metric is not cross-validated).
    seed
        Seed of the fold split (and of any subsampling).
    """

    score: float
    per_fold: np.ndarray
    metric: str
    n_units_a: int
    n_units_b: int
    folds: int = 0
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.score)

    def __repr__(self) -> str:
        pf = np.array2string(np.asarray(self.per_fold), precision=4, separator=", ")
        return (
            f"AlignmentResult(metric={self.metric!r}, score={self.score:.4f}, per_fold={pf}, "
            f"n_units_a={self.n_units_a}, n_units_b={self.n_units_b})"
        )


# --------------------------------------------------------------------------- helpers


def _prepare(A: Any, B: Any) -> tuple[st.Matrix, st.Matrix]:
    """Coerce, check the sample counts, drop dead units, require two live units each."""
    A = st.as_matrix(A, "A")
    B = st.as_matrix(B, "B")
    st.check_same_n(A, B, "A", "B")
    out = []
    for name, X in (("A", A), ("B", B)):
        Xl, keep = st.drop_dead(X)
        if keep.sum() < 2:
            raise SparsecellError(
                f"{name} has {int(keep.sum())} live unit(s) after dropping "
                f"{int((~keep).sum())} constant column(s); alignment needs at least 2",
                "pass a representation with at least 2 units that vary across samples",
            )
        out.append(Xl)
    return out[0], out[1]


def _splits(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold

    st.check_folds(n, folds)
    return list(KFold(n_splits=int(folds), shuffle=True, random_state=seed).split(np.zeros(n)))


def _result(
    metric: str,
    per_fold: list[float],
    A: st.Matrix,
    B: st.Matrix,
    folds: int,
    seed: int,
    **params: Any,
) -> AlignmentResult:
    pf = np.asarray(per_fold, dtype=float)
    return AlignmentResult(
        score=float(pf.mean()),
        per_fold=pf,
        metric=metric,
        n_units_a=int(A.shape[1]),
        n_units_b=int(B.shape[1]),
        folds=int(folds),
        seed=int(seed),
        params=params,
    )


def _paired_correlations(P: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Pearson correlation of column ``j`` of ``P`` with column ``j`` of ``Y`` (0 where
    either is constant)."""
    mp, sp_, rp = st.column_stats(P)
    my, sy, ry = st.column_stats(Y)
    ok = st.live_mask(sp_, rp) & st.live_mask(sy, ry)
    r = np.zeros(P.shape[1])
    cov = np.mean((P[:, ok] - mp[ok]) * (Y[:, ok] - my[ok]), axis=0)
    r[ok] = cov / (sp_[ok] * sy[ok])
    return np.clip(r, -1.0, 1.0)


def _ridge_inner_cv(inner_cv: str, n_train: int, p: int, q: int, n_alphas: int) -> str:
    """The inner cross-validation that :func:`ridge` runs: ``inner_cv`` itself, or for
    ``"auto"`` ``"loo"`` when its cost is within :data:`RIDGE_LOO_BUDGET`, else ``"gcv"``
    (``inner_cv`` already checked by :func:`ridge`)."""
    if inner_cv != "auto":
        return inner_cv
    cost = float(n_train) * min(n_train, p) * q * n_alphas
    return "loo" if cost <= RIDGE_LOO_BUDGET else "gcv"


def _unit_scale(X: st.Matrix, sd: np.ndarray) -> st.Matrix:
    """``X`` with column ``j`` divided by ``sd[j]`` (a sparse ``X`` is scaled, not centred,
    and stays CSR)."""
    if sp.issparse(X):
        return sp.csr_matrix(X @ sp.diags(1.0 / sd))
    return X / sd


def _held_out_correlations(
    Ate: st.Matrix,
    Bte: st.Matrix,
    coef: np.ndarray,
    intercept: np.ndarray,
    block_elems: int = 1_000_000,
    dev: Any = None,
) -> np.ndarray:
    """Per target, the correlation of held-out predictions with held-out values, in
    blocks of target columns (``n_test × block`` at most ``block_elems`` entries; only
    ``Bte[:, block]`` is densified). With a torch device ``dev`` the predictions are
    made there (``Ate`` moved once)."""
    n_te, q = Bte.shape
    b = max(1, block_elems // max(n_te, 1))
    r = np.empty(q)
    if dev is not None:
        Ad = _accel.whole(Ate, dev, "the held-out samples")
        Wd = _accel.rows(coef, 0, coef.shape[0], dev)
    for s in range(0, q, b):
        e = min(q, s + b)
        if dev is None:
            pred = np.asarray(Ate @ coef[:, s:e]) + intercept[s:e]
        else:
            pred = _accel.numpy(Ad @ Wd[:, s:e]) + intercept[s:e]
        Y = Bte[:, s:e]
        r[s:e] = _paired_correlations(pred, Y.toarray() if sp.issparse(Y) else Y)
    return r


# --------------------------------------------------------------------------- mapping metrics


@_accel.device_errors
def unit_correlations(A: Any, B: Any, *, device: Any = None) -> np.ndarray:
    """Pearson correlation of every unit of ``A`` with every unit of ``B``.

    Parameters
    ----------
    A, B
        ``(n, p)`` and ``(n, q)`` representations of the same ``n`` samples (dense,
        scipy.sparse or torch).
    device
        ``None`` or ``"cpu"``: this CPU. ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (the GPU
        when one is visible): the heavy products run there in float64, equal to the CPU
        result up to rounding (``docs/lab.md``, "GPU").

    Returns
    -------
    numpy.ndarray
        ``(p, q)`` matrix; pairs involving a constant column are 0. Nothing larger than
        ``p × q`` is materialised (columns are standardised implicitly, one product).
    """
    dev = _accel.lab_device(device)
    A = st.as_matrix(A, "A")
    B = st.as_matrix(B, "B")
    st.check_same_n(A, B, "A", "B")
    return st.correlations(A, B, dev)


@_accel.device_errors
def semi_matching(
    A: Any, B: Any, *, folds: int = 5, seed: int = 0, device: Any = None
) -> AlignmentResult:
    """Semi-matching score: each unit of ``B`` is matched to its best unit of ``A``.

    On the training folds every target unit ``j`` (column of ``B``) takes the source unit
    ``i*(j) = argmax_i r_train(a_i, b_j)``; the fold's score is the mean over ``j`` of the
    held-out correlation ``r_test(a_{i*(j)}, b_j)``. Several targets may share a source.

    Parameters
    ----------
    A, B
        ``(n, p)`` source and ``(n, q)`` target representations of the same samples.
    folds
        Number of cross-validation folds over samples.
    seed
        Seed of the (shuffled) fold split.
    device
        ``None`` or ``"cpu"``: this CPU. ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (the GPU
        when one is visible): the heavy products run there in float64, equal to the CPU
        result up to rounding (``docs/lab.md``, "GPU").

    Returns
    -------
    AlignmentResult
        Mean and per-fold held-out scores, in ``[-1, 1]``; 1 when ``B`` is a
        unit-permutation (or positive per-unit rescaling) of ``A``.
    """
    dev = _accel.lab_device(device)
    A, B = _prepare(A, B)
    per = []
    for tr, te in _splits(A.shape[0], folds, seed):
        best = np.argmax(st.correlations(A[tr], B[tr], dev), axis=0)
        c_te = st.correlations(A[te], B[te], dev)
        per.append(float(np.mean(c_te[best, np.arange(B.shape[1])])))
    return _result("semi_matching", per, A, B, folds, seed)


@_accel.device_errors
def soft_matching(
    A: Any, B: Any, *, folds: int = 5, seed: int = 0, device: Any = None
) -> AlignmentResult:
    """Soft-matching score: an exact optimal transport plan between the units.

    On the training folds the plan ``P`` (``p × q``, rows summing to ``1/p``, columns to
    ``1/q``) maximises ``Σ_ij P_ij r_train(a_i, b_j)``, i.e. minimises the cost
    ``1 - r``; the fold's score is ``Σ_ij P_ij r_test(a_i, b_j)``. With ``p == q`` the plan
    is a permutation (``scipy.optimize.linear_sum_assignment``); otherwise the exact
    transportation problem is solved (assignment of replicated units when
    ``lcm(p, q) ≤ 8192``, e.g. 512 × 4096 units in seconds; else a HiGHS LP, which is slow
    beyond a few hundred units a side).
    On the training data it never exceeds :func:`semi_matching` (a plan spreads each
    target over sources, semi-matching takes the best one).

    Parameters
    ----------
    A, B
        ``(n, p)`` and ``(n, q)`` representations of the same samples.
    folds
        Number of cross-validation folds over samples.
    seed
        Seed of the (shuffled) fold split.
    device
        ``None`` or ``"cpu"``: this CPU. ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (the GPU
        when one is visible): the heavy products run there in float64, equal to the CPU
        result up to rounding (``docs/lab.md``, "GPU").

    Returns
    -------
    AlignmentResult
        Mean and per-fold held-out scores, in ``[-1, 1]``.
    """
    dev = _accel.lab_device(device)
    A, B = _prepare(A, B)
    per = []
    for tr, te in _splits(A.shape[0], folds, seed):
        plan = st.transport_plan(st.correlations(A[tr], B[tr], dev))
        per.append(float(np.sum(plan * st.correlations(A[te], B[te], dev))))
    return _result("soft_matching", per, A, B, folds, seed)


@_accel.device_errors
def ridge(
    A: Any,
    B: Any,
    *,
    folds: int = 5,
    seed: int = 0,
    alphas: Any = None,
    standardize: bool = True,
    alpha_per_target: bool = False,
    inner_cv: str = "auto",
    device: Any = None,
) -> AlignmentResult:
    """Linear predictivity: ridge regression from ``A`` to ``B``, scored by correlation.

    On the training folds, ridge regression with an unpenalised intercept maps ``A`` to all
    of ``B``; its penalty is chosen among ``alphas`` (default ``1e-8 … 1e8``, one per
    decade) by an inner cross-validation of the training rows, on one eigendecomposition
    of the smaller of ``AᵀA`` and ``AAᵀ`` so that sparse inputs stay sparse. The fold's
    score is the mean over units of ``B`` of the Pearson correlation between held-out
    predictions and held-out values.

    The inner cross-validation is exact leave-one-out (LOO; the estimator of
    :class:`sklearn.linear_model.RidgeCV`) or generalised cross-validation (GCV; Golub,
    Heath & Wahba 1979): ``GCV(α) = (‖(I − H_α) b‖² / n) / (1 − tr H_α / n)²`` with
    ``H_α`` the hat matrix (intercept included), which approximates LOO by replacing
    every leverage ``h_ii`` with their mean ``tr H_α / n``. LOO needs every held-out
    residual, about ``n_train · min(n_train, p) · q`` multiply-adds per penalty (hundreds
    of CPU-seconds per fold at 10k samples × 8192 SAE latents); GCV needs only the
    targets' coordinates on the eigenvectors, i.e. one ``AᵀB`` product and
    ``O(min(n, p))`` per penalty and target, and (beyond a dense ``B`` itself) no
    ``n × q`` array. The two choose the same or a neighbouring penalty when ``n_train``
    is large against ``p`` (leverages near their mean), so the held-out scores agree
    closely.

    Parameters
    ----------
    A, B
        ``(n, p)`` predictors and ``(n, q)`` targets of the same samples.
    folds
        Number of outer cross-validation folds over samples.
    seed
        Seed of the (shuffled) fold split.
    alphas
        Candidate penalties; default :data:`RIDGE_ALPHAS`.
    standardize
        Scale every column of ``A`` and ``B`` to unit standard deviation on the training
        rows first (sparse inputs are scaled, not centred), so the penalty treats units
        alike and no unit dominates the penalty choice.
    alpha_per_target
        Choose a penalty per unit of ``B`` instead of one for all.
    inner_cv
        ``"loo"`` (exact leave-one-out), ``"gcv"`` (generalised cross-validation) or
        ``"auto"``: LOO while its cost per fold, ``n_train · min(n_train, p) · q ·
        n_alphas`` multiply-adds, is at most :data:`RIDGE_LOO_BUDGET` (5e11: e.g. 100k
        samples × 512 units), GCV above it (e.g. 10k samples × 8192 SAE latents).
    device
        ``None`` or ``"cpu"``: this CPU. ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (the GPU
        when one is visible): the heavy products run there in float64, equal to the CPU
        result up to rounding (``docs/lab.md``, "GPU").

    Returns
    -------
    AlignmentResult
        Mean and per-fold held-out scores, in ``[-1, 1]``; ``params["inner_cv"]`` is the
        inner cross-validation that ran (``"loo"`` or ``"gcv"``).

    Notes
    -----
    A sparse ``B`` is never densified: it is scaled (not centred), its column statistics
    come from its stored entries, and held-out predictions and correlations are formed in
    blocks of target columns (only ``B_test[:, block]`` is made dense). Besides the
    eigendecomposition, the largest objects are ``p × q`` (weights, ``AᵀB``).
    """
    if inner_cv not in RIDGE_INNER_CV:  # before any work
        raise st.unknown("ridge inner_cv", str(inner_cv), list(RIDGE_INNER_CV))
    dev = _accel.lab_device(device)
    A, B = _prepare(A, B)
    alphas = RIDGE_ALPHAS if alphas is None else np.asarray(alphas, dtype=float).ravel()
    splits = _splits(A.shape[0], folds, seed)
    n_train = max(len(tr) for tr, _ in splits)
    mode = _ridge_inner_cv(inner_cv, n_train, A.shape[1], B.shape[1], len(alphas))
    per = []
    for tr, te in splits:
        Atr, Ate, Btr, Bte = A[tr], A[te], B[tr], B[te]
        if standardize:
            _, sa, ra = st.column_stats(Atr)
            sa = np.where(st.live_mask(sa, ra), sa, 1.0)
            _, sb, rb = st.column_stats(Btr)
            sb = np.where(st.live_mask(sb, rb), sb, 1.0)
            Atr, Ate = _unit_scale(Atr, sa), _unit_scale(Ate, sa)
            Btr, Bte = _unit_scale(Btr, sb), _unit_scale(Bte, sb)
        coef, intercept, _, _ = _ridge.ridge_cv(
            Atr, Btr, alphas, inner=mode, alpha_per_target=alpha_per_target, dev=dev
        )
        del Atr, Btr
        r = _held_out_correlations(Ate, Bte, coef, intercept, dev=dev)
        per.append(float(np.mean(r)))
    return _result(
        "ridge",
        per,
        A,
        B,
        folds,
        seed,
        standardize=standardize,
        alpha_per_target=alpha_per_target,
        inner_cv=mode,
    )


# --------------------------------------------------------------------------- similarity metrics


@_accel.device_errors
def cka(A: Any, B: Any, *, debiased: bool = False, device: Any = None) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019).

    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear kernels ``K = A_c A_cᵀ``
    and ``L = B_c B_cᵀ`` of the column-centred data. The biased (plain) estimator is
    ``‖A_cᵀ B_c‖_F² / (‖A_cᵀ A_c‖_F ‖B_cᵀ B_c‖_F)``; with ``debiased=True`` HSIC is the
    unbiased U-statistic of Song et al. (2012), which removes the positive bias of CKA at
    small ``n`` or many units (independent representations then score about 0 and may score
    below it). Computed in feature space (``n × n`` Gram matrices are never formed).
    Invariant to orthogonal transforms and isotropic scaling of either side, not to
    general invertible linear maps.

    Parameters
    ----------
    A, B
        ``(n, p)`` and ``(n, q)`` representations of the same samples (``n ≥ 4`` when
        debiased).
    debiased
        Use the unbiased HSIC estimator.
    device
        ``None`` or ``"cpu"``: this CPU. ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (the GPU
        when one is visible): the heavy products run there in float64, equal to the CPU
        result up to rounding (``docs/lab.md``, "GPU").

    Returns
    -------
    float
        In ``[0, 1]`` (biased); the debiased value can be slightly negative.
    """
    dev = _accel.lab_device(device)
    A, B = _prepare(A, B)
    n = A.shape[0]
    ma = st.column_stats(A)[0]
    mb = st.column_stats(B)[0]
    cross_sq = float(np.sum(st.centered_cross(A, B, ma, mb, dev) ** 2))
    aa = st.gram_frob_sq(A, ma, dev=dev)
    bb = st.gram_frob_sq(B, mb, dev=dev)
    if not debiased:
        return float(cross_sq / np.sqrt(aa * bb))
    if n < 4:
        raise SparsecellError(
            f"debiased CKA needs at least 4 samples, got {n}",
            "pass more samples or use cka (biased)",
        )
    dk = st.row_sq_norms_centered(A, ma)
    dl = st.row_sq_norms_centered(B, mb)

    def hsic(frob_sq: float, x: np.ndarray, y: np.ndarray) -> float:
        return (
            frob_sq - x @ y + x.sum() * y.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (x @ y)
        ) / (n * (n - 3))

    hab = hsic(cross_sq, dk, dl)
    haa = hsic(aa, dk, dk)
    hbb = hsic(bb, dl, dl)
    if haa <= 0 or hbb <= 0:
        raise SparsecellError(
            "debiased CKA is undefined here (a self-HSIC estimate is <= 0)",
            "pass more samples or use cka (biased)",
        )
    return float(hab / np.sqrt(haa * hbb))


def _row_correlation_distances(X: st.Matrix, dev: Any = None) -> np.ndarray:
    """Upper triangle of the correlation-distance RDM ``1 - r(x_i, x_j)`` (0 for constant
    rows' correlations, i.e. distance 1); the ``n × n`` product on ``dev`` when given."""
    n, p = X.shape
    if dev is not None:
        Xd = _accel.whole(X, dev, "the RDM samples")
        Xc = Xd - Xd.mean(dim=1, keepdim=True)
        G = _accel.numpy(Xc @ Xc.T / p)
        rms = _accel.numpy((Xd * Xd).mean(dim=1).sqrt())
        del Xd, Xc
    elif sp.issparse(X):
        m = np.asarray(X.mean(axis=1)).ravel()
        G = np.asarray((X @ X.T).toarray()) / p - np.outer(m, m)
        rms = np.sqrt(np.asarray(X.multiply(X).mean(axis=1)).ravel())
    else:
        Xc = X - X.mean(axis=1, keepdims=True)
        G = Xc @ Xc.T / p
        rms = np.sqrt(np.mean(X**2, axis=1))
    d = np.sqrt(np.maximum(np.diag(G), 0.0))
    ok = st.live_mask(d, rms)
    iu = np.triu_indices(n, 1)
    num = G[iu]
    den = (d[:, None] * d[None, :])[iu]
    okp = (ok[:, None] & ok[None, :])[iu]
    r = np.zeros_like(num)
    r[okp] = num[okp] / den[okp]
    return 1.0 - np.clip(r, -1.0, 1.0)


@_accel.device_errors
def rsa(
    A: Any,
    B: Any,
    *,
    method: Literal["spearman", "pearson"] = "spearman",
    max_samples: int | None = 3000,
    seed: int = 0,
    device: Any = None,
) -> float:
    """Representational similarity analysis (Kriegeskorte et al. 2008).

    Each representation gives a representational dissimilarity matrix (RDM) over samples,
    ``D_ij = 1 - r(x_i, x_j)`` (Pearson correlation of the two samples' unit vectors);
    the score is the Spearman (default) or Pearson correlation of the two RDMs' upper
    triangles. A sample whose units are all equal has correlation 0 (distance 1) to every
    other; Spearman ranks treat distances within 1e-12 as ties. RDMs are ``n × n``:
    above ``max_samples`` samples a random subset (by ``seed``) is used.

    Invariant to per-sample shifts and scalings of either side, and (Spearman) to any
    monotone transform of the distances; not invariant to unit-wise rescaling.

    Parameters
    ----------
    A, B
        ``(n, p)`` and ``(n, q)`` representations of the same samples (``n ≥ 3``).
    method
        ``"spearman"`` or ``"pearson"`` correlation between the RDMs.
    max_samples
        Largest number of samples used (``None``: all).
    seed
        Seed of the subsample.
    device
        ``None`` or ``"cpu"``: this CPU. ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (the GPU
        when one is visible): the heavy products run there in float64, equal to the CPU
        result up to rounding (``docs/lab.md``, "GPU").

    Returns
    -------
    float
        In ``[-1, 1]``.
    """
    from scipy.stats import rankdata

    if method not in ("spearman", "pearson"):
        raise st.unknown("RSA method", method, ["spearman", "pearson"])
    dev = _accel.lab_device(device)
    A, B = _prepare(A, B)
    n = A.shape[0]
    if n < 3:
        raise SparsecellError(f"RSA needs at least 3 samples, got {n}", "pass more samples")
    if max_samples is not None and n > max_samples:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=int(max_samples), replace=False))
        A, B = A[idx], B[idx]
    da = _row_correlation_distances(A, dev)
    db = _row_correlation_distances(B, dev)
    if method == "spearman":
        # Distances equal up to rounding (sparse rows often tie exactly) rank as ties, so
        # the result does not depend on the order of floating-point operations.
        da, db = rankdata(np.round(da, 12)), rankdata(np.round(db, 12))
    da = da - da.mean()
    db = db - db.mean()
    den = np.sqrt(np.sum(da**2) * np.sum(db**2))
    if den == 0:
        raise SparsecellError(
            "an RDM is constant, so RSA is undefined", "pass representations whose samples differ"
        )
    return float(np.clip(np.sum(da * db) / den, -1.0, 1.0))


@_accel.device_errors
def procrustes(A: Any, B: Any, *, device: Any = None) -> float:
    """Orthogonal Procrustes similarity (Williams et al. 2021, generalised shape metrics).

    After centring columns and scaling each representation to unit Frobenius norm (the
    narrower one implicitly zero-padded), ``sim = max_Q tr(Qᵀ Aᵀ B) = ‖A_cᵀ B_c‖_* /
    (‖A_c‖_F ‖B_c‖_F)`` (nuclear norm; ``Q`` orthogonal). Invariant to translations,
    isotropic scalings and orthogonal transforms of either side.
    :func:`procrustes_distance` turns it into a metric.

    Parameters
    ----------
    A, B
        ``(n, p)`` and ``(n, q)`` representations of the same samples.
    device
        ``None`` or ``"cpu"``: this CPU. ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (the GPU
        when one is visible): the heavy products run there in float64, equal to the CPU
        result up to rounding (``docs/lab.md``, "GPU").

    Returns
    -------
    float
        In ``[0, 1]``; 1 when ``B`` is a rotated, scaled, shifted copy of ``A``.
    """
    dev = _accel.lab_device(device)
    A, B = _prepare(A, B)
    n = A.shape[0]
    ma, sa, _ = st.column_stats(A)
    mb, sb, _ = st.column_stats(B)
    if dev is None:
        s = np.linalg.svd(st.centered_cross(A, B, ma, mb), compute_uv=False)
    else:
        import torch

        s = _accel.numpy(torch.linalg.svdvals(_accel.cross(A, B, ma, mb, dev)))
    den = n * np.sqrt(np.sum(sa**2) * np.sum(sb**2))
    return float(np.clip(s.sum() / den, 0.0, 1.0))


@_accel.device_errors
def procrustes_distance(
    A: Any, B: Any, *, kind: Literal["angular", "euclidean"] = "angular", device: Any = None
) -> float:
    """Orthogonal Procrustes shape distance (a metric on representations).

    ``angular``: ``arccos(sim)`` in ``[0, π/2]`` (Williams et al. 2021);
    ``euclidean``: ``sqrt(2 - 2 sim)``, the minimal Frobenius distance between the
    centred, unit-norm representations over rotations. ``sim`` is :func:`procrustes`.

    Parameters
    ----------
    A, B
        ``(n, p)`` and ``(n, q)`` representations of the same samples.
    kind
        ``"angular"`` or ``"euclidean"``.
    device
        ``None`` or ``"cpu"``: this CPU. ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (the GPU
        when one is visible): the heavy products run there in float64, equal to the CPU
        result up to rounding (``docs/lab.md``, "GPU").

    Returns
    -------
    float
        0 for identical shapes.
    """
    if kind not in ("angular", "euclidean"):
        raise st.unknown("Procrustes distance kind", kind, ["angular", "euclidean"])
    sim = procrustes(A, B, device=device)
    if kind == "angular":
        return float(np.arccos(sim))
    return float(np.sqrt(max(2.0 - 2.0 * sim, 0.0)))


@_accel.device_errors
def mutual_knn(
    A: Any, B: Any, *, k: int = 10, metric: str = "euclidean", device: Any = None
) -> float:
    """Mutual nearest-neighbour overlap (Huh et al. 2024, the Platonic representation).

    For each sample, the fraction of its ``k`` nearest neighbours in ``A`` that are also
    among its ``k`` nearest neighbours in ``B`` (self excluded; exact search, see
    :func:`sparsecell.lab._stats.knn_indices`), averaged over samples. Invariant to
    anything that preserves each side's neighbour ranks (rotations, translations,
    isotropic scaling).

    Parameters
    ----------
    A, B
        ``(n, p)`` and ``(n, q)`` representations of the same samples.
    k
        Neighbourhood size (``k < n``).
    metric
        Distance for the neighbour search (any sklearn metric, e.g. ``"cosine"``).
    device
        ``None`` or ``"cpu"``: this CPU. ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (the GPU
        when one is visible): the heavy products run there in float64, equal to the CPU
        result (the same neighbours) (``docs/lab.md``, "GPU").
        Metrics other than euclidean, sqeuclidean and cosine search on the CPU.

    Returns
    -------
    float
        In ``[0, 1]``; about ``k / (n - 1)`` for unrelated representations.
    """
    dev = _accel.lab_device(device)
    A, B = _prepare(A, B)
    ia = st.knn_indices(A, k, metric, dev)
    ib = st.knn_indices(B, k, metric, dev)
    return float(np.mean(st.set_overlap(ia, ib)) / k)


# --------------------------------------------------------------------------- dispatcher


def alignment(
    A: Any,
    B: Any,
    metric: str = "semi_matching",
    folds: int = 5,
    seed: int = 0,
    device: Any = None,
    **kwargs: Any,
) -> AlignmentResult:
    """Alignment of representation ``A`` (n × p) with ``B`` (n × q) by one metric.

    Parameters
    ----------
    A, B
        Representations of the same ``n`` samples (rows), dense, scipy.sparse or torch.
        Constant ("dead") units are dropped first.
    metric
        One of :data:`METRICS`: ``semi_matching``, ``soft_matching``, ``ridge``
        (cross-validated: ``A`` is the source, ``B`` the target), ``cka``,
        ``cka_debiased``, ``rsa``, ``procrustes`` (similarity), ``mutual_knn``.
    folds
        Number of cross-validation folds (cross-validated metrics only).
    seed
        Seed of the fold split and of any subsampling.
    device
        ``None`` (this CPU) or a GPU (``"cuda"``, ``"auto"``) for the heavy products;
        same result up to float64 rounding.
    **kwargs
        Passed to the metric's function (e.g. ``k`` for ``mutual_knn``, ``method`` for
        ``rsa``, ``alphas`` for ``ridge``).

    Returns
    -------
    AlignmentResult
        ``score``, ``per_fold`` (empty when not cross-validated), ``metric``,
        ``n_units_a``, ``n_units_b``; ``float(result)`` is the score.

    Examples
    --------
    >>> import numpy as np, sparsecell as spc
    >>> A = np.random.default_rng(0).standard_normal((200, 8))
    >>> round(spc.lab.alignment(A, A[:, ::-1]).score, 6)
    1.0
    """
    if metric not in METRICS:
        raise st.unknown("alignment metric", str(metric), list(METRICS))
    if metric == "semi_matching":
        return semi_matching(A, B, folds=folds, seed=seed, device=device, **kwargs)
    if metric == "soft_matching":
        return soft_matching(A, B, folds=folds, seed=seed, device=device, **kwargs)
    if metric == "ridge":
        return ridge(A, B, folds=folds, seed=seed, device=device, **kwargs)
    _accel.lab_device(device)  # a missing GPU is an error before any work
    Ap, Bp = _prepare(A, B)
    if metric == "cka":
        score = cka(Ap, Bp, device=device, **kwargs)
    elif metric == "cka_debiased":
        score = cka(Ap, Bp, debiased=True, device=device, **kwargs)
    elif metric == "rsa":
        score = rsa(Ap, Bp, seed=seed, device=device, **kwargs)
    elif metric == "procrustes":
        score = procrustes(Ap, Bp, device=device, **kwargs)
    else:
        score = mutual_knn(Ap, Bp, device=device, **kwargs)
    return AlignmentResult(
        score=float(score),
        per_fold=np.empty(0),
        metric=metric,
        n_units_a=int(Ap.shape[1]),
        n_units_b=int(Bp.shape[1]),
        folds=0,
        seed=int(seed),
        params=dict(kwargs),
    )
