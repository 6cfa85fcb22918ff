"""Standard ReLU SAE with an L1 penalty (Bricken et al. 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._base import SparseAutoencoder, TrainOut
from ._kernels import Codes, codes_from_dense
from .registry import register


@register("relu")
class ReLUSAE(SparseAutoencoder):
    """``f = ReLU(W_enc (x - b_dec) + b_enc)``; penalty λ · mean Σ f_i ‖W_dec,i‖ / d_in.

    Decoder rows are kept at unit norm, so the penalty is the L1 norm of the code.
    """

    default_sparsity_coeff = 1.0

    def _train_forward(self, xn: torch.Tensor, compute_dtype: torch.dtype) -> TrainOut:
        xc = xn - self.b_dec
        pre = self._dense_pre(xc, compute_dtype)
        acts = F.relu(pre)
        return self._dense_out(xn, xc, pre, acts, acts.sum(dim=1).mean() / self.d_in)

    def _infer_codes(self, xn: torch.Tensor) -> Codes:
        return codes_from_dense(F.relu(self._pre(xn - self.b_dec)))
