"""Shared fixtures of the encoder tests: synthetic 32×32 units and one trained tiny encoder."""

from __future__ import annotations

import numpy as np
import pytest
from encode_helpers import TINY, make_blobs

import sparsecell.encode as enc


@pytest.fixture(scope="session")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    return make_blobs()


@pytest.fixture(scope="session")
def trained(blobs) -> enc.Encoder:
    """A tiny supervised-contrastive encoder trained for 4 epochs (never mutate it)."""
    X, y = blobs
    return enc.train(X, y, epochs=4, seed=0, **TINY)
