"""Torch devices: one resolution rule for every stage, and exact-arithmetic switches.

``"auto"`` means CUDA when a GPU is visible, else the CPU; naming a GPU that is not there
is a clear error. :func:`cuda_tf32` turns TensorFloat-32 on or off for the duration of a
block (training may use it); :func:`exact_matmul` forbids every reduced-precision
shortcut of CUDA matrix products, for computations whose results must equal the CPU's up
to float rounding (the lab metrics).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ._errors import SparsecellError


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` → CUDA when present, else CPU; a clear error for a missing GPU."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise SparsecellError(
            f"unknown device {name!r}", "use 'cpu', 'cuda', 'cuda:N' or 'auto'"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SparsecellError(
            f"device {str(name)!r} requested but no GPU is visible", "use device='cpu'"
        )
    return dev


@contextlib.contextmanager
def cuda_tf32(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 in CUDA convolutions and matmuls for the duration."""
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@contextlib.contextmanager
def exact_matmul() -> Iterator[None]:
    """Within the block, CUDA float32 products are true float32 (no TF32 inputs) and
    half/bfloat16 products reduce in float32; restored afterwards. No effect on the CPU."""
    m = torch.backends.cuda.matmul
    old = (m.allow_fp16_reduced_precision_reduction, m.allow_bf16_reduced_precision_reduction)
    m.allow_fp16_reduced_precision_reduction = False
    m.allow_bf16_reduced_precision_reduction = False
    try:
        with cuda_tf32(False):
            yield
    finally:
        m.allow_fp16_reduced_precision_reduction, m.allow_bf16_reduced_precision_reduction = old
