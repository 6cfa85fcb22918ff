"""POT reference backend: the same problems through POT's own functions (float64, numpy).

``balanced`` → ``ot.gromov.entropic_gromov_wasserstein`` (PGD, i.e. the same linearised
iteration as the torch solver, with POT's non-log Sinkhorn inside);
``fused`` → ``entropic_fused_gromov_wasserstein`` with POT's ``alpha = 1 − alpha``
(POT weights the GW term by ``alpha``; sparsecell weights ``M``);
``semirelaxed`` → ``entropic_semirelaxed_gromov_wasserstein``;
``unbalanced`` → ``fused_unbalanced_gromov_wasserstein`` with ``alpha=0``, KL divergence,
``reg_marginals = tau`` and the log-domain unbalanced Sinkhorn (Séjourné et al. 2021's
lower bound, the formulation the torch solver implements).
"""

from __future__ import annotations

import logging
import math
import time
import warnings

import numpy as np

from sparsecell._errors import SparsecellError

from .geometry import Geometry

log = logging.getLogger(__name__)


def _ot():
    try:
        import ot  # noqa: F401
        import ot.gromov
    except ImportError as e:
        raise SparsecellError(
            "backend='pot' needs the POT package", "pip install 'sparsecell[pot]'"
        ) from e
    return ot


def gw_objective(Cx: np.ndarray, Cy: np.ndarray, T: np.ndarray) -> float:
    """Σ (Cx_ik − Cy_jl)² T_ij T_kl for dense symmetric costs (float64, numpy)."""
    p, q = T.sum(1), T.sum(0)
    return float(p @ (Cx * Cx) @ p + q @ (Cy * Cy) @ q - 2.0 * np.sum((Cx @ T @ Cy) * T))


def solve_pot(
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
    max_iter: int = 100,
    tol: float = 1e-7,
):
    """Solve with POT; returns a :class:`~sparsecell.gwmap.solve.GWSolution`.

    POT stops when ``‖T − T_prev‖_F < tol`` (tested every 10 iterations; its own rule, not
    the torch solver's), so ``converged`` is read from its error log. POT keeps no
    per-iteration objective: ``trace`` holds the final objective only.
    """
    from .solve import GWSolution

    ot = _ot()
    t0 = time.perf_counter()
    Cx, Cy = gx.dense(), gy.dense()
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with np.errstate(all="ignore"):
            if problem == "balanced":
                T, lg = ot.gromov.entropic_gromov_wasserstein(
                    Cx,
                    Cy,
                    a,
                    b,
                    loss_fun="square_loss",
                    epsilon=epsilon,
                    symmetric=True,
                    max_iter=max_iter,
                    tol=tol,
                    solver="PGD",
                    log=True,
                )
                errs = lg.get("err", [])
            elif problem == "fused":
                T, lg = ot.gromov.entropic_fused_gromov_wasserstein(
                    M,
                    Cx,
                    Cy,
                    a,
                    b,
                    loss_fun="square_loss",
                    epsilon=epsilon,
                    symmetric=True,
                    alpha=1.0 - alpha,
                    max_iter=max_iter,
                    tol=tol,
                    solver="PGD",
                    log=True,
                )
                errs = lg.get("err", [])
            elif problem == "semirelaxed":
                T, lg = ot.gromov.entropic_semirelaxed_gromov_wasserstein(
                    Cx,
                    Cy,
                    a,
                    loss_fun="square_loss",
                    epsilon=epsilon,
                    symmetric=True,
                    max_iter=max_iter,
                    tol=tol,
                    log=True,
                )
                errs = lg.get("err", [])
            else:
                T, _, lg = ot.gromov.fused_unbalanced_gromov_wasserstein(
                    Cx,
                    Cy,
                    wx=a,
                    wy=b,
                    reg_marginals=tau,
                    epsilon=epsilon,
                    divergence="kl",
                    unbalanced_solver="sinkhorn_log",
                    alpha=0,
                    max_iter=max_iter,
                    tol=tol,
                    log=True,
                )
                errs = lg.get("error", [])
        caught = list(dict.fromkeys(str(w.message) for w in rec))  # unique, in order
    T = np.asarray(T, dtype=np.float64)
    bad_mass = problem != "unbalanced" and not math.isclose(T.sum(), a.sum(), rel_tol=1e-3)
    if not np.all(np.isfinite(T)) or T.sum() <= 0 or bad_mass:
        raise SparsecellError(
            f"POT returned a {'non-finite' if not np.all(np.isfinite(T)) else 'degenerate'} "
            f"coupling (mass {T.sum():.3g}) at epsilon={epsilon:g} (its non-log Sinkhorn "
            "underflows at small ε)",
            "raise epsilon, or use backend='torch' (log-domain)",
        )
    errs = [float(e) for e in errs]
    converged = bool(errs) and errs[-1] < tol
    gw = gw_objective(Cx, Cy, T)
    if problem == "fused":
        obj = (1.0 - alpha) * gw + alpha * float(np.sum(M * T))
    elif problem == "unbalanced":
        obj = gw + float(tau) * (_kl_tensor(T.sum(1), a) + _kl_tensor(T.sum(0), b))
    else:
        obj = gw
    nz = T[T > 0]
    entropy = float(-(nz * np.log(nz)).sum())
    warn = list(caught)
    if not converged:
        warn.append(f"POT did not converge within max_iter={max_iter} (its ‖ΔT‖_F rule)")
    for w in warn:
        log.warning(w)
    n_iter = len(errs) * (10 if problem in ("balanced", "fused", "semirelaxed") else 1)
    params = dict(
        epsilon=float(epsilon),
        problem=problem,
        tau=tau,
        alpha=alpha,
        max_iter=max_iter,
        tol=tol,
        dtype="float64",
        device="cpu",
        pot_version=ot.__version__,
        cost_x=gx.cost,
        cost_y=gy.cost,
        scale_x=gx.scale,
        scale_y=gy.scale,
        seconds=time.perf_counter() - t0,
        pot_err=errs[-1] if errs else math.nan,
    )
    return GWSolution(
        coupling=T,
        objective=obj,
        entropy=entropy,
        trace=[obj],
        converged=converged,
        n_iter=min(n_iter, max_iter),
        epsilon=float(epsilon),
        method="dense",
        backend="pot",
        params=params,
        warnings=list(gx.warnings) + list(gy.warnings) + warn,
    )


def _kl_tensor(mu: np.ndarray, nu: np.ndarray) -> float:
    mm, mn = float(mu.sum()), float(nu.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(mu > 0, mu * np.log(mu / nu), 0.0)
    return 2.0 * mm * float(t.sum()) - mm * mm + mn * mn
