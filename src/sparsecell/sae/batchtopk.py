"""BatchTopK SAE (Bussmann et al. 2024): the batch's B·k largest latents, any row.

Training selects across the batch, so the number of active latents varies per sample
and averages k. Inference cannot depend on the batch: a global threshold θ, an
exponential moving average of the smallest selected activation, acts as a JumpReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._kernels import Codes, codes_from_coo, codes_from_dense
from .config import SAEConfig
from .registry import register
from .topk import TopKSAE


@register("batchtopk")
class BatchTopKSAE(TopKSAE):
    """B·k active latents per batch of B; inference by the learned global threshold."""

    capturable_train_step = False  # the number of selected entries varies per batch
    threshold_momentum = 0.99

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("threshold", torch.tensor(-1.0))

    def _select(self, pre: torch.Tensor) -> Codes:
        B, m = pre.shape
        acts = F.relu(pre)
        n_keep = min(B * self.cfg.k, acts.numel())
        vals, flat = acts.flatten().topk(n_keep, sorted=False)
        keep = vals > 0
        vals, flat = vals[keep], flat[keep]
        self._update_threshold(vals)
        return codes_from_coo(flat // m, flat % m, vals, B)

    @torch.no_grad()
    def _update_threshold(self, vals: torch.Tensor) -> None:
        if vals.numel() == 0:
            return
        t = vals.min().float()
        if self.threshold < 0:
            self.threshold.copy_(t)
        else:
            self.threshold.mul_(self.threshold_momentum).add_((1 - self.threshold_momentum) * t)

    def _infer_codes(self, xn: torch.Tensor) -> Codes:
        pre = self._pre(xn - self.b_dec)
        theta = self.threshold.clamp_min(0.0)
        return codes_from_dense(pre * (pre > theta))
