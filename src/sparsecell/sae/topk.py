"""TopK SAE (Makhzani & Frey 2013; Gao et al. 2024): keep each sample's k largest latents."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._base import SparseAutoencoder, TrainOut, batch_fvu, sparse_fire_counts
from ._kernels import Codes, codes_from_topk, sparse_decode, sparse_encode
from .registry import register


@register("topk")
class TopKSAE(SparseAutoencoder):
    """Exactly ``k`` latents per sample (ReLU after the selection, so possibly fewer).

    Also the base of the other k-architectures: they override :meth:`_select` (which
    latents fire in training) and :meth:`_train_recon` (the reconstruction loss).
    """

    capturable_train_step = True

    def _select(self, pre: torch.Tensor) -> Codes:
        """Training-time selection of active latents from the pre-activations."""
        vals, idx = pre.topk(self.cfg.k, dim=1, sorted=False)
        return codes_from_topk(idx, vals)

    def _train_recon(
        self, xn: torch.Tensor, codes: Codes, v: torch.Tensor, compute_dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, reconstruction loss) of the selected codes with values ``v``."""
        x_hat = sparse_decode(codes, self.W_dec, v, compute_dtype) + self.b_dec
        return x_hat, batch_fvu(xn, x_hat)

    def _train_forward(self, xn: torch.Tensor, compute_dtype: torch.dtype) -> TrainOut:
        with torch.no_grad():
            xc = xn - self.b_dec
            pre = self._pre(xc, compute_dtype, reuse=True)
            codes = self._select(pre)
        v = F.relu(
            sparse_encode(
                xc, self.b_dec, self.W_enc, self.b_enc, codes.rows, codes.cols, codes.vals
            )
        )
        x_hat, recon = self._train_recon(xn, codes, v, compute_dtype)
        counts, l0 = sparse_fire_counts(codes, v, self.d_sae)
        return TrainOut(
            recon_loss=recon,
            x_hat=x_hat,
            fire_counts=counts,
            l0=l0,
            sparsity_loss=None,
            extra_loss=None,
            pre=pre,
            xc=xc,
        )

    def _infer_codes(self, xn: torch.Tensor) -> Codes:
        pre = self._pre(xn - self.b_dec)
        c = self._select(pre)
        return c._replace(vals=F.relu(c.vals))
