"""Bad input at the API gives one SparsecellError that says what is wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sae_helpers import ARCHS

import sparsecell as spc

QUICK = dict(k=3, expansion=4, steps=5, batch_size=256, progress=False)


def test_sparsecell_error_is_a_value_error_with_a_fix():
    e = spc.SparsecellError("x is wrong", "do y")
    assert isinstance(e, ValueError) and str(e) == "x is wrong (do y)"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_train_names_the_non_finite_row(toy, bad, tmp_path):
    X = toy.X[:1000].copy()
    X[717, 4] = bad
    with pytest.raises(spc.SparsecellError, match=r"row 717 contains NaN or inf"):
        spc.sae.train(X, out=tmp_path / "m", chunk_size=300, **QUICK)  # row in chunk 3
    assert list(tmp_path.iterdir()) == []


def test_encode_reconstruct_evaluate_name_the_non_finite_row(trained, toy):
    sae = trained("topk")
    X = toy.X[:1000].copy()
    X[300, 0] = np.nan
    with pytest.raises(spc.SparsecellError, match=r"row 300 "):
        sae.encode(X, batch_size=128)  # in the third batch
    with pytest.raises(spc.SparsecellError, match=r"row 300 "):
        sae.reconstruct(torch.from_numpy(X), batch_size=128)
    with pytest.raises(spc.SparsecellError, match=r"row 300 "):
        spc.sae.evaluate(sae, X, batch_size=128)


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_wrong_dimensionality_after_training(arch, trained, toy):
    sae = trained(arch)
    X = toy.X[:50, :31]
    for call in (sae.encode, sae.reconstruct, lambda x: spc.sae.evaluate(sae, x)):
        with pytest.raises(spc.SparsecellError, match="31 features but this SAE expects 32"):
            call(X)
    with pytest.raises(spc.SparsecellError, match="2-D"):
        sae.encode(toy.X[0])
    with pytest.raises(spc.SparsecellError, match="latents"):
        sae.decode(np.zeros((3, sae.d_sae + 1), np.float32))
    with pytest.raises(spc.SparsecellError, match="features must be"):
        spc.sae.feature_recovery(sae, np.zeros((5, 31)))


def test_empty_input(trained):
    with pytest.raises(spc.SparsecellError, match="empty"):
        spc.sae.train(np.zeros((0, 8), np.float32), **QUICK)
    with pytest.raises(spc.SparsecellError, match="empty"):
        spc.sae.train(np.zeros((10, 0), np.float32), **QUICK)
    sae = trained("topk")
    with pytest.raises(spc.SparsecellError, match="empty"):
        sae.encode(np.zeros((0, 32), np.float32))
    with pytest.raises(spc.SparsecellError, match="empty"):
        spc.sae.evaluate(sae, np.zeros((0, 32), np.float32))


def test_train_rejects_non_matrix(toy):
    with pytest.raises(spc.SparsecellError, match="2-D"):
        spc.sae.train(toy.X[0], **QUICK)
    with pytest.raises(spc.SparsecellError, match="2-D"):
        spc.sae.train([[1.0, 2.0]], **QUICK)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka"])
def test_k_must_be_below_d_sae(arch, toy):
    with pytest.raises(spc.SparsecellError, match="k=128 must be smaller .* d_sae=128"):
        spc.sae.train(toy.X, arch=arch, **{**QUICK, "k": 128})
    with pytest.raises(spc.SparsecellError, match="k=0"):
        spc.sae.train(toy.X, arch=arch, **{**QUICK, "k": 0})


def test_unknown_arch_lists_the_known_ones(toy):
    with pytest.raises(spc.SparsecellError, match="unknown SAE architecture 'topkk'") as e:
        spc.sae.train(toy.X, arch="topkk", **QUICK)
    for a in ARCHS:
        assert a in str(e.value)


def test_unknown_training_option(toy):
    with pytest.raises(spc.SparsecellError, match="unknown training option 'learning_rate'"):
        spc.sae.train(toy.X, learning_rate=1e-3, **QUICK)


def test_bad_settings(toy):
    with pytest.raises(spc.SparsecellError, match="normalize='minmax'"):
        spc.sae.train(toy.X, normalize="minmax", **QUICK)
    with pytest.raises(spc.SparsecellError, match="batch_size=0"):
        spc.sae.train(toy.X, **{**QUICK, "batch_size": 0})
    with pytest.raises(spc.SparsecellError, match="d_sae"):
        spc.sae.train(toy.X, **{**QUICK, "expansion": 0})


@pytest.mark.parametrize("arch", ARCHS)
def test_overflowing_data_gives_non_finite_loss_error_and_no_checkpoint(arch, toy, tmp_path):
    X = toy.X[:2048] * np.float32(1e30)  # squares overflow float32
    with pytest.raises(spc.SparsecellError, match="non-finite"):
        spc.sae.train(X, arch=arch, normalize="none", out=tmp_path / "m", **{**QUICK, "steps": 50})
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary one


def test_exploding_learning_rate_gives_non_finite_loss_error(toy, tmp_path):
    with pytest.raises(spc.SparsecellError, match="non-finite"):
        spc.sae.train(toy.X, arch="gated", lr=1e6, out=tmp_path / "m", **{**QUICK, "steps": 50})
    assert list(tmp_path.iterdir()) == []


def test_diverging_training_is_reported(toy):
    # with lr=1e6 in fp32 most architectures diverge to FVU ~1e13 yet stay finite
    # fp32 on CPU pins the behaviour: bf16 (GPU) overflows to inf and does raise
    with pytest.raises(spc.SparsecellError, match="diverged|non-finite"):
        spc.sae.train(
            toy.X, arch="topk", lr=1e6, device="cpu", precision="fp32", **{**QUICK, "steps": 100}
        )
