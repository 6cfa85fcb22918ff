"""JumpReLU SAE (Rajamanoharan et al. 2024): per-latent thresholds trained on an L0 penalty.

The step function has no useful gradient, so the threshold θ learns through a
straight-through estimator: a rectangle kernel of width ε around θ.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._base import SparseAutoencoder, TrainOut
from ._kernels import Codes, codes_from_dense
from .config import SAEConfig
from .registry import register


def _rect(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, theta, eps):  # noqa: D102
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        g_pre = g * (pre > theta)
        g_theta = (-(theta / eps) * _rect((pre - theta) / eps) * g).sum(dim=0)
        return g_pre, g_theta, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, theta, eps):  # noqa: D102
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        g_theta = (-(1.0 / eps) * _rect((pre - theta) / eps) * g).sum(dim=0)
        return None, g_theta, None


@register("jumprelu")
class JumpReLUSAE(SparseAutoencoder):
    """``f = z · H(z - θ)`` with ``z = W_enc (x - b_dec) + b_enc``; penalty λ · mean L0."""

    default_sparsity_coeff = 3e-3

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.log_threshold = nn.Parameter(
            torch.full((self.d_sae,), math.log(self.cfg.jumprelu_init_threshold))
        )

    def reset_parameters(self, seed: int) -> None:
        super().reset_parameters(seed)
        with torch.no_grad():
            self.log_threshold.fill_(math.log(self.cfg.jumprelu_init_threshold))

    def _train_forward(self, xn: torch.Tensor, compute_dtype: torch.dtype) -> TrainOut:
        xc = xn - self.b_dec
        pre = self._dense_pre(xc, compute_dtype)
        theta = self.log_threshold.exp()
        eps = self.cfg.jumprelu_bandwidth
        acts = _JumpReLU.apply(pre, theta, eps)
        l0_soft = _Step.apply(pre, theta, eps).sum(dim=1).mean()
        return self._dense_out(xn, xc, pre, acts, l0_soft)

    def _infer_codes(self, xn: torch.Tensor) -> Codes:
        pre = self._pre(xn - self.b_dec)
        return codes_from_dense(pre * (pre > self.log_threshold.exp()))
