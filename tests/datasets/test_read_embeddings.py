"""read_embeddings: .npy (memory-mapped) and .h5ad (X or obsm), with clear errors."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sparsecell as spc

rng = np.random.default_rng(0)
X = rng.standard_normal((40, 6)).astype(np.float32)


def _adata(**kw) -> ad.AnnData:
    return ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(40)]), **kw)


def test_npy_is_memory_mapped(tmp_path):
    np.save(tmp_path / "x.npy", X)
    a = spc.datasets.read_embeddings(tmp_path / "x.npy")
    assert isinstance(a, np.memmap) and not a.flags.writeable
    np.testing.assert_array_equal(a, X)
    b = spc.datasets.read_embeddings(str(tmp_path / "x.npy"), mmap=False)
    assert not isinstance(b, np.memmap)
    np.testing.assert_array_equal(b, X)


def test_h5ad_x_and_obsm(tmp_path):
    _adata(X=X * 2, obsm={"X_emb": X}).write_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(
        np.asarray(spc.datasets.read_embeddings(tmp_path / "a.h5ad")[:]), X * 2
    )
    emb = spc.datasets.read_embeddings(tmp_path / "a.h5ad", obsm="X_emb")
    assert emb.shape == (40, 6)
    np.testing.assert_array_equal(emb[:], X)
    np.testing.assert_array_equal(emb[5:9], X[5:9])  # lazy row slices
    eager = spc.datasets.read_embeddings(tmp_path / "a.h5ad", obsm="X_emb", mmap=False)
    assert isinstance(eager, np.ndarray)
    np.testing.assert_array_equal(eager, X)


def test_h5ad_sparse_x_is_densified(tmp_path):
    Xs = X.copy()
    Xs[Xs < 0.5] = 0
    _adata(X=sp.csr_matrix(Xs)).write_h5ad(tmp_path / "s.h5ad")
    a = spc.datasets.read_embeddings(tmp_path / "s.h5ad")
    assert isinstance(a, np.ndarray)
    np.testing.assert_array_equal(a, Xs)


def test_missing_file(tmp_path):
    with pytest.raises(spc.SparsecellError, match="not found"):
        spc.datasets.read_embeddings(tmp_path / "nope.npy")


def test_wrong_extension(tmp_path):
    (tmp_path / "x.csv").write_text("1,2\n3,4\n")
    with pytest.raises(spc.SparsecellError, match=r"unsupported input format '\.csv'"):
        spc.datasets.read_embeddings(tmp_path / "x.csv")


def test_missing_obsm_key_lists_available_keys(tmp_path):
    _adata(obsm={"X_emb": X, "X_umap": X[:, :2]}).write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(spc.SparsecellError, match="obsm key 'X_pca'") as e:
        spc.datasets.read_embeddings(tmp_path / "a.h5ad", obsm="X_pca")
    assert "X_emb" in str(e.value) and "X_umap" in str(e.value)


def test_obsm_key_on_h5ad_without_obsm(tmp_path):
    _adata(X=X).write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(spc.SparsecellError, match="obsm key 'X_emb'"):
        spc.datasets.read_embeddings(tmp_path / "a.h5ad", obsm="X_emb")


def test_obsm_with_npy(tmp_path):
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(spc.SparsecellError, match="obsm"):
        spc.datasets.read_embeddings(tmp_path / "x.npy", obsm="X_emb")


@pytest.mark.parametrize("shape", [(4, 5, 6), (7,)])
def test_not_a_matrix(tmp_path, shape):
    np.save(tmp_path / "x.npy", np.zeros(shape, np.float32))
    with pytest.raises(spc.SparsecellError, match=f"{len(shape)}-D array"):
        spc.datasets.read_embeddings(tmp_path / "x.npy")


def test_non_numeric_npy(tmp_path):
    np.save(tmp_path / "s.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(spc.SparsecellError, match="not numeric"):
        spc.datasets.read_embeddings(tmp_path / "s.npy")
    np.save(tmp_path / "o.npy", np.array([[{}, 1]], dtype=object), allow_pickle=True)
    with pytest.raises(spc.SparsecellError, match="cannot read"):
        spc.datasets.read_embeddings(tmp_path / "o.npy")


def test_not_an_h5ad(tmp_path):
    (tmp_path / "x.h5ad").write_bytes(b"not hdf5")
    with pytest.raises(spc.SparsecellError, match="cannot read x.h5ad"):
        spc.datasets.read_embeddings(tmp_path / "x.h5ad")
