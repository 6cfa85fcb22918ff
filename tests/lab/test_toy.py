"""Toy models of superposition: they learn, show Elhage's phase change, and an SAE on the
hidden layer recovers the features."""

from __future__ import annotations

import numpy as np
import pytest

import sparsecell as spc
from sparsecell import SparsecellError
from sparsecell.lab import ToyConfig, toy_summary, train_toy, train_toys


def test_toy_model_learns():
    # 20 sparse features into 10 neurons: nearly everything fits, so the loss must fall far
    # below that of the best constant prediction (measured ratio 0.15 at 2000 steps; the
    # bound 0.4 leaves room for 1500 steps and other seeds).
    m = train_toy(ToyConfig(n_features=20, n_hidden=10, p=0.05, steps=1500, seed=0))
    assert m.W.shape == (10, 20) and m.b.shape == (20,)
    assert m.baseline_loss == pytest.approx(20 * (0.05 / 3 - 0.05**2 / 4))
    assert m.loss < 0.4 * m.baseline_loss
    X = spc.lab.sample_features(500, m.cfg, seed=1)
    assert X.shape == (500, 20) and X.min() >= 0 and X.max() <= 1
    assert 0.02 < (X > 0).mean() < 0.08  # p = 0.05 on 10,000 entries (sd 0.002)
    H, Xh = m.hidden(X), m.reconstruct(X)
    assert H.shape == (500, 10) and H.min() >= 0  # relu hidden layer
    assert Xh.shape == X.shape and Xh.min() >= 0
    # the importance-weighted loss of reconstruct() agrees with the stored held-out loss
    # (500 samples: the mean of a sum of 20 squared errors varies by ~15 %)
    assert np.mean(np.sum((X - Xh) ** 2, axis=1)) == pytest.approx(m.loss, rel=0.3)


def test_phase_change_dense_vs_sparse():
    # Elhage et al. 2022: dense features -> one feature per dimension at most (measured
    # 1.0000 at 1500 steps, seeds 0, 1); sparse features -> superposition (measured 5.06,
    # 5.07). Tolerances: dense <= 1.15 (a few features partially kept), sparse >= 2.
    dense = train_toy(n_features=64, n_hidden=16, p=1.0, steps=1500, hidden_activation="linear")
    sparse = train_toy(n_features=64, n_hidden=16, p=0.05, steps=1500, hidden_activation="linear")
    assert dense.features_per_dimension() <= 1.15
    assert sparse.features_per_dimension() >= 2.0
    assert sparse.n_represented() > dense.n_represented()  # measured 64 vs 27-30
    D = sparse.feature_dimensionality()
    assert D.shape == (64,) and np.all((D >= 0) & (D <= 1 + 1e-9))
    s = toy_summary(sparse)
    assert s["welch_bound"] > 0 and s["rms_cos"] >= s["welch_bound"] - 1e-12
    assert s["features_per_dimension"] == pytest.approx(sparse.features_per_dimension())


def test_sae_recovers_toy_features():
    # 32 sparse features in 16 linear neurons; the SAE's decoder should find the features'
    # hidden directions far better than a random dictionary of the same size (measured
    # 0.9999 vs 0.55-0.57 for seeds 0, 1; margin 0.15).
    m = train_toy(n_features=32, n_hidden=16, p=0.05, steps=1500, hidden_activation="linear")
    sae = spc.lab.toy_sae(m, 20_000, k=3, expansion=4, seed=0, epochs=10)
    rec = spc.lab.sae_recovery(m, sae)
    assert rec["mean_max_cos"] > rec["random_mean_max_cos"] + 0.15
    s = toy_summary(m, sae)
    assert s["sae_mean_max_cos"] == pytest.approx(rec["mean_max_cos"])
    assert 0 <= s["sae_fvu"] < 0.5 and s["sae_l0"] <= 3 + 1e-6


def test_deterministic_by_seed():
    cfg = ToyConfig(n_features=16, n_hidden=4, p=0.1, steps=200, seed=3)
    a, b, c = train_toy(cfg), train_toy(cfg), train_toy(cfg, seed=4)
    np.testing.assert_array_equal(a.W, b.W)
    assert not np.allclose(a.W, c.W)
    both = train_toys(cfg, [3, 4])  # vectorised: each model as if trained alone
    np.testing.assert_allclose(both[0].W, a.W, atol=1e-4)
    np.testing.assert_allclose(both[1].W, c.W, atol=1e-4)
    np.testing.assert_array_equal(
        spc.lab.sample_features(50, cfg, seed=1), spc.lab.sample_features(50, cfg, seed=1)
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"n_hidden": 0},
        {"n_features": 1},
        {"p": 0.0},
        {"p": 1.5},
        {"importance": 0.0},
        {"hidden_activation": "tanh"},
        {"steps": 0},
        {"lr": -1.0},
        {"no_such_setting": 1},
    ],
)
def test_bad_config_raises(bad):
    with pytest.raises(SparsecellError):
        train_toy(ToyConfig(steps=1), **bad)


def test_bad_inputs_raise():
    m = train_toy(n_features=8, n_hidden=3, steps=5)
    with pytest.raises(SparsecellError, match="expected n × 8"):
        m.hidden(np.zeros((4, 7)))
    with pytest.raises(SparsecellError):
        spc.lab.sample_features(10, {"n_features": 8})
    with pytest.raises(SparsecellError):
        spc.lab.sample_features(0, m.cfg)
