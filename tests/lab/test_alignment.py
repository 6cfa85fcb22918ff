"""Alignment metrics: exact answers, invariances, cross-checks against independent code."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import sparsecell as spc
from sparsecell.lab import _ridge, _stats

ALL = list(spc.lab.ALIGNMENT_METRICS)


def _sparse_sources(n: int, p: int, seed: int) -> np.ndarray:
    """Independent, sparse, non-Gaussian units (what SAE latents look like)."""
    rng = np.random.default_rng(seed)
    return rng.exponential(size=(n, p)) * (rng.random((n, p)) < 0.3)


def _orthogonal(p: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((p, p)))
    return q * np.sign(np.diag(r))


# --------------------------------------------------------------------------- exact answers


@pytest.mark.parametrize("metric", ["semi_matching", "soft_matching", "cka", "cka_debiased"])
def test_unit_permuted_copy_scores_one(metric):
    A = _sparse_sources(300, 12, seed=0)
    perm = np.random.default_rng(1).permutation(12)
    res = spc.lab.alignment(A, A[:, perm], metric=metric, folds=5, seed=0)
    assert res.score == pytest.approx(1.0, abs=1e-9)
    if metric in ("semi_matching", "soft_matching"):
        assert res.per_fold.shape == (5,)
        np.testing.assert_allclose(res.per_fold, 1.0, atol=1e-9)
    assert float(res) == res.score
    assert (res.n_units_a, res.n_units_b) == (12, 12)


def test_rotation_keeps_cka_and_procrustes_but_breaks_semi_matching():
    A = _sparse_sources(400, 10, seed=2)
    B = A[:, :6] + 0.5 * np.random.default_rng(3).standard_normal((400, 6))
    Q = _orthogonal(6, seed=4)
    for fn in (spc.lab.cka, spc.lab.procrustes):
        assert fn(A, B @ Q) == pytest.approx(fn(A, B), abs=1e-10)
    assert spc.lab.cka(A, B @ Q, debiased=True) == pytest.approx(
        spc.lab.cka(A, B, debiased=True), abs=1e-10
    )
    R = _orthogonal(10, seed=5)
    assert spc.lab.cka(A, A @ R) == pytest.approx(1.0, abs=1e-10)
    assert spc.lab.procrustes(A, A @ R) == pytest.approx(1.0, abs=1e-10)
    assert spc.lab.procrustes_distance(A, A @ R) == pytest.approx(0.0, abs=1e-5)
    # Ridge sees through any invertible linear map.
    assert spc.lab.ridge(A, A @ R).score > 0.999
    # Matching metrics do not: a random rotation mixes every unit into every other.
    semi = spc.lab.semi_matching(A, A @ R).score
    soft = spc.lab.soft_matching(A, A @ R).score
    assert semi < 0.8 and soft < 0.8
    assert spc.lab.semi_matching(A, A).score == pytest.approx(1.0, abs=1e-9)


def test_soft_never_exceeds_semi_in_sample_exactly():
    # Theorem: each column of a plan has mass 1/q, so Σ P∘C <= mean_j max_i C_ij.
    for seed in range(6):
        rng = np.random.default_rng(seed)
        p, q = [(10, 10), (7, 13), (20, 6)][seed % 3]
        C = spc.lab.unit_correlations(rng.standard_normal((50, p)), rng.standard_normal((50, q)))
        plan = _stats.transport_plan(C)
        assert np.sum(plan * C) <= np.mean(C.max(axis=0)) + 1e-12


@pytest.mark.parametrize("p, q", [(20, 20), (12, 20), (30, 7)])
def test_soft_below_semi_held_out(p, q):
    # Random but related representations (B = sparse random mix of A + noise): the
    # training correlations generalise, and the in-sample inequality survives held out.
    # Observed margins semi - soft are 0.03-0.3 over these shapes; we require > 0.
    for seed in range(4):
        rng = np.random.default_rng(seed)
        A = rng.standard_normal((400, p))
        M = rng.standard_normal((p, q)) * (rng.random((p, q)) < 0.3)
        B = A @ M + rng.standard_normal((400, q))
        semi = spc.lab.semi_matching(A, B, seed=seed)
        soft = spc.lab.soft_matching(A, B, seed=seed)
        assert soft.score < semi.score


def test_debiased_cka_of_independent_matrices_is_near_zero():
    # For independent Gaussian representations the debiased CKA has mean 0 and standard
    # deviation about sqrt(2)/n (0.007 at n = 200); we allow 5 sd per draw. The biased
    # CKA of the same pairs is far from 0 (about 0.18), which the debiasing removes.
    n = 200
    vals = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        A, B = rng.standard_normal((n, 50)), rng.standard_normal((n, 40))
        vals.append(spc.lab.cka(A, B, debiased=True))
        assert abs(vals[-1]) < 5 * np.sqrt(2) / n
        assert spc.lab.cka(A, B) > 0.1
    assert abs(np.mean(vals)) < 5 * np.sqrt(2) / n / np.sqrt(5)


def test_mutual_knn_identity_and_chance():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((300, 5))
    assert spc.lab.mutual_knn(A, 3.0 * A @ _orthogonal(5, 1) + 2.0, k=10) == 1.0
    # Unrelated: expected overlap k/(n-1) = 0.033; binomial-like sd of the mean ≈ 0.006.
    chance = spc.lab.mutual_knn(A, rng.standard_normal((300, 5)), k=10)
    assert abs(chance - 10 / 299) < 0.03


def test_dead_units_are_dropped_and_do_not_change_scores():
    A = _sparse_sources(200, 8, seed=0)
    B = A[:, ::-1] + 0.1 * np.random.default_rng(1).standard_normal((200, 8))
    A_dead = np.hstack([A, np.zeros((200, 2)), np.full((200, 1), 3.7)])
    for metric in ALL:
        r0 = spc.lab.alignment(A, B, metric=metric)
        r1 = spc.lab.alignment(A_dead, B, metric=metric)
        assert r1.n_units_a == 8 and r1.n_units_b == 8
        assert r1.score == pytest.approx(r0.score, abs=1e-9), metric


# --------------------------------------------------------------------------- cross-checks


def _ref_hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012) eq. 5, literally, with n × n matrices."""
    n = K.shape[0]
    K = K.copy()
    L = L.copy()
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    one = np.ones(n)
    return (
        np.trace(K @ L)
        + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ K @ L @ one)
    ) / (n * (n - 3))


def _ref_cka(A: np.ndarray, B: np.ndarray, debiased: bool) -> float:
    n = A.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    if debiased:
        K, L = A @ A.T, B @ B.T  # uncentred: the U-statistic needs no centring
        h = _ref_hsic_unbiased
    else:
        K, L = H @ A @ A.T @ H, H @ B @ B.T @ H

        def h(X, Y):
            return np.sum(X * Y)

    return h(K, L) / np.sqrt(h(K, K) * h(L, L))


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matches_n_squared_reference(debiased):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((60, 7)) + 5.0
    B = A[:, :4] @ rng.standard_normal((4, 9)) + rng.standard_normal((60, 9)) - 2.0
    got = spc.lab.cka(A, B, debiased=debiased)
    assert got == pytest.approx(_ref_cka(A, B, debiased), abs=1e-10)
    got_sp = spc.lab.cka(sp.csr_matrix(np.where(A > 5.5, A, 0.0)), B, debiased=debiased)
    ref_sp = _ref_cka(np.where(A > 5.5, A, 0.0), B, debiased)
    assert got_sp == pytest.approx(ref_sp, abs=1e-10)


@pytest.mark.parametrize("method", ["spearman", "pearson"])
def test_rsa_matches_n_squared_reference(method):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((40, 6))
    B = np.tanh(A @ rng.standard_normal((6, 5))) + 0.3 * rng.standard_normal((40, 5))

    def rdm(X):
        n = len(X)
        D = np.empty((n, n))
        for i in range(n):
            for j in range(n):
                D[i, j] = 1.0 - np.corrcoef(X[i], X[j])[0, 1]
        return D[np.triu_indices(n, 1)]

    def ranks(v):
        order = np.argsort(v)
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        return r  # no ties in continuous data

    da, db = rdm(A), rdm(B)
    if method == "spearman":
        da, db = ranks(da), ranks(db)
    ref = np.corrcoef(da, db)[0, 1]
    assert spc.lab.rsa(A, B, method=method) == pytest.approx(ref, abs=1e-10)


def test_procrustes_matches_scipy_orthogonal_procrustes():
    from scipy.linalg import orthogonal_procrustes

    rng = np.random.default_rng(2)
    A = rng.standard_normal((80, 6)) + 1.0
    B = A @ _orthogonal(6, 3) + 0.5 * rng.standard_normal((80, 6))
    Ac = A - A.mean(0)
    Bc = B - B.mean(0)
    Ac /= np.linalg.norm(Ac)
    Bc /= np.linalg.norm(Bc)
    R, _ = orthogonal_procrustes(Ac, Bc)
    ref = np.sum((Ac @ R) * Bc)
    assert spc.lab.procrustes(A, B) == pytest.approx(ref, abs=1e-10)
    assert spc.lab.procrustes_distance(A, B, kind="euclidean") == pytest.approx(
        np.linalg.norm(Ac @ R - Bc), abs=1e-8
    )


@pytest.mark.parametrize("p, q", [(9, 9), (6, 10), (17, 5), (97, 89)])
def test_transport_plan_matches_pot(p, q):
    # (9, 9): permutation; (6, 10), (17, 5): assignment of replicated units;
    # (97, 89): lcm 8633 > 8192, so the HiGHS LP.
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(p * q)
    C = spc.lab.unit_correlations(rng.standard_normal((30, p)), rng.standard_normal((30, q)))
    plan = _stats.transport_plan(C)
    ref = ot.emd(np.full(p, 1 / p), np.full(q, 1 / q), 1.0 - C)
    np.testing.assert_allclose(plan.sum(1), 1 / p, atol=1e-12)
    np.testing.assert_allclose(plan.sum(0), 1 / q, atol=1e-12)
    assert np.sum(plan * C) == pytest.approx(np.sum(ref * C), abs=1e-10)
    # Generic costs have a unique optimal plan, so the plans themselves agree.
    np.testing.assert_allclose(plan, ref, atol=1e-9)


@pytest.mark.parametrize("n, p", [(120, 10), (40, 80), (12, 5)])  # covariance / Gram paths
@pytest.mark.parametrize("per_target", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_ridge_loo_matches_sklearn_ridgecv(n, p, per_target, sparse):
    from sklearn.linear_model import Ridge, RidgeCV

    rng = np.random.default_rng(n + p)
    X = rng.standard_normal((n, p)) + 3.0
    if sparse:
        X = np.where(X > 3.3, X, 0.0)
    Y = X[:, :3] @ rng.standard_normal((3, 4)) + 2.0 * rng.standard_normal((n, 4))
    alphas = np.logspace(-8, 8, 17)
    ref = RidgeCV(alphas=alphas, alpha_per_target=per_target, store_cv_results=True).fit(X, Y)
    coef, intercept, chosen, loo_mse = _ridge.ridge_cv(
        sp.csr_matrix(X) if sparse else X, Y, alphas, inner="loo", alpha_per_target=per_target
    )
    # sklearn's cv_results_ holds the squared LOO errors (n × q × n_alphas). With p > n and
    # α = 1e-8 the fit nearly interpolates (1 - h_ii ≈ 1e-10) and sklearn's rounding shows:
    # observed 1.3e-7 relative (dense) and up to 4e-6 (sparse) against 40-digit arithmetic,
    # where ours is within 4e-16 (test_loo_near_interpolation_equals_literal_hat_matrix).
    # Dropping the intercept's 1/n from h_ii would change the errors by percents.
    rtol = 1e-4 if sparse else 1e-5
    ref_mse = ref.cv_results_.mean(axis=0).T
    np.testing.assert_allclose(loo_mse, ref_mse, rtol=rtol)
    # The same penalty, except where sklearn's errors for its choice and ours are equal
    # within its rounding (tiny penalties at p > n), so that its choice is rounding's.
    ours, theirs = np.broadcast_arrays(chosen, np.atleast_1d(ref.alpha_))
    total = ref_mse if per_target else ref_mse.sum(axis=1, keepdims=True)
    for j in np.flatnonzero(ours != theirs):
        e_ours = total[np.flatnonzero(alphas == ours[j])[0], j]
        e_theirs = total[np.flatnonzero(alphas == theirs[j])[0], j]
        assert abs(e_ours - e_theirs) <= rtol * e_theirs
    # the fit is sklearn's ridge (SVD solver) of the chosen penalty
    fit = Ridge(alpha=ours.astype(float), solver="svd").fit(X, Y)
    np.testing.assert_allclose(X @ coef + intercept, fit.predict(X), atol=1e-8)


def test_unit_correlations_match_numpy():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((50, 4)) * [1, 10, 0.1, 3] + [0, 5, -2, 100]
    B = rng.standard_normal((50, 3))
    ref = np.corrcoef(A.T, B.T)[:4, 4:]
    np.testing.assert_allclose(spc.lab.unit_correlations(A, B), ref, atol=1e-12)
    A_sp = sp.csr_matrix(np.where(A > A.mean(0), A, 0.0))
    ref_sp = np.corrcoef(A_sp.toarray().T, B.T)[:4, 4:]
    np.testing.assert_allclose(spc.lab.unit_correlations(A_sp, B), ref_sp, atol=1e-12)
    np.testing.assert_allclose(
        spc.lab.unit_correlations(A_sp, sp.csr_matrix(B)), ref_sp, atol=1e-12
    )
    # A column constant on these rows correlates 0 with everything (numpy gives NaN).
    const = np.hstack([A[:, :2], np.full((50, 1), 7.0)])
    np.testing.assert_array_equal(spc.lab.unit_correlations(const, B)[2], 0.0)
    both_sparse = spc.lab.unit_correlations(sp.csr_matrix(const), sp.csr_matrix(B))
    np.testing.assert_array_equal(both_sparse[2], 0.0)
    ref_c = np.corrcoef(const[:, :2].T, B.T)[:2, 2:]
    np.testing.assert_allclose(both_sparse[:2], ref_c, atol=1e-12)


# --------------------------------------------------------------------------- input types


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("metric", ALL)
def test_sparse_torch_and_dense_inputs_agree(metric):
    A = _sparse_sources(150, 12, seed=7)
    B = A[:, :8] @ np.random.default_rng(8).random((8, 8)) + 0.2 * _sparse_sources(150, 8, 9)
    ref = spc.lab.alignment(A, B, metric=metric, seed=3)
    variants = [
        (sp.csr_matrix(A), B),
        (A, sp.csr_matrix(B)),
        (sp.csr_matrix(A), sp.csr_matrix(B)),
        (torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64)),
        (torch.tensor(A, dtype=torch.float64).to_sparse(), B),
        (torch.tensor(A, dtype=torch.float64).to_sparse_csr(), B),
    ]
    for a, b in variants:
        res = spc.lab.alignment(a, b, metric=metric, seed=3)
        assert res.score == pytest.approx(ref.score, abs=1e-9)
        np.testing.assert_allclose(res.per_fold, ref.per_fold, atol=1e-9)


def test_sparse_latents_are_not_densified():
    import tracemalloc

    rng = np.random.default_rng(0)
    n, p = 2000, 5000  # dense float64 would be 80 MB
    A = sp.random(n, p, density=0.002, format="csr", random_state=0)
    B = rng.standard_normal((n, 8))
    spc.lab.semi_matching(A[:50], B[:50], folds=2)  # import sklearn before measuring
    tracemalloc.start()
    res = spc.lab.semi_matching(A, B, folds=2)
    cka = spc.lab.cka(A, B, debiased=True)
    sim = spc.lab.procrustes(A, B)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20e6, f"peak {peak / 1e6:.1f} MB"
    assert res.n_units_a <= p and abs(cka) <= 1 and 0 <= sim <= 1


def test_seed_controls_folds():
    A = _sparse_sources(100, 6, seed=0)
    B = A @ np.random.default_rng(1).standard_normal((6, 6))
    r0 = spc.lab.semi_matching(A, B, seed=0)
    r0b = spc.lab.semi_matching(A, B, seed=0)
    r1 = spc.lab.semi_matching(A, B, seed=1)
    np.testing.assert_array_equal(r0.per_fold, r0b.per_fold)
    assert not np.array_equal(r0.per_fold, r1.per_fold)


# --------------------------------------------------------------------------- errors


def test_bad_input_errors():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((20, 4))
    B = rng.standard_normal((20, 3))
    bad = A.copy()
    bad[3, 1] = np.nan
    with pytest.raises(spc.SparsecellError, match="A contains NaN"):
        spc.lab.alignment(bad, B)
    with pytest.raises(spc.SparsecellError, match="A contains NaN"):
        spc.lab.alignment(sp.csr_matrix(bad), B)
    bad_b = B.copy()
    bad_b[0, 0] = np.inf
    with pytest.raises(spc.SparsecellError, match="B contains NaN or infinite"):
        spc.lab.alignment(A, torch.tensor(bad_b), metric="cka")
    with pytest.raises(spc.SparsecellError, match="A has 20 samples but B has 19"):
        spc.lab.alignment(A, B[:19])
    with pytest.raises(spc.SparsecellError, match="cannot be split into 5 folds"):
        spc.lab.alignment(A[:4], B[:4], metric="soft_matching")
    with pytest.raises(spc.SparsecellError, match="folds must be an integer >= 2"):
        spc.lab.alignment(A, B, folds=1)
    with pytest.raises(spc.SparsecellError, match="unknown alignment metric 'cca'") as e:
        spc.lab.alignment(A, B, metric="cca")
    assert "semi_matching" in str(e.value) and "mutual_knn" in str(e.value)
    one_live = np.hstack([A[:, :1], np.ones((20, 3))])
    with pytest.raises(spc.SparsecellError, match="A has 1 live unit"):
        spc.lab.alignment(one_live, B)
    with pytest.raises(spc.SparsecellError, match="must be 2-D"):
        spc.lab.cka(A[:, 0], B)
    with pytest.raises(spc.SparsecellError, match="not a real numeric"):
        spc.lab.cka(np.array([["a", "b"]] * 20), B)
    with pytest.raises(spc.SparsecellError, match="k=20 neighbours"):
        spc.lab.mutual_knn(A, B, k=20)
    with pytest.raises(spc.SparsecellError, match="unknown RSA method"):
        spc.lab.rsa(A, B, method="kendall")
    # One line, in the project's "<what> (<fix>)" shape.
    with pytest.raises(spc.SparsecellError) as e:
        spc.lab.alignment(A, B[:19])
    assert "\n" not in str(e.value) and str(e.value).endswith(")")


def test_sparse_float32_input_with_unsorted_indices_is_never_modified():
    # sp.csr_matrix(x, dtype=float64) copies the data but shares the index arrays: sorting
    # those in place scrambled the caller's matrix (and every later result on it)
    rng = np.random.default_rng(12)
    A = np.where(rng.random((200, 40)) < 0.2, rng.random((200, 40)), 0.0)
    B = A[:, ::-1] + 0.1 * np.where(rng.random((200, 40)) < 0.1, 1.0, 0.0)
    perm = rng.permutation(40)
    Bs = sp.csr_matrix(B[:, perm].astype(np.float32))[:, np.argsort(perm)]  # unsorted
    assert not Bs.has_sorted_indices
    saved = (Bs.data.copy(), Bs.indices.copy(), Bs.indptr.copy())
    first = spc.lab.semi_matching(A, Bs).score
    for a, b in zip((Bs.data, Bs.indices, Bs.indptr), saved, strict=True):
        np.testing.assert_array_equal(a, b)
    assert spc.lab.semi_matching(A, Bs).score == first
    dense = spc.lab.semi_matching(A, Bs.toarray().astype(np.float64)).score
    assert first == pytest.approx(dense, abs=1e-12)


def test_sparse_unit_products_are_exact_across_outer_product_blocks(monkeypatch):
    # the n·ma·mbᵀ correction of a sparse × sparse product is subtracted in row blocks
    from sparsecell.lab import _stats as stats

    rng = np.random.default_rng(13)
    A = np.where(rng.random((300, 37)) < 0.3, rng.random((300, 37)) + 2.0, 0.0)
    B = np.where(rng.random((300, 23)) < 0.3, rng.random((300, 23)), 0.0)
    monkeypatch.setattr(stats, "_OUTER_BLOCK_ELEMS", 50)  # 2 rows of 23 per block
    got = stats.centered_cross(sp.csr_matrix(A), sp.csr_matrix(B), A.mean(0), B.mean(0))
    want = (A - A.mean(0)).T @ (B - B.mean(0))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
