"""Torch devices: one resolution rule for every stage, and exact-arithmetic switches.

``"auto"`` means CUDA when a GPU is visible, else the CPU; naming a GPU that is not there
is a clear error. :func:`cuda_tf32` turns TensorFloat-32 on or off for the duration of a
block (training may use it); :func:`exact_matmul` forbids it in float32 matrix products
whose rounding must be IEEE float32's (the lab's kNN screening bound).
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
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SparsecellError(
                f"device {str(name)!r} requested but no GPU is visible", "use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SparsecellError(
                f"device {str(name)!r} requested but only {torch.cuda.device_count()} GPU(s) "
                "are visible",
                "use 'cuda:0' … or 'auto'",
            )
    return dev


@contextlib.contextmanager
def _fp32_precision(matmul: str, conv: str | None = None) -> Iterator[None]:
    """Float32 precision (``"tf32"`` or ``"ieee"``) of CUDA matmuls, and of cuDNN
    convolutions unless ``conv`` is None, for the duration; restored afterwards.

    Uses the ``fp32_precision`` settings of torch ≥ 2.9 where they exist (reading the
    legacy ``allow_tf32`` flags there raises once a user has set the new ones), the legacy
    flags otherwise.
    """
    m = torch.backends.cuda.matmul
    if hasattr(m, "fp32_precision"):
        targets = [(m, matmul)]
        c = getattr(torch.backends.cudnn, "conv", None)
        if conv is not None and c is not None and hasattr(c, "fp32_precision"):
            targets.append((c, conv))
        saved = [(obj, obj.fp32_precision) for obj, _ in targets]
        try:
            for obj, value in targets:
                obj.fp32_precision = value
            yield
        finally:
            for obj, value in saved:
                obj.fp32_precision = value
        return
    old = (m.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        m.allow_tf32 = matmul == "tf32"
        if conv is not None:
            torch.backends.cudnn.allow_tf32 = conv == "tf32"
        yield
    finally:
        m.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def cuda_tf32(enabled: bool) -> contextlib.AbstractContextManager[None]:
    """Allow (or forbid) TF32 in CUDA convolutions and matmuls for the duration."""
    mode = "tf32" if enabled else "ieee"
    return _fp32_precision(mode, mode)


def exact_matmul() -> contextlib.AbstractContextManager[None]:
    """Within the block, CUDA float32 matrix products are IEEE float32 (no TF32 inputs):
    what a rounding bound on a float32 product assumes. No effect on the CPU."""
    return _fp32_precision("ieee")
