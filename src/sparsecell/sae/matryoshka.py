"""Matryoshka SAE (Bussmann et al. 2025; Nabeshima 2024) on BatchTopK.

The reconstruction loss is the mean over nested dictionary prefixes (the first
``p_1 < p_2 < … < d_sae`` latents): early latents must reconstruct on their own, so
general concepts settle there and are not split or absorbed by later, specific ones.
"""

from __future__ import annotations

import torch

from ._base import batch_fvu
from ._kernels import Codes, sparse_decode
from .batchtopk import BatchTopKSAE
from .registry import register


@register("matryoshka")
class MatryoshkaSAE(BatchTopKSAE):
    """BatchTopK with nested prefix losses; inference as BatchTopK."""

    def _train_recon(
        self, xn: torch.Tensor, codes: Codes, v: torch.Tensor, compute_dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_hat = self.b_dec.expand_as(xn)
        losses = []
        lo = 0
        for p in self.cfg.matryoshka_prefixes:
            in_group = (codes.cols >= lo) & (codes.cols < p)
            x_hat = x_hat + sparse_decode(codes, self.W_dec, v * in_group, compute_dtype)
            losses.append(batch_fvu(xn, x_hat))
            lo = p
        return x_hat, torch.stack(losses).mean()
