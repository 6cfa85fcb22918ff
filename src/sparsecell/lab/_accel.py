"""The lab metrics on a torch device (GPU): moving data there and the heavy products.

Every lab metric that takes ``device=`` keeps its CPU path (numpy, scipy.sparse, numba)
for ``device=None`` / ``"cpu"``; for a GPU it calls the helpers here, which run the
expensive parts there in **float64** (column products ``AᵀB``, Gram matrices,
eigen- and singular-value decompositions, the kNN search and rank counts), so results
equal the CPU path's up to float64 rounding order. Only the kNN screening product runs in
float32, inside :func:`sparsecell._device.exact_matmul` (no TF32), because its rounding
bound assumes IEEE float32 arithmetic.

Sparse (CSR) inputs cross to the device as their stored entries and are densified there,
one row block at a time where the algorithm allows. The helpers also run with
``torch.device("cpu")``, which is how the test suite checks the device code on machines
without a GPU.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp

from .._errors import SparsecellError

#: Fraction of the device's free memory a metric may plan to use.
_FREE_FRACTION = 0.9

F = TypeVar("F", bound=Callable[..., Any])


def lab_device(device: Any) -> Any:
    """The torch device to run a metric on, or ``None`` for the CPU path.

    ``None`` and ``"cpu"`` → ``None``; ``"auto"`` → the GPU when one is visible, else
    ``None``; ``"cuda"``, ``"cuda:1"``, a :class:`torch.device` → that device (a clear
    error when no GPU is visible).
    """
    if device is None or str(device) == "cpu":
        return None
    from .._device import resolve_device

    dev = resolve_device(device)
    if dev.type == "cpu":
        return None
    if dev.type != "cuda":
        raise SparsecellError(
            f"the lab metrics run on the CPU or a CUDA GPU, not {dev.type!r}",
            "use device='cpu', 'cuda' or 'auto'",
        )
    return dev


def device_errors(fn: F) -> F:
    """Turn running out of GPU memory inside a metric into a one-line error."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        try:
            return fn(*args, **kwargs)
        except torch.OutOfMemoryError:
            raise SparsecellError(
                f"{fn.__name__} ran out of GPU memory", "use device='cpu' (it streams)"
            ) from None

    return wrapper  # type: ignore[return-value]


def check_fits(nbytes: float, dev: Any, what: str) -> None:
    """A clear error when ``nbytes`` will not fit in the device's free memory."""
    import torch

    if dev.type != "cuda":
        return
    free, _ = torch.cuda.mem_get_info(dev)
    # memory torch's caching allocator holds but no tensor uses is free to us
    free += torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    if nbytes > _FREE_FRACTION * free:
        raise SparsecellError(
            f"{what} needs {nbytes / 2**30:.1f} GiB on {dev}, {free / 2**30:.1f} GiB is free",
            "use device='cpu' (it streams), or fewer samples",
        )


def rows(X: np.ndarray | sp.csr_matrix, s: int, e: int, dev: Any, dtype: Any = None) -> Any:
    """Rows ``s:e`` of ``X`` (ndarray, CSR or tensor) as a dense tensor on ``dev`` (of a
    CSR ``X`` only the stored entries cross)."""
    import torch

    dtype = torch.float64 if dtype is None else dtype
    if isinstance(X, torch.Tensor):
        return X[s:e].to(dev, dtype)
    if sp.issparse(X):
        blk = X[s:e]
        r = np.repeat(np.arange(blk.shape[0]), np.diff(blk.indptr))
        out = torch.zeros(blk.shape, dtype=dtype, device=dev)
        out.index_put_(
            (torch.from_numpy(r).to(dev), torch.from_numpy(blk.indices.astype(np.int64)).to(dev)),
            torch.from_numpy(np.asarray(blk.data, dtype=np.float64)).to(dev, dtype),
            accumulate=True,  # duplicate entries of a non-canonical CSR add up, as in scipy
        )
        return out
    with warnings.catch_warnings():
        # a read-only array (e.g. a memory-mapped .npy) is shared; the helpers never write
        # to it (see ``whole(writable=True)``)
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(X[s:e])).to(dev, dtype)


def whole(
    X: np.ndarray | sp.csr_matrix,
    dev: Any,
    what: str,
    block_elems: int = 1 << 24,
    *,
    writable: bool = False,
) -> Any:
    """All of ``X`` as a dense float64 tensor on ``dev`` (a sparse ``X`` in row blocks).

    On the CPU a float64 ndarray is shared, not copied, unless ``writable`` (the caller
    will change the tensor in place).
    """
    import torch

    n, p = X.shape
    check_fits(8.0 * n * p, dev, what)
    if not sp.issparse(X):
        t = rows(X, 0, n, dev)
        if writable and dev.type == "cpu" and np.may_share_memory(t.numpy(), X):
            t = t.clone()
        return t
    out = torch.empty((n, p), dtype=torch.float64, device=dev)
    b = max(1, block_elems // max(p, 1))
    for s in range(0, n, b):
        e = min(n, s + b)
        out[s:e] = rows(X, s, e, dev)
    return out


def cross(
    A: np.ndarray | sp.csr_matrix,
    B: np.ndarray | sp.csr_matrix,
    ma: np.ndarray,
    mb: np.ndarray,
    dev: Any,
    block_elems: int = 1 << 24,
) -> Any:
    """``(A − 1 maᵀ)ᵀ (B − 1 mbᵀ)`` (p × q, float64) on ``dev``, summed over row blocks
    that are centred on the device (``B is A`` crosses once)."""
    import torch

    n, p = A.shape
    q = B.shape[1]
    check_fits(8.0 * (p * q + 2 * block_elems), dev, f"a {p} × {q} unit product")
    ta = torch.from_numpy(np.asarray(ma, dtype=np.float64)).to(dev)
    tb = ta if B is A else torch.from_numpy(np.asarray(mb, dtype=np.float64)).to(dev)
    out = torch.zeros((p, q), dtype=torch.float64, device=dev)
    b = max(1, block_elems // max(p, q, 1))
    for s in range(0, n, b):
        e = min(n, s + b)
        a = rows(A, s, e, dev) - ta
        bb = a if B is A else rows(B, s, e, dev) - tb
        out.addmm_(a.T, bb)
    return out


def gram(X: np.ndarray | sp.csr_matrix, mean: np.ndarray, dev: Any) -> Any:
    """The smaller Gram matrix of the column-centred ``X`` on ``dev``: ``X_cᵀX_c``
    (p × p, streamed) when ``p ≤ n``, else ``X_c X_cᵀ`` (n × n; ``X`` is moved whole)."""
    import torch

    n, p = X.shape
    if p <= n:
        return cross(X, X, mean, mean, dev)
    check_fits(8.0 * (n * n + n * p), dev, f"the {n} × {n} Gram matrix")
    Xc = whole(X, dev, "the samples", writable=True)
    Xc -= torch.from_numpy(np.asarray(mean, dtype=np.float64)).to(dev)
    return Xc @ Xc.T


def numpy(t: Any) -> np.ndarray:
    """A device tensor as a float64 (or integer) numpy array."""
    return t.detach().cpu().numpy()
