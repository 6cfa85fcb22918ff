"""Standard ReLU SAE with an L1 penalty (Bricken et al. 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._base import SparseAutoencoder, TrainOut, batch_fvu, dense_train_codes
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
        with torch.autocast(
            xn.device.type, torch.bfloat16, enabled=compute_dtype == torch.bfloat16
        ):
            pre = F.linear(xc, self.W_enc, self.b_enc)
        pre = pre.float()
        acts = F.relu(pre)
        x_hat = acts @ self.W_dec + self.b_dec
        counts, l0 = dense_train_codes(acts)
        return TrainOut(
            recon_loss=batch_fvu(xn, x_hat),
            x_hat=x_hat,
            fire_counts=counts,
            l0=l0,
            sparsity_loss=acts.sum(dim=1).mean() / self.d_in,
            extra_loss=None,
            pre=pre,
            xc=xc.detach(),
        )

    def _infer_codes(self, xn: torch.Tensor) -> Codes:
        return codes_from_dense(F.relu(self._pre(xn - self.b_dec)))
