"""evaluate(): known answers on hand-built SAEs and consistency with encode/reconstruct."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sparsecell as spc
from sparsecell.sae import SAEConfig


def _build(arch: str, d: int, m: int, **kw) -> spc.sae.SparseAutoencoder:
    return spc.sae.ARCHITECTURES[arch](SAEConfig(arch=arch, d_in=d, d_sae=m, **kw))


def _identity_relu(d: int) -> spc.sae.SparseAutoencoder:
    """ReLU SAE with latents +e_i and -e_i: relu(x) - relu(-x) = x exactly."""
    sae = _build("relu", d, 2 * d)
    eye = torch.eye(d)
    W = torch.cat([eye, -eye])
    with torch.no_grad():
        sae.W_enc.copy_(W)
        sae.W_dec.copy_(W)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_decoder_returning_the_mean_has_fvu_one():
    X = np.random.default_rng(0).normal(3.0, 2.0, (3000, 16)).astype(np.float32)
    sae = _build("topk", 16, 64, k=4)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.copy_(torch.from_numpy(X.astype(np.float64).mean(0)).float())
    m = spc.sae.evaluate(sae, X, batch_size=700)
    # x̂ = x̄ for every row: FVU = Σ‖x−x̄‖² / Σ‖x−x̄‖² = 1 up to float32 rounding of x̄
    assert m["fvu"] == pytest.approx(1.0, abs=1e-6)
    assert m["n_samples"] == 3000


def test_perfect_reconstruction_and_sparsity_counts():
    d, n = 8, 2000
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, d)).astype(np.float32)
    X[:, :3] = np.abs(X[:, :3])  # dims 0-2 never negative: latents d+0..d+2 never fire
    sae = _identity_relu(d)
    m = spc.sae.evaluate(sae, X, batch_size=512)
    assert m["fvu"] < 1e-12 and m["mse"] < 1e-12
    assert m["cosine"] == pytest.approx(1.0, abs=1e-6)
    # every non-zero coordinate is one active latent
    assert m["l0"] == pytest.approx(np.count_nonzero(X) / n, abs=1e-12)
    assert m["dead_frac"] == pytest.approx(3 / (2 * d))
    # dims 0-2 fire on every row, the others' ±latents on about half of the rows
    assert m["dense_frac"] == pytest.approx(13 / 16)
    hist = m["freq_hist"]
    assert len(hist["bin_edges"]) == len(hist["counts"]) + 1
    assert sum(hist["counts"]) == 2 * d - 3  # one count per live latent
    assert hist["counts"][-1] >= 3  # frequency 1 (log10 = 0) is in the last bin


def test_dense_threshold_is_respected():
    sae = _identity_relu(4)
    X = np.random.default_rng(2).standard_normal((500, 4)).astype(np.float32)
    assert spc.sae.evaluate(sae, X, dense_threshold=0.9)["dense_frac"] == 0.0
    assert spc.sae.evaluate(sae, X, dense_threshold=0.1)["dense_frac"] == 1.0


def test_fvu_uses_variance_about_the_mean(fresh, toy):
    sae = fresh("topk")
    sae.fold_normalization()  # raw space = model space, so b_dec is the raw offset
    X = toy.X[:2000]
    c = np.linspace(5.0, 12.0, X.shape[1]).astype(np.float32)
    f0 = spc.sae.evaluate(sae, X)["fvu"]
    with torch.no_grad():
        sae.b_dec.add_(torch.from_numpy(c))
    f1 = spc.sae.evaluate(sae, X + c)["fvu"]
    # Same codes and residuals; the only change is float32 rounding of values ~10
    # (~1e-6 absolute on residuals of ~0.1), so the FVU agrees to ~1e-5 relative.
    assert f1 == pytest.approx(f0, rel=1e-4)
    # and the test can tell: a variance about zero would differ by orders of magnitude
    X64 = X.astype(np.float64)
    about_zero = ((X64 + c) ** 2).sum()
    about_mean = ((X64 - X64.mean(0)) ** 2).sum()
    assert about_zero > 100 * about_mean


def test_evaluate_agrees_with_encode_and_reconstruct(trained, toy):
    sae = trained("batchtopk")
    X = toy.X
    m = spc.sae.evaluate(sae, X, batch_size=1000)
    R = sae.reconstruct(X).astype(np.float64)
    X64 = X.astype(np.float64)
    fvu = ((X64 - R) ** 2).sum() / ((X64 - X64.mean(0)) ** 2).sum()
    assert m["fvu"] == pytest.approx(fvu, rel=1e-6)
    Z = sae.encode(X)
    assert m["l0"] == pytest.approx(Z.nnz / X.shape[0], rel=1e-12)
    freq = np.bincount(Z.indices, minlength=sae.d_sae) / X.shape[0]
    assert m["dead_frac"] == pytest.approx((freq == 0).mean())
    assert m["dense_frac"] == pytest.approx((freq > 0.1).mean())
    assert sum(m["freq_hist"]["counts"]) == int((freq > 0).sum())
    # train() records the same evaluation of the training data
    assert sae.metrics["fvu"] == pytest.approx(m["fvu"], rel=1e-6)


def test_evaluate_subset_is_seeded(trained, toy):
    sae = trained("topk")
    a = spc.sae.evaluate(sae, toy.X, max_samples=500, seed=1)
    b = spc.sae.evaluate(sae, toy.X, max_samples=500, seed=1)
    c = spc.sae.evaluate(sae, torch.from_numpy(toy.X), max_samples=500, seed=1)
    assert a["n_samples"] == 500
    assert a["fvu"] == b["fvu"]
    assert c["fvu"] == pytest.approx(a["fvu"], rel=1e-9)  # same rows for torch input


def test_evaluate_restores_training_mode(trained, toy):
    sae = trained("relu")
    sae.train()
    try:
        spc.sae.evaluate(sae, toy.X[:100])
        assert sae.training
    finally:
        sae.eval()
