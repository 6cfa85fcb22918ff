"""Matryoshka SAE (Bussmann et al. 2025; Nabeshima 2024) on BatchTopK.

The reconstruction loss is the mean over nested dictionary prefixes (the first
``p_1 < p_2 < … < d_sae`` latents): early latents must reconstruct on their own, so
general concepts settle there and are not split or absorbed by later, specific ones.
"""

from __future__ import annotations

import torch

from ._base import TrainOut, batch_fvu, sparse_fire_counts
from ._kernels import sparse_decode
from .batchtopk import BatchTopKSAE
from .registry import register


@register("matryoshka")
class MatryoshkaSAE(BatchTopKSAE):
    """BatchTopK with nested prefix losses; inference as BatchTopK."""

    def _train_forward(self, xn: torch.Tensor, compute_dtype: torch.dtype) -> TrainOut:
        xc, pre, codes, v = self._encode_train(xn, compute_dtype)
        x_hat = self.b_dec.expand_as(xn)
        losses = []
        lo = 0
        for p in self.cfg.matryoshka_prefixes:
            in_group = (codes.cols >= lo) & (codes.cols < p)
            x_hat = x_hat + sparse_decode(codes, self.W_dec, v * in_group, compute_dtype)
            losses.append(batch_fvu(xn, x_hat))
            lo = p
        counts, l0 = sparse_fire_counts(codes, v, self.d_sae)
        return TrainOut(
            recon_loss=torch.stack(losses).mean(),
            x_hat=x_hat,
            fire_counts=counts,
            l0=l0,
            sparsity_loss=None,
            extra_loss=None,
            pre=pre,
            xc=xc,
        )
