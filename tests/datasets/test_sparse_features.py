"""sparse_features: the ground-truth generator is deterministic and has the promised law."""

from __future__ import annotations

import numpy as np
import pytest

import sparsecell as spc


def test_deterministic_by_seed():
    a = spc.datasets.sparse_features(64, 16, active=3, n_samples=2000, seed=7, noise=0.1)
    b = spc.datasets.sparse_features(64, 16, active=3, n_samples=2000, seed=7, noise=0.1)
    c = spc.datasets.sparse_features(64, 16, active=3, n_samples=2000, seed=8, noise=0.1)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.features, b.features)
    assert (a.codes != b.codes).nnz == 0
    assert not np.array_equal(a.X, c.X)


def test_shapes_dtypes_and_unit_norm_features():
    s = spc.datasets.sparse_features(100, 20, active=4, n_samples=500, seed=0)
    assert s.X.shape == (500, 20) and s.X.dtype == np.float32
    assert s.features.shape == (100, 20) and s.features.dtype == np.float32
    assert s.codes.shape == (500, 100) and s.codes.format == "csr"
    np.testing.assert_allclose(np.linalg.norm(s.features, axis=1), 1.0, atol=1e-6)


def test_x_is_codes_times_features():
    s = spc.datasets.sparse_features(100, 20, active=4, n_samples=500, seed=1)
    np.testing.assert_allclose(s.X, s.codes @ s.features, rtol=0, atol=1e-5)
    assert s.codes.data.min() >= 0.5 and s.codes.data.max() <= 1.5  # default magnitudes


@pytest.mark.parametrize("zipf", [0.0, 1.0])
def test_mean_active_count(zipf):
    n = 20_000
    s = spc.datasets.sparse_features(256, 16, active=5, n_samples=n, seed=2, zipf=zipf)
    per_row = s.codes.getnnz(axis=1)
    # Each row's count is a sum of independent Bernoullis with mean 5 and variance < 5,
    # so the mean over 20k rows has standard error < 0.016; 0.1 is > 6 standard errors.
    assert per_row.mean() == pytest.approx(5.0, abs=0.1)
    freq = s.codes.getnnz(axis=0) / n
    if zipf == 0:
        # equal frequencies 5/256 ≈ 0.0195; each estimated from 20k rows (sd ≈ 0.001)
        assert freq.min() > 0.014 and freq.max() < 0.025
    else:
        assert freq[:5].mean() > 10 * freq[-50:].mean()  # a power law, not uniform


def test_offset_adds_one_constant_vector_of_the_given_norm():
    s = spc.datasets.sparse_features(50, 12, active=3, n_samples=300, seed=3, offset=50.0)
    resid = s.X - s.codes @ s.features
    np.testing.assert_allclose(resid, np.broadcast_to(resid[0], resid.shape), atol=1e-4)
    assert np.linalg.norm(resid[0]) == pytest.approx(50.0, rel=1e-5)


def test_noise_level():
    s = spc.datasets.sparse_features(50, 12, active=3, n_samples=5000, seed=4, noise=0.2)
    resid = s.X - s.codes @ s.features
    # 60k Gaussian draws: the sample sd is within 1% of 0.2 with overwhelming probability
    assert resid.std() == pytest.approx(0.2, rel=0.02)
    assert abs(resid.mean()) < 0.01


@pytest.mark.parametrize(
    "kw",
    [
        dict(active=0),
        dict(active=-1),
        dict(active=65),
        dict(n_features=0),
        dict(d=0),
        dict(n_samples=0),
    ],
)
def test_bad_arguments(kw):
    args = dict(n_features=64, d=8, active=3, n_samples=10) | kw
    with pytest.raises(spc.SparsecellError):
        spc.datasets.sparse_features(**args)
