"""The parts every SAE architecture shares: parameters, normalisation, encode/decode, I/O."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .._errors import SparsecellError
from .._sparse import canonical_csr
from ._data import as_float_tensor
from ._kernels import Codes, sparse_decode, sparse_encode
from .config import SAEConfig


class TrainOut(NamedTuple):
    """What one training forward pass of an architecture hands the trainer."""

    recon_loss: torch.Tensor
    """Reconstruction loss (FVU of the batch, or a mean of FVUs for matryoshka)."""
    x_hat: torch.Tensor
    """Reconstruction in normalised space (for the AuxK residual)."""
    fire_counts: torch.Tensor
    """``(d_sae,)`` float: how many samples of the batch fired each latent."""
    l0: torch.Tensor
    """Mean active latents per sample (detached)."""
    sparsity_loss: torch.Tensor | None
    """The unweighted sparsity penalty (λ is applied by the trainer), if any."""
    extra_loss: torch.Tensor | None
    """Any other term already weighted (gated's frozen-decoder auxiliary loss)."""
    pre: torch.Tensor
    """Dense ``B × m`` pre-activations that rank dead latents for AuxK (may be detached)."""
    xc: torch.Tensor
    """Centred input ``x - b_dec`` used by the encoder."""


def batch_fvu(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained on one batch (variance about the batch mean)."""
    err = (x - x_hat).pow(2).sum()
    tot = (x - x.mean(dim=0, keepdim=True)).pow(2).sum().clamp_min(1e-12)
    return err / tot


class SparseAutoencoder(nn.Module):
    """Base class of the SAE architectures.

    Weights live in normalised input space: ``x_n = (x - norm_mean) / norm_scale``.
    ``W_enc`` and ``W_dec`` are both stored ``d_sae × d_in`` (one row per latent), so the
    encoder being the decoder's transpose means ``W_enc == W_dec`` at initialisation.

    Subclasses set :attr:`arch` and implement :meth:`_train_forward` and
    :meth:`_infer_codes`; the registry maps names to them.
    """

    arch: ClassVar[str] = ""
    default_sparsity_coeff: ClassVar[float | None] = None
    capturable_train_step: ClassVar[bool] = False
    """True when ``_train_forward`` never synchronises with the host on CUDA (fixed
    shapes), so that the trainer may record whole steps as CUDA graphs."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        cfg = cfg.resolved()
        if cfg.d_in < 1:
            raise SparsecellError("d_in must be positive", "train on data with at least 1 column")
        self.cfg = cfg
        d, m = cfg.d_in, cfg.d_sae
        gen = torch.Generator().manual_seed(0)
        W = torch.randn(m, d, generator=gen)
        W /= W.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W.clone())
        self.W_enc = nn.Parameter(W.clone())
        self.b_enc = nn.Parameter(torch.zeros(m))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.register_buffer("norm_mean", torch.zeros(d))
        self.register_buffer("norm_scale", torch.ones(d))

    # ------------------------------------------------------------------ sizes
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    def reset_parameters(self, seed: int) -> None:
        """Random unit-norm decoder rows; encoder = decoder transpose; zero biases."""
        gen = torch.Generator().manual_seed(seed)
        W = torch.randn(self.d_sae, self.d_in, generator=gen)
        W /= W.norm(dim=1, keepdim=True)
        with torch.no_grad():
            self.W_dec.copy_(W)
            self.W_enc.copy_(W)
            self.b_enc.zero_()
            self.b_dec.zero_()

    # ---------------------------------------------------------- normalisation
    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.norm_mean) / self.norm_scale

    def denormalize_output(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.norm_scale + self.norm_mean

    @torch.no_grad()
    def fold_normalization(self) -> None:
        """Fold the input normalisation into the weights, so raw inputs need none.

        Latent values do not change; decoder rows stop being unit-norm in raw space.
        """
        s, mu = self.norm_scale, self.norm_mean
        self.W_enc.div_(s)
        self.b_dec.mul_(s).add_(mu)
        self.W_dec.mul_(s)
        self._fold_extra(s)
        self.norm_scale.fill_(1.0)
        self.norm_mean.zero_()
        self.cfg.normalize = "none"

    def _fold_extra(self, s: torch.Tensor) -> None:
        """Architectures with extra input-side weights fold them here."""

    # ----------------------------------------------------- architecture hooks
    def _train_forward(self, xn: torch.Tensor, compute_dtype: torch.dtype) -> TrainOut:
        raise NotImplementedError

    def _infer_codes(self, xn: torch.Tensor) -> Codes:
        raise NotImplementedError

    def _pre(
        self, xc: torch.Tensor, compute_dtype: torch.dtype = torch.float32, reuse: bool = False
    ) -> torch.Tensor:
        """Encoder pre-activations ``xc @ W_encᵀ + b_enc``, in ``compute_dtype``.

        With ``reuse`` (CPU, no autograd) the ``B × d_sae`` result is written into a buffer
        kept between training steps: a fresh 64-128 MB allocation per step costs ~15 ms of
        page faults on CPU. The result is valid until the next call.
        """
        b, W = self.b_enc, self.W_enc
        if compute_dtype != torch.float32:
            b, xc, W = b.to(compute_dtype), xc.to(compute_dtype), W.to(compute_dtype)
        if not (reuse and not xc.is_cuda and not torch.is_grad_enabled()):
            return torch.addmm(b, xc, W.t())
        shape = (xc.shape[0], W.shape[0])
        buf = getattr(self, "_pre_buf", None)
        if buf is None or buf.shape != shape or buf.dtype != xc.dtype:
            buf = self._pre_buf = torch.empty(shape, dtype=xc.dtype)
        return torch.addmm(b, xc, W.t(), out=buf)

    def _dense_pre(self, xc: torch.Tensor, compute_dtype: torch.dtype, bias: bool = True):
        """Differentiable fp32 pre-activations of the dense architectures (bf16 autocast)."""
        with torch.autocast(
            xc.device.type, torch.bfloat16, enabled=compute_dtype == torch.bfloat16
        ):
            pre = F.linear(xc, self.W_enc, self.b_enc if bias else None)
        return pre.float()

    def _dense_out(
        self,
        xn: torch.Tensor,
        xc: torch.Tensor,
        pre: torch.Tensor,
        acts: torch.Tensor,
        sparsity_loss: torch.Tensor,
        extra_loss: torch.Tensor | None = None,
    ) -> TrainOut:
        """TrainOut of a dense-activation architecture (dense decoder product)."""
        x_hat = acts @ self.W_dec + self.b_dec
        counts, l0 = dense_train_codes(acts)
        return TrainOut(
            recon_loss=batch_fvu(xn, x_hat),
            x_hat=x_hat,
            fire_counts=counts,
            l0=l0,
            sparsity_loss=sparsity_loss,
            extra_loss=extra_loss,
            pre=pre,
            xc=xc.detach(),
        )

    def _aux_values(
        self,
        out: TrainOut,
        rows: torch.Tensor,
        cols: torch.Tensor,
        vals: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Differentiable pre-activations of the latents picked for AuxK.

        ``vals`` (already gathered, possibly -inf for masked live latents) replaces the
        forward values, not the gradient.
        """
        if out.pre.requires_grad:
            p = out.pre[rows, cols]
            return p if vals is None else p + (vals - p).detach()
        v = out.pre[rows, cols] if vals is None else vals
        return sparse_encode(out.xc, self.b_dec, self.W_enc, self.b_enc, rows, cols, v)

    # ------------------------------------------------------------- public API
    def decode_codes(self, codes: Codes) -> torch.Tensor:
        """Reconstruction (normalised space) of sparse codes."""
        return sparse_decode(codes, self.W_dec) + self.b_dec

    def _check_input(self, X: Any) -> None:
        shape = getattr(X, "shape", None)
        if shape is None or len(shape) != 2:
            raise SparsecellError("input must be a 2-D array (samples × features)", "reshape it")
        if shape[1] != self.d_in:
            raise SparsecellError(
                f"input has {shape[1]} features but this SAE expects {self.d_in}",
                "pass the embeddings the SAE was trained on",
            )
        if shape[0] == 0:
            raise SparsecellError("input is empty (0 samples)", "pass at least one sample")

    def _batches(self, X: Any, batch_size: int):
        """Yield (start, float32 tensor on the model's device) over row batches of X."""
        n = X.shape[0]
        for s in range(0, n, batch_size):
            xb = X[s : s + batch_size]
            t = as_float_tensor(xb).to(self.device)
            if not torch.isfinite(t).all():
                bad = s + int((~torch.isfinite(t).all(dim=1)).nonzero()[0, 0])
                raise SparsecellError(
                    f"input row {bad} contains NaN or inf", "drop or impute non-finite rows"
                )
            yield s, t

    @torch.no_grad()
    def encode(self, X: Any, *, batch_size: int = 8192) -> sp.csr_matrix | torch.Tensor:
        """Sparse latent codes of ``X``.

        Parameters
        ----------
        X
            ``n × d_in`` array: numpy (memmap and h5py datasets included) or torch.
        batch_size
            Rows encoded at a time.

        Returns
        -------
        scipy.sparse.csr_matrix or torch.Tensor
            ``n × d_sae`` float32 codes: a SciPy CSR matrix for numpy-like input, a torch
            sparse CSR tensor for torch input.
        """
        self._check_input(X)
        was_training = self.training
        self.eval()
        indptr, indices, data = [np.zeros(1, np.int64)], [], []
        nnz = 0
        for _, xb in self._batches(X, batch_size):
            c = self._infer_codes(self.normalize_input(xb))
            keep = c.vals != 0  # topk keeps k entries per row, some zero after the ReLU
            rows, cols, vals = c.rows[keep], c.cols[keep], c.vals[keep]
            counts = torch.bincount(rows, minlength=c.n_rows).cpu().numpy()
            indptr.append(nnz + np.cumsum(counts))
            nnz += int(counts.sum())
            indices.append(cols.cpu().numpy())
            data.append(vals.float().cpu().numpy())
        self.train(was_training)
        csr = sp.csr_matrix(
            (np.concatenate(data), np.concatenate(indices), np.concatenate(indptr)),
            shape=(X.shape[0], self.d_sae),
        )
        csr.sort_indices()  # topk selects unordered; torch CSR requires sorted columns
        if isinstance(X, torch.Tensor):
            return torch.sparse_csr_tensor(
                torch.from_numpy(csr.indptr.astype(np.int64)),
                torch.from_numpy(csr.indices.astype(np.int64)),
                torch.from_numpy(csr.data),
                size=csr.shape,
            )
        return csr

    @torch.no_grad()
    def decode(self, Z: Any, *, batch_size: int = 8192) -> np.ndarray | torch.Tensor:
        """Reconstruct inputs (original space) from latent codes.

        Parameters
        ----------
        Z
            ``n × d_sae`` codes: SciPy sparse, dense numpy, or torch (dense or sparse).

        Returns
        -------
        numpy.ndarray or torch.Tensor
            ``n × d_in`` float32 reconstructions, of the same family as ``Z``.
        """
        is_torch = isinstance(Z, torch.Tensor)
        if is_torch:
            Zc = Z.to_sparse_csr() if Z.layout != torch.sparse_csr else Z
            csr = sp.csr_matrix(
                (
                    Zc.values().cpu().numpy(),
                    Zc.col_indices().cpu().numpy(),
                    Zc.crow_indices().cpu().numpy(),
                ),
                shape=tuple(Zc.shape),
            )
        else:
            csr = sp.csr_matrix(Z)
        if csr.shape[1] != self.d_sae:
            raise SparsecellError(
                f"codes have {csr.shape[1]} latents but this SAE has {self.d_sae}",
                "decode codes made by this SAE",
            )
        csr = canonical_csr(csr)  # the CUDA kernel needs distinct (row, col) entries
        out = []
        for s in range(0, csr.shape[0], batch_size):
            blk = csr[s : s + batch_size].tocoo()
            dev = self.device
            codes = _codes_from_scipy(blk, dev)
            out.append(self.denormalize_output(self.decode_codes(codes)).cpu())
        res = torch.cat(out) if out else torch.zeros(0, self.d_in)
        return res if is_torch else res.numpy()

    @torch.no_grad()
    def reconstruct(self, X: Any, *, batch_size: int = 8192) -> np.ndarray | torch.Tensor:
        """``decode(encode(X))`` without materialising the codes of the whole set."""
        self._check_input(X)
        out = [
            self.denormalize_output(
                self.decode_codes(self._infer_codes(self.normalize_input(xb)))
            ).cpu()
            for _, xb in self._batches(X, batch_size)
        ]
        res = torch.cat(out)
        return res if isinstance(X, torch.Tensor) else res.numpy()

    def save(self, path: str, metrics: dict[str, Any] | None = None) -> None:
        """Write ``model.safetensors`` + ``cfg.json`` to folder ``path``, atomically."""
        from .checkpoint import save

        save(self, path, metrics=metrics)

    def __repr__(self) -> str:
        c = self.cfg
        extra = f", k={c.k}" if self.arch in {"topk", "batchtopk", "matryoshka"} else ""
        return f"{type(self).__name__}(d_in={c.d_in}, d_sae={c.d_sae}{extra})"


def _codes_from_scipy(coo: sp.coo_matrix, device: torch.device) -> Codes:
    from ._kernels import codes_from_coo

    return codes_from_coo(
        torch.from_numpy(coo.row.astype(np.int64)).to(device),
        torch.from_numpy(coo.col.astype(np.int64)).to(device),
        torch.from_numpy(coo.data.astype(np.float32)).to(device),
        coo.shape[0],
    )


def dense_train_codes(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-latent fire counts, mean L0) of a dense activation batch, without a host sync."""
    nz = (acts.detach() > 0).float()
    return nz.sum(dim=0), nz.sum(dim=1).mean()


def sparse_fire_counts(
    codes: Codes, vals: torch.Tensor, d_sae: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-latent fire counts, mean L0) of sparse codes whose values are ``vals``."""
    active = (vals.detach() > 0).float()
    counts = torch.zeros(d_sae, device=vals.device).index_add_(0, codes.cols, active)
    return counts, active.sum() / codes.n_rows
