"""The shared numeric layer: exact kNN with distances, seeded Leiden, use_rep lookup."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

from sparsecell import SparsecellError
from sparsecell.core.graph import leiden
from sparsecell.core.inputs import get_rep
from sparsecell.core.knn import knn


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_knn_matches_sklearn_with_distances(metric):
    X = np.random.default_rng(0).normal(size=(300, 12))
    d, i = knn(X, 7, metric, return_distance=True)
    skm = "euclidean" if metric == "sqeuclidean" else metric
    dd, ii = NearestNeighbors(n_neighbors=8, metric=skm).fit(X).kneighbors(X)
    dd = dd[:, 1:] ** 2 if metric == "sqeuclidean" else dd[:, 1:]
    assert np.array_equal(i, ii[:, 1:])
    np.testing.assert_allclose(d, dd, rtol=1e-10, atol=1e-12)  # float64 both sides


def test_knn_sparse_equals_dense():
    rng = np.random.default_rng(1)
    X = sp.random(400, 200, density=0.05, random_state=rng, format="csr")
    assert np.array_equal(knn(X, 5), knn(X.toarray(), 5))


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_knn_sparse_distances_equal_dense(metric):
    """CSR distances come from sparse row products (‖a‖² + ‖b‖² − 2a·b), dense ones from
    exact differences: equal to float64 cancellation, ~1e-12 on values of order 1."""
    rng = np.random.default_rng(2)
    X = sp.random(300, 80, density=0.1, random_state=rng, format="csr") + sp.eye(300, 80)
    X = sp.csr_matrix(X)
    ds, i_s = knn(X, 6, metric, return_distance=True)
    dd, i_d = knn(X.toarray(), 6, metric, return_distance=True)
    assert np.array_equal(i_s, i_d)
    np.testing.assert_allclose(ds, dd, rtol=1e-9, atol=1e-12)


def test_knn_rejects_k_too_large():
    with pytest.raises(SparsecellError):
        knn(np.zeros((5, 2)) + np.arange(5)[:, None], 5)


def test_leiden_finds_planted_blocks_and_is_seeded():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    P = np.where(labels[:, None] == labels[None, :], 0.5, 0.01)
    A = np.triu(rng.random((90, 90)) < P, 1).astype(float)
    A = sp.csr_matrix(A + A.T)
    m1 = leiden(A, 1.0, random_state=0)
    m2 = leiden(A, 1.0, random_state=0)
    assert np.array_equal(m1, m2)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(labels, m1) > 0.95


def test_get_rep_lookup_and_error():
    a = ad.AnnData(np.ones((4, 3), dtype=np.float32), obsm={"X_pca": np.zeros((4, 2))})
    assert get_rep(a, "X_pca").shape == (4, 2)
    assert get_rep(a, None) is a.X
    with pytest.raises(SparsecellError, match="no representation 'X_cnn'.*X, X_pca"):
        get_rep(a, "X_cnn")
