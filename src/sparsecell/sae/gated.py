"""Gated SAE (Rajamanoharan et al. 2024), the seed paper's architecture.

A gate decides *which* latents fire and a magnitude path *how strongly*; both share
``W_enc`` (the magnitude path rescales it per latent by ``exp(r_mag)``). The L1
penalty acts on the gate's ReLU pre-activation, and an auxiliary loss reconstructs
from the gate alone through a frozen copy of the decoder, so the gate learns to
reconstruct rather than to shrink.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import SparseAutoencoder, TrainOut, batch_fvu
from ._kernels import Codes, codes_from_dense
from .config import SAEConfig
from .registry import register


@register("gated")
class GatedSAE(SparseAutoencoder):
    """``f = 1[π_gate > 0] · ReLU(exp(r_mag) ⊙ (W_enc (x - b_dec)) + b_mag)``."""

    default_sparsity_coeff = 1.0

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.r_mag = nn.Parameter(torch.zeros(self.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(self.d_sae))

    def reset_parameters(self, seed: int) -> None:
        super().reset_parameters(seed)
        with torch.no_grad():
            self.r_mag.zero_()
            self.b_mag.zero_()

    def _paths(self, xc: torch.Tensor, compute_dtype: torch.dtype = torch.float32):
        proj = self._dense_pre(xc, compute_dtype, bias=False)
        pi_gate = proj + self.b_enc
        pi_mag = proj * self.r_mag.exp() + self.b_mag
        return pi_gate, pi_mag

    def _train_forward(self, xn: torch.Tensor, compute_dtype: torch.dtype) -> TrainOut:
        xc = xn - self.b_dec
        pi_gate, pi_mag = self._paths(xc, compute_dtype)
        acts = (pi_gate > 0).to(pi_mag.dtype) * F.relu(pi_mag)
        gate_relu = F.relu(pi_gate)
        x_hat_gate = gate_relu @ self.W_dec.detach() + self.b_dec.detach()
        sparsity = gate_relu.sum(dim=1).mean() / self.d_in
        # AuxK ranks dead latents by the magnitude path's pre-activations
        return self._dense_out(xn, xc, pi_mag, acts, sparsity, batch_fvu(xn, x_hat_gate))

    def _infer_codes(self, xn: torch.Tensor) -> Codes:
        pi_gate, pi_mag = self._paths(xn - self.b_dec)
        return codes_from_dense((pi_gate > 0).to(pi_mag.dtype) * F.relu(pi_mag))
