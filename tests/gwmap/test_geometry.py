"""Intra-domain costs: exact values, scaling, kNN-geodesic vs brute force, bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from gwmap_helpers import anisotropic_cloud

from sparsecell._errors import SparsecellError
from sparsecell.gwmap.geometry import Geometry, geometry, knn_geodesic, label_cost


def _brute_sq(X):
    return ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)


# --------------------------------------------------------------------------- exact values


def test_sqeuclidean_is_factored_and_exact():
    X = anisotropic_cloud(25, seed=1) + 100.0  # far from the origin: centring matters
    g = geometry(X, scale=None)
    assert g.matrix is None and g.is_factored  # never materialised unless asked
    A, B = g.factors()
    np.testing.assert_allclose(A @ B.T, _brute_sq(X), rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(g.dense(), _brute_sq(X), rtol=1e-10, atol=1e-9)
    assert g.n == 25


def test_euclidean_and_precomputed():
    X = anisotropic_cloud(20, seed=2)
    D = np.sqrt(_brute_sq(X))
    g = geometry(X, cost="euclidean", scale=None)
    np.testing.assert_allclose(g.dense(), D, atol=1e-10)
    assert g.factors() is None
    p = geometry(C=D, scale=2.0)
    assert p.cost == "precomputed" and p.scale == 2.0
    np.testing.assert_allclose(p.dense(), D / 2.0)


@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean", "knn_geodesic"])
def test_mean_scaling_gives_mean_one(cost):
    X = anisotropic_cloud(40, seed=3)
    g = geometry(X, cost=cost, k=6)
    # mean over all n² entries (diagonal included) is exactly 1 after scaling
    assert g.dense().mean() == pytest.approx(1.0, rel=1e-10)


def test_max_median_and_float_scaling():
    X = anisotropic_cloud(30, seed=4)
    raw = _brute_sq(X)
    off = raw[~np.eye(30, dtype=bool)]
    assert geometry(X, scale="max").dense().max() == pytest.approx(1.0, rel=1e-10)
    g = geometry(X, scale="median")  # 30² < 200k pairs: the exact off-diagonal median
    assert g.scale == pytest.approx(np.median(off), rel=1e-10)
    assert geometry(X, scale=4.0).dense() == pytest.approx(raw / 4.0)
    ge = geometry(X, cost="euclidean", scale="max")
    assert ge.dense().max() == pytest.approx(1.0, rel=1e-10)


def test_sampled_median_is_seeded_and_close():
    X = anisotropic_cloud(600, seed=5)  # 360k pairs > 200k: sampled
    g1, g2 = geometry(X, scale="median", seed=0), geometry(X, scale="median", seed=0)
    assert g1.scale == g2.scale
    off = _brute_sq(X)[~np.eye(600, dtype=bool)]
    # 200k sampled pairs: the sample median is within ~1% of the exact one
    assert g1.scale == pytest.approx(np.median(off), rel=0.02)


# --------------------------------------------------------------------------- kNN-geodesic


def _floyd_warshall(W):
    D = W.copy()
    for k in range(D.shape[0]):
        D = np.minimum(D, D[:, [k]] + D[[k], :])
    return D


def test_knn_geodesic_equals_floyd_warshall():
    X = anisotropic_cloud(14, seed=6, d=2)
    k = 3
    E = np.sqrt(_brute_sq(X))
    W = np.full_like(E, np.inf)
    for i in range(14):
        nb = np.argsort(E[i])[1 : k + 1]
        W[i, nb] = E[i, nb]
    W = np.minimum(W, W.T)  # symmetrised: an edge in either direction counts
    np.fill_diagonal(W, 0.0)
    ref = _floyd_warshall(W)
    assert np.all(np.isfinite(ref))  # this seed gives a connected graph
    np.testing.assert_allclose(knn_geodesic(X, k=k), ref, rtol=1e-12)


def test_disconnected_clusters_are_joined_with_warning(caplog):
    rng = np.random.default_rng(7)
    A = rng.normal(size=(15, 2))
    B = rng.normal(size=(15, 2)) + [50.0, 0.0]
    X = np.vstack([A, B])
    with caplog.at_level(logging.WARNING, logger="sparsecell.gwmap.geometry"):
        g = geometry(X, cost="knn_geodesic", k=4, scale=None)
    assert "disconnected" in caplog.text
    assert g.warnings and "2 disconnected components" in g.warnings[0]
    D = g.dense()
    assert np.all(np.isfinite(D))
    # the shortest bridge between the clusters bounds every cross distance from below,
    # and the cross block is not one constant (no silent "max" fill)
    bridge = np.sqrt(_brute_sq(X)[:15, 15:]).min()
    assert D[:15, 15:].min() == pytest.approx(bridge, rel=1e-12)
    assert np.ptp(D[:15, 15:]) > 1.0


def test_duplicate_points_stay_connected():
    X = np.vstack([anisotropic_cloud(10, seed=8), anisotropic_cloud(10, seed=8)])
    D = knn_geodesic(X, k=3)
    assert np.all(np.isfinite(D))
    assert np.allclose(np.diag(D[:10, 10:]), 0.0, atol=1e-300)


# --------------------------------------------------------------------------- labels


def test_label_cost():
    M = label_cost(["a", "b", "a"], ["b", "a", "c", "a"])
    np.testing.assert_array_equal(M, [[1, 0, 1, 0], [0, 1, 1, 1], [1, 0, 1, 0]])
    with pytest.raises(SparsecellError, match="share no category"):
        label_cost(["a", "b"], ["c", "d"])


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(X=np.array([[0.0, np.nan], [1.0, 2.0]])), "NaN"),
        (dict(X=np.ones((1, 3))), "at least 2"),
        (dict(X=np.ones((5, 2)), cost="cosine"), "unknown cost"),
        (dict(C=np.array([[0.0, 1.0], [2.0, 0.0]])), "not symmetric"),
        (dict(C=np.ones((2, 3))), "square"),
        (dict(X=np.ones((4, 2)) * np.arange(4)[:, None], scale=-1.0), "positive"),
        (dict(X=np.ones((4, 2))), "cannot scale"),  # all points equal: mean cost 0
        (dict(X=np.ones((5, 2)), cost="precomputed"), "needs C"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(SparsecellError, match=match):
        geometry(**kwargs)


def test_geometry_dataclass_contract():
    g = Geometry("precomputed", None, np.zeros((3, 3)), 1.0)
    assert g.n == 3 and g.k is None and g.factors() is None
