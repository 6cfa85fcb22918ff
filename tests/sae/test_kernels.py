"""The sparse kernels agree with the dense computations they replace (float64, exact)."""

from __future__ import annotations

import pytest
import torch

from sparsecell.sae._kernels import (
    codes_from_coo,
    codes_from_dense,
    codes_from_topk,
    normalize_rows_,
    project_out_parallel_grad,
    sparse_decode,
    sparse_encode,
)

F64 = torch.float64
# The kernels take a dense path on CUDA; both paths must agree with dense autograd.
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]


def _scatter(codes, m: int, vals=None) -> torch.Tensor:
    v = codes.vals if vals is None else vals
    A = torch.zeros(codes.n_rows, m, dtype=v.dtype, device=v.device)
    return A.index_put((codes.rows, codes.cols), v, accumulate=True)


def _coo_entries(codes) -> list[tuple[int, int, float]]:
    return sorted(zip(codes.rows.tolist(), codes.cols.tolist(), codes.vals.tolist(), strict=True))


def _selection(gen: torch.Generator, B: int, m: int, nnz: int):
    """Distinct random (row, col) pairs, unordered, leaving the last row empty.

    Callers select each latent at most once per row (top-k, batch top-k, AuxK); the CUDA
    path relies on that, so duplicates are not part of the kernels' contract.
    """
    flat = torch.randperm((B - 1) * m, generator=gen)[:nnz]
    return flat // m, flat % m


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("b_grad", [True, False])
def test_sparse_encode_backward_equals_dense_autograd(b_grad, device):
    gen = torch.Generator().manual_seed(0)
    B, d, m, nnz = 9, 6, 13, 30

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=F64).to(device)

    x = rand(B, d)
    b = rand(d).requires_grad_(b_grad)
    W = rand(m, d).requires_grad_()
    be = rand(m).requires_grad_()
    rows, cols = (t.to(device) for t in _selection(gen, B, m, nnz))
    w = rand(nnz)  # arbitrary upstream gradient

    xc = (x - b).detach()
    with torch.no_grad():
        vals = (xc @ W.T + be)[rows, cols]
    out = sparse_encode(xc, b, W, be, rows, cols, vals)
    (out * w).sum().backward()
    got = (W.grad.clone(), be.grad.clone(), None if b.grad is None else b.grad.clone())

    W.grad = be.grad = b.grad = None
    ref = ((x - b) @ W.T + be)[rows, cols]
    (ref * w).sum().backward()

    torch.testing.assert_close(out, ref.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(got[0], W.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(got[1], be.grad, rtol=0, atol=1e-12)
    if b_grad:
        torch.testing.assert_close(got[2], b.grad, rtol=0, atol=1e-12)
    else:
        assert got[2] is None


def test_sparse_encode_low_precision_values_keep_exact_gradient():
    """Values computed in bf16 only set the forward output; the gradient is fp32-exact."""
    gen = torch.Generator().manual_seed(1)
    B, d, m, nnz = 5, 4, 7, 12
    xc = torch.randn(B, d, generator=gen)
    b = torch.zeros(d)
    W = torch.randn(m, d, generator=gen).requires_grad_()
    be = torch.zeros(m, requires_grad=True)
    rows, cols = _selection(gen, B, m, nnz)
    vals = (xc @ W.T + be)[rows, cols].detach().bfloat16()
    out = sparse_encode(xc, b, W, be, rows, cols, vals)
    assert out.dtype == torch.float32
    out.sum().backward()
    ref = torch.zeros(m, d).index_add_(0, cols, xc[rows])
    torch.testing.assert_close(W.grad, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_sparse_decode_equals_dense_matmul_and_its_gradients(device):
    gen = torch.Generator().manual_seed(2)
    B, d, m, nnz = 8, 5, 11, 25
    rows, cols = (t.to(device) for t in _selection(gen, B, m, nnz))
    vals = torch.randn(nnz, generator=gen, dtype=F64).to(device).requires_grad_()
    W = torch.randn(m, d, generator=gen, dtype=F64).to(device).requires_grad_()
    codes = codes_from_coo(rows, cols, vals.detach(), B)
    # codes_from_coo reorders the entries: decode with values in the codes' own order
    order = torch.argsort(rows, stable=True)
    v_sorted = vals[order]
    out = sparse_decode(codes, W, v_sorted)
    g = torch.randn(B, d, generator=gen, dtype=F64).to(device)
    (out * g).sum().backward()
    gW, gv = W.grad.clone(), vals.grad.clone()

    W.grad = vals.grad = None
    ref = _scatter(codes, m, vals[order]) @ W
    (ref * g).sum().backward()
    torch.testing.assert_close(out, ref.detach(), rtol=0, atol=1e-12)
    assert not out[B - 1].any()  # the empty row
    torch.testing.assert_close(gW, W.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(gv, vals.grad, rtol=0, atol=1e-12)


def test_codes_from_coo_sorts_rows_and_keeps_entries():
    gen = torch.Generator().manual_seed(3)
    n_rows, m, nnz = 10, 7, 40
    rows = torch.randint(0, n_rows - 2, (nnz,), generator=gen)  # rows 8, 9 empty (trailing)
    rows[rows == 3] = 4  # an empty row in the middle
    cols = torch.randint(0, m, (nnz,), generator=gen)
    vals = torch.randn(nnz, generator=gen, dtype=F64)
    c = codes_from_coo(rows, cols, vals, n_rows)
    assert c.n_rows == n_rows
    assert bool((c.rows[1:] >= c.rows[:-1]).all())
    expected_offsets = torch.tensor([int((rows < i).sum()) for i in range(n_rows)])
    assert torch.equal(c.offsets, expected_offsets)
    before = sorted(zip(rows.tolist(), cols.tolist(), vals.tolist(), strict=True))
    assert _coo_entries(c) == before


def test_codes_from_dense_round_trip():
    gen = torch.Generator().manual_seed(4)
    acts = torch.relu(torch.randn(12, 9, generator=gen, dtype=F64))
    acts[2] = 0.0  # empty row
    acts[-1] = 0.0  # trailing empty row
    c = codes_from_dense(acts)
    assert c.rows.numel() == int((acts != 0).sum())
    assert torch.equal(_scatter(c, 9), acts)
    assert int(c.offsets[-1]) == c.rows.numel()  # last row empty: its bag starts at the end
    # and decoding the codes equals the dense product
    W = torch.randn(9, 4, generator=gen, dtype=F64)
    torch.testing.assert_close(sparse_decode(c, W), acts @ W, rtol=0, atol=1e-12)


def test_codes_from_topk_round_trip():
    gen = torch.Generator().manual_seed(5)
    pre = torch.randn(6, 10, generator=gen, dtype=F64)
    vals, idx = pre.topk(3, dim=1, sorted=False)
    c = codes_from_topk(idx, vals)
    mask = torch.zeros_like(pre, dtype=torch.bool).scatter_(1, idx, True)
    assert torch.equal(_scatter(c, 10), pre * mask)
    assert torch.equal(c.offsets, torch.arange(0, 18, 3))


def test_project_out_parallel_grad_leaves_grad_orthogonal_to_rows():
    gen = torch.Generator().manual_seed(6)
    W = torch.randn(20, 8, generator=gen, dtype=F64)
    normalize_rows_(W)
    torch.testing.assert_close(W.norm(dim=1), torch.ones(20, dtype=F64))
    W.requires_grad_()
    g0 = torch.randn(20, 8, generator=gen, dtype=F64)
    W.grad = g0.clone()
    project_out_parallel_grad(W)
    assert float((W.grad * W.detach()).sum(dim=1).abs().max()) < 1e-12
    # only the parallel component was removed
    par = (g0 * W.detach()).sum(dim=1, keepdim=True) * W.detach()
    torch.testing.assert_close(W.grad, g0 - par, rtol=0, atol=1e-12)
    assert float(W.grad.norm()) > 0.5 * float(g0.norm())  # not just zeroed


def test_project_out_without_grad_is_a_no_op():
    W = torch.randn(3, 4, requires_grad=True)
    project_out_parallel_grad(W)
    assert W.grad is None


def test_normalize_rows_keeps_zero_rows_finite():
    W = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    normalize_rows_(W)
    torch.testing.assert_close(W, torch.tensor([[0.6, 0.8], [0.0, 0.0]]))
