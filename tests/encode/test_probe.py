"""Probe accuracies: known answers on separable and random embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from sparsecell import SparsecellError
from sparsecell.encode import probe


def test_separable_embeddings_score_one():
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 40)
    E = np.eye(3)[np.searchsorted(["a", "b", "c"], y)] * 5 + 0.1 * rng.standard_normal((120, 3))
    r = probe(E, y, seed=0)
    assert r["linear_acc"] == 1.0 and r["knn_acc"] == 1.0
    assert r["chance"] == pytest.approx(1 / 3, abs=0.05)
    assert r["n_test"] == 30 and r["n_train"] == 90 and r["n_classes"] == 3


def test_random_embeddings_near_chance_and_majority_chance():
    rng = np.random.default_rng(1)
    y = np.array([0] * 300 + [1] * 100)
    r = probe(rng.standard_normal((400, 8)), y, seed=0)
    assert r["chance"] == pytest.approx(0.75, abs=0.02)  # the majority class
    assert r["linear_acc"] < r["chance"] + 0.08


def test_explicit_test_mask():
    E = np.arange(10.0)[:, None]
    y = (np.arange(10) >= 5).astype(int)
    mask = np.zeros(10, bool)
    mask[[0, 9]] = True
    r = probe(E, y, test=mask)
    assert r["n_test"] == 2 and r["linear_acc"] == 1.0
    assert probe(E, y, test=np.array([0, 9]))["n_test"] == 2


def test_bad_input():
    with pytest.raises(SparsecellError, match="labels for"):
        probe(np.zeros((5, 2)), [0, 1])
    with pytest.raises(SparsecellError, match="NaN"):
        probe(np.full((4, 2), np.nan), [0, 1, 0, 1])
