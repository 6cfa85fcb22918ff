"""Couple, then predict: which genes can image features predict through a GW coupling?

A coupling ``T`` (``n_img × n_rna``) between image cells and scRNA-seq cells gives every image
cell a *coupled target*: the coupling-weighted mean expression of the RNA cells it is matched
with (``coupled_targets``). ``couple_then_predict`` then asks, gene by gene, whether the image
features of a cell (SAE latents, PCA, ...) predict its coupled target on held-out cells, and
how that compares with a permutation null (by default: the RNA cells' expression shuffled,
then coupled again — see ``couple_then_predict`` for why shuffling coupled targets among
image cells is too easy a null when the coupling came from the image features).

Cross-validation within groups (``groups=``, e.g. genotype or plate)
--------------------------------------------------------------------
Folds are formed *inside* every group (each group's cells are dealt round-robin, in a seeded
random order, to the ``folds`` folds, so every fold holds about ``1/folds`` of each group).
For each fold, both the features and the targets are centred **within group** by the group
means of that fold's *training* cells, a ridge without intercept is fitted on the centred
training cells, and the held-out cells are predicted from their within-group-centred features
and compared with their within-group-centred targets. A gene whose coupled target differs
only *between* groups (a genotype or plate shift, which image features also carry) has a
within-group-centred target that is noise, so it cannot look predictable; without ``groups``
the same gene would be called predictable simply because the features tell the groups apart.
The ``null="image"`` permutations shuffle target rows *within* groups, so that null keeps the
group structure too; ``null="rna"`` shuffles within ``rna_groups`` on the RNA side.

Speed: one eigendecomposition of each fold's within-group-centred training Gram matrix
(``Xᵀ X = V S² Vᵀ``, ``d × d``) serves every gene, every ridge penalty and every permutation.
With ``B = X_trᵀ Y_tr`` and ``Q = S⁻¹ Vᵀ B``, the penalty is chosen per gene and fold by
generalised cross-validation *on the training cells only* (closed form from ``Q`` and ``S``),
the coefficients are ``V diag(1 / (s² + α)) Vᵀ B``, and the held-out sums that Pearson's r and
R² need (Σ pred, Σ pred², Σ pred·y, Σ y, Σ y²) follow from ``d × g`` products with per-fold
Gram matrices and group sums. Cells are reordered so that each (fold, group) block is
contiguous; a CV pass then costs one ``(d + K) × n_f × g`` product per fold
(``[X_f | one-hot group]ᵀ Y_f``) plus ``d × g`` algebra, for all genes at once. Predictions are
never materialised. The result equals an explicit per-gene loop with scikit-learn ``Ridge``
(tests).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import SparsecellError

log = logging.getLogger(__name__)

__all__ = ["couple_then_predict", "coupled_targets"]

_CHUNK = 2048


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def _expression_matrix(expression: Any, genes: Sequence | None, layer: str | None = None):
    """(matrix n_rna × g — dense or CSR —, gene names) from AnnData / DataFrame / array."""
    names: np.ndarray | None = None
    if hasattr(expression, "var_names") and hasattr(expression, "obs_names"):  # AnnData
        X = expression.layers[layer] if layer is not None else expression.X
        names = np.asarray(expression.var_names, dtype=object)
    elif isinstance(expression, pd.DataFrame):
        X = expression.to_numpy()
        names = np.asarray(expression.columns, dtype=object)
    else:
        X = expression
    if sp.issparse(X):
        X = sp.csr_matrix(X)
    else:
        X = np.asarray(X)
        if X.dtype == object or not np.issubdtype(X.dtype, np.number):
            raise SparsecellError("expression is not numeric", "pass a cells × genes matrix")
    if X.ndim != 2:
        raise SparsecellError(
            f"expression has {X.ndim} dimensions, expected cells × genes", "pass a 2-D matrix"
        )
    n_genes = X.shape[1]
    if names is None:
        names = np.asarray([f"g{i}" for i in range(n_genes)], dtype=object)
    if genes is None:
        return X, names
    genes = list(genes)
    if len(genes) == 0:
        raise SparsecellError("no genes selected", "pass at least one gene (or genes=None)")
    if all(isinstance(g, int | np.integer) for g in genes):
        idx = np.asarray(genes, dtype=int)
        if idx.min() < -n_genes or idx.max() >= n_genes:
            raise SparsecellError(
                f"gene index out of range for {n_genes} genes", "pass valid column indices"
            )
    else:
        pos = {str(g): i for i, g in enumerate(names)}
        missing = [str(g) for g in genes if str(g) not in pos]
        if missing:
            raise SparsecellError(
                f"{len(missing)} gene(s) not in the expression matrix, e.g. {missing[:3]}",
                "pick genes from its var_names / columns",
            )
        idx = np.asarray([pos[str(g)] for g in genes], dtype=int)
    return X[:, idx], names[idx]


def _coupling_matrix(coupling: Any):
    # float32 couplings (the torch solver's default) are used as they are: a dense
    # 12k × 12k plan is 0.6 GB in float32, and the row averages do not need float64
    if sp.issparse(coupling):
        T = sp.csr_matrix(coupling)
        if not np.issubdtype(T.dtype, np.floating):
            T = T.astype(np.float64)
        data = T.data
    else:
        T = np.asarray(coupling)
        if not np.issubdtype(T.dtype, np.floating):
            T = T.astype(np.float64)
        data = T
        if T.ndim != 2:
            raise SparsecellError(
                f"coupling has {T.ndim} dimensions, expected n_img × n_rna", "pass a 2-D coupling"
            )
    if not np.all(np.isfinite(data)):
        raise SparsecellError("coupling holds NaN or infinite values", "re-run the alignment")
    if data.size and data.min() < 0:
        raise SparsecellError("coupling has negative entries", "pass a transport plan (T ≥ 0)")
    return T


def coupled_targets(
    coupling: Any,
    expression: Any,
    genes: Sequence | None = None,
    *,
    layer: str | None = None,
    chunk_size: int = _CHUNK,
    return_names: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Per image cell, the coupling-weighted mean expression of the RNA cells it is matched with.

    ``targets[i] = Σ_j T[i, j] · E[j] / Σ_j T[i, j]`` (rows of the coupling normalised to sum
    to one), computed in chunks of image cells; sparse couplings and sparse expression stay
    sparse until the (small) chunk result.

    Parameters
    ----------
    coupling
        ``n_img × n_rna`` transport plan (NumPy array or SciPy sparse matrix), entries ≥ 0.
    expression
        ``n_rna × n_genes`` expression (or gene-program scores): AnnData (``.X`` or ``layer``),
        DataFrame, NumPy array or SciPy sparse matrix. Normalise (e.g. log1p) beforehand.
    genes
        Gene names (or column indices) to keep; ``None`` keeps all.
    layer
        AnnData layer to read instead of ``.X``.
    chunk_size
        Image cells per chunk.
    return_names
        Also return the gene names (``g0, g1, ...`` when the input has none).

    Returns
    -------
    numpy.ndarray
        ``n_img × n_genes`` float64 targets (and the names if ``return_names``).

    Raises
    ------
    SparsecellError
        Shape mismatch, NaN/inf or negative coupling entries, image cells whose coupling row
        sums to zero, NaN in the expression, unknown genes.
    """
    T = _coupling_matrix(coupling)
    E, names = _expression_matrix(expression, genes, layer)
    n_img, n_rna = T.shape
    if E.shape[0] != n_rna:
        raise SparsecellError(
            f"coupling has {n_rna} RNA columns but expression has {E.shape[0]} cells",
            "pass the scRNA-seq data the coupling was computed with",
        )
    edata = E.data if sp.issparse(E) else E
    if not np.all(np.isfinite(edata)):
        raise SparsecellError("expression holds NaN or infinite values", "impute or drop them")
    mass = np.asarray(T.sum(axis=1, dtype=np.float64)).ravel()
    empty = np.flatnonzero(~(mass > 0))
    if empty.size:
        raise SparsecellError(
            f"{empty.size} image cell(s) carry no coupling mass (e.g. row {int(empty[0])})",
            "drop those cells or use a balanced coupling",
        )
    out = _couple(T, E, mass, chunk_size)
    return (out, names) if return_names else out


def _couple(T, E, mass: np.ndarray, chunk_size: int = _CHUNK) -> np.ndarray:
    """Row-normalised ``T @ E`` in chunks of image cells (inputs already validated)."""
    n_img = T.shape[0]
    out = np.empty((n_img, E.shape[1]), dtype=np.float64)
    Et = E.T.tocsr() if sp.issparse(E) else None
    for s in range(0, n_img, max(int(chunk_size), 1)):
        Tc = T[s : s + chunk_size]
        if sp.issparse(E):
            if sp.issparse(Tc):
                block = (Tc @ E).toarray()
            else:
                block = np.asarray(Et @ Tc.T).T
        else:
            block = np.asarray(Tc @ E)
        out[s : s + chunk_size] = block / mass[s : s + chunk_size, None]
    return out


# --------------------------------------------------------------------------------------------
# cross-validated ridge, vectorised over genes, penalties and permutations
# --------------------------------------------------------------------------------------------
def _fold_ids(group_codes: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Deal each group's cells round-robin (in a random order) to the folds."""
    fold = np.empty(group_codes.size, dtype=np.int64)
    for g in np.unique(group_codes):
        idx = np.flatnonzero(group_codes == g)
        idx = idx[rng.permutation(idx.size)]
        # a random fold offset per group keeps fold sizes balanced across groups
        fold[idx] = (np.arange(idx.size) + rng.integers(folds)) % folds
    return fold


def _within_group_perm(group_idx: list[np.ndarray], n: int, rng: np.random.Generator):
    perm = np.empty(n, dtype=np.int64)
    for idx in group_idx:
        perm[idx] = idx[rng.permutation(idx.size)]
    return perm


class _CVRidge:
    """Cross-validated within-group ridge from sufficient statistics.

    Cells are reordered so that every (fold, group) block is contiguous. Per fold, the
    within-group-centred training Gram matrix ``Xᵀ X`` is eigendecomposed once (``V, s²``).
    For a target matrix ``Y`` (rows in the same order) a CV pass needs only the block sums of
    ``Y`` and ``Y²`` and the per-fold cross-products ``X_fᵀ Y_f`` (one ``n × d × g`` product in
    all); everything else (GCV per penalty, coefficients, held-out sums of ``pred``, ``pred²``,
    ``pred · y``, ``y``, ``y²``) is a ``d × g`` computation. Predictions are never materialised.
    """

    def __init__(self, X, codes, fold, n_groups, folds, alphas, rtol=1e-12):
        self.order = np.lexsort((codes, fold))
        X = X[self.order]
        X = X - X.mean(axis=0)  # global centring: only to limit cancellation below
        fo, co = fold[self.order], codes[self.order]
        key = fo * n_groups + co
        self.starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        if self.starts.size != folds * n_groups:  # pragma: no cover - guaranteed by dealing
            raise SparsecellError("a (fold, group) block is empty", "use fewer folds")
        self.fstarts = np.searchsorted(fo, np.arange(folds + 1))
        # per fold, [X_f | one-hot group]ᵀ: one product gives X_fᵀ Y_f and the group sums of Y_f
        onehot = np.eye(n_groups)[co]
        self.XaugT = [
            np.ascontiguousarray(np.c_[X, onehot][self.fstarts[f] : self.fstarts[f + 1]].T)
            for f in range(folds)
        ]
        self.n, self.d = X.shape
        self.F, self.K = folds, n_groups
        self.alphas = alphas
        nfg = np.bincount(key, minlength=folds * n_groups).reshape(folds, n_groups)
        self.nfg = nfg.astype(np.float64)
        sx = np.add.reduceat(X, self.starts, axis=0).reshape(folds, n_groups, self.d)
        self.fold_stats = []
        for f in range(folds):
            Xf = X[self.fstarts[f] : self.fstarts[f + 1]]
            Gf = Xf.T @ Xf
            self.fold_stats.append(Gf)
        Gall = sum(self.fold_stats)
        self.folds_ = []
        for f in range(folds):
            ntr = self.nfg.sum(axis=0) - self.nfg[f]  # per group
            sxtr = sx.sum(axis=0) - sx[f]
            mux = sxtr / ntr[:, None]  # K × d
            Gtr = Gall - self.fold_stats[f] - (mux.T * ntr) @ mux
            # Σ_te (x − μ)(x − μ)ᵀ = G_f − Σ_g (S_g μ_gᵀ + μ_g S_gᵀ) + Σ_g n_g μ_g μ_gᵀ
            cross = sx[f].T @ mux
            Gte = self.fold_stats[f] - cross - cross.T + (mux.T * self.nfg[f]) @ mux
            lam, V = np.linalg.eigh((Gtr + Gtr.T) / 2)
            keep = lam > rtol * max(lam.max(initial=0.0), 1e-300)
            lam, V = lam[keep], V[:, keep]
            s = np.sqrt(lam)
            h = lam[None, :] / (lam[None, :] + alphas[:, None])  # n_alpha × r
            c = 1.0 / (lam[None, :] + alphas[:, None])  # coefficient weights
            df = h.sum(axis=1)
            self.folds_.append(
                {
                    "ntr": ntr,
                    "ntr_total": ntr.sum(),
                    "mux": mux,
                    "Gte": Gte,
                    "V": V,
                    "s": s,
                    "h": h,
                    "c": c,
                    "gcv_denom": np.maximum((1.0 - df / ntr.sum()) ** 2, 1e-12),
                    "sx_te_c": sx[f] - self.nfg[f][:, None] * mux,  # K × d
                }
            )

    def run(self, Yo: np.ndarray):
        """One CV pass for targets ``Yo`` (rows in ``self.order``): r, r2, chosen alpha index."""
        F, K, g = self.F, self.K, Yo.shape[1]
        d = self.d
        sy = np.empty((F, K, g))
        ssy = np.empty((F, g))
        C = np.empty((F, d, g))
        for f in range(F):
            blk = Yo[self.fstarts[f] : self.fstarts[f + 1]]
            ssy[f] = np.einsum("ij,ij->j", blk, blk)
            prod = self.XaugT[f] @ blk
            C[f] = prod[:d]
            sy[f] = prod[d:]
        Ctot, sytot, ssytot = C.sum(axis=0), sy.sum(axis=0), ssy.sum(axis=0)
        acc = np.zeros((5, g))  # Σ pred, Σ pred², Σ y, Σ y², Σ pred·y  (held-out, centred)
        best_all = np.empty((F, g), dtype=np.int64)
        for f in range(F):
            st = self.folds_[f]
            sytr = sytot - sy[f]  # K × g
            muy = sytr / st["ntr"][:, None]
            mux = st["mux"]
            B = (Ctot - C[f]) - mux.T @ sytr  # d × g: Σ_tr (x − μx) yᵀ
            yy = (ssytot - ssy[f]) - np.einsum("kg,kg->g", sytr, muy)
            VtB = st["V"].T @ B  # r × g
            q2 = (VtB / np.maximum(st["s"], 1e-300)[:, None]) ** 2
            rss = yy[None, :] - (1.0 - (1.0 - st["h"]) ** 2) @ q2
            np.maximum(rss, 0.0, out=rss)
            best = np.argmin(rss / st["gcv_denom"][:, None], axis=0)
            best_all[f] = best
            beta = st["V"] @ (st["c"][best].T * VtB)  # d × g
            Cte = C[f] - mux.T @ sy[f]  # Σ_te (x − μx) yᵀ
            spred_g = st["sx_te_c"] @ beta  # K × g: Σ_te,g pred
            nf = self.nfg[f][:, None]
            acc[0] += spred_g.sum(axis=0)
            acc[1] += np.einsum("dg,dg->g", beta, st["Gte"] @ beta)
            acc[2] += (sy[f] - nf * muy).sum(axis=0)
            acc[3] += ssy[f] - 2 * np.einsum("kg,kg->g", muy, sy[f]) + (nf * muy * muy).sum(0)
            acc[4] += np.einsum("dg,dg->g", beta, Cte) - np.einsum("kg,kg->g", muy, spred_g)
        n = self.n
        sp_, spp, sy_, syy, spy = acc
        vp = spp - sp_ * sp_ / n
        vy = syy - sy_ * sy_ / n
        cov = spy - sp_ * sy_ / n
        r = np.zeros(g)
        ok = (vp > 1e-12 * (1.0 + vy)) & (vy > 0)
        r[ok] = cov[ok] / np.sqrt(vp[ok] * vy[ok])
        r2 = np.zeros(g)
        good = vy > 0
        r2[good] = 1.0 - (syy - 2 * spy + spp)[good] / vy[good]
        return np.clip(r, -1.0, 1.0), r2, best_all


def _permutation_rng(seed: int, b: int) -> np.random.Generator:
    return np.random.default_rng([seed, 1, b])


def _permutation_null(cv, Yo, fill, B, n_jobs, n_threads, progress):
    """``B × genes`` null of r; ``fill(b, buf)`` writes permutation ``b``'s ordered targets."""
    import queue
    from concurrent.futures import ThreadPoolExecutor, as_completed

    null = np.empty((B, Yo.shape[1]))
    bufs: queue.Queue = queue.Queue()
    for _ in range(max(1, min(n_jobs, B))):
        bufs.put(np.empty_like(Yo))

    def one(b: int) -> None:
        buf = bufs.get()
        try:
            with _blas_threads(n_threads):
                fill(b, buf)
                null[b] = cv.run(buf)[0]
        finally:
            bufs.put(buf)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=B, desc="permutations", unit="perm", leave=False)
    try:
        if n_jobs <= 1:
            for b in range(B):
                one(b)
                if bar is not None:
                    bar.update()
        else:
            with ThreadPoolExecutor(max_workers=n_jobs) as ex:
                for fut in as_completed([ex.submit(one, b) for b in range(B)]):
                    fut.result()
                    if bar is not None:
                        bar.update()
    finally:
        if bar is not None:
            bar.close()
    return null


def _rna_null_filler(T, expression, genes, layer, rna_groups, order, seed):
    """``fill(b, buf)`` for ``null="rna"``: shuffle expression rows (within ``rna_groups``),
    couple again, order the rows as the CV expects and centre (as the observed targets)."""
    E, _ = _expression_matrix(expression, genes, layer)
    n_rna = E.shape[0]
    if rna_groups is None:
        ridx = [np.arange(n_rna)]
    else:
        if isinstance(rna_groups, str):
            obs = getattr(expression, "obs", None)
            if obs is None or rna_groups not in obs.columns:
                raise SparsecellError(
                    f"rna_groups='{rna_groups}' is not an obs column of the expression AnnData",
                    "pass one label per RNA cell, or an existing obs column",
                )
            rna_groups = obs[rna_groups].astype(str).to_numpy()
        rg = pd.Series(np.asarray(rna_groups, dtype=object).ravel())
        if len(rg) != n_rna:
            raise SparsecellError(
                f"rna_groups has {len(rg)} entries for {n_rna} RNA cells",
                "one group label per RNA cell",
            )
        if rg.isna().any():
            raise SparsecellError("rna_groups hold missing values", "label every RNA cell")
        rcodes = pd.Categorical(rg.to_numpy()).codes
        ridx = [np.flatnonzero(rcodes == k) for k in range(rcodes.max() + 1)]
    mass = np.asarray(T.sum(axis=1, dtype=np.float64)).ravel()

    def fill(b: int, buf: np.ndarray) -> None:
        perm = _within_group_perm(ridx, n_rna, _permutation_rng(seed, b))
        Yb = _couple(T, E[perm], mass)
        np.subtract(Yb[order], Yb.mean(axis=0), out=buf)

    return fill


def _blas_threads(n_threads: int | None):
    import contextlib

    if n_threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(n_threads), user_api="blas")


def couple_then_predict(
    features: Any,
    coupling: Any,
    expression: Any,
    *,
    groups: Sequence | np.ndarray | None = None,
    genes: Sequence | None = None,
    model: str = "ridge",
    alphas: Sequence[float] | np.ndarray = np.logspace(-3, 5, 9),
    folds: int = 5,
    n_permutations: int = 100,
    seed: int = 0,
    progress: bool = False,
    layer: str | None = None,
    targets: np.ndarray | None = None,
    return_null: bool = False,
    n_jobs: int = 1,
    n_threads: int | None = 1,
    use_rep: str | None = None,
    null: str = "auto",
    rna_groups: Sequence | np.ndarray | str | None = None,
) -> pd.DataFrame | tuple[pd.DataFrame, np.ndarray]:
    """Predict each gene's coupled target from image features, with permutation z-scores.

    For every gene: the coupled target (``coupled_targets``) of each image cell is regressed on
    the cell's image features by ridge regression with ``folds``-fold cross-validation formed
    within ``groups``; features and targets are centred within group by the training cells'
    group means; the penalty is chosen per gene and fold from ``alphas`` by generalised
    cross-validation on the training cells. The score is the Pearson r, over all cells, of the
    held-out prediction and the within-group-centred target. The null repeats the whole
    procedure ``n_permutations`` times (same folds) on permuted data:

    - ``null="rna"``: the RNA cells' expression rows are shuffled (within ``rna_groups``) and
      coupled again. A coupling computed from the image geometry maps neighbouring image
      cells to overlapping sets of RNA cells, so *every* coupled target — even one of a gene
      that is pure noise across RNA cells — varies smoothly over the image features and is
      predictable from them. This null keeps that smoothing and asks whether the gene's
      pattern across the RNA cells, carried through the coupling, predicts better than an
      exchangeable one would: the question "can the image predict this gene".
    - ``null="image"``: coupled-target rows are shuffled among image cells within
      ``groups``. It asks only whether the features predict the coupled target at all,
      which the coupling's smoothing makes nearly always true (use it with a coupling that
      did not come from the image features, or with ``targets=``).

    Parameters
    ----------
    features
        ``n_img × d`` image features (dense or sparse; densified — reduce wide SAE latents
        with PCA first), or an AnnData of the image cells (see ``use_rep``).
    coupling
        ``n_img × n_rna`` coupling (dense or SciPy sparse).
    expression
        ``n_rna × n_genes`` normalised expression: AnnData, DataFrame, array or sparse.
    groups
        Per image cell group label (genotype, plate, ...), or an obs column name when
        ``features`` is an AnnData. ``None``: one group (plain CV with an intercept).
    genes
        Genes (names or indices) to test; ``None`` tests all.
    model
        ``"ridge"`` (the only model so far).
    alphas
        Ridge penalties to choose from (absolute, in the units of ``features``).
    folds
        Cross-validation folds (every group needs at least ``folds`` cells).
    n_permutations
        Permutations for the null (0: no ``z``/``p`` columns; otherwise at least 2).
    seed
        Seed of the fold assignment and the permutations.
    progress
        Show a progress bar over permutations (tqdm).
    layer
        AnnData layer of ``expression`` to use instead of ``.X``.
    targets
        Precomputed ``n_img × n_genes`` targets (then ``coupling`` may be ``None`` and
        ``expression`` only supplies gene names, or is ``None``).
    return_null
        Also return the ``n_permutations × n_genes`` null distribution of r.
    n_jobs
        Threads over permutations (NumPy releases the GIL in the heavy steps; the result does
        not depend on ``n_jobs``). ``-1``: one per CPU.
    n_threads
        BLAS threads per worker during the CV passes (default 1: the products are thin, and
        with several processes on 2 cores one BLAS thread was several times faster than two in
        our measurements; ``n_jobs`` is the better way to use more cores). ``None`` leaves the
        BLAS setting alone.
    use_rep
        With an AnnData as ``features``: the ``obsm`` key to use (``"X"`` for ``.X``; default
        ``"X_pca"`` when present, else ``.X``).
    null
        ``"rna"``, ``"image"`` or ``"auto"`` (``"rna"`` when ``coupling`` and ``expression``
        are given, else ``"image"``); see above. ``"rna"`` costs one coupling product per
        permutation.
    rna_groups
        With ``null="rna"``: per RNA cell group label (or an obs column of an AnnData
        ``expression``) within which expression rows are shuffled, e.g. the donor genotype,
        so that the null keeps between-group differences on the RNA side too.

    Returns
    -------
    pandas.DataFrame
        Indexed by gene: ``r`` (held-out Pearson), ``r2`` (held-out R²), ``z`` ((r − mean of the
        null) / its standard deviation), ``p`` (``(1 + #{null ≥ r}) / (1 + B)``), ``n`` (cells),
        ``alpha`` (the penalty chosen most often), ``null_mean``, ``null_sd``. ``df.attrs``
        holds ``params`` (including which null was used), ``warnings`` and ``seconds``.

    Raises
    ------
    SparsecellError
        Shape mismatches, NaN/inf, a group with fewer cells than ``folds``, bad parameters.
    """
    t0 = time.perf_counter()
    if model != "ridge":
        raise SparsecellError(f"unknown model '{model}'", "use model='ridge'")
    folds = int(folds)
    if folds < 2:
        raise SparsecellError(f"folds={folds} is too few", "use folds ≥ 2")
    n_permutations = int(n_permutations)
    if n_permutations < 0 or n_permutations == 1:
        raise SparsecellError(
            f"n_permutations={n_permutations}", "use 0 (no null) or at least 2 for a z-score"
        )
    alphas = np.asarray(alphas, dtype=np.float64).ravel()
    if alphas.size == 0 or not np.all(np.isfinite(alphas)) or alphas.min() < 0:
        raise SparsecellError("alphas must be finite and ≥ 0", "e.g. np.logspace(-3, 5, 9)")

    if hasattr(features, "obsm") and hasattr(features, "obs_names"):  # AnnData of image cells
        adata = features
        if use_rep is None:
            use_rep = "X_pca" if "X_pca" in adata.obsm else "X"
        if use_rep == "X":
            features = adata.X
        elif use_rep in adata.obsm:
            features = adata.obsm[use_rep]
        else:
            raise SparsecellError(
                f"use_rep='{use_rep}' not in the image AnnData's obsm",
                f"available: {', '.join(adata.obsm.keys()) or 'none'} (or 'X')",
            )
        if isinstance(groups, str):
            if groups not in adata.obs.columns:
                raise SparsecellError(
                    f"groups='{groups}' is not an obs column of the image AnnData",
                    f"available: {', '.join(map(str, adata.obs.columns))}",
                )
            groups = adata.obs[groups].astype(str).to_numpy()
    elif isinstance(groups, str):
        raise SparsecellError(
            f"groups='{groups}' names an obs column, but features is not an AnnData",
            "pass one label per cell",
        )
    if features is None:
        raise SparsecellError("no image features", "the AnnData has no X; pass use_rep")
    X = features.toarray() if sp.issparse(features) else np.asarray(features)
    if X.ndim != 2 or not np.issubdtype(X.dtype, np.number):
        raise SparsecellError("features must be a numeric n_cells × d matrix", "check the input")
    X = X.astype(np.float64, copy=False)
    if not np.all(np.isfinite(X)):
        raise SparsecellError("features hold NaN or infinite values", "impute or drop them")
    n = X.shape[0]

    if null not in ("auto", "rna", "image"):
        raise SparsecellError(f"unknown null '{null}'", "use 'rna', 'image' or 'auto'")
    have_rna = coupling is not None and expression is not None
    if null == "auto":
        null = "rna" if have_rna else "image"
    if null == "rna" and not have_rna and n_permutations:
        raise SparsecellError(
            "null='rna' re-couples shuffled expression, but coupling or expression is missing",
            "pass both (targets= may be given too), or use null='image'",
        )
    T = None
    if have_rna:
        T = _coupling_matrix(coupling)
        if T.shape[0] != n:
            raise SparsecellError(
                f"features have {n} cells but the coupling has {T.shape[0]} image rows",
                "pass the image cells the coupling was computed with, in the same order",
            )
    if targets is None:
        if T is None:
            raise SparsecellError("no coupling/expression given", "pass both, or targets=")
        Y, names = coupled_targets(T, expression, genes, layer=layer, return_names=True)
    else:
        Y = np.asarray(targets, dtype=np.float64)
        if Y.ndim != 2 or Y.shape[0] != n:
            raise SparsecellError(
                f"targets have shape {Y.shape}, expected ({n}, n_genes)", "check the inputs"
            )
        if not np.all(np.isfinite(Y)):
            raise SparsecellError("targets hold NaN or infinite values", "check the inputs")
        if genes is not None:
            names = np.asarray([str(g) for g in genes], dtype=object)
        elif expression is not None:
            names = _expression_matrix(expression, None)[1]
        else:
            names = np.asarray([f"g{i}" for i in range(Y.shape[1])], dtype=object)
        if names.size != Y.shape[1]:
            raise SparsecellError(
                f"{names.size} gene names for {Y.shape[1]} target columns", "check genes="
            )

    if groups is None:
        codes = np.zeros(n, dtype=np.int64)
        levels = np.asarray(["all"], dtype=object)
    else:
        g = pd.Series(np.asarray(groups).ravel() if not isinstance(groups, pd.Series) else groups)
        if len(g) != n:
            raise SparsecellError(
                f"groups has {len(g)} entries for {n} image cells", "one group label per cell"
            )
        if g.isna().any():
            raise SparsecellError("groups hold missing values", "label every cell")
        cat = pd.Categorical(g.to_numpy())
        codes = cat.codes.astype(np.int64)
        levels = np.asarray(cat.categories, dtype=object)
    n_groups = levels.size
    sizes = np.bincount(codes, minlength=n_groups)
    small = np.flatnonzero(sizes < folds)
    if small.size:
        raise SparsecellError(
            f"group '{levels[small[0]]}' has {sizes[small[0]]} cells, fewer than folds={folds}",
            "use fewer folds or merge small groups",
        )

    rng = np.random.default_rng(seed)
    fold = _fold_ids(codes, folds, rng)
    if n_jobs == -1:
        n_jobs = os.cpu_count() or 1
    n_jobs = max(1, int(n_jobs))
    with _blas_threads(n_threads):
        cv = _CVRidge(X, codes, fold, n_groups, folds, alphas)
        # global centring of the targets changes nothing (all centring is within group)
        # but keeps the sums of squares below free of cancellation
        Yo = Y[cv.order] - Y.mean(axis=0)
        r, r2, best = cv.run(Yo)
    counts = np.zeros((alphas.size, Y.shape[1]), dtype=np.int64)
    for f in range(folds):
        np.add.at(counts, (best[f], np.arange(Y.shape[1])), 1)

    warns: list[str] = []
    if X.shape[1] > 1000:
        msg = (
            f"{X.shape[1]} image features: each fold decomposes a {X.shape[1]}² Gram matrix and "
            "every pass costs n·d·genes; reduce wide SAE latents with PCA (e.g. 50-100) first"
        )
        log.warning(msg)
        warns.append(msg)
    # within-group variance of each target: a gene constant within every group carries no
    # testable signal (its r is reported as 0, z as 0 and p as 1)
    gsum = np.zeros((n_groups, Y.shape[1]))
    np.add.at(gsum, codes, Y)
    wvar = np.einsum("ij,ij->j", Y, Y) - np.einsum("kj,kj->j", gsum, gsum / sizes[:, None])
    const = wvar <= 1e-20 * (1.0 + np.einsum("ij,ij->j", Y, Y))
    if const.any():
        msg = (
            f"{int(const.sum())} gene(s) have no within-group variance in their coupled "
            f"targets (e.g. {names[np.flatnonzero(const)[0]]}); reported with r=0, z=0, p=1"
        )
        log.warning(msg)
        warns.append(msg)
        r[const] = 0.0
        r2[const] = 0.0

    out = pd.DataFrame(
        {"r": r, "r2": r2},
        index=pd.Index([str(x) for x in names], name="gene"),
    )
    if n_permutations:
        # permutation b draws from default_rng([seed, 1, b]), so the null does not depend on
        # n_jobs; each worker reuses one n × g buffer
        if null == "rna":
            fill = _rna_null_filler(T, expression, genes, layer, rna_groups, cv.order, seed)
        else:
            group_idx = [np.flatnonzero(codes == k) for k in range(n_groups)]
            # permutations act in the ordered index space (a within-group permutation stays
            # one there)
            inv = np.empty(n, dtype=np.int64)
            inv[cv.order] = np.arange(n)

            def fill(b: int, buf: np.ndarray) -> None:
                perm = _within_group_perm(group_idx, n, _permutation_rng(seed, b))
                np.take(Yo, inv[perm[cv.order]], axis=0, out=buf)

        null_r = _permutation_null(cv, Yo, fill, n_permutations, n_jobs, n_threads, progress)
        null_r[:, const] = 0.0
        mu = null_r.mean(axis=0)
        sd = null_r.std(axis=0, ddof=1)
        z = np.zeros_like(r)
        ok = sd > 0
        z[ok] = (r[ok] - mu[ok]) / sd[ok]
        flat = (~ok) & ~const
        if flat.any():
            msg = f"{int(flat.sum())} gene(s) have a degenerate permutation null; z set to 0"
            log.warning(msg)
            warns.append(msg)
        p = (1.0 + (null_r >= r[None, :] - 1e-12).sum(axis=0)) / (1.0 + n_permutations)
        p[const] = 1.0
        out["z"] = z
        out["p"] = p
        out["null_mean"] = mu
        out["null_sd"] = sd
    out["n"] = n
    out["alpha"] = alphas[np.argmax(counts, axis=0)]
    out.attrs["params"] = {
        "model": model,
        "alphas": alphas.tolist(),
        "alpha_selection": "GCV on the training cells of each fold, per gene",
        "folds": folds,
        "cv": "folds within groups; features and targets centred by training group means",
        "groups": None if groups is None else [str(v) for v in levels],
        "n_permutations": n_permutations,
        "null": null if n_permutations else None,
        "permutation": (
            "RNA expression rows shuffled"
            + (" within rna_groups" if rna_groups is not None else "")
            + ", re-coupled; same folds"
            if null == "rna"
            else "coupled-target rows shuffled among image cells within groups, same folds"
        ),
        "seed": seed,
        "n_jobs": n_jobs,
        "n_cells": n,
        "n_features": X.shape[1],
        "use_rep": use_rep,
        "n_genes": int(Y.shape[1]),
    }
    out.attrs["warnings"] = warns
    out.attrs["seconds"] = time.perf_counter() - t0
    if return_null:
        return out, (null_r if n_permutations else np.empty((0, Y.shape[1])))
    return out
