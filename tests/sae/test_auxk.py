"""AuxK: the fast dense-on-dead-columns path equals the general sparse path."""

from __future__ import annotations

import pytest
import torch

import sparsecell as spc
from sparsecell.sae import trainer


@pytest.mark.parametrize("n_dead", [5, 40])
def test_dense_auxk_matches_general_path(toy, monkeypatch, n_dead):
    sae = spc.sae.train(
        toy.X,
        arch="topk",
        k=3,
        expansion=4,
        steps=20,
        batch_size=256,
        progress=False,
        precision="fp32",
    )
    sae.train()
    x = torch.from_numpy(toy.X[:256])
    xn = sae.normalize_input(x)
    o = sae._train_forward(xn, torch.float32)
    dead = torch.zeros(sae.d_sae, dtype=torch.bool)
    dead[torch.randperm(sae.d_sae, generator=torch.Generator().manual_seed(0))[:n_dead]] = True
    auxk = 8

    def loss_and_grads(dense_max: int):
        monkeypatch.setattr(trainer, "_AUX_DENSE_MAX", dense_max)
        sae.zero_grad(set_to_none=True)
        loss = trainer._auxk_loss(sae, o, xn, dead, auxk)
        loss.backward(retain_graph=True)
        return (
            float(loss.detach()),
            sae.W_enc.grad.clone(),
            sae.W_dec.grad.clone(),
            sae.b_enc.grad.clone(),
        )

    fast = loss_and_grads(10**9)
    slow = loss_and_grads(0)
    # same maths, different summation order: agreement to float32 rounding
    assert fast[0] == pytest.approx(slow[0], rel=1e-5)
    assert fast[0] > 0
    for a, b in zip(fast[1:], slow[1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # only dead latents receive AuxK gradient
    live = ~dead
    assert float(fast[1][live].abs().max()) == 0.0


def test_auxk_step_lowers_aux_loss(toy):
    """The AuxK gradient points the right way: one small step on it lowers it."""
    sae = spc.sae.train(
        toy.X,
        arch="topk",
        k=3,
        expansion=4,
        steps=20,
        batch_size=256,
        progress=False,
        precision="fp32",
    )
    x = torch.from_numpy(toy.X[:512])
    xn = sae.normalize_input(x)
    dead = torch.zeros(sae.d_sae, dtype=torch.bool)
    dead[::4] = True

    def aux_loss():
        with torch.no_grad():
            o = sae._train_forward(xn, torch.float32)
        return trainer._auxk_loss(sae, o, xn, dead, 8)

    before = aux_loss()
    sae.zero_grad(set_to_none=True)
    before.backward()
    with torch.no_grad():
        for p in sae.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad
    # a gradient step of this size on a smooth loss must decrease it (first-order)
    assert float(aux_loss().detach()) < float(before.detach())
