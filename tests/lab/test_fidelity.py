"""Geometric fidelity: null expectations, smooth signals, cross-checks, input types."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.special import gammaln

import sparsecell as spc


def _c4(k: int) -> float:
    """E[sample std (ddof=1) of k iid normals] / sigma."""
    return float(np.sqrt(2 / (k - 1)) * np.exp(gammaln(k / 2) - gammaln((k - 1) / 2)))


@pytest.fixture(scope="module")
def cloud():
    """2000 points in 3-D and a smooth semantic variable on them."""
    rng = np.random.default_rng(0)
    E = rng.standard_normal((2000, 3))
    s = np.sin(1.5 * E[:, 0]) + 0.5 * E[:, 1] ** 2
    return E, s, rng


def test_knn_ratio_smooth_is_low_and_shuffled_is_about_one(cloud):
    E, s, rng = cloud
    smooth = spc.lab.knn_ratio(E, s, k=10)
    assert smooth < 0.4  # observed 0.27
    # Unrelated Gaussian variable: E[ratio] = c4(10) = 0.973 (ddof=1 neighbour std of
    # k iid draws). The per-sample ratio has sd ≈ sqrt(1 - c4²) ≈ 0.23; neighbourhoods
    # overlap, so we count only n/k = 200 independent ones: SE ≈ 0.016. Tolerance 0.05
    # (3 SE). The realised value is deterministic given the seed.
    noise = rng.standard_normal(len(E))
    null = spc.lab.knn_ratio(E, noise, k=10)
    assert abs(null - _c4(10)) < 0.05
    assert abs(null - 1.0) < 0.08


def test_morans_i_shuffle_mean_is_minus_one_over_n_minus_one():
    rng = np.random.default_rng(1)
    n = 300
    E = rng.standard_normal((n, 4))
    s = E[:, 0] + 0.3 * rng.standard_normal(n)
    assert spc.lab.morans_i(E, s, k=8) > 0.5
    vals = np.array([spc.lab.morans_i(E, rng.permutation(s), k=8) for _ in range(400)])
    # Under random permutation E[I] = -1/(n-1) exactly. The standard error of the mean of
    # 400 permutations is sd(I)/sqrt(400) (sd estimated from the draws, ≈ 0.024/20);
    # we allow 4 SE (two-sided false-failure rate 6e-5, and fixed seed anyway).
    se = vals.std(ddof=1) / np.sqrt(len(vals))
    assert abs(vals.mean() - (-1 / (n - 1))) < 4 * se
    # The sd itself matches the normal-approximation formula for a kNN graph within 30%.
    w = np.zeros((n, n))
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=8).fit(E).kneighbors(return_distance=False)
    w[np.repeat(np.arange(n), 8), idx.ravel()] = 1 / 8
    s0, s1 = w.sum(), 0.5 * np.sum((w + w.T) ** 2)
    s2 = np.sum((w.sum(0) + w.sum(1)) ** 2)
    var_n = (n**2 * s1 - n * s2 + 3 * s0**2) / ((n**2 - 1) * s0**2) - 1 / (n - 1) ** 2
    assert vals.std(ddof=1) == pytest.approx(np.sqrt(var_n), rel=0.3)


def test_morans_i_matches_dense_weight_formula():
    rng = np.random.default_rng(2)
    n, k = 60, 5
    E = rng.standard_normal((n, 2))
    s = E[:, 0] ** 2 + rng.standard_normal(n)
    # Reference: explicit n × n weights from a brute-force distance matrix, binary weights.
    D = np.linalg.norm(E[:, None] - E[None], axis=-1)
    np.fill_diagonal(D, np.inf)
    W = np.zeros((n, n))
    for i in range(n):
        W[i, np.argsort(D[i])[:k]] = 1.0
    z = s - s.mean()
    ref = n / W.sum() * (z @ W @ z) / (z @ z)
    assert spc.lab.morans_i(E, s, k=k) == pytest.approx(ref, abs=1e-12)


def test_ridge_r2_linear_signal_and_noise(cloud):
    E, s, rng = cloud
    lin = E @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.standard_normal(len(E))
    res = spc.lab.ridge_r2(E, lin, folds=5, seed=0)
    assert res.per_fold.shape == (5,) and res.score > 0.99
    assert spc.lab.ridge_r2(E, rng.permutation(lin)).score < 0.02
    # PCA path: 40 dims, signal in the top-variance ones, 5 components kept.
    X = np.hstack([5 * rng.standard_normal((500, 3)), rng.standard_normal((500, 37))])
    y = X[:, 0] - X[:, 1]
    assert spc.lab.ridge_r2(X, y, n_components=5).score > 0.99
    assert spc.lab.ridge_r2(X, y, n_components=1).score < 0.9


def test_trustworthiness_matches_sklearn():
    from sklearn.manifold import trustworthiness as sk_trust

    rng = np.random.default_rng(3)
    G = rng.standard_normal((120, 5))
    E = G[:, :2] + 0.3 * rng.standard_normal((120, 2))
    for k in (1, 5, 12):
        ref = sk_trust(G, E, n_neighbors=k)
        got = spc.lab.trustworthiness(E, G, k=k, block_elems=1000)  # many small blocks
        assert got == pytest.approx(ref, abs=1e-12)
    assert spc.lab.trustworthiness(G, G, k=5) == pytest.approx(1.0)


def test_knn_overlap_identity_and_rotation():
    rng = np.random.default_rng(4)
    G = rng.standard_normal((200, 4))
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    assert spc.lab.knn_overlap(G @ q, G, k=7) == 1.0
    assert spc.lab.knn_overlap(rng.standard_normal((200, 4)), G, k=7) < 0.15


def test_effective_rank_known_values():
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((100, 6)))
    # Six orthonormal columns, centred data with equal singular values: rank exactly 6.
    E = (q - q.mean(0)) @ np.linalg.qr(rng.standard_normal((6, 6)))[0]
    U, _, Vt = np.linalg.svd(E - E.mean(0), full_matrices=False)
    E6 = U @ Vt  # all singular values 1
    assert spc.lab.effective_rank(E6) == pytest.approx(6.0, abs=1e-8)
    assert spc.lab.effective_rank(np.outer(rng.standard_normal(50), [1.0, 2.0, 3.0])) == (
        pytest.approx(1.0, abs=1e-6)
    )
    # Wide sparse input takes the n × n path and agrees with dense.
    Z = sp.random(40, 300, density=0.05, format="csr", random_state=0)
    assert spc.lab.effective_rank(Z) == pytest.approx(spc.lab.effective_rank(Z.toarray()))


@pytest.mark.parametrize("metric", list(spc.lab.FIDELITY_METRICS))
def test_sparse_torch_and_dense_inputs_agree(metric):
    rng = np.random.default_rng(6)
    E = rng.exponential(size=(200, 30)) * (rng.random((200, 30)) < 0.2)
    s = E[:, :5].sum(1) + 0.1 * rng.standard_normal(200)
    sem = E[:, :3] if metric in ("knn_overlap", "trustworthiness") else s
    kw = {"n_components": 10} if metric == "ridge_r2" else {}
    ref = spc.lab.fidelity(E, semantic=sem, metric=metric, k=8, **kw)
    for e, ss in [
        (sp.csr_matrix(E), sem),
        (torch.tensor(E), torch.tensor(sem)),
        (torch.tensor(E).to_sparse(), sem),
    ]:
        got = spc.lab.fidelity(e, semantic=ss, metric=metric, k=8, **kw)
        # Sparse PCA (ridge_r2) uses another eigensolver: equal to ~1e-8.
        assert got.score == pytest.approx(ref.score, abs=1e-6 if metric == "ridge_r2" else 1e-10)
    assert float(ref) == ref.score and ref.metric == metric and ref.n_samples == 200


def test_fidelity_errors():
    rng = np.random.default_rng(7)
    E = rng.standard_normal((30, 3))
    s = rng.standard_normal(30)
    with pytest.raises(spc.SparsecellError, match="unknown fidelity metric 'moran'") as e:
        spc.lab.fidelity(E, semantic=s, metric="moran")
    assert "morans_i" in str(e.value)
    with pytest.raises(spc.SparsecellError, match="semantic variable is constant"):
        spc.lab.fidelity(E, semantic=np.ones(30))
    with pytest.raises(spc.SparsecellError, match="semantic contains NaN"):
        spc.lab.fidelity(E, semantic=np.r_[s[:-1], np.nan])
    with pytest.raises(spc.SparsecellError, match="E has 30 samples but semantic has 29"):
        spc.lab.fidelity(E, semantic=s[:29], metric="morans_i")
    with pytest.raises(spc.SparsecellError, match="k=30 neighbours"):
        spc.lab.fidelity(E, semantic=s, k=30)
    with pytest.raises(spc.SparsecellError, match="cannot be split into 5 folds"):
        spc.lab.fidelity(E[:4], semantic=s[:4], metric="ridge_r2")
    with pytest.raises(spc.SparsecellError, match="needs semantic"):
        spc.lab.fidelity(E, metric="knn_ratio")
    with pytest.raises(spc.SparsecellError, match="k < n/2"):
        spc.lab.trustworthiness(E, E, k=15)
    with pytest.raises(spc.SparsecellError, match="not numeric"):
        spc.lab.knn_ratio(E, np.array(["a"] * 30))
