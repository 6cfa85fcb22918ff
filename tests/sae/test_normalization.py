"""Input normalisation: fitted, stored with the weights, foldable, robust to offsets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sae_helpers import ARCH_KW, ARCHS, K

import sparsecell as spc
from sparsecell.sae._data import fit_normalization

SHORT = dict(k=K, expansion=4, seed=0, steps=40, batch_size=256, lr=3e-3, progress=False)


def _stretched(toy) -> np.ndarray:
    """Toy data with unequal per-dimension scales and means, so zscore ≠ center_scale."""
    rng = np.random.default_rng(0)
    s = rng.uniform(0.2, 5.0, toy.X.shape[1]).astype(np.float32)
    mu = rng.normal(0.0, 3.0, toy.X.shape[1]).astype(np.float32)
    return toy.X * s + mu


def test_fit_normalization_center_scale_and_zscore(toy):
    X = _stretched(toy)
    X64 = X.astype(np.float64)
    mean, var = X64.mean(0), X64.var(0)
    m, s = fit_normalization(X, "center_scale", chunk=1000)  # several chunks
    np.testing.assert_allclose(m.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s.numpy(), np.full(32, np.sqrt(var.mean())), rtol=1e-5)
    # center_scale makes E‖x_n‖² = d_in
    xn = (X64 - m.numpy()) / s.numpy()
    assert (xn**2).sum(1).mean() == pytest.approx(32, rel=1e-4)
    m, s = fit_normalization(X, "zscore", chunk=1000)
    np.testing.assert_allclose(s.numpy(), np.sqrt(var), rtol=1e-5)
    m, s = fit_normalization(X, "none")
    assert torch.equal(m, torch.zeros(32)) and torch.equal(s, torch.ones(32))


def test_zscore_constant_column_does_not_divide_by_zero(toy):
    X = toy.X.copy()
    X[:, 3] = 7.0
    _, s = fit_normalization(X, "zscore")
    assert torch.isfinite(s).all() and float(s[3]) == 1.0


@pytest.mark.parametrize("kind", ["center_scale", "zscore"])
def test_normalization_is_stored_in_the_checkpoint(kind, toy, tmp_path):
    X = _stretched(toy)
    sae = spc.sae.train(X, normalize=kind, **SHORT)
    m, s = fit_normalization(X, kind)
    torch.testing.assert_close(sae.norm_mean, m)
    torch.testing.assert_close(sae.norm_scale, s)
    sae.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "cfg.json").read_text())
    assert cfg["normalization"]["kind"] == kind and cfg["sae"]["normalize"] == kind
    back = spc.sae.load(tmp_path / "m")
    assert back.cfg.normalize == kind
    assert torch.equal(back.norm_mean, sae.norm_mean)
    assert torch.equal(back.norm_scale, sae.norm_scale)
    np.testing.assert_array_equal(back.reconstruct(X[:200]), sae.reconstruct(X[:200]))


@pytest.mark.parametrize("arch", ARCHS)
def test_fold_normalization_keeps_outputs(arch, toy, tmp_path):
    X = _stretched(toy)
    sae = spc.sae.train(X, arch=arch, normalize="zscore", **SHORT, **ARCH_KW.get(arch, {}))
    assert not torch.equal(sae.norm_scale, torch.ones(32))
    Xs = X[:1000]
    Z0, R0 = sae.encode(Xs).toarray(), sae.reconstruct(Xs)
    rec0 = spc.sae.feature_recovery(sae, toy.features)["mean_max_cos"]
    fvu0 = spc.sae.evaluate(sae, Xs)["fvu"]
    sae.fold_normalization()
    assert torch.equal(sae.norm_mean, torch.zeros(32))
    assert torch.equal(sae.norm_scale, torch.ones(32))
    assert sae.cfg.normalize == "none"
    # float32 reassociation only: data are O(10), codes O(1)
    np.testing.assert_allclose(sae.encode(Xs).toarray(), Z0, rtol=0, atol=1e-4)
    np.testing.assert_allclose(sae.reconstruct(Xs), R0, rtol=0, atol=1e-4)
    assert spc.sae.feature_recovery(sae, toy.features)["mean_max_cos"] == pytest.approx(
        rec0, abs=1e-6
    )
    assert spc.sae.evaluate(sae, Xs)["fvu"] == pytest.approx(fvu0, rel=1e-4)
    # and the folded model survives a save/load round trip
    sae.save(tmp_path / "folded")
    back = spc.sae.load(tmp_path / "folded")
    assert back.cfg.normalize == "none"
    np.testing.assert_allclose(back.reconstruct(Xs), R0, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("arch", "normalize"),
    [("topk", "center_scale"), ("topk", "none"), ("batchtopk", "center_scale")],
)
def test_large_offset_does_not_kill_latents(arch, normalize):
    data = spc.datasets.sparse_features(128, 32, active=K, n_samples=4096, seed=0, offset=50)
    assert np.linalg.norm(data.X.mean(0)) > 45  # the offset dominates the raw data
    sae = spc.sae.train(
        data.X,
        arch=arch,
        k=K,
        expansion=4,
        seed=0,
        steps=300,
        batch_size=256,
        lr=3e-3,
        normalize=normalize,
        progress=False,
    )
    m = sae.metrics
    # measured: dead_frac 0.0 and FVU 0.34-0.41 (the same as without the offset);
    # 0.05 allows a few latents of 128 to die without hiding a collapse.
    assert m["dead_frac"] < 0.05, m
    assert m["fvu"] < 0.5, m
