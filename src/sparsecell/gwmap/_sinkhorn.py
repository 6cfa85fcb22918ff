"""Log-stabilised Sinkhorn on torch tensors (CPU or GPU, float32 or float64).

The coupling is parametrised by potentials ``f``, ``g`` relative to the reference measure
``a ⊗ b``::

    T_ij = a_i b_j exp((f_i + g_j − L_ij) / ε)

Each call starts with one log-domain half-step per side (``torch.logsumexp``: exact at any
ε, no under/overflow, and it re-normalises potentials warm-started from a previous cost),
then iterates cheap scaling updates ``u = (a / K v)^κ``, ``v = (b / Kᵀ u)^κ`` on the kernel
``K`` with the potentials absorbed (Schmitzer's stabilisation): two matrix–vector products
per iteration instead of two ``n × m`` exponentials. When the scalings leave a safe range
they are absorbed into ``f``, ``g`` and ``K`` is recomputed from the log domain.

``κ = 1`` gives balanced OT; ``κ = ρ / (ρ + ε)`` the KL-relaxed (unbalanced) problem
``min ⟨L, T⟩ + ρ KL(T1 | a) + ρ KL(Tᵀ1 | b) + ε KL(T | a ⊗ b)``.

Over-relaxation (balanced only): ``log u ← (1 − ω) log u + ω log(a / K v)``, likewise for
``v`` (Thibault et al. 2021). With ``omega="auto"`` the solver measures the linear rate
``η`` of plain Sinkhorn once three stopping tests in a row show a falling error and switches
to the SOR-optimal
``ω = 2 / (1 + √(1 − η))`` (Lehmann et al. 2022, "A note on overrelaxation in the Sinkhorn
algorithm"), re-estimating ``η`` from the over-relaxed rate as it goes (Young's SOR
relation); if the error grows, ``ω − 1`` is halved (at ``ω = 1`` this is plain
Sinkhorn, which always converges). The chosen ``ω`` is returned so that the next solve of
a nearby problem (the next GW outer step) can start from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_ABSORB = 30.0  # absorb scalings into the potentials when |log u| or |log v| exceeds this
_OMEGA_MAX = 1.9  # cap of the automatic over-relaxation (ω → 2 loses the convergence margin)


@dataclass
class SinkhornResult:
    """Output of :func:`sinkhorn`: ``T`` is the coupling (it reuses the ``K`` buffer)."""

    T: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    err: float
    n_iter: int
    converged: bool
    omega: float = 1.0


def _log_kernel(out, L, f, g, la, lb, eps):
    """out ← (f_i + g_j − L_ij)/ε + la_i + lb_j, in place (one n × m pass per op)."""
    torch.sub(g.unsqueeze(0), L, out=out)
    out.add_(f.unsqueeze(1))
    out.mul_(1.0 / eps)
    out.add_(la.unsqueeze(1))
    out.add_(lb.unsqueeze(0))
    return out


def _log_steps(L, f, g, la, lb, eps, kappa, buf):
    """One exact log-domain update of f, then of g (in place); buf is n × m scratch."""
    # f_i = −κ ε log Σ_j b_j exp((g_j − L_ij)/ε)
    torch.sub(g.unsqueeze(0), L, out=buf)
    buf.mul_(1.0 / eps)
    buf.add_(lb.unsqueeze(0))
    f.copy_(torch.logsumexp(buf, dim=1).mul_(-kappa * eps))
    torch.sub(f.unsqueeze(1), L, out=buf)
    buf.mul_(1.0 / eps)
    buf.add_(la.unsqueeze(1))
    g.copy_(torch.logsumexp(buf, dim=0).mul_(-kappa * eps))


def sinkhorn(
    L: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    eps: float,
    f: torch.Tensor,
    g: torch.Tensor,
    *,
    kappa: float = 1.0,
    max_iter: int = 1000,
    tol: float = 1e-6,
    check_every: int = 10,
    K: torch.Tensor | None = None,
    omega: float | str = 1.0,
    omega_init: float = 1.0,
) -> SinkhornResult:
    """Solve entropic (balanced or KL-relaxed) OT for cost ``L``, warm-started at ``f, g``.

    Parameters
    ----------
    L
        ``n × m`` cost.
    a, b
        Positive marginal weights (``n``, ``m``).
    eps
        Entropic regularisation ε > 0, in the units of ``L``.
    f, g
        Warm-start potentials; updated in place and returned.
    kappa
        ``1`` for balanced, ``ρ / (ρ + ε)`` for KL-relaxed marginals.
    max_iter
        Budget of scaling iterations.
    tol
        Stop when the row-marginal error ``Σ|T1 − a|`` (balanced) or the L1 change of the
        row marginal over one iteration (``κ < 1``) is below ``tol``.
    check_every
        Test the stopping rule every this many iterations (each test costs one reduction).
    K
        Optional ``n × m`` buffer for the kernel/coupling (allocated if ``None``).
    omega
        Over-relaxation of the balanced updates: a fixed ``ω ∈ [1, 2)`` (``1`` is plain
        Sinkhorn) or ``"auto"`` (rate-adapted, safeguarded; see the module docstring).
        Ignored when ``κ < 1``.
    omega_init
        With ``omega="auto"``: the ``ω`` to start from (e.g. the one the previous solve of
        a nearby problem settled on); ``1`` measures the rate first.

    Returns
    -------
    SinkhornResult
        ``T`` (the coupling, in ``K``'s buffer), the potentials, the last error, the
        iterations used, whether ``tol`` was reached and the ``ω`` in use at the end.
    """
    auto = omega == "auto"
    if auto:
        w = float(omega_init)
    else:
        w = float(omega)  # type: ignore[arg-type]
        if not 1.0 <= w < 2.0:
            raise ValueError(f"omega must be in [1, 2) or 'auto', got {omega!r}")
    if kappa != 1.0:
        w, auto = 1.0, False
    la, lb = a.log(), b.log()
    if K is None:
        K = torch.empty_like(L)
    _log_steps(L, f, g, la, lb, eps, kappa, K)
    _log_kernel(K, L, f, g, la, lb, eps).exp_()
    one_m = torch.ones_like(g)
    log_u = torch.zeros_like(f)
    log_v = torch.zeros_like(g)
    v = one_m.clone()
    # with κ < 1 the update of an absorbed potential carries the factor exp(−(1 − κ) f / ε)
    damp_f = None if kappa == 1.0 else (-(1.0 - kappa) / eps) * f
    damp_g = None if kappa == 1.0 else (-(1.0 - kappa) / eps) * g
    err = float("inf")
    rule = _OmegaRule(w, check_every) if auto else None
    if rule is not None:
        w = rule.w
    # a warm start already within tolerance (the GW outer loop near its fixed point) runs
    # plain Sinkhorn: over-relaxed steps would move it about inside the tolerance ball,
    # and the outer loop could not settle
    it = 0
    converged = False
    while it < max_iter:
        it += 1
        Kv = torch.mv(K, v)
        new_log_u = (la - Kv.log()).mul_(kappa)
        if damp_f is not None:
            new_log_u.add_(damp_f)
        elif w != 1.0:
            new_log_u.mul_(w).add_(log_u, alpha=1.0 - w)
        if it == 1 and w != 1.0 and damp_f is None and float((Kv - a).abs_().sum()) <= tol:
            w, rule = 1.0, None  # see above: a warm start within tolerance runs plain
        check = it % check_every == 0 or it == max_iter
        if check:
            if damp_f is None:  # row-marginal error of the current plan (ω-independent)
                err = float((log_u.exp() * Kv - a).abs_().sum())
            else:  # relaxed marginals: the change of the row marginal over this step
                err = float(((new_log_u.exp() - log_u.exp()).abs_() * Kv).sum())
        log_u = new_log_u
        u = log_u.exp()
        if check and err <= tol:
            converged = True
            break
        Ktu = torch.mv(K.t(), u)
        new_log_v = (lb - Ktu.log()).mul_(kappa)
        if damp_g is not None:
            new_log_v.add_(damp_g)
        elif w != 1.0:
            new_log_v.mul_(w).add_(log_v, alpha=1.0 - w)
        log_v = new_log_v
        v = log_v.exp()
        if check:
            if not (torch.isfinite(log_u).all() and torch.isfinite(log_v).all()):
                # a row or column of K underflowed (or ω overshot): redo the log-domain steps
                _log_steps(L, f, g, la, lb, eps, kappa, K)
                log_u.zero_()
                log_v.zero_()
                v = one_m.clone()
                _log_kernel(K, L, f, g, la, lb, eps).exp_()
                if rule is not None:
                    w = rule.restart()
                continue
            if rule is not None:
                w = rule.step(err)
            big = max(float(log_u.abs().max()), float(log_v.abs().max()))
            if big > _ABSORB:
                f.add_(log_u, alpha=eps)
                g.add_(log_v, alpha=eps)
                if damp_f is not None:
                    damp_f = (-(1.0 - kappa) / eps) * f
                    damp_g = (-(1.0 - kappa) / eps) * g
                log_u.zero_()
                log_v.zero_()
                v = one_m.clone()
                _log_kernel(K, L, f, g, la, lb, eps).exp_()
    u = log_u.exp()
    if w != 1.0:  # end on a plain half-step: exact column marginals (total mass Σb)
        log_v = lb - torch.mv(K.t(), u).log()
        v = log_v.exp()
    # absorb the final scalings: T = diag(u) K diag(v), potentials updated to match
    f.add_(log_u, alpha=eps)
    g.add_(log_v, alpha=eps)
    K.mul_(u.unsqueeze(1))
    K.mul_(v.unsqueeze(0))
    return SinkhornResult(K, f, g, err, it, converged, w)


class _OmegaRule:
    """The ``omega="auto"`` rule, applied at each stopping test to the marginal error.

    At ``ω = 1``: once three tests in a row show a falling error,
    ``η = (err / prev)^(1/every)`` is plain Sinkhorn's linear rate and
    ``ω = 2 / (1 + √(1 − η))`` the SOR optimum.
    At ``ω > 1`` the errors oscillate, so rates are measured from the error when ``ω`` was
    set, over at least three tests and a halving of the error (not on a noise floor): a
    rate ``μ`` well above the optimum's ``ω − 1``
    re-estimates ``η`` through Young's relation ``(μ + ω − 1)² = η ω² μ`` and raises ``ω``;
    an error above twice the best since ``ω`` was set, or no new best over four tests,
    halves ``ω − 1`` (below 1.05: back to plain Sinkhorn, which always converges, and
    probe again).
    """

    def __init__(self, w_init: float, every: int):
        self.every = every
        self._set(w_init)

    def _reset(self) -> None:
        self.ref = self.best = float("inf")  # error when ω was set; best since then
        self.prev = float("inf")
        self.tests = self.stall = 0

    def _set(self, w: float) -> float:
        self.w = 1.0 if w < 1.05 else min(_OMEGA_MAX, w)
        self._reset()
        return self.w

    def restart(self) -> float:
        """After the kernel was rebuilt from the log domain: plain Sinkhorn, probe again."""
        return self._set(1.0)

    def step(self, err: float) -> float:
        w, prev = self.w, self.prev
        self.prev = err
        if not math.isfinite(self.ref):
            self.ref = err
        self.tests += 1
        if err < self.best:
            self.best, self.stall = err, 0
        else:
            self.stall += 1
        if w == 1.0:
            if not (math.isfinite(prev) and 0.0 < err < prev):
                self.tests = 0
                return w
            if self.tests < 3:
                return w
            eta = (err / prev) ** (1.0 / self.every)
            return self._set(2.0 / (1.0 + math.sqrt(1.0 - eta)))
        if err > 2.0 * self.best or self.stall >= 4:
            return self._set(1.0 + 0.5 * (w - 1.0))
        if self.tests >= 4 and 0.0 < err < 0.5 * self.ref:  # measured over a real decrease
            mu = (err / self.ref) ** (1.0 / ((self.tests - 1) * self.every))
            if mu > w - 1.0 + 0.02:
                eta = (mu + w - 1.0) ** 2 / (mu * w * w)
                w_new = 2.0 / (1.0 + math.sqrt(1.0 - eta)) if eta < 1.0 else w
                if w_new > w + 0.02:
                    return self._set(w_new)
        return w
