"""``align``: couple image cells with scRNA-seq cells by entropic Gromov-Wasserstein.

The front end of GW-map: pick each side's representation (an ``obsm`` key or ``X``,
optionally reduced by PCA), build the intra-domain costs, solve (plain, unbalanced,
semi-relaxed, or fused with a shared label), and wrap the coupling with both sides' cells
in a :class:`~sparsecell.gwmap.result.GWResult`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import SparsecellError
from .result import GWResult

log = logging.getLogger(__name__)

COSTS = ("sqeuclidean", "euclidean", "knn_geodesic")


def _is_anndata(a: Any) -> bool:
    return hasattr(a, "obs") and hasattr(a, "obsm") and hasattr(a, "X")


def _representation(
    adata: Any, rep: str | None, n_pcs: int | None, seed: int, side: str
) -> tuple[np.ndarray, str]:
    """The ``cells × dims`` float64 array aligned for one side, and its description."""
    if _is_anndata(adata):
        if rep is None or rep == "X":
            X, what = adata.X, "X"
            if X is None:
                raise SparsecellError(f"the {side} AnnData has no X", f"pass rep_{side}=")
        else:
            if rep not in adata.obsm:
                keys = ", ".join(map(str, adata.obsm.keys())) or "none"
                raise SparsecellError(
                    f"'{rep}' is not an obsm key of the {side} data", f"available: {keys}"
                )
            X, what = adata.obsm[rep], f"obsm['{rep}']"
    else:
        if rep is not None:
            raise SparsecellError(
                f"rep_{side}={rep!r} needs an AnnData", "pass an AnnData or drop the key"
            )
        X, what = adata, "array"
    if isinstance(X, pd.DataFrame):
        X = X.to_numpy()
    if hasattr(X, "to_memory"):  # backed / lazy arrays
        X = X.to_memory()
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        data = X.data
    else:
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise SparsecellError(f"the {side} {what} is not numeric", "pass numbers") from e
        data = X
    if X.ndim != 2:
        raise SparsecellError(f"the {side} {what} is not cells × features", "pass a 2-D array")
    n, d = X.shape
    if n < 2:
        raise SparsecellError(f"the {side} side has {n} cell(s)", "GW needs at least 2 per side")
    if d < 1:
        raise SparsecellError(f"the {side} {what} has no features", "pick another rep")
    bad = ~np.isfinite(data)
    if bad.any():
        raise SparsecellError(
            f"the {side} {what} holds {int(bad.sum())} NaN/inf value(s)",
            "impute or drop those cells first",
        )
    if n_pcs is not None:
        if not isinstance(n_pcs, int | np.integer) or n_pcs < 1:
            raise SparsecellError(f"n_pcs={n_pcs!r} is not a positive integer", "e.g. 30")
        if n_pcs >= min(n, d):
            raise SparsecellError(
                f"n_pcs={n_pcs} is too large for the {side} {what} ({n} × {d})",
                f"pass n_pcs < {min(n, d)}",
            )
        import scanpy as sc

        X = sc.pp.pca(X, n_comps=int(n_pcs), random_state=seed, svd_solver="arpack")
        X = np.asarray(X, dtype=np.float64)
        what = f"PCA-{n_pcs} of {what}"
    elif sp.issparse(X):
        X = X.toarray()
    return X, what


def _obs_of(adata: Any, n: int, prefix: str) -> pd.DataFrame:
    if _is_anndata(adata):
        return adata.obs
    return pd.DataFrame(index=pd.Index([f"{prefix}{i}" for i in range(n)]))


def align(
    adata_img: Any,
    adata_rna: Any,
    *,
    rep_img: str | None = None,
    rep_rna: str | None = None,
    n_pcs: int | None = None,
    cost: str = "sqeuclidean",
    k: int = 15,
    scale: str | float | None = "mean",
    epsilon: float = 5e-3,
    problem: str = "balanced",
    tau: float | None = None,
    label: str | None = None,
    alpha: float = 0.5,
    method: str = "auto",
    backend: str = "torch",
    device: Any = None,
    seed: int = 0,
    progress: bool = False,
    transfer: str | None = None,
    transfer_mode: str = "barycentric",
    key_added: str | None = None,
    copy: bool = False,
    **solver_kw: Any,
) -> GWResult:
    """Couple image cells with scRNA-seq cells by entropic Gromov-Wasserstein transport.

    The two sides share no features: GW matches the geometry of the image cells' space
    (distances between image cells) with that of the RNA cells' space.

    Parameters
    ----------
    adata_img, adata_rna
        AnnData of the image cells (e.g. SAE latents) and of the scRNA-seq cells (or
        plain ``cells × dims`` arrays).
    rep_img, rep_rna
        ``obsm`` keys of the representations to align (``None`` or ``"X"``: ``X``, dense
        or sparse).
    n_pcs
        Reduce each side's representation to this many principal components first
        (``scanpy.pp.pca``, ARPACK, seeded). ``None``: use it as it is.
    cost
        Intra-domain cost: ``"sqeuclidean"``, ``"euclidean"`` or ``"knn_geodesic"``
        (shortest paths on the kNN graph, as in the seed paper).
    k
        Neighbours of the kNN graph (``knn_geodesic``).
    scale
        Divide each cost by its ``"mean"``, ``"max"``, ``"median"``, a number, or
        ``None`` (no scaling). ``epsilon`` is in the units of the scaled costs.
    epsilon
        Entropic regularisation (seed paper: 1.5e-3 on mean-scaled kNN-geodesic costs).
    problem
        ``"balanced"``, ``"unbalanced"`` (with ``tau``), ``"semirelaxed"``; ``"fused"``
        is chosen automatically by ``label``.
    tau
        Unbalanced: weight of the KL marginal penalties.
    label
        An ``obs`` column present on both sides: adds a label-mismatch cost (fused GW,
        weight ``alpha``). The two columns must share at least one category.
    alpha
        Weight of the label cost in fused GW: ``(1 - alpha) GW + alpha <M, T>``.
    method, backend, device
        Solver path (``"auto"``, ``"dense"``, ``"quantized"``), ``"torch"`` or ``"pot"``,
        torch device. See :func:`~sparsecell.gwmap.solve.solve`.
    seed
        Random seed (PCA, sampled cost scales, the large-scale path).
    progress
        Show a progress bar.
    transfer, transfer_mode
        With ``key_added``: an RNA ``obs`` column whose labels are transferred to the
        image cells (``"barycentric"`` or ``"hard"``).
    key_added
        Store the result scanpy-style in the image AnnData: ``obs[key_added]`` and
        ``obs[key_added + "_confidence"]`` (when ``transfer`` is given),
        ``obsm["X_" + key_added]`` (image cells in the RNA representation) and
        ``uns[key_added]`` (``params``, ``summary``).
    copy
        With ``key_added``: write into a copy of ``adata_img`` (``result.adata_img``)
        instead of the object itself.
    **solver_kw
        Passed to :func:`~sparsecell.gwmap.solve.solve` (``max_iter``, ``tol``,
        ``anneal``, ``dtype``, ``a``, ``b``, ...).

    Returns
    -------
    GWResult
        The coupling (image cells × RNA cells) with both sides' obs, the aligned
        representations and the RNA AnnData.
    """
    from .solve import solve

    if cost not in COSTS:
        raise SparsecellError(f"cost={cost!r} is unknown", f"use one of {', '.join(COSTS)}")
    if problem == "fused" and label is None:
        raise SparsecellError("problem='fused' needs label=", "name a shared obs column")
    if transfer is not None and key_added is None:
        raise SparsecellError("transfer= needs key_added=", "e.g. key_added='gwmap'")
    if transfer is not None and transfer_mode not in ("hard", "barycentric"):
        raise SparsecellError(
            f"transfer_mode={transfer_mode!r} is unknown", "use 'hard' or 'barycentric'"
        )
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise SparsecellError(f"seed={seed!r} is not a non-negative integer", "pass seed >= 0")
    if key_added is not None and not _is_anndata(adata_img):
        raise SparsecellError("key_added= needs an AnnData of image cells", "drop key_added")

    Xi, what_i = _representation(adata_img, rep_img, n_pcs, int(seed), "image")
    Xr, what_r = _representation(adata_rna, rep_rna, n_pcs, int(seed), "RNA")
    obs_i = _obs_of(adata_img, Xi.shape[0], "i")
    obs_r = _obs_of(adata_rna, Xr.shape[0], "r")
    if transfer is not None and transfer not in obs_r.columns:
        raise SparsecellError(f"'{transfer}' is not an obs column of the RNA data", "check it")

    M = None
    if label is not None:
        missing = [s for s, o in (("image", obs_i), ("RNA", obs_r)) if label not in o.columns]
        if missing:
            raise SparsecellError(
                f"label '{label}' is not an obs column of the {' and '.join(missing)} data",
                "name a column both sides have",
            )
        if problem not in ("balanced", "fused"):
            raise SparsecellError(
                f"label= (fused GW) cannot be combined with problem={problem!r}",
                "use problem='balanced' or drop label",
            )
        from .geometry import label_cost

        M = label_cost(obs_i[label].to_numpy(), obs_r[label].to_numpy())
        problem = "fused"

    params = dict(
        rep_img=what_i,
        rep_rna=what_r,
        n_pcs=n_pcs,
        cost=cost,
        k=int(k),
        scale=scale,
        epsilon=float(epsilon),
        problem=problem,
        tau=tau,
        label=label,
        alpha=float(alpha) if label is not None else None,
        method=method,
        backend=backend,
        seed=int(seed),
        n_img=int(Xi.shape[0]),
        n_rna=int(Xr.shape[0]),
        dim_img=int(Xi.shape[1]),
        dim_rna=int(Xr.shape[1]),
        solver_kw={k_: v for k_, v in solver_kw.items() if k_ not in ("a", "b")},
    )
    fused_kw = {"M": M, "alpha": alpha} if M is not None else {}
    sol = solve(
        Xi,
        Xr,
        solver_kw.pop("a", None),
        solver_kw.pop("b", None),
        epsilon=epsilon,
        problem=problem,
        tau=tau,
        method=method,
        backend=backend,
        device=device,
        seed=int(seed),
        progress=progress,
        cost=cost,
        k=k,
        scale=scale,
        **fused_kw,
        **solver_kw,
    )
    if not sol.converged:
        log.warning(
            "GW did not converge in %d iterations (objective %.4g); see result.trace",
            sol.n_iter,
            sol.objective,
        )
    res = GWResult(
        sol,
        obs_i,
        obs_r,
        adata_rna=adata_rna if _is_anndata(adata_rna) else None,
        rep_img=Xi,
        rep_rna=Xr,
        params=params,
    )
    if key_added is not None:
        target = adata_img.copy() if copy else adata_img
        if transfer is not None:
            df = res.transfer_labels(transfer, transfer_mode)
            target.obs[key_added] = df["label"].to_numpy()
            target.obs[f"{key_added}_confidence"] = df["confidence"].to_numpy()
        target.obsm[f"X_{key_added}"] = res.coembed()[0].astype(np.float32)
        from .result import _jsonable

        target.uns[key_added] = {
            "params": _jsonable({**params, "transfer": transfer, "transfer_mode": transfer_mode}),
            "summary": res.summary(),
        }
        res.adata_img = target
    return res


__all__ = ["align"]
