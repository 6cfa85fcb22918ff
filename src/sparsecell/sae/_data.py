"""Batches for SAE training: resident on the device when the data fit, else streamed.

Every batch is a pure function of (seed, step), so a resumed run sees exactly the
batches the uninterrupted run would have seen, and every data-parallel process
computes the same global batch and keeps its own slice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._errors import SparsecellError


def check_matrix(X: Any) -> tuple[int, int]:
    """(n, d) of a 2-D array-like, or a clear error."""
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2:
        raise SparsecellError(
            "training data must be a 2-D array (samples × features)", "reshape it"
        )
    n, d = int(shape[0]), int(shape[1])
    if n == 0 or d == 0:
        raise SparsecellError(
            f"training data is empty (shape {n} × {d})", "pass at least one sample"
        )
    return n, d


def as_float_tensor(xb: Any) -> torch.Tensor:
    """A float32 CPU/device tensor from a torch or numpy-like block (read-only memmaps copied)."""
    if isinstance(xb, torch.Tensor):
        return xb.float()
    a = np.asarray(xb)
    if a.dtype != np.float32 or not a.flags.writeable or not a.flags.c_contiguous:
        a = np.array(a, dtype=np.float32, order="C")
    return torch.from_numpy(a)


def _rows(X: Any, start: int, stop: int) -> torch.Tensor:
    return as_float_tensor(X[start:stop])


def fit_normalization(X: Any, kind: str, chunk: int = 65_536) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and scale of the input normalisation, in one streamed float64 pass.

    Also the place where non-finite rows are caught, before any training work.
    """
    n, d = check_matrix(X)
    s1 = s2 = None
    for s in range(0, n, chunk):
        t = _rows(X, s, min(s + chunk, n)).double()
        if s1 is None:
            s1 = torch.zeros(d, dtype=torch.float64, device=t.device)
            s2 = torch.zeros(d, dtype=torch.float64, device=t.device)
        finite = torch.isfinite(t).all(dim=1)
        if not bool(finite.all()):
            bad = s + int((~finite).nonzero()[0, 0])
            raise SparsecellError(
                f"training data row {bad} contains NaN or inf", "drop or impute non-finite rows"
            )
        s1 += t.sum(0)
        s2 += (t * t).sum(0)
    mean = (s1 / n).cpu()
    var = (s2.cpu() / n - mean * mean).clamp_min(0.0)
    if kind == "none":
        return torch.zeros(d), torch.ones(d)
    if kind == "center_scale":
        scale = torch.full((d,), float(var.mean().sqrt()))
    elif kind == "zscore":
        scale = var.sqrt()
    else:
        raise SparsecellError(f"unknown normalize='{kind}'", "choose center_scale, zscore or none")
    scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
    return mean.float(), scale.float()


def geometric_median(x: torch.Tensor, iters: int = 30, eps: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm, started at the mean, in float64."""
    x = x.double()
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(eps)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if (y_new - y).norm() < eps * (1 + y.norm()):
            y = y_new
            break
        y = y_new
    return y.float()


class BatchStream:
    """Global batches, addressed by step.

    Parameters
    ----------
    X
        Array-like with row slicing (numpy, memmap, h5py dataset, torch tensor).
    batch_size
        Global batch size (rows per step over all processes).
    seed
        Seeds the per-epoch order.
    device
        Where batches are delivered.
    resident
        Keep all rows on ``device`` and shuffle by index; else stream chunks.
    chunk_size
        Rows per chunk when streaming; chunks come in a random order and rows are
        shuffled within a chunk (contiguous reads, near-uniform shuffling).
    """

    def __init__(
        self,
        X: Any,
        batch_size: int,
        seed: int,
        device: torch.device,
        resident: bool,
        chunk_size: int = 65_536,
    ) -> None:
        self.n, self.d = check_matrix(X)
        self.B = min(batch_size, self.n)
        self.seed = seed
        self.device = device
        self.resident = resident
        self.X = X
        if resident:
            self.data = (
                X.to(device=device, dtype=torch.float32)
                if isinstance(X, torch.Tensor)
                else as_float_tensor(X[:]).to(device)
            )
            self.steps_per_epoch = self.n // self.B
        else:
            C = max(self.B, (chunk_size // self.B) * self.B)
            self.chunks = [(s, min(s + C, self.n)) for s in range(0, self.n, C)]
            self.batches_in_chunk = [(b - a) // self.B for a, b in self.chunks]
            self.steps_per_epoch = sum(self.batches_in_chunk)
            if self.steps_per_epoch == 0:  # fewer rows in every chunk than one batch
                self.chunks = [(0, self.n)]
                self.batches_in_chunk = [self.n // self.B]
                self.steps_per_epoch = self.batches_in_chunk[0]
        self._epoch = -1
        self._cache: tuple[int, int, torch.Tensor] | None = None

    def _gen(self, *key: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(hash((self.seed, *key)) & 0x7FFF_FFFF_FFFF_FFFF)
        return g

    def _epoch_order(self, epoch: int) -> None:
        if epoch == self._epoch:
            return
        self._epoch = epoch
        if self.resident:
            self._perm = torch.randperm(self.n, generator=self._gen(epoch)).to(self.device)
        else:
            order = torch.randperm(len(self.chunks), generator=self._gen(epoch, -1)).tolist()
            self._plan = [(c, j) for c in order for j in range(self.batches_in_chunk[c])]

    def batch(self, step: int) -> torch.Tensor:
        """The global batch of ``step`` (``B × d`` float32 on the device)."""
        epoch, j = divmod(step, self.steps_per_epoch)
        self._epoch_order(epoch)
        if self.resident:
            return self.data[self._perm[j * self.B : (j + 1) * self.B]]
        c, jb = self._plan[j]
        if self._cache is None or self._cache[:2] != (epoch, c):
            a, b = self.chunks[c]
            rows = _rows(self.X, a, b)
            perm = torch.randperm(b - a, generator=self._gen(epoch, c))
            self._cache = (epoch, c, rows[perm].to(self.device))
        return self._cache[2][jb * self.B : (jb + 1) * self.B]

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """Up to ``n`` random rows (for initialisation), in sorted order for cheap reads."""
        idx = np.sort(np.random.default_rng(seed).choice(self.n, min(n, self.n), replace=False))
        if self.resident:
            return self.data[torch.from_numpy(idx).to(self.device)]
        return as_float_tensor(self.X[idx]).to(self.device)
