"""Units from arrays or shards, read by index without loading everything at once.

An *array* is anything 4-D with numpy fancy indexing (``np.ndarray``, ``np.memmap``,
``h5py`` dataset, torch tensor). *Shards* are any object with ``len()``, ``[i:j]`` slicing
and ``.obs`` (``sparsecell.images.shards.UnitShards``); only slicing is used, so a set
larger than memory streams: a batch of random units is read as runs of consecutive
indices.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch

from .._errors import SparsecellError

T = TypeVar("T")
R = TypeVar("R")


def is_shards(obj: Any) -> bool:
    """True for shard-like unit sets (``len``, slicing and an ``obs`` table)."""
    return (
        hasattr(obj, "__len__")
        and hasattr(obj, "__getitem__")
        and hasattr(obj, "obs")
        and not isinstance(obj, np.ndarray | torch.Tensor)
    )


class Units:
    """Uniform read access to N × C × H × W units.

    Parameters
    ----------
    units
        An array or shards (see the module docstring).
    channels
        Names of the units' channels; ``None`` takes ``units.channels`` where present.
    """

    def __init__(self, units: Any, channels: Sequence[str] | None = None) -> None:
        self.shards = is_shards(units)
        if isinstance(units, torch.Tensor):
            units = units.detach().cpu().numpy()
        if self.shards:
            self.n = len(units)
            self.obs: pd.DataFrame | None = getattr(units, "obs", None)
            first = np.asarray(units[0:1]) if self.n else None
            shape = None if first is None else first.shape[1:]
            ndim = None if first is None else first.ndim
        else:
            shape_all = getattr(units, "shape", None)
            if shape_all is None:
                units = np.asarray(units)
                shape_all = units.shape
            ndim = len(shape_all)
            self.n = int(shape_all[0]) if ndim else 0
            shape = tuple(shape_all[1:])
            self.obs = None
        if ndim is not None and ndim != 4:
            fix = (
                "add a channel axis, e.g. units[:, None]"
                if ndim == 3
                else "pass units as N × C × H × W (channels first)"
            )
            raise SparsecellError(f"units must be a 4-D array N × C × H × W, got {ndim}-D", fix)
        if self.n == 0:
            raise SparsecellError("no units given (the set is empty)", "pass at least one unit")
        self.data = units
        self.shape: tuple[int, int, int] = tuple(int(s) for s in shape)  # type: ignore[assignment]
        if channels is None:
            channels = getattr(units, "channels", None)
        self.channels: list[str] | None = None if channels is None else [str(c) for c in channels]
        if self.channels is not None and len(self.channels) != self.shape[0]:
            raise SparsecellError(
                f"{len(self.channels)} channel names given for units with {self.shape[0]} channels",
                "pass one name per channel",
            )
        self.select: np.ndarray | None = None

    # ------------------------------------------------------------------ channels
    @property
    def n_channels(self) -> int:
        return self.shape[0] if self.select is None else len(self.select)

    def keep_channels(self, idx: Sequence[int]) -> None:
        """Read only these channels (indices into the units' own channels)."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.select is None and np.array_equal(idx, np.arange(self.shape[0])):
            return
        self.select = idx

    def kept_names(self) -> list[str] | None:
        if self.channels is None:
            return None
        if self.select is None:
            return list(self.channels)
        return [self.channels[i] for i in self.select]

    # ------------------------------------------------------------------ reading
    def _raw(self, idx_sorted: np.ndarray) -> np.ndarray:
        if not self.shards:
            if len(idx_sorted) and idx_sorted[-1] - idx_sorted[0] + 1 == len(idx_sorted):
                return np.asarray(self.data[int(idx_sorted[0]) : int(idx_sorted[-1]) + 1])
            return np.asarray(self.data[idx_sorted])
        # runs of consecutive indices → one slice each
        breaks = np.flatnonzero(np.diff(idx_sorted) != 1) + 1
        parts = [
            np.asarray(self.data[int(r[0]) : int(r[-1]) + 1]) for r in np.split(idx_sorted, breaks)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def read(self, idx: np.ndarray | slice, check: bool = True) -> np.ndarray:
        """Units ``idx`` (in that order) as a C-contiguous float32 array.

        With ``check`` a unit holding NaN or inf raises :class:`SparsecellError`.
        """
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(self.n))
        idx = np.asarray(idx, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        srt = idx[order]
        x = self._raw(srt)
        if not np.array_equal(order, np.arange(len(idx))):
            inv = np.empty_like(order)
            inv[order] = np.arange(len(order))
            x = x[inv]
        if self.select is not None:
            x = x[:, self.select]
        x = np.ascontiguousarray(x, dtype=np.float32)
        if check:
            finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            if not finite.all():
                bad = int(idx[int(np.flatnonzero(~finite)[0])])
                raise SparsecellError(
                    f"unit {bad} contains NaN or inf", "drop or repair non-finite units first"
                )
        return x


def channel_stats(units: Units, idx: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, ...]:
    """Per-channel mean and standard deviation over units ``idx`` (float64 accumulators)."""
    C = units.n_channels
    s1 = np.zeros(C)
    s2 = np.zeros(C)
    count = 0
    for s in range(0, len(idx), chunk):
        x = units.read(np.sort(idx[s : s + chunk])).astype(np.float64)
        s1 += x.sum(axis=(0, 2, 3))
        s2 += (x * x).sum(axis=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = s1 / count
    std = np.sqrt(np.maximum(s2 / count - mean * mean, 0.0))
    std = np.where(std > 1e-8 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def encode_labels(labels: Any, n: int) -> tuple[np.ndarray, list[Any]]:
    """Integer codes 0..K-1 and the sorted class values, or a clear error."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise SparsecellError(
            f"labels must be 1-D (one per unit), got shape {arr.shape}", "pass one label per unit"
        )
    if len(arr) != n:
        raise SparsecellError(
            f"{len(arr)} labels for {n} units", "pass exactly one label per unit, in unit order"
        )
    codes, classes = pd.factorize(pd.Series(labels).reset_index(drop=True), sort=True)
    if (codes < 0).any():
        bad = int(np.flatnonzero(codes < 0)[0])
        raise SparsecellError(
            f"label of unit {bad} is missing", "drop unlabelled units or fill their labels"
        )
    return codes.astype(np.int64), [c.item() if hasattr(c, "item") else c for c in classes]


def prefetch(
    fn: Callable[[T], R], items: Iterable[T], on: bool = True, workers: int = 1
) -> Iterator[R]:
    """``map(fn, items)`` in order, with ``workers`` background threads computing up to
    ``2 · workers`` results ahead (numpy reads release the GIL, so they overlap)."""
    if not on:
        for it in items:
            yield fn(it)
        return
    workers = max(1, int(workers))
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sparsecell-read") as ex:
        futs: deque = deque()
        for _ in range(2 * workers):
            try:
                futs.append(ex.submit(fn, next(it)))
            except StopIteration:
                break
        while futs:
            res = futs.popleft().result()
            try:
                futs.append(ex.submit(fn, next(it)))
            except StopIteration:
                pass
            yield res


def read_workers(n: int, device: torch.device) -> int:
    """Reader threads: ``n`` if positive, else 1 on CPU (compute needs the cores) and up
    to 4 when a GPU does the compute."""
    if n > 0:
        return n
    return 1 if device.type != "cuda" else max(1, min(4, (os.cpu_count() or 2) - 1))


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA (tensor-core convolutions); plain layout on CPU.

    On CPU, torch 2.13's oneDNN channels_last convolution backward crashes the process
    (segfault / heap corruption) for some shapes, e.g. width 8 at 128×128 inputs
    (reproduced 2026-11-24), so the CPU gives up its ~45% channels_last speed-up for safety.
    """
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """A tensor on ``device`` (pinned, asynchronous copy to CUDA)."""
    t = torch.from_numpy(x)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t
