"""gwmap.result.GWResult on hand-made couplings with exact known answers."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sparsecell._errors import SparsecellError
from sparsecell.gwmap.result import GWResult

N = 6
PERM = np.array([2, 0, 1, 5, 3, 4])  # image cell i is coupled with RNA cell PERM[i]


def _perm_coupling(sparse: bool):
    T = np.zeros((N, N))
    T[np.arange(N), PERM] = 1.0 / N
    return sp.csr_matrix(T) if sparse else T


@pytest.fixture
def rna() -> ad.AnnData:
    obs = pd.DataFrame(
        {"ct": pd.Categorical(list("aabbcc"), categories=["a", "b", "c", "d"])},
        index=[f"r{i}" for i in range(N)],
    )
    X = sp.csr_matrix(np.arange(N * 3, dtype=np.float32).reshape(N, 3))
    a = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=["g0", "g1", "g2"]))
    a.obsm["X_pca"] = np.arange(N * 2, dtype=np.float64).reshape(N, 2)
    return a


def _result(rna, sparse=False, T=None):
    obs_img = pd.DataFrame(index=[f"i{i}" for i in range(N)])
    return GWResult.from_coupling(
        _perm_coupling(sparse) if T is None else T,
        obs_img,
        rna.obs,
        adata_rna=rna,
        rep_rna=rna.obsm["X_pca"],
        objective=0.25,
        converged=False,
        warnings=["solver note"],
    )


@pytest.mark.parametrize("sparse", [False, True])
def test_permutation_coupling_gives_exact_answers(rna, sparse):
    res = _result(rna, sparse)
    want = np.asarray(rna.obs["ct"])[PERM]
    for mode in ("hard", "barycentric"):
        df = res.transfer_labels("ct", mode)
        assert list(df.index) == [f"i{i}" for i in range(N)]
        assert list(df["label"].astype(str)) == list(want)
        np.testing.assert_allclose(df["confidence"], 1.0)
        assert list(df["label"].cat.categories) == ["a", "b", "c", "d"]
    img, rep = res.coembed()
    np.testing.assert_allclose(img, rna.obsm["X_pca"][PERM])
    np.testing.assert_allclose(rep, rna.obsm["X_pca"])
    imp = res.impute(genes=["g2", "g0"])
    assert list(imp.var_names) == ["g2", "g0"] and list(imp.obs_names) == list(res.obs_img.index)
    np.testing.assert_allclose(imp.X, rna.X.toarray()[PERM][:, [2, 0]])
    arr = res.impute(rna.X)  # array input -> array output
    np.testing.assert_allclose(arr, rna.X.toarray()[PERM])


def test_soft_coupling_hard_vs_barycentric(rna):
    # image cell 0: 0.4 on r0 (a), 0.3 on r2 (b), 0.3 on r3 (b): hard -> a (0.4),
    # barycentric -> b with probability 0.6
    T = np.zeros((1, N))
    T[0, [0, 2, 3]] = [0.4, 0.3, 0.3]
    res = GWResult.from_coupling(T, None, rna.obs)
    hard = res.transfer_labels("ct", "hard")
    bary, dist = res.transfer_labels("ct", "barycentric", return_distribution=True)
    assert hard["label"].iloc[0] == "a" and hard["confidence"].iloc[0] == pytest.approx(0.4)
    assert bary["label"].iloc[0] == "b" and bary["confidence"].iloc[0] == pytest.approx(0.6)
    np.testing.assert_allclose(dist.to_numpy(), [[0.4, 0.6, 0.0, 0.0]])
    assert "ct" in res.label_distributions


def test_empty_row_gets_missing_label_with_warning(rna):
    T = _perm_coupling(False)
    T[1] = 0.0
    res = _result(rna, T=T)
    df = res.transfer_labels("ct", "barycentric")
    assert pd.isna(df["label"].iloc[1]) and df["confidence"].iloc[1] == 0.0
    assert any("no coupling mass" in w for w in res.warnings)
    assert res.warnings[0] == "solver note"


@pytest.mark.parametrize("sparse", [False, True])
def test_write_read_round_trip(rna, tmp_path, sparse):
    res = _result(rna, sparse)
    res.write(tmp_path / "res")
    back = GWResult.read(tmp_path / "res", adata_rna=rna)
    assert sp.issparse(back.coupling) == sparse
    a = back.coupling.toarray() if sparse else back.coupling
    np.testing.assert_array_equal(a, _perm_coupling(False))
    assert back.objective == 0.25 and back.converged is False
    assert back.warnings == ["solver note"]
    pd.testing.assert_frame_equal(back.obs_rna, rna.obs)
    np.testing.assert_allclose(back.coembed()[0], rna.obsm["X_pca"][PERM])
    assert back.summary() == res.summary()
    assert (tmp_path / "res" / "manifest.json").exists()


def test_summary_and_to_anndata(rna):
    res = _result(rna)
    s = res.summary()
    assert s["mass"] == pytest.approx(1.0) and s["nnz"] == N and s["n_img"] == N
    a = res.to_anndata(labels={"ct": res.transfer_labels("ct")})
    assert list(a.obs["ct"].astype(str)) == list(np.asarray(rna.obs["ct"])[PERM])
    np.testing.assert_allclose(a.obsm["X_gwmap"], rna.obsm["X_pca"][PERM])
    assert a.uns["gwmap"]["summary"]["objective"] == 0.25


def test_bad_input(rna, tmp_path):
    with pytest.raises(SparsecellError, match="NaN"):
        GWResult.from_coupling(np.full((2, 2), np.nan))
    with pytest.raises(SparsecellError, match="rows"):
        GWResult.from_coupling(np.ones((3, N)), rna.obs)  # obs_img has 6 rows, T 3
    res = _result(rna)
    with pytest.raises(SparsecellError, match="not a column"):
        res.transfer_labels("nope")
    with pytest.raises(SparsecellError, match="mode"):
        res.transfer_labels("ct", "soft")
    with pytest.raises(SparsecellError, match="not a GW-map result"):
        GWResult.read(tmp_path)


@pytest.mark.parametrize("sparse", [False, True])
def test_unlabelled_rna_cells_carry_no_vote(rna, sparse):
    # image cell 0: 0.5 on r0 (unlabelled), 0.3 on r2 (b), 0.2 on r4 (c)
    obs = rna.obs.copy()
    obs["ct"] = obs["ct"].astype(object)
    obs.loc["r0", "ct"] = None
    T = np.zeros((1, N))
    T[0, [0, 2, 4]] = [0.5, 0.3, 0.2]
    res = GWResult.from_coupling(sp.csr_matrix(T) if sparse else T, None, obs)
    hard = res.transfer_labels("ct", "hard")
    assert hard["label"].iloc[0] == "b" and hard["confidence"].iloc[0] == pytest.approx(0.3)
    bary = res.transfer_labels("ct")
    assert bary["label"].iloc[0] == "b" and bary["confidence"].iloc[0] == pytest.approx(0.6)
