"""gwmap.metrics: FOSCTTM, label transfer accuracy, silhouette and kNN transfer."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from sparsecell._errors import SparsecellError
from sparsecell.gwmap.metrics import (
    foscttm,
    knn_transfer_accuracy,
    label_transfer_accuracy,
    silhouette,
)


def test_foscttm_perfect_coupling_and_embedding_is_zero():
    n = 50
    assert foscttm(np.eye(n) / n) == 0.0
    assert foscttm(sp.csr_matrix(np.eye(n) / n)) == 0.0
    X = np.random.default_rng(0).normal(size=(n, 4))
    assert foscttm(X, X) == 0.0


def test_foscttm_constant_coupling_is_chance_not_perfect():
    # ties count one half: an uninformative coupling must not look perfect
    assert foscttm(np.full((30, 30), 1 / 900)) == 0.5
    assert foscttm(sp.csr_matrix((30, 30))) == 0.5


def test_foscttm_random_is_chance():
    # n = 400 pairs, each value the mean of two fractions over 399 others; per-pair sd is
    # at most sqrt(1/12) ≈ 0.29, so the mean's sd is ≤ 0.29/sqrt(400) ≈ 0.015; 4 sd = 0.06
    rng = np.random.default_rng(1)
    n = 400
    assert abs(foscttm(rng.random((n, n))) - 0.5) < 0.06
    assert abs(foscttm(rng.normal(size=(n, 3)), rng.normal(size=(n, 3))) - 0.5) < 0.06


def test_foscttm_csr_equals_dense_with_ties_and_zeros():
    rng = np.random.default_rng(2)
    T = rng.integers(0, 4, (40, 55)).astype(float)  # many ties and zeros
    truth = rng.integers(0, 55, 40)
    truth[:3] = -1  # unmatched cells are left out
    d = foscttm(T, truth=truth, per_sample=True)
    s = foscttm(sp.csr_matrix(T), truth=truth, per_sample=True)
    np.testing.assert_allclose(d, s)
    assert d.shape == (37,)


def test_foscttm_exact_small_case():
    # row 0: true col 0 has 0.1; 0.3 and 0.2 are larger -> 2/2; column 0: other row 0.05 -> 0/1
    # row 1: true col 1 has 0.4, others 0.05 and 0.0 -> 0/2; column 1: other row 0.3 -> 0/1
    T = np.array([[0.1, 0.3, 0.2], [0.05, 0.4, 0.0]])
    per = foscttm(T, truth=np.array([0, 1]), per_sample=True)
    np.testing.assert_allclose(per, [0.5 * (1.0 + 0.0), 0.0])


def test_foscttm_shuffled_coembedding_with_truth_and_blocks(monkeypatch):
    import sparsecell.gwmap.metrics as m

    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 5))
    Y = X + 0.3 * rng.normal(size=X.shape)
    perm = rng.permutation(300)
    truth = np.argsort(perm)  # X[i] matches Y[perm][truth[i]]
    full = foscttm(X, Y)
    assert foscttm(X, Y[perm], truth=truth) == pytest.approx(full)
    monkeypatch.setattr(m, "_BLOCK_ELEMS", 1000)  # force many row blocks
    assert foscttm(X, Y[perm], truth=truth) == pytest.approx(full)
    assert full < 0.05  # noise 0.3 against unit-variance points in 5-D


def test_foscttm_bad_input():
    with pytest.raises(SparsecellError, match="truth"):
        foscttm(np.ones((3, 4)))
    with pytest.raises(SparsecellError, match="NaN"):
        foscttm(np.array([[np.nan, 1.0], [1.0, 0.0]]))
    with pytest.raises(SparsecellError, match="dimensions"):
        foscttm(np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(SparsecellError, match=">="):
        foscttm(np.ones((2, 2)), truth=np.array([0, 5]))


def test_label_transfer_accuracy_exact():
    assert label_transfer_accuracy(["a", "b", "c", "a"], ["a", "b", "a", "a"]) == 0.75
    # a missing prediction is wrong, a missing truth is left out
    assert label_transfer_accuracy(["a", None, "b"], ["a", "b", None]) == 0.5
    with pytest.raises(SparsecellError, match="length"):
        label_transfer_accuracy(["a"], ["a", "b"])


def test_silhouette_and_knn_transfer():
    rng = np.random.default_rng(4)
    lab = np.repeat(["a", "b"], 100)
    Z = rng.normal(size=(200, 2))
    Z[100:] += 10.0
    assert silhouette(Z, lab) > 0.8
    assert abs(silhouette(rng.normal(size=(200, 2)), lab)) < 0.1
    assert knn_transfer_accuracy(Z[::2], lab[::2], Z[1::2], lab[1::2], k=5) == 1.0
    # reference labels flipped: every vote is wrong
    assert knn_transfer_accuracy(Z[::2], lab[::2], Z[1::2], lab[1::2][::-1], k=5) == 0.0


def test_foscttm_float32_coembedding_agrees_with_float64():
    # float32 distances may flip a few near-ties; each flip moves the mean by
    # 1 / (2 · 299 · 300) ≈ 6e-6, so 1e-3 allows ~170 flips out of 180,000 comparisons
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 8))
    Y = X + rng.normal(size=X.shape)
    f64 = foscttm(X, Y)
    f32 = foscttm(X.astype(np.float32), Y.astype(np.float32))
    assert 0.05 < f64 < 0.45 and abs(f32 - f64) < 1e-3


def test_foscttm_leaves_a_non_canonical_sparse_coupling_untouched():
    # duplicate entries and unsorted columns: canonicalising in place would change the
    # caller's matrix (its arrays are shared by sp.csr_matrix(T))
    rng = np.random.default_rng(4)
    dense = rng.random((30, 30)) + np.eye(30) * 5.0
    cols = [np.r_[rng.permutation(30), rng.permutation(30)] for _ in range(30)]
    T = sp.csr_matrix(
        (
            np.concatenate([dense[i, c] / 2.0 for i, c in enumerate(cols)]),
            np.concatenate(cols),
            np.arange(0, 60 * 31, 60),
        ),
        shape=(30, 30),
    )
    assert not T.has_canonical_format
    saved = (T.data.copy(), T.indices.copy(), T.indptr.copy())
    assert foscttm(T) == pytest.approx(foscttm(dense), abs=1e-12)
    for a, b in zip((T.data, T.indices, T.indptr), saved, strict=True):
        np.testing.assert_array_equal(a, b)
