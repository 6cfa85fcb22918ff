"""The GW front end: :func:`solve` validates, builds geometries and dispatches.

Backends: ``"torch"`` (our solver, CPU or GPU, float32/float64; ``_entropic.py``) and
``"pot"`` (POT's functions on the same costs, the reference; ``_pot.py``). Methods:
``"dense"`` (n × m coupling in memory), ``"quantized"`` (linear memory, ``_quantized.py``)
and ``"auto"`` (quantized when ``n·m > 2.5e9`` or both sides have ≥ 50,000 cells).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse

from sparsecell._errors import SparsecellError

from ._weights import cell_weights
from .geometry import Geometry, _check_points, geometry

PROBLEMS = ("balanced", "unbalanced", "fused", "semirelaxed")
METHODS = ("auto", "dense", "quantized")
BACKENDS = ("torch", "pot")
AUTO_QUANTIZED_CELLS = 2_500_000_000  # n·m above which method="auto" goes quantized
AUTO_QUANTIZED_SIDE = 50_000  # ... or when both sides have at least this many cells

_TORCH_KW = ("anneal_steps", "inner_max_iter", "inner_tol", "check_every", "omega")
_GEOM_KW = ("cost", "k", "scale")


@dataclass
class GWSolution:
    """A solved GW problem.

    Attributes
    ----------
    coupling
        ``n × m`` coupling on the CPU (``numpy`` for the dense method, ``csr_matrix`` for
        the quantized one).
    objective
        GW objective (fused: ``(1 − α) GW + α ⟨M, T⟩``; unbalanced: UGW with its marginal
        penalties), without the entropy term.
    entropy
        ``−Σ T log T`` over the non-zero entries.
    trace
        Objective after each outer iteration.
    converged
        Whether the stopping rule was met (and the last Sinkhorn reached its tolerance).
    n_iter
        Outer iterations run.
    epsilon
        The ε finally used.
    method, backend
        ``"dense"``/``"quantized"`` and ``"torch"``/``"pot"``.
    params
        Everything needed to rerun (and timings).
    warnings
        What went wrong or was adapted (also logged).
    """

    coupling: np.ndarray | scipy.sparse.csr_matrix
    objective: float
    entropy: float
    trace: list[float]
    converged: bool
    n_iter: int
    epsilon: float
    method: str
    backend: str
    params: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def solve(
    x,
    y,
    a=None,
    b=None,
    *,
    epsilon: float = 5e-3,
    problem: str = "balanced",
    tau: float | None = None,
    M=None,
    alpha: float = 0.5,
    method: str = "auto",
    backend: str = "torch",
    device=None,
    dtype=None,
    max_iter: int = 100,
    tol: float = 1e-7,
    anneal=None,
    seed: int = 0,
    progress: bool = False,
    **kw: Any,
) -> GWSolution:
    """Entropic Gromov-Wasserstein coupling between two cell sets sharing no features.

    Parameters
    ----------
    x, y
        :class:`~sparsecell.gwmap.geometry.Geometry` objects, or ``n × d`` / ``m × d'``
        point arrays (then ``geometry(X, cost=kw["cost"], k=kw["k"], scale=kw["scale"])``,
        default squared euclidean, mean-scaled).
    a, b
        Positive cell weights (default uniform, summing to 1). Balanced and fused problems
        need equal total masses.
    epsilon
        Entropic regularisation ε > 0, in the units of the (scaled) costs: the linearised
        cost ``L`` enters the kernel as ``exp(−L/ε)`` (POT's convention). With mean-scaled
        costs, 1e-3 to 1e-2 is typical (the seed paper: 1.5e-3 on kNN-geodesic costs).
    problem
        ``"balanced"``, ``"unbalanced"`` (KL-relaxed marginals, Séjourné et al. 2021),
        ``"fused"`` (adds ``M``) or ``"semirelaxed"`` (only the row marginal imposed).
    tau
        Unbalanced: weight ρ of the KL marginal penalties (default 1.0; larger is closer to
        balanced).
    M, alpha
        Fused: an ``n × m`` feature/label cost (e.g. :func:`~.geometry.label_cost`) and its
        weight: the objective is ``(1 − alpha) GW + alpha ⟨M, T⟩`` (POT's ``alpha`` is the
        GW weight, i.e. ``1 − alpha`` here).
    method
        ``"dense"``, ``"quantized"`` (linear memory, for ≥ 50k cells) or ``"auto"``.
    backend
        ``"torch"`` (fast, CPU/GPU) or ``"pot"`` (POT's reference implementation, float64,
        CPU; ``pip install sparsecell[pot]``).
    device, dtype
        Torch device (default CUDA when available) and dtype (default float32; float64
        allowed).
    max_iter, tol
        Outer iterations and the stopping rule: relative change of the objective between
        outer iterations below ``tol`` (floored at 10× the dtype's machine epsilon, see
        ``params["tol_effective"]``) and the last Sinkhorn at its marginal tolerance.
    anneal
        ``None`` (fixed ε), ``True`` (start at 10 ε) or a factor ≥ 1: ε decays geometrically
        from ``anneal × ε`` to ``ε`` over ``anneal_steps`` (default 10) outer iterations.
    seed
        Seed for anything random (sampled scales, the quantized path's k-means).
    progress
        Show a progress bar.
    **kw
        Torch solver: ``anneal_steps``, ``inner_max_iter``, ``inner_tol``, ``check_every``,
        ``omega`` (Sinkhorn over-relaxation: ``"auto"``, the default, adapts it to the
        measured convergence rate; a float in ``[1, 2)`` fixes it; ``1`` is plain Sinkhorn).
        Array inputs: ``cost``, ``k``, ``scale``. Quantized: see ``_quantized.solve_quantized``.

    Returns
    -------
    GWSolution
    """
    if problem not in PROBLEMS:
        raise SparsecellError(f"unknown problem {problem!r}", f"use one of {', '.join(PROBLEMS)}")
    if method not in METHODS:
        raise SparsecellError(f"unknown method {method!r}", f"use one of {', '.join(METHODS)}")
    if backend not in BACKENDS:
        raise SparsecellError(f"unknown backend {backend!r}", f"use one of {', '.join(BACKENDS)}")
    eps = _positive(epsilon, "epsilon", "e.g. epsilon=5e-3 on mean-scaled costs")
    _positive(tol, "tol", "e.g. tol=1e-7")
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise SparsecellError(f"max_iter must be a positive integer, got {max_iter!r}")
    if problem == "unbalanced":
        tau = 1.0 if tau is None else _positive(tau, "tau", "e.g. tau=1.0")
    elif tau is not None:
        raise SparsecellError("tau only applies to problem='unbalanced'", "drop tau")
    if problem == "fused":
        if not (np.isfinite(alpha) and 0.0 <= float(alpha) <= 1.0):
            raise SparsecellError(f"alpha must lie in [0, 1], got {alpha!r}", "e.g. alpha=0.5")

    geom_kw = {k: kw.pop(k) for k in _GEOM_KW if k in kw}
    n, m = _size(x), _size(y)
    if method == "auto":
        big = n * m > AUTO_QUANTIZED_CELLS or min(n, m) >= AUTO_QUANTIZED_SIDE
        method = "quantized" if big else "dense"

    if method == "quantized":
        try:
            from ._quantized import solve_quantized
        except ImportError as e:  # pragma: no cover - the module ships with the package
            raise SparsecellError(
                "the quantized (large-scale) GW path is not available in this install",
                "use method='dense'",
            ) from e
        gx = _as_geometry(x, geom_kw, seed, lazy=True)
        gy = _as_geometry(y, geom_kw, seed, lazy=True)
        return solve_quantized(
            gx,
            gy,
            a,
            b,
            epsilon=eps,
            problem=problem,
            tau=tau,
            M=M,
            alpha=alpha,
            backend=backend,
            device=device,
            dtype=dtype,
            max_iter=int(max_iter),
            tol=tol,
            anneal=anneal,
            seed=seed,
            progress=progress,
            **kw,
        )

    gx = _as_geometry(x, geom_kw, seed)
    gy = _as_geometry(y, geom_kw, seed)
    wa = cell_weights(a, gx.n, "a")
    wb = cell_weights(b, gy.n, "b")
    if problem in ("balanced", "fused") and not math.isclose(wa.sum(), wb.sum(), rel_tol=1e-6):
        raise SparsecellError(
            f"balanced GW needs equal total masses (a sums to {wa.sum():.6g}, b to {wb.sum():.6g})",
            "normalise a and b, or use problem='unbalanced'",
        )
    if problem == "semirelaxed":
        wb = wb * (wa.sum() / wb.sum())  # only the starting column weights
    Mx = None
    if problem == "fused":
        if M is None:
            raise SparsecellError(
                "problem='fused' needs M", "pass an n × m cost, e.g. label_cost(lx, ly)"
            )
        Mx = np.asarray(M.toarray() if scipy.sparse.issparse(M) else M, dtype=np.float64)
        if Mx.shape != (gx.n, gy.n):
            raise SparsecellError(
                f"M has shape {Mx.shape}, expected ({gx.n}, {gy.n})", "pass an n × m matrix"
            )
        if not np.all(np.isfinite(Mx)):
            raise SparsecellError("M contains NaN or inf", "fill or drop those entries")
    elif M is not None:
        raise SparsecellError("M only applies to problem='fused'", "set problem='fused'")

    if backend == "pot":
        # POT has no counterpart for the torch solver's options: refuse them, never ignore
        bad = [*kw, *(["anneal"] if anneal else [])]
        if bad:
            raise SparsecellError(
                f"option(s) {', '.join(bad)} do not apply to backend='pot'",
                "drop them, or use backend='torch'",
            )
        from ._pot import solve_pot

        return solve_pot(
            gx,
            gy,
            wa,
            wb,
            epsilon=eps,
            problem=problem,
            tau=tau,
            M=Mx,
            alpha=float(alpha),
            max_iter=int(max_iter),
            tol=float(tol),
        )
    bad = [k for k in kw if k not in _TORCH_KW]
    if bad:
        raise SparsecellError(
            f"unknown option(s) {', '.join(bad)}", f"the torch solver takes {', '.join(_TORCH_KW)}"
        )
    from ._entropic import entropic_gw

    sol = entropic_gw(
        gx,
        gy,
        wa,
        wb,
        epsilon=eps,
        problem=problem,
        tau=tau,
        M=Mx,
        alpha=float(alpha),
        device=device,
        dtype=dtype,
        max_iter=int(max_iter),
        tol=float(tol),
        anneal=anneal,
        progress=progress,
        **kw,
    )
    sol.params["seed"] = seed
    return sol


# --------------------------------------------------------------------------- helpers


def _positive(v, name: str, fix: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError) as e:
        raise SparsecellError(f"{name} must be a number, got {v!r}", fix) from e
    if not math.isfinite(f) or f <= 0:
        raise SparsecellError(f"{name} must be positive and finite, got {v!r}", fix)
    return f


def _size(g) -> int:
    if isinstance(g, Geometry):
        return g.n
    shape = getattr(g, "shape", None)
    if shape is None:
        g = np.asarray(g)
        shape = g.shape
    if len(shape) == 0:
        raise SparsecellError("points must be an n × d array", "pass cells × features")
    return int(shape[0])


def _as_geometry(g, geom_kw: dict, seed: int, *, lazy: bool = False) -> Geometry:
    if isinstance(g, Geometry):
        return g
    if scipy.sparse.issparse(g):
        g = g.toarray()
    if hasattr(g, "detach"):
        g = g.detach().cpu().numpy()
    cost = geom_kw.get("cost", "sqeuclidean")
    if lazy and cost in ("euclidean", "knn_geodesic"):
        # the quantized path works from the points; never build an n × n matrix here
        return Geometry(cost, _check_points(g), None, 1.0, k=geom_kw.get("k", 15))
    return geometry(
        g, cost=cost, k=geom_kw.get("k", 15), scale=geom_kw.get("scale", "mean"), seed=seed
    )
