"""Entropic Gromov-Wasserstein in torch: the linearised (mirror-descent) outer loop.

Square loss. With intra-domain costs ``Cx`` (n × n) and ``Cy`` (m × m), the GW loss of a
coupling ``T`` with marginals ``p = T1``, ``q = Tᵀ1`` is::

    GW(T) = Σ_ijkl (Cx_ik − Cy_jl)² T_ij T_kl = pᵀ Cx² p + qᵀ Cy² q − 2 ⟨Cx T Cy, T⟩

(``Cx²`` element-wise). Each outer iteration linearises it at the current ``T``
(Peyré, Cuturi & Solomon 2016; POT's ``entropic_gromov_wasserstein``)::

    L(T)_ij = ∇GW(T)_ij = 2 (Cx² p)_i + 2 (Cy² q)_j − 4 (Cx T Cy)_ij

and solves an entropic OT problem with cost ``L`` (log-stabilised Sinkhorn warm-started
from the previous potentials); a fixed point is a stationary point of
``GW(T) − ε H(T)``, ``H(T) = −Σ T log T`` — the same ε as POT's. ``Cx T Cy`` is computed
from the rank-(d + 2) factors of squared-euclidean costs, ``Ax (Bxᵀ T Ay) Byᵀ`` —
O(n m d) — or by two dense matmuls.

Problems
--------
``balanced``: ``min_T ⟨L(T), T⟩ − ε H(T)`` with ``T1 = a``, ``Tᵀ1 = b``.
``fused``: the cost is ``(1 − α) ∇GW(T) + α M``; objective ``(1 − α) GW + α ⟨M, T⟩``.
``semirelaxed`` (Vincent-Cuaz et al. 2022, as POT): only ``T1 = a`` is imposed; KL
mirror descent ``T ← diag(a) rownorm(T ⊙ exp(−∇GW(T)/ε))`` — each row a softmax.
``unbalanced`` (Séjourné, Vialard & Peyré 2021, "The unbalanced Gromov-Wasserstein
distance", Algorithm 1; POT's ``fused_unbalanced_gromov_wasserstein`` with α = 0)::

    UGW(T) = GW(T) + ρ KL⊗(T1 ⊗ T1 | a ⊗ a) + ρ KL⊗(Tᵀ1 ⊗ Tᵀ1 | b ⊗ b)
             + ε KL⊗(T ⊗ T | (a ⊗ b) ⊗ (a ⊗ b))

minimised by alternating: with ``Q`` the current plan (mass ``m``), the next plan solves the
KL-relaxed entropic OT problem with cost ``Σ_kl (Cx_ik − Cy_jl)² Q_kl + const(Q)``
(``= ∇GW(Q)/2`` plus constants), regularisation ``ε m`` and
marginal weight ``ρ m`` (Sinkhorn scalings raised to ``κ = ρ / (ρ + ε)``), and is rescaled by
``sqrt(m / mass)``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from sparsecell._device import resolve_device
from sparsecell._errors import SparsecellError

from ._sinkhorn import sinkhorn
from .geometry import Geometry

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- one side


@dataclass
class _Side:
    """Torch form of a :class:`Geometry`: factors ``A, B`` (centred points ``X`` and the
    scale ``sigma``) for squared euclidean, else the dense ``C``."""

    n: int
    A: torch.Tensor | None = None
    B: torch.Tensor | None = None
    X: torch.Tensor | None = None
    sigma: float = 1.0
    C: torch.Tensor | None = None
    C2: torch.Tensor | None = None

    @property
    def factored(self) -> bool:
        return self.A is not None

    def sq_matvec(self, p: torch.Tensor, *, cache: bool = False) -> torch.Tensor:
        """``(C ⊙ C) p`` without forming ``C ⊙ C`` when the cost is factored."""
        if self.factored:
            X, s = self.X, self.s
            P = p.sum()
            ps = p @ s
            m1 = p @ X
            m2 = (p * s) @ X
            S2 = (X * p.unsqueeze(1)).t() @ X
            quad = ((X @ S2) * X).sum(1)
            out = s * s * P + 2.0 * s * ps + (p @ (s * s)) + 4.0 * quad
            out = out - 4.0 * s * (X @ m1) - 4.0 * (X @ m2)
            return out / (self.sigma * self.sigma)
        assert self.C is not None
        if cache:
            if self.C2 is None:
                self.C2 = self.C.square()
            return torch.mv(self.C2, p)
        out = torch.empty(self.n, dtype=p.dtype, device=p.device)
        step = max(1, (1 << 24) // max(self.n, 1))
        for lo in range(0, self.n, step):
            out[lo : lo + step] = torch.mv(self.C[lo : lo + step].square(), p)
        return out


def _side(g: Geometry, device: torch.device, dtype: torch.dtype) -> _Side:
    if g.is_factored:
        assert g.points is not None
        Xc = g.points - g.points.mean(axis=0)
        A, B = g.factors()
        side = _Side(
            n=g.n,
            A=torch.as_tensor(A, device=device, dtype=dtype),
            B=torch.as_tensor(B, device=device, dtype=dtype),
            X=torch.as_tensor(Xc, device=device, dtype=dtype),
            sigma=float(g.scale),
        )
        side.s = (side.X * side.X).sum(1)  # type: ignore[attr-defined]
        return side
    return _Side(n=g.n, C=torch.as_tensor(g.dense(), device=device, dtype=dtype))


def _cross(x: _Side, y: _Side, T: torch.Tensor, out: torch.Tensor, tmp) -> torch.Tensor:
    """out ← Cx T Cy (both costs symmetric)."""
    if y.factored:
        R = T @ y.A  # n × ky      (T Cy = T Ay Byᵀ)
        if x.factored:
            S = x.B.t() @ R  # kx × ky
            torch.mm(x.A @ S, y.B.t(), out=out)
        else:
            torch.mm(x.C @ R, y.B.t(), out=out)
    elif x.factored:
        W = x.B.t() @ T  # kx × m
        torch.mm(x.A, W @ y.C, out=out)
    else:
        torch.mm(x.C, T, out=tmp)
        torch.mm(tmp, y.C, out=out)
    return out


def _dot(A: torch.Tensor, B: torch.Tensor) -> float:
    return float(torch.dot(A.reshape(-1), B.reshape(-1)).double())


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """Σ p log(p / q) − p + q (generalised KL between positive measures)."""
    return float((torch.xlogy(p, p) - p * q.log() - p + q).sum().double())


def _kl_tensor(mu: torch.Tensor, nu: torch.Tensor) -> float:
    """KL(μ ⊗ μ | ν ⊗ ν) = 2 m(μ) Σ μ log(μ/ν) − m(μ)² + m(ν)²."""
    mm, mn = float(mu.sum()), float(nu.sum())
    return 2.0 * mm * float((torch.xlogy(mu, mu) - mu * nu.log()).sum()) - mm * mm + mn * mn


# --------------------------------------------------------------------------- the solver


def entropic_gw(
    gx: Geometry,
    gy: Geometry,
    a: np.ndarray,
    b: np.ndarray,
    *,
    epsilon: float,
    problem: str = "balanced",
    tau: float | None = None,
    M: np.ndarray | None = None,
    alpha: float = 0.5,
    device=None,
    dtype=None,
    max_iter: int = 100,
    tol: float = 1e-7,
    anneal=None,
    anneal_steps: int = 10,
    inner_max_iter: int = 2000,
    inner_tol: float | None = None,
    check_every: int = 10,
    omega: float | str = "auto",
    progress: bool = False,
):
    """Run the torch solver; returns a :class:`~sparsecell.gwmap.solve.GWSolution`.

    See :func:`sparsecell.gwmap.solve.solve` for the parameters; the extra ones are
    ``anneal_steps`` (outer iterations over which ε decays geometrically from
    ``anneal × ε`` to ``ε``), ``inner_max_iter`` and ``inner_tol`` (Sinkhorn budget and
    marginal tolerance, L1 over the whole mass; default 1e-6) and ``check_every``
    (Sinkhorn iterations between stopping tests).
    """
    from .solve import GWSolution

    t0 = time.perf_counter()
    dev = resolve_device("auto" if device is None else device)
    dt = _dtype(dtype)
    finfo = torch.finfo(dt)
    if inner_tol is None:
        inner_tol = 1e-6
    tol_eff = max(float(tol), 10.0 * finfo.eps)
    warn: list[str] = []

    x, y = _side(gx, dev, dt), _side(gy, dev, dt)
    n, m = x.n, y.n
    at = torch.as_tensor(a, device=dev, dtype=dt)
    bt = torch.as_tensor(b, device=dev, dtype=dt)
    Mt = None if M is None else torch.as_tensor(M, device=dev, dtype=dt)
    al = float(alpha) if problem == "fused" else 0.0
    rho = float(tau) if tau is not None else 1.0

    # constants of the balanced/fused objective (marginals fixed at a, b)
    cx_a = x.sq_matvec(at)
    cy_b = y.sq_matvec(bt)
    const_ab = _dot(at, cx_a) + _dot(bt, cy_b)

    schedule = _anneal_schedule(epsilon, anneal, anneal_steps)

    LP = torch.empty((n, m), device=dev, dtype=dt)  # Cx T Cy, then the linearised cost
    tmp = torch.empty((n, m), device=dev, dtype=dt) if not (x.factored or y.factored) else None
    T = torch.outer(at, bt)
    if problem == "unbalanced":
        T.div_(math.sqrt(float(at.sum()) * float(bt.sum())))
    logT = T.log() if problem == "semirelaxed" else None
    f = torch.zeros(n, device=dev, dtype=dt)
    g = torch.zeros(m, device=dev, dtype=dt)

    def objective(T: torch.Tensor, P: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        if problem in ("balanced", "fused"):
            p, q = at, bt
            gw = const_ab - 2.0 * _dot(P, T)
        else:
            p = at if problem == "semirelaxed" else T.sum(1)
            q = T.sum(0)
            cp = cx_a if problem == "semirelaxed" else x.sq_matvec(p, cache=True)
            gw = _dot(p, cp) + _dot(q, y.sq_matvec(q, cache=True)) - 2.0 * _dot(P, T)
        if problem == "fused":
            return (1.0 - al) * gw + al * _dot(Mt, T), p, q
        if problem == "unbalanced":
            return gw + rho * (_kl_tensor(p, at) + _kl_tensor(q, bt)), p, q
        return gw, p, q

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc=f"gw {problem}", unit="it")

    trace: list[float] = []
    converged = False
    inner_fail = 0
    inner_iters = 0
    w_carry = 1.0  # the over-relaxation the previous Sinkhorn settled on (omega="auto")
    last_inner_ok = True
    last_inner_err = 0.0
    eps_used = float(epsilon)
    it = 0
    _cross(x, y, T, LP, tmp)
    obj, p, q = objective(T, LP)
    prev = None
    # objective scale for the stopping rule: GW(T) lies in [0, pᵀCx²p + qᵀCy²q]
    obj_scale = max(const_ab, finfo.tiny)
    itol = min(1e-3, max(inner_tol, 1e-4))  # loose inner solves while the plan moves a lot
    for it in range(1, max_iter + 1):
        eps_t = schedule(it)
        eps_used = eps_t
        # ---- linearised cost, in place over LP
        # balanced, fused, semirelaxed: the gradient of GW (twice the linearisation),
        # POT's convention, so that the fixed point minimises GW(T) − ε H(T)
        if problem in ("balanced", "fused"):
            LP.mul_(-4.0).add_(cx_a.unsqueeze(1), alpha=2.0).add_(cy_b.unsqueeze(0), alpha=2.0)
            if problem == "fused":
                LP.mul_(1.0 - al).add_(Mt, alpha=al)
        elif problem == "semirelaxed":
            LP.mul_(-4.0).add_(y.sq_matvec(q, cache=True).unsqueeze(0), alpha=2.0)
        else:  # unbalanced: cost of Séjourné et al.'s Algorithm 1, Q = current T
            mass_q = float(T.sum())
            ent = float(torch.xlogy(T, T).sum()) - _dot(p, at.log()) - _dot(q, bt.log())
            kl_q = ent - mass_q + float(at.sum()) * float(bt.sum())
            # KL(μ⊗ν | α⊗β) = m(ν) KL(μ|α) + m(μ) KL(ν|β) + (m(μ) − m(α))(m(ν) − m(β)):
            # the part linear in the new plan's mass is a constant added to its cost
            ma, mb = float(at.sum()), float(bt.sum())
            const = rho * (_kl(p, at) + mass_q - ma + _kl(q, bt) + mass_q - mb)
            const += eps_t * (kl_q + mass_q - ma * mb)
            LP.mul_(-2.0).add_(x.sq_matvec(p, cache=True).unsqueeze(1))
            LP.add_(y.sq_matvec(q, cache=True).unsqueeze(0)).add_(const)
        if it == 1:
            _check_eps(LP, eps_t, finfo, dt)
        # ---- inner problem
        if problem == "semirelaxed":
            assert logT is not None
            logT.add_(LP, alpha=-1.0 / eps_t)
            logT.sub_(torch.logsumexp(logT, dim=1, keepdim=True)).add_(at.log().unsqueeze(1))
            torch.exp(logT, out=T)
            last_inner_ok, last_inner_err = True, 0.0
        else:
            if problem == "unbalanced":
                e_in, kappa = eps_t * mass_q, rho / (rho + eps_t)
            else:
                e_in, kappa = eps_t, 1.0
            res = sinkhorn(
                LP,
                at,
                bt,
                e_in,
                f,
                g,
                kappa=kappa,
                max_iter=inner_max_iter if itol <= inner_tol else min(inner_max_iter, 200),
                tol=itol,
                check_every=check_every,
                K=T,
                omega=omega,
                omega_init=w_carry,
            )
            T, f, g = res.T, res.f, res.g
            w_carry = res.omega
            inner_iters += res.n_iter
            last_inner_ok = res.converged and itol <= inner_tol
            last_inner_err = res.err
            inner_fail += not res.converged
            if problem == "unbalanced":
                mass_p = float(T.sum())
                if mass_p > 0 and math.isfinite(mass_p):
                    T.mul_(math.sqrt(mass_q / mass_p))
        mass = float(T.sum())
        if not math.isfinite(mass) or mass <= 0 or not bool(torch.isfinite(T).all()):
            raise SparsecellError(
                f"the coupling became {'empty' if mass == 0 else 'non-finite'} at outer "
                f"iteration {it} (epsilon={eps_t:g}, {str(dt).replace('torch.', '')})",
                "raise epsilon, or use dtype='float64'",
            )
        # ---- objective of the new coupling (and Cx T Cy for the next linearisation)
        _cross(x, y, T, LP, tmp)
        obj, p, q = objective(T, LP)
        if not math.isfinite(obj):
            raise SparsecellError(
                f"the GW objective became non-finite at outer iteration {it}",
                "raise epsilon, or use dtype='float64'",
            )
        trace.append(obj)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(obj=f"{obj:.6g}", eps=f"{eps_t:.3g}")
        at_target = eps_t == float(epsilon)
        change = abs(obj - prev) / max(abs(obj), obj_scale) if prev is not None else 1.0
        if at_target and change < tol_eff and last_inner_ok:
            converged = True
            break
        prev = obj
        # the next Sinkhorn need not be more exact than the outer iteration is settled
        itol = inner_tol if change < 10.0 * tol_eff else min(1e-3, max(inner_tol, 0.1 * change))
    if bar is not None:
        bar.close()

    if not converged:
        msg = f"GW did not converge within max_iter={max_iter} outer iterations"
        if len(trace) >= 2:
            ch = abs(trace[-1] - trace[-2]) / max(abs(trace[-1]), obj_scale)
            msg += f" (last relative objective change {ch:.2e}, tol {tol_eff:.1e})"
        warn.append(msg)
    if not last_inner_ok:
        warn.append(
            f"the last Sinkhorn stopped at marginal error {last_inner_err:.2e} > "
            f"{inner_tol:.1e} after {inner_max_iter} iterations (raise inner_max_iter or epsilon)"
        )
    elif inner_fail:
        warn.append(f"{inner_fail} intermediate Sinkhorn solves stopped at their budget")
    for w in warn:
        log.warning(w)

    entropy = -float(torch.xlogy(T, T).sum().double())
    out_dt = np.float64 if dt == torch.float64 else np.float32
    coupling = T.detach().to("cpu").numpy().astype(out_dt)
    params = dict(
        epsilon=float(epsilon),
        problem=problem,
        tau=rho if problem == "unbalanced" else None,
        alpha=al if problem == "fused" else None,
        device=str(dev),
        dtype=str(dt).replace("torch.", ""),
        max_iter=max_iter,
        tol=float(tol),
        tol_effective=tol_eff,
        anneal=anneal,
        anneal_steps=anneal_steps,
        inner_max_iter=inner_max_iter,
        inner_tol=inner_tol,
        check_every=check_every,
        omega=omega,
        inner_iterations=inner_iters,
        cost_x=gx.cost,
        cost_y=gy.cost,
        scale_x=gx.scale,
        scale_y=gy.scale,
        factored=(x.factored, y.factored),
        seconds=time.perf_counter() - t0,
    )
    return GWSolution(
        coupling=coupling,
        objective=float(obj),
        entropy=entropy,
        trace=trace,
        converged=converged,
        n_iter=it,
        epsilon=eps_used,
        method="dense",
        backend="torch",
        params=params,
        warnings=list(gx.warnings) + list(gy.warnings) + warn,
    )


# --------------------------------------------------------------------------- helpers


def _dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        dt = dtype
    else:
        name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
        dt = {"float32": torch.float32, "float64": torch.float64}.get(name.replace("torch.", ""))
    if dt not in (torch.float32, torch.float64):
        raise SparsecellError(f"unsupported dtype {dtype!r}", "use 'float32' or 'float64'")
    return dt


def _anneal_schedule(epsilon: float, anneal, steps: int):
    """ε per outer iteration: geometric decay from ``anneal × ε`` to ``ε`` over ``steps``."""
    if anneal is None or anneal is False:
        return lambda it: float(epsilon)
    factor = 10.0 if anneal is True else float(anneal)
    if not math.isfinite(factor) or factor < 1.0:
        raise SparsecellError(
            f"anneal must be a factor ≥ 1 (start at anneal × epsilon), got {anneal!r}",
            "use e.g. anneal=10 or anneal=None",
        )
    steps = max(1, int(steps))

    def eps_at(it: int) -> float:
        if it > steps:
            return float(epsilon)
        return float(epsilon) * factor ** (1.0 - (it - 1) / steps)

    return eps_at


def _check_eps(L: torch.Tensor, eps: float, finfo, dt) -> None:
    """Refuse an ε below what the dtype can resolve on this cost: the iteration could not
    make progress (the kernel's exponents would be pure rounding noise)."""
    lmax = float(L.abs().max())
    floor = 100.0 * finfo.eps * max(lmax, finfo.tiny)
    if eps < floor:
        name = str(dt).replace("torch.", "")
        raise SparsecellError(
            f"epsilon={eps:g} is below what {name} can resolve for this cost (its linearised "
            f"cost reaches {lmax:.3g}; the floor is about {floor:.1e})",
            f"use epsilon ≥ {floor:.1e}"
            + (", or dtype='float64'" if dt == torch.float32 else "")
            + ", or scale the costs (scale='mean')",
        )
