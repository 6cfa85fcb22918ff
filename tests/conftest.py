"""Shared fixtures: one small ground-truth data set and SAEs trained on it once per session."""

from __future__ import annotations

import copy

import pytest

import sparsecell as spc

# Small enough for a 2-core CPU: 4096 rows of 32 dims, 128 latents, 300 steps of 256.
D_IN = 32
K = 3
TRAIN_KW = dict(k=K, expansion=4, seed=0, steps=300, batch_size=256, lr=3e-3, progress=False)
# L1 λ is data-dependent; on this toy data (3 active features per sample) 0.5 keeps a
# sparse but useful code within 300 steps.
ARCH_KW: dict[str, dict] = {"relu": {"sparsity_coeff": 0.5}, "gated": {"sparsity_coeff": 0.5}}
ARCHS = sorted(spc.sae.ARCHITECTURES)


@pytest.fixture(scope="session")
def toy() -> spc.datasets.SparseFeatures:
    """128 known features superposed in 32 dims, ~3 active per sample."""
    return spc.datasets.sparse_features(128, D_IN, active=K, n_samples=4096, seed=0)


@pytest.fixture(scope="session")
def trained(toy):
    """``trained(arch)``: an SAE trained on ``toy`` (cached; never mutate it, copy it)."""
    cache: dict[str, spc.sae.SparseAutoencoder] = {}

    def get(arch: str) -> spc.sae.SparseAutoencoder:
        if arch not in cache:
            cache[arch] = spc.sae.train(toy.X, arch=arch, **TRAIN_KW, **ARCH_KW.get(arch, {}))
        return cache[arch]

    return get


@pytest.fixture
def fresh(trained):
    """``fresh(arch)``: a private deep copy of the cached trained SAE, free to mutate."""
    return lambda arch: copy.deepcopy(trained(arch))
