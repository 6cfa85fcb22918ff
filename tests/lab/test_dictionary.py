"""Dictionary diagnostics: the Welch bound is met by a simplex and never beaten."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sparsecell as spc


def _simplex(d: int) -> np.ndarray:
    """d + 1 unit vectors in d dimensions with pairwise cos = -1/d (an equiangular tight
    frame, which attains the Welch bound)."""
    e = np.eye(d + 1) - 1.0 / (d + 1)
    q, _ = np.linalg.qr(e.T)  # basis of the sum-zero hyperplane (first d columns)
    v = e @ q[:, :d]
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_orthonormal_dictionary_has_no_interference():
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((10, 6)))
    res = spc.lab.interference(q.T * 3.0)  # 6 orthogonal rows in 10-D, any norm
    assert res.mean_abs_cos == pytest.approx(0.0, abs=1e-12)
    assert res.max_abs_cos == pytest.approx(0.0, abs=1e-12)
    assert res.welch_bound == 0.0 and (res.n_features, res.dim) == (6, 10)


def test_simplex_attains_the_welch_bound():
    d = 7
    res = spc.lab.interference(_simplex(d))
    assert res.welch_bound == pytest.approx(1 / d)
    for v in (res.mean_abs_cos, res.rms_cos, res.max_abs_cos):
        assert v == pytest.approx(1 / d, abs=1e-12)
    assert res.ratio == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(4))
def test_random_dictionaries_never_beat_the_welch_bound(seed):
    rng = np.random.default_rng(seed)
    n, d = [(64, 16), (300, 20), (40, 39), (100, 3)][seed]
    W = rng.standard_normal((n, d))
    res = spc.lab.interference(W, block_elems=500)  # several blocks
    G = (W / np.linalg.norm(W, axis=1, keepdims=True)) @ (
        W / np.linalg.norm(W, axis=1, keepdims=True)
    ).T
    off = np.abs(G[~np.eye(n, dtype=bool)])
    assert res.mean_abs_cos == pytest.approx(off.mean(), rel=1e-12)
    assert res.max_abs_cos == pytest.approx(off.max(), rel=1e-12)
    assert res.rms_cos >= res.welch_bound - 1e-12
    assert res.max_abs_cos >= res.welch_bound
    assert float(res) == res.mean_abs_cos


def test_zero_rows_are_skipped_and_errors():
    W = np.vstack([np.eye(3), np.zeros((2, 3))])
    assert spc.lab.interference(torch.tensor(W)).n_features == 3
    with pytest.raises(spc.SparsecellError, match="1 non-zero direction"):
        spc.lab.interference(np.vstack([np.ones((1, 3)), np.zeros((4, 3))]))
    with pytest.raises(spc.SparsecellError, match="dictionary contains NaN"):
        spc.lab.interference(np.full((3, 3), np.nan))


def test_features_per_dimension_and_dimensionality():
    d = 4
    W = np.vstack(
        [2 * np.eye(d)[:1], np.eye(d)[1:2], [[0, 0, 1, 0], [0, 0, -1, 0]], np.zeros((1, d))]
    )
    # 4 represented features (norms 2, 1, 1, 1), 1 ignored (norm 0) in 4 dims.
    assert spc.lab.features_per_dimension(W) == pytest.approx(7 / 4)
    dims = spc.lab.feature_dimensionality(W, block_elems=3)
    np.testing.assert_allclose(dims, [1.0, 1.0, 0.5, 0.5, 0.0])
    # Unit-norm rows: n_features / d; a simplex shares d dims among d + 1 features.
    S = _simplex(5)
    assert spc.lab.features_per_dimension(S) == pytest.approx(6 / 5)
    assert spc.lab.feature_dimensionality(S).sum() == pytest.approx(5.0)
