"""GW solvers: known answers, cross-checks against POT, variants, bad input."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch
from gwmap_helpers import anisotropic_cloud, rotation, shared_latent

from sparsecell._errors import SparsecellError
from sparsecell.gwmap.geometry import geometry, label_cost
from sparsecell.gwmap.solve import GWSolution, solve

ot = pytest.importorskip("ot")

ANNEAL = dict(anneal=5, anneal_steps=5)  # start at 5 ε: avoids slow Sinkhorns early on


def _perm_problem(n=30, seed=0):
    X = anisotropic_cloud(n, seed=seed)
    perm = np.random.default_rng(seed + 1).permutation(n)
    Y = X[perm] @ rotation(3, seed=seed + 2)  # Y[j] = R x_perm[j]: x_i matches j = inv[i]
    inv = np.argsort(perm)
    return X, Y, inv


# --------------------------------------------------------------------------- known answers


def test_permuted_copy_gives_the_permutation_float64():
    X, Y, inv = _perm_problem()
    sol = solve(X, Y, epsilon=3e-2, dtype="float64", max_iter=100, **ANNEAL)
    T = sol.coupling
    assert isinstance(sol, GWSolution) and sol.method == "dense" and sol.backend == "torch"
    assert T.dtype == np.float64 and T.shape == (30, 30)
    np.testing.assert_array_equal(T.argmax(1), inv)
    # the last Sinkhorn ends on a row update: rows are exact, columns within its tolerance
    np.testing.assert_allclose(T.sum(1), 1 / 30, atol=1e-5)
    np.testing.assert_allclose(T.sum(0), 1 / 30, atol=1e-5)
    assert np.all(np.isfinite(T)) and sol.entropy > 0
    assert len(sol.trace) == sol.n_iter
    # the optimum of an exact isometry is close to 0 (only the entropic blur remains)
    assert sol.objective < 0.05 * sol.trace[0]


def test_reversed_copy_gives_antidiagonal_float32():
    X = anisotropic_cloud(30, seed=3)
    sol = solve(X, X[::-1], epsilon=3e-2, max_iter=100, **ANNEAL)  # float32 by default
    T = sol.coupling
    assert T.dtype == np.float32
    np.testing.assert_array_equal(T.argmax(1), np.arange(30)[::-1])
    np.testing.assert_allclose(T.sum(1), 1 / 30, atol=1e-4)
    np.testing.assert_allclose(T.sum(0), 1 / 30, atol=1e-4)


def test_factored_path_equals_dense_path():
    X, Y, _ = shared_latent(50, seed=1)
    gx, gy = geometry(X), geometry(Y)
    dx, dy = geometry(C=gx.dense(), scale=None), geometry(C=gy.dense(), scale=None)
    kw = dict(epsilon=0.1, dtype="float64", max_iter=10, tol=1e-300)  # exactly 10 steps
    a, b = solve(gx, gy, **kw), solve(dx, dy, **kw)
    # same iteration on the same numbers, only the products are grouped differently:
    # agreement to float64 rounding amplified by the iterations
    np.testing.assert_allclose(a.coupling, b.coupling, atol=1e-10)
    assert a.objective == pytest.approx(b.objective, rel=1e-9)
    mixed = solve(gx, dy, **kw)  # one side factored, one dense
    np.testing.assert_allclose(mixed.coupling, b.coupling, atol=1e-10)


# --------------------------------------------------------------------------- POT cross-checks


@pytest.fixture(scope="module")
def latent():
    X, Y, lab = shared_latent(40, seed=2)
    return geometry(X), geometry(Y), lab


def test_balanced_matches_pot(latent):
    gx, gy, _ = latent
    ours = solve(gx, gy, epsilon=0.1, dtype="float64", max_iter=200, tol=1e-9)
    pot = solve(gx, gy, epsilon=0.1, backend="pot", max_iter=200, tol=1e-9)
    assert pot.backend == "pot" and ours.converged and pot.converged
    # both are fixed points of the same iteration (Sinkhorn on ∇GW with the same ε), both
    # converged; they differ only by where the inner and outer stopping rules cut
    assert ours.objective == pytest.approx(pot.objective, rel=1e-6)
    np.testing.assert_allclose(ours.coupling, pot.coupling, atol=1e-5 * pot.coupling.max())


def test_fused_matches_pot(latent):
    gx, gy, lab = latent
    M = label_cost(lab, lab)
    kw = dict(epsilon=0.2, problem="fused", M=M, alpha=0.3, max_iter=200, tol=1e-9)
    ours = solve(gx, gy, dtype="float64", **kw)
    pot = solve(gx, gy, backend="pot", **kw)
    # same fixed point (both converged); POT's alpha weighs GW, ours M (see _pot.py)
    assert ours.objective == pytest.approx(pot.objective, rel=1e-6)
    np.testing.assert_allclose(ours.coupling, pot.coupling, atol=1e-5 * pot.coupling.max())
    # the label term pulls mass onto matching labels (more than plain GW puts there)
    plain = solve(gx, gy, dtype="float64", epsilon=0.2, max_iter=200, tol=1e-9)
    assert (ours.coupling * (M == 0)).sum() > (plain.coupling * (M == 0)).sum() + 0.05


def test_semirelaxed_matches_pot(latent):
    gx, gy, _ = latent
    # both run exactly 60 steps of the same KL mirror descent (tol too small to stop early)
    kw = dict(epsilon=5e-2, problem="semirelaxed", max_iter=60, tol=1e-300)
    ours = solve(gx, gy, dtype="float64", **kw)
    pot = solve(gx, gy, backend="pot", **kw)
    assert ours.n_iter == 60 and not ours.converged
    np.testing.assert_allclose(ours.coupling, pot.coupling, atol=1e-8)
    assert ours.objective == pytest.approx(pot.objective, rel=1e-8)
    np.testing.assert_allclose(ours.coupling.sum(1), 1 / 40, atol=1e-12)  # rows sum to a


def test_unbalanced_tends_to_balanced_and_relaxes_mass(latent):
    gx, gy, _ = latent
    tight = solve(gx, gy, epsilon=0.1, problem="unbalanced", tau=1e4, dtype="float64")
    loose = solve(gx, gy, epsilon=0.1, problem="unbalanced", tau=0.5, dtype="float64")
    # ρ → ∞ recovers the balanced marginals (KL penalty ρ·KL forces T1 → a, Tᵀ1 → b);
    # with ρ = 1e4, ε = 0.1 the relative marginal deviation is O(ε/ρ · cost) ≈ 1e-4
    np.testing.assert_allclose(tight.coupling.sum(1), 1 / 40, rtol=1e-2)
    np.testing.assert_allclose(tight.coupling.sum(0), 1 / 40, rtol=1e-2)
    # a weak penalty lets mass go: total mass below 1 and marginals off a
    assert loose.coupling.sum() < 0.99
    assert np.all(np.isfinite(loose.coupling)) and loose.params["tau"] == 0.5


def test_unbalanced_agrees_with_pot_on_matches(latent):
    gx, gy, _ = latent
    ours = solve(gx, gy, epsilon=0.1, problem="unbalanced", tau=1.0, dtype="float64")
    pot = solve(gx, gy, epsilon=0.1, problem="unbalanced", tau=1.0, backend="pot")
    # same UGW formulation (Séjourné et al. 2021) but different alternation/scaling
    # details: compare where the mass goes, not the exact numbers
    assert np.mean(ours.coupling.argmax(1) == pot.coupling.argmax(1)) > 0.9


# --------------------------------------------------------------------------- annealing


def test_annealing_reaches_same_or_better_objective():
    X, Y, _ = shared_latent(40, seed=4)
    plain = solve(X, Y, epsilon=0.1, dtype="float64", max_iter=200)
    ann = solve(X, Y, epsilon=0.1, dtype="float64", anneal=5, anneal_steps=5, max_iter=200)
    assert ann.epsilon == pytest.approx(0.1) and ann.converged
    assert ann.trace[0] != pytest.approx(plain.trace[0])  # it really started elsewhere
    # non-convex problem: annealing may land in a better basin, never a clearly worse one
    assert ann.objective <= plain.objective * (1 + 1e-3)


# --------------------------------------------------------------------------- bad input


def test_bad_inputs():
    X, Y, _ = shared_latent(20, seed=5)
    with pytest.raises(SparsecellError, match="epsilon"):
        solve(X, Y, epsilon=0.0)
    with pytest.raises(SparsecellError, match="epsilon"):
        solve(X, Y, epsilon=-1.0)
    with pytest.raises(SparsecellError, match="NaN"):
        solve(np.where(np.eye(20, 8) > 0, np.nan, X), Y)
    with pytest.raises(SparsecellError, match="at least 2"):
        solve(X[:1], Y)
    with pytest.raises(SparsecellError, match="equal total masses"):
        solve(X, Y, a=np.full(20, 1 / 20), b=np.full(20, 1 / 10))
    with pytest.raises(SparsecellError, match="weights for"):
        solve(X, Y, a=np.full(19, 1 / 19))
    with pytest.raises(SparsecellError, match="non-positive"):
        solve(X, Y, a=np.r_[0.0, np.full(19, 1 / 19)], b=None)
    with pytest.raises(SparsecellError, match="needs M"):
        solve(X, Y, problem="fused")
    with pytest.raises(SparsecellError, match="shape"):
        solve(X, Y, problem="fused", M=np.zeros((20, 3)))
    with pytest.raises(SparsecellError, match="tau"):
        solve(X, Y, tau=1.0)
    with pytest.raises(SparsecellError, match="unknown problem"):
        solve(X, Y, problem="partial")
    with pytest.raises(SparsecellError, match="unknown option"):
        solve(X, Y, max_iter=2, bogus=1)


def test_fused_labels_without_shared_category():
    with pytest.raises(SparsecellError, match="share no category"):
        label_cost(["a"] * 5, ["b"] * 5)


def test_tiny_epsilon_float32_is_refused_not_nan():
    X, Y, _ = shared_latent(20, seed=6)
    with pytest.raises(SparsecellError, match="below what float32 can resolve"):
        solve(X, Y, epsilon=1e-12)


def test_small_epsilon_float64_stays_finite():
    # far below where a non-log Sinkhorn underflows (POT fails here): the log domain copes
    X, Y, _ = shared_latent(30, seed=7)
    sol = solve(X, Y, epsilon=1e-4, dtype="float64", max_iter=20)
    assert np.all(np.isfinite(sol.coupling))
    assert sol.coupling.sum() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(SparsecellError, match="POT returned"):
        solve(X, Y, epsilon=1e-4, backend="pot", max_iter=20)


def test_non_convergence_is_reported_not_raised(caplog):
    X, Y, _ = shared_latent(30, seed=8)
    with caplog.at_level(logging.WARNING, logger="sparsecell.gwmap._entropic"):
        sol = solve(X, Y, epsilon=1e-2, max_iter=2)
    assert sol.converged is False and sol.n_iter == 2
    assert any("did not converge" in w for w in sol.warnings)
    assert "did not converge" in caplog.text


def test_pot_missing_gives_clear_error(monkeypatch):
    X, Y, _ = shared_latent(10, seed=9)
    monkeypatch.setitem(sys.modules, "ot", None)  # import ot → ImportError
    with pytest.raises(SparsecellError, match=r"sparsecell\[pot\]"):
        solve(X, Y, backend="pot")


# --------------------------------------------------------------------------- GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu():
    X, Y, _ = shared_latent(200, seed=10)
    kw = dict(epsilon=2e-2, max_iter=100)
    cpu = solve(X, Y, device="cpu", **kw)
    gpu = solve(X, Y, device="cuda", **kw)
    # float32 on both; reductions are ordered differently on the GPU
    np.testing.assert_allclose(gpu.coupling, cpu.coupling, atol=1e-3 * cpu.coupling.max())
    assert gpu.objective == pytest.approx(cpu.objective, rel=1e-3)


def test_pot_backend_refuses_torch_only_options(latent):
    gx, gy, _ = latent
    for kw in (dict(omega=1.5), dict(anneal=True)):
        with pytest.raises(SparsecellError, match="do not apply to backend='pot'"):
            solve(gx, gy, epsilon=0.1, backend="pot", **kw)


def test_bad_device_is_one_line_error():
    """gwmap follows the one device rule (sparsecell._device.resolve_device)."""
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(SparsecellError, match="unknown device 'bogus'"):
        solve(geometry(X), geometry(X), epsilon=0.05, device="bogus")
    if not torch.cuda.is_available():
        with pytest.raises(SparsecellError, match="no GPU is visible"):
            solve(geometry(X), geometry(X), epsilon=0.05, device="cuda")
