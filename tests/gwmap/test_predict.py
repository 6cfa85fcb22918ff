"""Couple, then predict: held-out ridge r with within-group CV and permutation z-scores."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from gwmap_predict_helpers import (
    N_NOISE,
    N_SIGNAL,
    SHIFT_GENE,
    linear_case,
    smooth_coupling_case,
)
from sklearn.linear_model import Ridge

from sparsecell._errors import SparsecellError
from sparsecell.gwmap.predict import (
    _fold_ids,
    _permutation_rng,
    _within_group_perm,
    couple_then_predict,
    coupled_targets,
)


@pytest.fixture(scope="module")
def case():
    return linear_case()


@pytest.fixture(scope="module")
def grouped(case):
    X, T, expr, groups = case
    return couple_then_predict(X, T, expr, groups=groups, n_permutations=60, seed=0)


def test_coupled_targets_row_normalised_dense_and_sparse():
    rng = np.random.default_rng(1)
    T = rng.random((7, 5)) * (rng.random((7, 5)) > 0.4)
    T[:, 0] += 0.1  # every row carries mass
    E = rng.poisson(1.0, size=(5, 6)).astype(float)
    want = (T / T.sum(axis=1, keepdims=True)) @ E
    for TT in (T, sp.csr_matrix(T)):
        for EE in (E, sp.csr_matrix(E)):
            got = coupled_targets(TT, EE, chunk_size=3)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    adata = ad.AnnData(E, var=pd.DataFrame(index=[f"G{i}" for i in range(6)]))
    got, names = coupled_targets(T, adata, genes=["G4", "G1"], return_names=True)
    assert list(names) == ["G4", "G1"]
    np.testing.assert_allclose(got, want[:, [4, 1]], rtol=1e-12)


def test_true_pairing_finds_signal_genes_not_noise(grouped):
    df = grouped
    sig = df.loc[[f"sig{i}" for i in range(N_SIGNAL)]]
    noise = df.loc[[f"noise{i}" for i in range(N_NOISE)]]
    # signal genes: noise sd 0.7 vs signal sd 1 gives a population r ≈ 0.8; held-out r on
    # 240 cells is > 0.6 and, with a null sd ≈ 1/sqrt(240) ≈ 0.065, z far above 3
    assert (sig["r"] > 0.6).all(), sig
    assert (sig["z"] > 6).all(), sig
    assert (sig["p"] == 1 / 61).all()  # no permutation reaches the observed r
    # noise genes: z follows the permutation null (about N(0, 1)); |z| < 3.5 for all 12
    # (P(|z| > 3.5) ≈ 5e-4 per gene under the null)
    assert (noise["z"].abs() < 3.5).all(), noise
    assert (noise["r"].abs() < 0.25).all()
    assert (df["n"] == 240).all()
    assert set(df.columns) >= {"r", "r2", "z", "p", "n"}
    assert df.attrs["params"]["folds"] == 5 and df.attrs["params"]["n_permutations"] == 60


def test_group_shift_gene_not_predictable_within_groups(case, grouped):
    X, T, expr, groups = case
    # within groups the shift gene is pure noise: |z| < 3.5 (as for the noise genes)
    assert abs(grouped.loc[SHIFT_GENE, "z"]) < 3.5
    # ignoring groups, the last feature reveals the group and hence the shift: r ≈ 0.85
    pooled = couple_then_predict(X, T, expr, genes=[SHIFT_GENE], n_permutations=30, seed=0)
    assert pooled.loc[SHIFT_GENE, "r"] > 0.7
    assert pooled.loc[SHIFT_GENE, "z"] > 6


def _naive(X, Y, codes, fold, alphas):
    """Explicit loop: centre by training-group means, GCV over alphas with sklearn Ridge."""
    n, g = Y.shape
    pred = np.zeros_like(Y)
    yc = np.zeros_like(Y)
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        Xtr, Xte, Ytr, Yte = X[tr].copy(), X[te].copy(), Y[tr].copy(), Y[te].copy()
        for k in np.unique(codes):
            mtr, mte = codes[tr] == k, codes[te] == k
            mx, my = X[tr][mtr].mean(0), Y[tr][mtr].mean(0)
            Xtr[mtr] -= mx
            Xte[mte] -= mx
            Ytr[mtr] -= my
            Yte[mte] -= my
        ntr = Xtr.shape[0]
        for j in range(g):
            best, best_gcv = None, np.inf
            for a in alphas:
                m = Ridge(alpha=a, fit_intercept=False, solver="svd").fit(Xtr, Ytr[:, j])
                rss = np.sum((Ytr[:, j] - m.predict(Xtr)) ** 2)
                H = Xtr @ np.linalg.solve(Xtr.T @ Xtr + a * np.eye(X.shape[1]), Xtr.T)
                gcv = rss / (1 - np.trace(H) / ntr) ** 2
                if best is None or gcv < best_gcv * (1 - 1e-12):
                    best, best_gcv = m, gcv
            pred[te, j] = best.predict(Xte)
        yc[te] = Yte
    return np.array([np.corrcoef(pred[:, j], yc[:, j])[0, 1] for j in range(g)])


@pytest.mark.parametrize("alphas", [[3.0], [0.01, 1.0, 100.0]])
def test_vectorised_ridge_equals_naive_loop(alphas):
    rng = np.random.default_rng(3)
    n, d, g = 45, 4, 3
    X = rng.normal(size=(n, d))
    Y = X @ rng.normal(size=(d, g)) * 0.5 + rng.normal(size=(n, g))
    groups = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    codes = pd.Categorical(groups).codes.astype(np.int64)
    seed, folds, B = 7, 3, 3
    df, null = couple_then_predict(
        X,
        None,
        None,
        targets=Y,
        groups=groups,
        alphas=alphas,
        folds=folds,
        n_permutations=B,
        seed=seed,
        return_null=True,
    )
    fold = _fold_ids(codes, folds, np.random.default_rng(seed))
    np.testing.assert_allclose(df["r"].to_numpy(), _naive(X, Y, codes, fold, alphas), atol=1e-9)
    # the permutation null: same folds, target rows shuffled within groups
    gidx = [np.flatnonzero(codes == k) for k in range(3)]
    for b in range(B):
        perm = _within_group_perm(gidx, n, _permutation_rng(seed, b))
        assert (codes[perm] == codes).all()
        np.testing.assert_allclose(null[b], _naive(X, Y[perm], codes, fold, alphas), atol=1e-9)


def test_deterministic_by_seed(case):
    X, T, expr, groups = case
    kw = dict(groups=groups, genes=["sig0", "noise0", "noise1"], n_permutations=20)
    a = couple_then_predict(X, T, expr, seed=5, **kw)
    b = couple_then_predict(X, T, expr, seed=5, **kw)
    c = couple_then_predict(X, T, expr, seed=6, **kw)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["null_mean"], c["null_mean"])
    # threads over permutations give the same null
    d = couple_then_predict(X, T, expr, seed=5, n_jobs=2, **kw)
    pd.testing.assert_frame_equal(a, d)


def test_sparse_coupling_and_features(case):
    X, T, expr, groups = case
    kw = dict(groups=groups, genes=["sig1", "noise2"], n_permutations=10, seed=1)
    a = couple_then_predict(X, T, expr, **kw)
    b = couple_then_predict(sp.csr_matrix(X), sp.csr_matrix(T), expr, **kw)
    pd.testing.assert_frame_equal(a, b)


def test_constant_gene_reported_not_nan(case):
    X, T, expr, groups = case
    e = expr[["sig0"]].assign(flat=1.0)
    df = couple_then_predict(X, T, e, groups=groups, n_permutations=10)
    assert not df.isna().any().any()
    assert df.loc["flat", "r"] == 0 and df.loc["flat", "p"] == 1
    assert any("no within-group variance" in w for w in df.attrs["warnings"])


def test_bad_inputs(case):
    X, T, expr, groups = case
    with pytest.raises(SparsecellError, match="image rows"):
        couple_then_predict(X[:-1], T, expr)
    with pytest.raises(SparsecellError, match="RNA columns"):
        couple_then_predict(X, T[:, :-1], expr)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(SparsecellError, match="NaN"):
        couple_then_predict(Xn, T, expr)
    Tn = T.copy()
    Tn[0, 0] = np.nan
    with pytest.raises(SparsecellError, match="NaN"):
        couple_then_predict(X, Tn, expr)
    g = groups.copy()
    g[:3] = 99  # a group of 3 cells with 5 folds
    with pytest.raises(SparsecellError, match="fewer than folds"):
        couple_then_predict(X, T, expr, groups=g)
    with pytest.raises(SparsecellError, match="groups has"):
        couple_then_predict(X, T, expr, groups=groups[:-1])
    with pytest.raises(SparsecellError, match="not in the expression"):
        couple_then_predict(X, T, expr, genes=["nope"])
    with pytest.raises(SparsecellError, match="n_permutations"):
        couple_then_predict(X, T, expr, n_permutations=1)
    with pytest.raises(SparsecellError, match="model"):
        couple_then_predict(X, T, expr, model="lasso")
    T0 = T.copy()
    T0[4] = 0.0
    with pytest.raises(SparsecellError, match="no coupling mass"):
        coupled_targets(T0, expr)


def test_large_offsets_do_not_change_results(case):
    X, T, expr, groups = case
    kw = dict(groups=groups, n_permutations=0, seed=2)
    a = couple_then_predict(X, T, expr, **kw)
    # a constant shift of features and targets is removed by the within-group centring;
    # sufficient statistics in float64 keep r to ~1e-9 despite offsets 1e3–1e4 × the spread
    b = couple_then_predict(X + 1e3, T, expr + 1e4, **kw)
    np.testing.assert_allclose(a["r"], b["r"], atol=1e-7)


def test_anndata_features_with_use_rep_and_group_column(case):
    X, T, expr, groups = case
    obs = pd.DataFrame({"plate": groups.astype(str)}, index=[f"c{i}" for i in range(len(X))])
    img = ad.AnnData(obs=obs)
    img.obsm["X_sae"] = X
    kw = dict(genes=["sig0", SHIFT_GENE], n_permutations=10, seed=0)
    a = couple_then_predict(img, T, expr, use_rep="X_sae", groups="plate", **kw)
    b = couple_then_predict(X, T, expr, groups=groups.astype(str), **kw)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=0, atol=0)
    with pytest.raises(SparsecellError, match="use_rep"):
        couple_then_predict(img, T, expr, use_rep="X_nope", **kw)
    with pytest.raises(SparsecellError, match="obs column"):
        couple_then_predict(img, T, expr, use_rep="X_sae", groups="nope", **kw)


def test_rna_null_is_calibrated_where_the_image_null_is_not():
    X, T, expr = smooth_coupling_case()
    kw = dict(n_permutations=50, seed=0)
    rna = couple_then_predict(X, T, expr, **kw)  # null="auto" → "rna"
    img = couple_then_predict(X, T, expr, null="image", **kw)
    assert rna.attrs["params"]["null"] == "rna" and img.attrs["params"]["null"] == "image"
    noise = [c for c in expr.columns if c.startswith("noise")]
    struct = [c for c in expr.columns if c.startswith("struct")]
    # the coupling smooths every gene over the image trajectory: shuffling coupled targets
    # among image cells calls most pure-noise genes predictable (measured: 27 of 40 at p ≤ 0.05)
    assert (img.loc[noise, "p"] <= 0.05).mean() > 0.5
    # re-coupling shuffled RNA rows keeps that smoothing: noise genes are null genes. Under
    # the null P(p ≤ 0.05) ≈ 0.05, so about 2 of 40; more than 8 has probability < 1e-3
    # (binomial); measured: 1. The structured genes (held-out r ≈ 0.97) stay beyond every
    # permutation (p = 1/51; measured z 4.4–5.2, asserted > 3)
    assert (rna.loc[noise, "p"] <= 0.05).sum() <= 8, rna.loc[noise]
    assert (rna.loc[struct, "p"] <= 1 / 51 + 1e-12).all(), rna.loc[struct]
    assert (rna.loc[struct, "z"] > 3).all(), rna.loc[struct]
    # the observed statistics do not depend on the null; only z and p do
    np.testing.assert_allclose(rna["r"], img["r"])


def test_rna_null_within_rna_groups_and_bad_inputs():
    X, T, expr = smooth_coupling_case(n_noise=4)
    rg = np.repeat(["a", "b", "c"], 100)
    df = couple_then_predict(X, T, expr, n_permutations=5, rna_groups=rg)
    assert "within rna_groups" in df.attrs["params"]["permutation"]
    rna = ad.AnnData(expr.to_numpy(), obs=pd.DataFrame({"donor": rg}, index=map(str, range(300))))
    rna.var_names = list(expr.columns)
    df2 = couple_then_predict(X, T, rna, n_permutations=5, rna_groups="donor")
    np.testing.assert_allclose(df2["z"], df["z"])  # same permutations: same null
    with pytest.raises(SparsecellError, match="rna_groups has 3 entries"):
        couple_then_predict(X, T, expr, n_permutations=5, rna_groups=["a", "b", "c"])
    with pytest.raises(SparsecellError, match="not an obs column"):
        couple_then_predict(X, T, rna, n_permutations=5, rna_groups="plate")
    with pytest.raises(SparsecellError, match="unknown null"):
        couple_then_predict(X, T, expr, n_permutations=5, null="cells")
    Y = coupled_targets(T, expr)
    with pytest.raises(SparsecellError, match="null='rna'"):
        couple_then_predict(X, None, None, targets=Y, n_permutations=5, null="rna")
