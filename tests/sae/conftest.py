"""Shared fixtures: one small ground-truth data set and SAEs trained on it once per session."""

from __future__ import annotations

import copy

import pytest
from sae_helpers import ARCH_KW, D_IN, TRAIN_KW, K  # noqa: F401

import sparsecell as spc


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
