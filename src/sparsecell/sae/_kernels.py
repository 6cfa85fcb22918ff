"""Sparse building blocks that make SAE training fast on CPU and GPU.

A k-sparse code touches k of the m latents per sample, yet a dense implementation
pays for all m in the decoder and in every backward pass. Two pieces avoid that:

* :class:`SparseEncode` — the differentiable values of the selected pre-activations.
  Its backward computes ``grad W_enc = Gᵀ (x - b)`` with ``G`` a sparse (nnz) matrix,
  ``grad b_enc`` by a bincount and ``grad b`` as ``-(bincount) @ W_enc``: O(nnz·d)
  instead of O(B·m·d).
* :func:`sparse_decode` — ``embedding_bag`` with per-sample weights: O(nnz·d) forward
  and backward, instead of a dense (B × m) @ (m × d) product.

On a GPU the balance differs: tensor cores make dense bf16 products nearly free while
sparse kernels (COO products, ``embedding_bag`` backward) are slow and synchronise with
the host, which also rules out CUDA graphs. There both pieces scatter the codes into a
dense ``B × m`` matrix and multiply in the compute dtype, with no host synchronisation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class Codes(NamedTuple):
    """A batch of sparse latent codes in row-sorted COO form.

    ``rows``, ``cols`` and ``vals`` have one entry per non-zero; ``offsets`` (length
    ``n_rows``) is where each row starts, as ``embedding_bag`` expects.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    vals: torch.Tensor
    offsets: torch.Tensor
    n_rows: int


def codes_from_topk(idx: torch.Tensor, vals: torch.Tensor) -> Codes:
    """Codes from per-row top-k indices and values (``B × k``)."""
    B, k = idx.shape
    dev = idx.device
    rows = torch.arange(B, device=dev).repeat_interleave(k)
    offsets = torch.arange(0, B * k, k, device=dev)
    return Codes(rows, idx.reshape(-1), vals.reshape(-1), offsets, B)


def codes_from_coo(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_rows: int
) -> Codes:
    """Codes from unordered COO entries; sorts them by row."""
    order = torch.argsort(rows, stable=True)
    rows, cols, vals = rows[order], cols[order], vals[order]
    counts = torch.bincount(rows, minlength=n_rows)
    offsets = torch.zeros(n_rows, dtype=torch.long, device=rows.device)
    if n_rows > 1:
        offsets[1:] = torch.cumsum(counts, 0)[:-1]
    return Codes(rows, cols, vals, offsets, n_rows)


def codes_from_dense(acts: torch.Tensor) -> Codes:
    """Codes holding the non-zeros of a dense ``B × m`` activation matrix."""
    rows, cols = acts.nonzero(as_tuple=True)
    return codes_from_coo(rows, cols, acts[rows, cols], acts.shape[0])


def sparse_decode(
    codes: Codes,
    W_dec: torch.Tensor,
    vals: torch.Tensor | None = None,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``Σ_j vals_j · W_dec[cols_j]`` per row, without a bias (``B × d``, dtype of W_dec)."""
    v = codes.vals if vals is None else vals
    if W_dec.is_cuda:
        cdt = compute_dtype or W_dec.dtype
        Z = torch.zeros(codes.n_rows, W_dec.shape[0], dtype=cdt, device=W_dec.device)
        Z = Z.index_put((codes.rows, codes.cols), v.to(cdt))
        return (Z @ W_dec.to(cdt)).to(W_dec.dtype)
    return F.embedding_bag(
        codes.cols, W_dec, codes.offsets, mode="sum", per_sample_weights=v.to(W_dec.dtype)
    )


class SparseEncode(torch.autograd.Function):
    """Selected pre-activations ``(x - b) · W_enc[col] + b_enc[col]`` at given (row, col).

    ``forward(xc, b, W_enc, b_enc, rows, cols, vals)`` takes ``xc = x - b`` (already
    centred, no grad needed) and the values computed by the caller (possibly in a lower
    precision, under ``no_grad``), and returns them as a differentiable fp32 tensor.
    """

    @staticmethod
    def forward(ctx, xc, b, W_enc, b_enc, rows, cols, vals):  # noqa: D102
        ctx.save_for_backward(xc, W_enc, rows, cols)
        ctx.b_needs_grad = b.requires_grad
        ctx.cdt = vals.dtype
        return vals.to(W_enc.dtype)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        xc, W_enc, rows, cols = ctx.saved_tensors
        m, B = W_enc.shape[0], xc.shape[0]
        g = g.to(W_enc.dtype)
        grad_W = grad_be = grad_b = None
        if ctx.needs_input_grad[2] and xc.is_cuda:
            cdt = ctx.cdt
            G = torch.zeros(B, m, dtype=cdt, device=xc.device).index_put((rows, cols), g.to(cdt))
            grad_W = (G.t() @ xc.to(cdt)).to(W_enc.dtype)
        elif ctx.needs_input_grad[2]:
            G = torch.sparse_coo_tensor(
                torch.stack([cols, rows]), g, (m, B), is_coalesced=False, check_invariants=False
            )
            grad_W = torch.sparse.mm(G, xc.to(W_enc.dtype))
        gb = torch.zeros(m, dtype=g.dtype, device=g.device).index_add_(0, cols, g)
        if ctx.needs_input_grad[3]:
            grad_be = gb
        if ctx.b_needs_grad:
            grad_b = -(gb @ W_enc)
        return None, grad_b, grad_W, grad_be, None, None, None


def sparse_encode(xc, b, W_enc, b_enc, rows, cols, vals) -> torch.Tensor:
    """Differentiable selected pre-activations; see :class:`SparseEncode`."""
    return SparseEncode.apply(xc, b, W_enc, b_enc, rows, cols, vals)


def project_out_parallel_grad(W: torch.Tensor) -> None:
    """Remove from ``W.grad`` the component parallel to each (unit-norm) row of ``W``."""
    if W.grad is None:
        return
    dot = (W.grad * W.data).sum(dim=1, keepdim=True)
    W.grad.sub_(dot * W.data)


@torch.no_grad()
def normalize_rows_(W: torch.Tensor, eps: float = 1e-8) -> None:
    """Scale each row of ``W`` to unit L2 norm, in place."""
    W.div_(W.norm(dim=1, keepdim=True).clamp_min(eps))
