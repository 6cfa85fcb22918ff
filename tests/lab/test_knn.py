"""Exact kNN of the lab metrics (``sparsecell.lab._knn``) against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from knn_helpers import brute_knn, brute_ranks, geometries

import sparsecell as spc
from sparsecell.lab import _knn


@pytest.mark.parametrize("name", list(geometries()))
@pytest.mark.parametrize("precision", ["bfloat16", "float32", "float64"])
def test_dense_knn_equals_brute_force(name, precision):
    X = geometries()[name]
    k = 7
    got = _knn.knn_indices(X, k, precision=precision, block_elems=40_000)  # 100-row blocks
    np.testing.assert_array_equal(got, brute_knn(X, k))


def test_screening_bound_holds_for_the_low_precision_product():
    """The rounding bound behind the screening: |L̃ − L| ≤ (κ s_i s_j + τ n_j)/2."""
    import torch

    rng = np.random.default_rng(1)
    for p in (8, 300, 2000):
        X = rng.standard_normal((200, p)) * rng.lognormal(0, 1, (200, 1))
        Xc = X - X.mean(axis=0)
        nx = np.einsum("ij,ij->i", Xc, Xc)
        Xc /= np.sqrt(nx.max())
        nx = np.einsum("ij,ij->i", Xc, Xc)
        s = np.sqrt(nx)
        for prec in ("bfloat16", "float32"):
            kappa, tau = _knn._error_constants(prec, p)
            dt = getattr(torch, prec)
            left = np.c_[Xc, np.ones(200), np.sqrt(kappa) * s]
            right = np.c_[-2.0 * Xc, (1.0 - tau) * nx, -np.sqrt(kappa) * s]
            approx = torch.mm(torch.from_numpy(left).to(dt), torch.from_numpy(right).to(dt).T)
            exact = left @ right.T
            err = np.abs(approx.double().numpy() - exact)
            bound = (kappa * np.outer(s, s) + tau * nx[None, :]) / 2.0
            assert np.all(err <= bound)
            if prec == "bfloat16":
                # and not vacuous where it sets the candidate count: input rounding
                # dominates, so the worst error seen is within 20× of the bound (float32's
                # worst-case p-term accumulation bound is ~√p looser than typical errors)
                assert bound.max() < 20 * err.max()


def test_survivor_fallback_to_higher_precision_stays_exact(monkeypatch):
    X = geometries()["gaussian"]
    monkeypatch.setattr(_knn, "_MAX_SURVIVOR_FRACTION", 0.0)  # every block escalates
    np.testing.assert_array_equal(_knn.knn_indices(X, 5, precision="bfloat16"), brute_knn(X, 5))


def test_wide_screen_overflow_rows_compared_in_full(monkeypatch):
    """Rows whose candidates exceed the kept top-K' bounds take the full comparison."""
    X = geometries()["duplicates"]  # 4 copies per point on average: many equal bounds
    monkeypatch.setattr(_knn, "_SCREEN_WIDTH", 1)
    np.testing.assert_array_equal(_knn.knn_indices(X, 3, precision="float32"), brute_knn(X, 3))


@pytest.mark.parametrize("integer", [False, True])
def test_sparse_knn_equals_brute_force(integer):
    rng = np.random.default_rng(2)
    S = sp.random(500, 300, density=0.03, random_state=3, format="csr")
    if integer:  # small integers: every distance exact, many ties
        S.data = rng.integers(1, 3, S.nnz).astype(float)
    got = _knn.knn_indices(S, 6, block_elems=20_000)
    np.testing.assert_array_equal(got, brute_knn(S.toarray(), 6))


def test_dense_sparse_matrix_takes_the_dense_path():
    rng = np.random.default_rng(4)
    D = rng.standard_normal((300, 64))
    np.testing.assert_array_equal(_knn.knn_indices(sp.csr_matrix(D), 5), brute_knn(D, 5))


def test_cosine_and_other_metrics_match_sklearn():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 40))
    for metric in ("cosine", "manhattan"):
        ref = NearestNeighbors(n_neighbors=6, metric=metric).fit(X)
        np.testing.assert_array_equal(
            _knn.knn_indices(X, 6, metric), ref.kneighbors(return_distance=False)
        )
    Z = X.copy()
    Z[3] = 0.0  # a zero row: cosine is left to scikit-learn
    assert _knn.knn_indices(Z, 4, "cosine").shape == (300, 4)


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(spc.SparsecellError, match="unknown kNN precision"):
        _knn.knn_indices(np.eye(5), 2, precision="half")


def test_numba_threads_are_restored():
    import numba

    before = numba.get_num_threads()
    _knn.knn_indices(sp.random(60, 30, density=0.2, random_state=0, format="csr"), 3)
    assert numba.get_num_threads() == before


@pytest.mark.parametrize("name", ["gaussian", "integer_grid", "duplicates"])
def test_neighbour_ranks_equal_stable_sort_ranks(name):
    R = geometries()[name][:, :16]
    rng = np.random.default_rng(6)
    nbr = np.stack([rng.choice(np.delete(np.arange(400), i), 6, replace=False) for i in range(400)])
    expected = brute_ranks(R, nbr)
    np.testing.assert_array_equal(_knn.neighbour_ranks(R, nbr, block_elems=10_000), expected)
    np.testing.assert_array_equal(_knn.neighbour_ranks(sp.csr_matrix(R), nbr), expected)
