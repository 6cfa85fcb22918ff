"""The inner Sinkhorn solver: over-relaxation ("auto" and fixed) against plain Sinkhorn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsecell.gwmap._sinkhorn import _OmegaRule, sinkhorn


def _problem(n=300, m=250, eps=0.01, seed=0):
    """Entropic OT between two 2-D clouds with a small ε (slow plain Sinkhorn)."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2)) + 0.3
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    C /= C.mean()
    a = torch.full((n,), 1.0 / n, dtype=torch.float64)
    b = torch.full((m,), 1.0 / m, dtype=torch.float64)
    return torch.as_tensor(C), a, b, eps


def _solve(omega, tol=1e-9, **kw):
    L, a, b, eps = _problem(**kw)
    f, g = torch.zeros_like(a), torch.zeros_like(b)
    return sinkhorn(L, a, b, eps, f, g, tol=tol, max_iter=20_000, omega=omega), a, b


def test_auto_omega_same_plan_fewer_iterations():
    plain, a, b = _solve(1.0)
    auto, _, _ = _solve("auto")
    assert plain.converged and auto.converged
    # the entropic OT plan is unique: both must reach it (tolerance 1e-9 L1 on the marginals
    # bounds the plan difference far below 1e-6 of its largest entry at this conditioning)
    np.testing.assert_allclose(auto.T.numpy(), plain.T.numpy(), atol=1e-6 * float(plain.T.max()))
    np.testing.assert_allclose(auto.T.sum(0).numpy(), b.numpy(), atol=1e-15)  # plain last step
    assert float((auto.T.sum(1) - a).abs().sum()) < 1e-8
    assert auto.omega > 1.2  # it did over-relax
    # plain Sinkhorn needs several thousand iterations here; the SOR optimum needs far fewer
    assert auto.n_iter * 3 < plain.n_iter, (auto.n_iter, plain.n_iter)


def test_fixed_omega_converges_and_is_validated():
    fixed, a, _ = _solve(1.5)
    assert fixed.converged and float((fixed.T.sum(1) - a).abs().sum()) < 1e-8
    with pytest.raises(ValueError, match="omega"):
        _solve(2.0)


def test_warm_start_within_tolerance_is_left_alone():
    # a solved problem restarted from its own potentials with a carried ω stays put: the
    # GW outer loop relies on this to settle at its fixed point
    L, a, b, eps = _problem()
    f, g = torch.zeros_like(a), torch.zeros_like(b)
    first = sinkhorn(L, a, b, eps, f, g, tol=1e-10, max_iter=20_000, omega="auto")
    T0 = first.T.clone()
    again = sinkhorn(
        L,
        a,
        b,
        eps,
        first.f.clone(),
        first.g.clone(),
        tol=1e-6,
        max_iter=100,
        omega="auto",
        omega_init=1.8,
    )
    assert again.converged and again.omega == 1.0
    np.testing.assert_allclose(again.T.numpy(), T0.numpy(), atol=1e-9 * float(T0.max()))


def test_omega_rule_backs_off_when_the_error_grows():
    rule = _OmegaRule(1.8, every=10)
    assert rule.w == 1.8
    for err in (1e-3, 9e-4):
        rule.step(err)
    assert rule.step(3e-3) == pytest.approx(1.4)  # > 2 × best: ω − 1 halved
    rule = _OmegaRule(1.06, every=10)
    for _ in range(5):  # stalls: no new best over four tests
        w = rule.step(1e-3)
    assert w == 1.0
