"""Helpers of the encoder tests: synthetic 32×32 units, a fake shard set, tiny settings."""

from __future__ import annotations

import numpy as np
import pandas as pd

# A tiny encoder (2 stages of width 8) and short runs: the whole module runs in seconds
# on a 2-core CPU. Momentum 0.9 instead of the paper's 0.995, so that the key encoder
# follows the query encoder within a few dozen steps.
TINY = dict(
    width=8,
    stages=2,
    embed_dim=16,
    proj_dim=16,
    batch_size=64,
    momentum=0.9,
    queue_size=256,
    progress=False,
)


def make_blobs(
    n: int = 300, size: int = 32, n_classes: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two-channel units whose class sets the blob radius (channel 0) and the intensity
    of a noise texture (channel 1); labels balanced and shuffled."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    yy, xx = np.mgrid[:size, :size]
    X = np.empty((n, 2, size, size), np.float32)
    for i, c in enumerate(y):
        r = 1.5 + 2.0 * c
        img = np.zeros((size, size))
        for _ in range(3):
            cy, cx = rng.uniform(4, size - 4, 2)
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
        X[i, 0] = img + 0.1 * rng.standard_normal((size, size))
        X[i, 1] = (0.5 + 0.25 * c) * rng.random((size, size))
    return X, y


class FakeShards:
    """The ``UnitShards`` contract (len, ``[i:j]`` slicing, obs, channels, unit_size,
    iter_batches) over in-memory shards; records the largest read so tests can check
    that training streams instead of loading everything."""

    def __init__(self, X: np.ndarray, obs: pd.DataFrame, channels, shard_size: int = 64):
        self._shards = [X[s : s + shard_size] for s in range(0, len(X), shard_size)]
        self._starts = np.cumsum([0] + [len(s) for s in self._shards])
        self.obs = obs
        self.channels = list(channels)
        self.unit_size = X.shape[-1]
        self.max_read = 0
        self.reads = 0

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, key):
        if not isinstance(key, slice):
            raise TypeError("FakeShards supports [i:j] slicing only")
        a, b, step = key.indices(len(self))
        assert step == 1
        parts = []
        for k, sh in enumerate(self._shards):
            lo, hi = self._starts[k], self._starts[k + 1]
            if hi <= a or lo >= b:
                continue
            parts.append(sh[max(a, lo) - lo : min(b, hi) - lo])
        out = np.concatenate(parts) if parts else self._shards[0][:0]
        self.max_read = max(self.max_read, len(out))
        self.reads += 1
        return out.astype(np.float16)

    def iter_batches(self, batch_size: int, shuffle: bool = False, seed: int = 0):
        for s in range(0, len(self), batch_size):
            yield self[s : s + batch_size]
