"""Shared small GW test data (no conftest imports)."""

from __future__ import annotations

import numpy as np


def anisotropic_cloud(n: int, seed: int = 0, d: int = 3) -> np.ndarray:
    """A point cloud with distinct spreads per axis (so its isometries are few)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.linspace(3.0, 0.5, d)


def rotation(d: int, seed: int = 0) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def shared_latent(n: int, seed: int = 0, dx: int = 8, dy: int = 5, noise: float = 0.05):
    """Two views of one latent trajectory (6 clusters along a curve): X = tanh of one random
    map, Y = another linear map; cell i of X matches cell i of Y. Returns X, Y, labels."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 6, n)
    t = (lab + rng.random(n)) / 6
    z = np.stack([np.cos(3 * t), np.sin(3 * t), 2 * t], 1) + noise * rng.normal(size=(n, 3))
    X = np.tanh(z @ rng.normal(size=(3, dx)) / 2) + 0.02 * rng.normal(size=(n, dx))
    Y = z @ rng.normal(size=(3, dy)) + 0.02 * rng.normal(size=(n, dy))
    return X, Y, lab
