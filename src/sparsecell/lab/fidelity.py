"""Geometric fidelity: does an embedding's geometry follow a semantic variable?

The three "semantic" metrics (``knn_ratio``, ``morans_i``, ``ridge_r2``) are the ones the
seed paper (arXiv 2606.31394) uses to compare CNN embeddings with SAE latents within a
class, with cell-death rate as the semantic variable. ``knn_overlap`` and
``trustworthiness`` compare an embedding with a ground-truth space; ``effective_rank``
describes the embedding alone.

Neighbourhoods are exact k-nearest neighbours from :mod:`sparsecell.lab._knn` (a sample is
never its own neighbour; ties go to the smaller index); no ``n × n`` distance matrix is
formed, except in row blocks by :func:`trustworthiness`, which counts distance ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import SparsecellError
from . import _accel, _knn
from . import _stats as st

#: Fidelity metrics understood by :func:`fidelity`.
METRICS: tuple[str, ...] = (
    "knn_ratio",
    "morans_i",
    "ridge_r2",
    "knn_overlap",
    "trustworthiness",
    "effective_rank",
)

#: Ridge penalties searched by :func:`ridge_r2` (1e-8 … 1e8, one per decade).
RIDGE_ALPHAS: np.ndarray = np.logspace(-8, 8, 17)


@dataclass(frozen=True, eq=False)
class FidelityResult:
    """Score of one geometric-fidelity metric.

    Attributes
    ----------
    score
        The metric's value (mean over folds for ``ridge_r2``).
    per_fold
        Held-out score of every fold (empty for metrics that are not cross-validated).
    metric
        Name of the metric.
    n_samples
        Number of samples.
    params
        Settings the metric ran with (``k``, ``folds``, ``seed``, …).
    """

    score: float
    per_fold: np.ndarray
    metric: str
    n_samples: int
    params: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.score)

    def __repr__(self) -> str:
        pf = np.array2string(np.asarray(self.per_fold), precision=4, separator=", ")
        return (
            f"FidelityResult(metric={self.metric!r}, score={self.score:.4f}, per_fold={pf}, "
            f"n_samples={self.n_samples})"
        )


def _embedding_and_semantic(E: Any, s: Any) -> tuple[st.Matrix, np.ndarray]:
    E = st.as_matrix(E, "E")
    s = st.as_vector(s, "semantic")
    st.check_same_n(E, s, "E", "semantic")
    if np.ptp(s) == 0:
        raise SparsecellError(
            "the semantic variable is constant", "pass a variable that varies across samples"
        )
    return E, s


@_accel.device_errors
def knn_ratio(
    E: Any, semantic: Any, *, k: int = 10, metric: str = "euclidean", device: Any = None
) -> float:
    """Local kNN ratio: how much a semantic variable varies within neighbourhoods.

    ``ratio = mean_i std({s_j : j ∈ N_k(i)}) / std(s)``, where ``N_k(i)`` are the ``k``
    nearest neighbours of sample ``i`` in ``E`` (itself excluded) and both standard
    deviations use ``ddof=1``, so an ``s`` unrelated to ``E`` scores about 1 (for Gaussian
    ``s``, ``E[ratio] = c4(k) ≈ 0.97`` at ``k = 10``, ``c4`` the usual bias factor of the
    sample standard deviation). Lower is better: neighbours share ``s``.

    Parameters
    ----------
    E
        ``(n, d)`` embedding (dense, scipy.sparse or torch).
    semantic
        ``n`` values of the semantic variable.
    k
        Neighbourhood size (``2 ≤ k < n``).
    metric
        Distance for the neighbour search.
    device
        ``None`` or ``"cpu"``: this CPU; ``"cuda"``, ``"cuda:N"`` or ``"auto"``: the
        neighbour search runs on the GPU (the same neighbours; ``docs/lab.md``, "GPU").

    Returns
    -------
    float
        Non-negative; about 1 for an unrelated variable.
    """
    dev = _accel.lab_device(device)
    E, s = _embedding_and_semantic(E, semantic)
    if k < 2:
        raise SparsecellError(f"knn_ratio needs k >= 2, got {k}", "pass e.g. k=10")
    idx = st.knn_indices(E, k, metric, dev)
    local = np.std(s[idx], axis=1, ddof=1)
    return float(np.mean(local) / np.std(s, ddof=1))


@_accel.device_errors
def morans_i(
    E: Any, semantic: Any, *, k: int = 10, metric: str = "euclidean", device: Any = None
) -> float:
    """Moran's I of a semantic variable on the kNN graph of an embedding.

    ``I = (n / S0) Σ_ij w_ij z_i z_j / Σ_i z_i²`` with ``z = s - mean(s)``, on the directed
    ``k``-nearest-neighbour graph of ``E`` (self excluded) with **row-standardised** weights
    ``w_ij = 1/k`` for ``j ∈ N_k(i)`` (so ``S0 = n``). Because every row has exactly ``k``
    neighbours, binary weights give the same value. Under random permutation of ``s`` its
    expectation is ``-1/(n-1)``; 1 means neighbours have identical ``s``.

    Parameters
    ----------
    E
        ``(n, d)`` embedding.
    semantic
        ``n`` values of the semantic variable.
    k
        Number of neighbours (``k < n``).
    metric
        Distance for the neighbour search.
    device
        ``None`` or ``"cpu"``: this CPU; ``"cuda"``, ``"cuda:N"`` or ``"auto"``: the
        neighbour search runs on the GPU (the same neighbours; ``docs/lab.md``, "GPU").

    Returns
    -------
    float
        In about ``[-1, 1]``.
    """
    dev = _accel.lab_device(device)
    E, s = _embedding_and_semantic(E, semantic)
    idx = st.knn_indices(E, k, metric, dev)
    z = s - s.mean()
    lag = z[idx].mean(axis=1)
    return float(np.sum(z * lag) / np.sum(z**2))


def ridge_r2(
    E: Any,
    semantic: Any,
    *,
    n_components: int = 250,
    folds: int = 5,
    seed: int = 0,
    alphas: Any = None,
    device: Any = None,
) -> FidelityResult:
    """Held-out R² of a linear read-out of the semantic variable (PCA, then RidgeCV).

    In each of ``folds`` shuffled folds (seeded), a pipeline of PCA to ``n_components``
    components and :class:`sklearn.linear_model.RidgeCV` (penalties ``alphas``, default
    ``1e-8 … 1e8``, chosen by leave-one-out on the training rows) is fitted on the training
    rows and scored by R² on the held-out rows; PCA is skipped when it would keep every
    dimension (ridge is rotation-invariant). Sparse ``E`` stays sparse (sklearn's sparse
    PCA).

    Parameters
    ----------
    E
        ``(n, d)`` embedding.
    semantic
        ``n`` values of the semantic variable.
    n_components
        PCA dimensions (the seed paper uses 250).
    folds
        Number of cross-validation folds.
    seed
        Seed of the fold split and of PCA's randomised solver.
    alphas
        Candidate ridge penalties.
    device
        Accepted for a uniform API and checked (a missing GPU is an error), but this metric
        always runs on the CPU: scikit-learn's PCA and RidgeCV.

    Returns
    -------
    FidelityResult
        Mean and per-fold R² (1 is perfect, 0 is the training mean, can be negative).
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline

    _accel.lab_device(device)
    E, s = _embedding_and_semantic(E, semantic)
    n, d = E.shape
    st.check_folds(n, folds)
    alphas = RIDGE_ALPHAS if alphas is None else np.asarray(alphas, dtype=float).ravel()
    per = []
    for tr, te in KFold(n_splits=int(folds), shuffle=True, random_state=seed).split(s):
        nc = min(int(n_components), d, len(tr) - 1)
        steps: list[Any] = []
        if nc < min(d, len(tr) - 1):
            steps.append(PCA(n_components=nc, random_state=seed))
        steps.append(RidgeCV(alphas=alphas))
        model = make_pipeline(*steps).fit(E[tr], s[tr])
        per.append(float(r2_score(s[te], model.predict(E[te]))))
    pf = np.asarray(per)
    return FidelityResult(
        score=float(pf.mean()),
        per_fold=pf,
        metric="ridge_r2",
        n_samples=n,
        params={"n_components": n_components, "folds": folds, "seed": seed},
    )


def _embedding_and_reference(E: Any, reference: Any) -> tuple[st.Matrix, st.Matrix]:
    E = st.as_matrix(E, "E")
    R = st.as_matrix(reference, "reference", allow_1d=True)
    st.check_same_n(E, R, "E", "reference")
    return E, R


@_accel.device_errors
def knn_overlap(
    E: Any, reference: Any, *, k: int = 10, metric: str = "euclidean", device: Any = None
) -> float:
    """Neighbourhood preservation: mean fraction of shared ``k`` nearest neighbours.

    ``mean_i |N_k^E(i) ∩ N_k^R(i)| / k`` between the embedding ``E`` and a ground-truth
    space ``R`` (self excluded). Same quantity as :func:`sparsecell.lab.mutual_knn`.

    Parameters
    ----------
    E
        ``(n, d)`` embedding.
    reference
        ``(n, r)`` ground-truth coordinates (a 1-D variable is one coordinate).
    k
        Neighbourhood size (``k < n``).
    metric
        Distance used in both spaces.
    device
        ``None`` or ``"cpu"``: this CPU; ``"cuda"``, ``"cuda:N"`` or ``"auto"``: the
        neighbour search runs on the GPU (the same neighbours; ``docs/lab.md``, "GPU").

    Returns
    -------
    float
        In ``[0, 1]``; about ``k / (n - 1)`` by chance.
    """
    dev = _accel.lab_device(device)
    E, R = _embedding_and_reference(E, reference)
    ie = st.knn_indices(E, k, metric, dev)
    ir = st.knn_indices(R, k, metric, dev)
    return float(np.mean(st.set_overlap(ie, ir)) / k)


@_accel.device_errors
def trustworthiness(
    E: Any,
    reference: Any,
    *,
    k: int = 10,
    metric: str = "euclidean",
    block_elems: int = 20_000_000,
    device: Any = None,
) -> float:
    """Trustworthiness of an embedding against a ground-truth space (Venna & Kaski 2001).

    ``T(k) = 1 - 2 / (n k (2n - 3k - 1)) Σ_i Σ_{j ∈ N_k^E(i)} max(0, r_R(i, j) - k)``, where
    ``r_R(i, j)`` is the rank of ``j`` among ``i``'s neighbours in the reference space
    (1 = nearest). It penalises embedding neighbours that are far in the reference; equals
    :func:`sklearn.manifold.trustworthiness` ``(X=reference, X_embedded=E)`` but never sorts
    or stores all distances: each needed rank is counted against ``k`` thresholds in row
    blocks (memory ``O(block_elems)``, time ``O(n² k)`` vectorised compares), with exact
    float64 squared differences near every threshold so exact ties stay ties.

    Parameters
    ----------
    E
        ``(n, d)`` embedding.
    reference
        ``(n, r)`` ground-truth coordinates.
    k
        Neighbourhood size (``k < n / 2``).
    metric
        Distance used in both spaces.
    block_elems
        Largest number of reference distances held at once.
    device
        ``None`` or ``"cpu"``: this CPU; ``"cuda"``, ``"cuda:N"`` or ``"auto"``: the
        neighbour search and the rank counts (euclidean) run on the GPU, same value
        (``docs/lab.md``, "GPU").

    Returns
    -------
    float
        In ``[0, 1]``; 1 when every embedding neighbour is a reference neighbour.
    """
    dev = _accel.lab_device(device)
    E, R = _embedding_and_reference(E, reference)
    n = E.shape[0]
    if not isinstance(k, int | np.integer) or k < 1 or k >= n / 2:
        raise SparsecellError(
            f"trustworthiness needs 1 <= k < n/2 = {n / 2:g}, got k={k!r}",
            "pass a smaller k or more samples",
        )
    nbr = st.knn_indices(E, k, metric, dev)
    rank = _knn.neighbour_ranks(R, nbr, metric, block_elems=block_elems, dev=dev)
    penalty = float(np.maximum(rank - k, 0).sum())
    return float(1.0 - penalty * 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)))


@_accel.device_errors
def effective_rank(E: Any, *, center: bool = True, device: Any = None) -> float:
    """Effective rank (Roy & Vetterli 2007): ``exp(H(p))`` with ``p_i = σ_i / Σ_j σ_j``.

    ``σ`` are the singular values of ``E`` (column-centred by default) and ``H`` the
    Shannon entropy (natural log). Between 1 (rank one) and ``min(n, d)`` (all singular
    values equal); invariant to rotations and scaling of ``E``.

    Parameters
    ----------
    E
        ``(n, d)`` embedding (the smaller Gram matrix, ``d × d`` or ``n × n``, is formed).
    center
        Centre the columns first (PCA convention).
    device
        ``None`` or ``"cpu"``: this CPU; a GPU (``"cuda"``, ``"auto"``) forms and
        decomposes the Gram matrix there in float64.

    Returns
    -------
    float
        The effective rank.
    """
    dev = _accel.lab_device(device)
    E = st.as_matrix(E, "E")
    sig = np.sqrt(st.centered_singular_values_sq(E, center=center, dev=dev))
    total = sig.sum()
    if total <= 0:
        raise SparsecellError(
            "E has no variance, so its effective rank is undefined", "pass a non-constant embedding"
        )
    p = sig[sig > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def fidelity(
    E: Any,
    semantic: Any = None,
    metric: str = "knn_ratio",
    k: int = 10,
    seed: int = 0,
    device: Any = None,
    **kwargs: Any,
) -> FidelityResult:
    """Geometric fidelity of an embedding ``E`` by one metric.

    Parameters
    ----------
    E
        ``(n, d)`` embedding (dense, scipy.sparse or torch).
    semantic
        For ``knn_ratio``, ``morans_i``, ``ridge_r2``: ``n`` values of the semantic
        variable (e.g. ``obs["cell_death_rate"]``). For ``knn_overlap`` and
        ``trustworthiness``: the ``(n, r)`` ground-truth space. Unused by
        ``effective_rank``.
    metric
        One of :data:`METRICS`.
    k
        Neighbourhood size for the kNN metrics.
    seed
        Seed for ``ridge_r2``'s folds and PCA.
    device
        ``None`` (this CPU) or a GPU (``"cuda"``, ``"auto"``) for the neighbour searches,
        rank counts and Gram matrices; same result. ``ridge_r2`` (scikit-learn's PCA and
        RidgeCV) always runs on the CPU.
    **kwargs
        Passed to the metric's function (e.g. ``folds``, ``n_components``). For a distance
        other than Euclidean call the metric's function, whose ``metric`` argument sets it.

    Returns
    -------
    FidelityResult
        ``score``, ``per_fold`` (``ridge_r2`` only), ``metric``, ``n_samples``;
        ``float(result)`` is the score.
    """
    if metric not in METRICS:
        raise st.unknown("fidelity metric", str(metric), list(METRICS))
    _accel.lab_device(device)  # a missing GPU is an error before any work
    if metric == "ridge_r2":
        return ridge_r2(E, semantic, seed=seed, device=device, **kwargs)
    if metric == "effective_rank":
        score = effective_rank(E, device=device, **kwargs)
        params: dict[str, Any] = dict(kwargs)
    else:
        if semantic is None:
            raise SparsecellError(
                f"metric {metric!r} needs semantic=...",
                "pass the semantic variable or reference space",
            )
        fn = {
            "knn_ratio": knn_ratio,
            "morans_i": morans_i,
            "knn_overlap": knn_overlap,
            "trustworthiness": trustworthiness,
        }[metric]
        score = fn(E, semantic, k=k, device=device, **kwargs)
        params = {"k": k, **kwargs}
    n = E.shape[0] if hasattr(E, "shape") else len(E)
    return FidelityResult(
        score=float(score), per_fold=np.empty(0), metric=metric, n_samples=int(n), params=params
    )
