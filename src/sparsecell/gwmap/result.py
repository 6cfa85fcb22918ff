"""``GWResult``: a GW coupling with the cells it couples, and what follows from it.

A result holds the solver's :class:`~sparsecell.gwmap.solve.GWSolution` (coupling,
objective, entropy, trace, convergence, warnings), the ``obs`` tables of both sides and,
when known, the representations that were aligned and the scRNA-seq AnnData. From these
it transfers labels, projects image cells into the RNA representation (co-embedding),
imputes gene expression for image cells, and saves itself to a folder.

Rows of the coupling are image cells, columns RNA cells. Wherever a row is used as a
distribution it is normalised to sum to one (``P = diag(1 / T 1) T``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import SparsecellError
from .._io import atomic_dir, atomic_write_text, dump_json, manifest

log = logging.getLogger(__name__)

_CHUNK = 2048  # image cells per block
_FORMAT = 1  # version of the folder layout written by GWResult.write
_RESULT_FILES = ("coupling.npz", "img.h5ad", "rna.h5ad", "result.json", "manifest.json")


@dataclass
class _StoredSolution:
    """The fields of a GWSolution, for results read back from disk (or built by hand)."""

    coupling: np.ndarray | sp.csr_matrix
    objective: float = float("nan")
    entropy: float = float("nan")
    trace: list[float] = field(default_factory=list)
    converged: bool = True
    n_iter: int = 0
    epsilon: float = float("nan")
    method: str = "dense"
    backend: str = "none"
    params: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


_SOL_FIELDS = tuple(_StoredSolution.__dataclass_fields__)


def _solution_from_fields(**kw: Any) -> Any:
    """A GWSolution when the solver module is importable, else the stored stand-in."""
    try:
        from .solve import GWSolution

        return GWSolution(**kw)
    except (ImportError, TypeError):
        return _StoredSolution(**kw)


def _obs_frame(obs: Any, n: int, prefix: str) -> pd.DataFrame:
    if obs is None:
        return pd.DataFrame(index=pd.Index([f"{prefix}{i}" for i in range(n)]))
    if not isinstance(obs, pd.DataFrame):
        obs = pd.DataFrame(index=pd.Index([str(v) for v in obs]))
    if len(obs) != n:
        raise SparsecellError(
            f"obs has {len(obs)} rows but the coupling has {n} on that side",
            "pass the obs of the cells that were aligned",
        )
    return obs


class GWResult:
    """A GW coupling between image cells (rows) and scRNA-seq cells (columns).

    Parameters
    ----------
    solution
        The solver's ``GWSolution`` (or any object with its fields: ``coupling``,
        ``objective``, ``entropy``, ``trace``, ``converged``, ``n_iter``, ``epsilon``,
        ``method``, ``backend``, ``params``, ``warnings``). A bare ``n × m`` matrix is
        accepted too (see :meth:`from_coupling`).
    obs_img, obs_rna
        Per-cell tables of the two sides (``n`` and ``m`` rows); default: index only.
    adata_rna
        The scRNA-seq AnnData (default source of labels' categories and of
        :meth:`impute`'s expression).
    rep_img, rep_rna
        The representations that were aligned (``n × d_img``, ``m × d_rna``); the RNA
        one is the target space of :meth:`coembed`.
    params
        The alignment's settings (recorded by :func:`~sparsecell.gwmap.align.align`).

    Attributes
    ----------
    solution, obs_img, obs_rna, adata_rna, rep_img, rep_rna, params
        As given.
    adata_img
        The image AnnData that ``align(..., key_added=...)`` wrote into, if any.
    """

    def __init__(
        self,
        solution: Any,
        obs_img: pd.DataFrame | None = None,
        obs_rna: pd.DataFrame | None = None,
        *,
        adata_rna: Any = None,
        rep_img: np.ndarray | None = None,
        rep_rna: np.ndarray | None = None,
        params: dict | None = None,
    ) -> None:
        if not hasattr(solution, "coupling"):
            solution = _StoredSolution(coupling=solution)
        T = solution.coupling
        if hasattr(T, "detach"):
            T = T.detach().cpu().numpy()
        if sp.issparse(T):
            T = sp.csr_matrix(T)
            data = T.data
        else:
            T = np.asarray(T)
            data = T
        if T.ndim != 2 or min(T.shape) < 1:
            raise SparsecellError(f"coupling has shape {T.shape}", "pass an n × m coupling")
        if not np.all(np.isfinite(data)):
            raise SparsecellError("the coupling holds NaN or inf", "re-run the alignment")
        if data.size and float(np.min(data)) < 0:
            raise SparsecellError("the coupling has negative entries", "pass a transport plan")
        self._T = T
        self.solution = solution
        n, m = T.shape
        self.obs_img = _obs_frame(obs_img, n, "i")
        self.obs_rna = _obs_frame(obs_rna, m, "r")
        self.adata_rna = adata_rna
        if adata_rna is not None and adata_rna.n_obs != m:
            raise SparsecellError(
                f"adata_rna has {adata_rna.n_obs} cells but the coupling {m} columns",
                "pass the RNA data that was aligned",
            )
        self.rep_img = None if rep_img is None else np.asarray(rep_img)
        self.rep_rna = None if rep_rna is None else np.asarray(rep_rna)
        for name, rep, k in (("rep_img", self.rep_img, n), ("rep_rna", self.rep_rna, m)):
            if rep is not None and (rep.ndim != 2 or rep.shape[0] != k):
                raise SparsecellError(f"{name} must have {k} rows", "pass the aligned rep")
        self.params = dict(params or {})
        self.adata_img = None
        self.label_distributions: dict[str, pd.DataFrame] = {}
        self._own_warnings: list[str] = []

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_coupling(
        cls,
        coupling: Any,
        obs_img: pd.DataFrame | None = None,
        obs_rna: pd.DataFrame | None = None,
        **kw: Any,
    ) -> GWResult:
        """A result from a bare coupling (objective etc. unknown: NaN), e.g. for tests."""
        sol_kw = {k: kw.pop(k) for k in list(kw) if k in _SOL_FIELDS}
        if "entropy" not in sol_kw:
            sol_kw["entropy"] = _entropy(coupling)
        return cls(_StoredSolution(coupling=coupling, **sol_kw), obs_img, obs_rna, **kw)

    # ------------------------------------------------------------------ solution fields

    @property
    def coupling(self) -> np.ndarray | sp.csr_matrix:
        """The ``n_img × n_rna`` transport plan (dense array or CSR)."""
        return self._T

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_img, n_rna)``."""
        return tuple(self._T.shape)

    @property
    def objective(self) -> float:
        """GW (or fused) objective without the entropy term."""
        return float(self.solution.objective)

    @property
    def entropy(self) -> float:
        """``-Σ T log T`` over the nonzero entries."""
        return float(self.solution.entropy)

    @property
    def trace(self) -> list[float]:
        """Objective after each outer iteration."""
        return list(getattr(self.solution, "trace", []))

    @property
    def converged(self) -> bool:
        """Whether the solver met its tolerance."""
        return bool(self.solution.converged)

    @property
    def warnings(self) -> list[str]:
        """What the solver (and this result) adapted, in order."""
        return list(getattr(self.solution, "warnings", [])) + self._own_warnings

    def _warn(self, msg: str) -> None:
        log.warning(msg)
        self._own_warnings.append(msg)

    def __repr__(self) -> str:
        n, m = self.shape
        kind = "csr" if sp.issparse(self._T) else "dense"
        return (
            f"GWResult({n} image × {m} RNA cells, {kind}, objective={self.objective:.4g}, "
            f"converged={self.converged})"
        )

    # ------------------------------------------------------------------ helpers

    def _row_mass(self) -> np.ndarray:
        return np.asarray(self._T.sum(axis=1), dtype=np.float64).ravel()

    def _rna_column(self, key: str) -> pd.Series:
        if key in self.obs_rna.columns:
            return self.obs_rna[key]
        if self.adata_rna is not None and key in self.adata_rna.obs.columns:
            return self.adata_rna.obs[key]
        raise SparsecellError(
            f"'{key}' is not a column of the RNA cells' obs",
            f"available: {', '.join(map(str, self.obs_rna.columns)) or 'none'}",
        )

    # ------------------------------------------------------------------ label transfer

    def transfer_labels(
        self,
        key: str,
        mode: str = "barycentric",
        *,
        return_distribution: bool = False,
    ) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
        """Labels of the RNA cells carried over to the image cells through the coupling.

        Parameters
        ----------
        key
            Column of the RNA cells' obs holding the labels (missing labels carry no
            vote).
        mode
            ``"hard"``: the label of the RNA cell with the largest coupling weight in the
            row; confidence = that entry's share of the row mass. ``"barycentric"``: the
            coupling-weighted label distribution over the row (``P @ onehot``); label =
            its mode, confidence = its probability.
        return_distribution
            Also return the image cells × categories distribution (barycentric mode
            keeps it in ``label_distributions[key]`` either way).

        Returns
        -------
        pandas.DataFrame
            Indexed by the image cells: ``label`` (categorical, the RNA categories) and
            ``confidence`` in [0, 1]. A row without coupling mass (or whose mass only
            meets unlabelled cells) gets a missing label and confidence 0, with a warning.
        """
        if mode not in ("hard", "barycentric"):
            raise SparsecellError(f"mode={mode!r} is unknown", "use 'hard' or 'barycentric'")
        col = self._rna_column(key)
        vals = np.asarray(col, dtype=object)
        missing = np.asarray(pd.isna(vals), dtype=bool)
        if hasattr(col, "cat"):
            cats = list(col.cat.categories)
        else:
            cats = sorted({str(v) for v in vals[~missing]})
        cat_str = [str(c) for c in cats]
        pos = {c: i for i, c in enumerate(cat_str)}
        codes = np.array(
            [-1 if miss else pos.get(str(v), -1) for v, miss in zip(vals, missing, strict=True)],
            dtype=np.int64,
        )
        if not (codes >= 0).any():
            raise SparsecellError(f"'{key}' has no labels on the RNA side", "pick a label column")
        n, m = self.shape
        K = len(cats)
        lab_rows = np.flatnonzero(codes >= 0)
        onehot = sp.csr_matrix((np.ones(lab_rows.size), (lab_rows, codes[lab_rows])), shape=(m, K))
        mass = self._row_mass()
        dist = np.zeros((n, K))
        label_idx = np.full(n, -1)
        conf = np.zeros(n)
        T = self._T
        # hard mode looks only at labelled RNA cells; confidence is a share of the full row
        all_labelled = lab_rows.size == m
        codes_l = codes[lab_rows]
        for s in range(0, n, _CHUNK):
            blk = T[s : s + _CHUNK]
            if mode == "barycentric" or return_distribution:
                if sp.issparse(blk):
                    dist[s : s + _CHUNK] = (blk @ onehot).toarray()
                else:
                    dist[s : s + _CHUNK] = np.asarray(onehot.T @ blk.T).T
            if mode == "hard":
                bl = blk if all_labelled else blk[:, lab_rows]
                if sp.issparse(bl):
                    j = np.asarray(bl.argmax(axis=1)).ravel()
                    top = bl.max(axis=1).toarray().ravel()
                else:
                    j = np.argmax(bl, axis=1)
                    top = bl[np.arange(bl.shape[0]), j]
                ms = mass[s : s + _CHUNK]
                ok = (ms > 0) & (top > 0)
                label_idx[s : s + _CHUNK] = np.where(ok, codes_l[j], -1)
                conf[s : s + _CHUNK] = np.where(ok, top / np.where(ok, ms, 1), 0.0)
        if mode == "barycentric" or return_distribution:
            tot = dist.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                dist = np.where(tot[:, None] > 0, dist / np.where(tot > 0, tot, 1)[:, None], 0.0)
        if mode == "barycentric":
            label_idx = np.where(dist.sum(axis=1) > 0, np.argmax(dist, axis=1), -1)
            conf = np.where(label_idx >= 0, dist.max(axis=1), 0.0)
        lost = int((label_idx < 0).sum())
        if lost:
            self._warn(
                f"transfer_labels('{key}'): {lost} image cell(s) have no coupling mass on "
                "labelled RNA cells; their label is missing (confidence 0)"
            )
        label = pd.Categorical.from_codes(label_idx, categories=cats)
        out = pd.DataFrame({"label": label, "confidence": conf}, index=self.obs_img.index)
        dist_df = None
        if mode == "barycentric" or return_distribution:
            dist_df = pd.DataFrame(dist, index=self.obs_img.index, columns=cat_str)
            if mode == "barycentric":
                self.label_distributions[key] = dist_df
        return (out, dist_df) if return_distribution else out

    # ------------------------------------------------------------------ co-embedding

    def coembed(self, rep: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Project the image cells into the RNA representation (barycentric projection).

        Parameters
        ----------
        rep
            The RNA-side representation to project into: an ``m × d`` array or an
            ``obsm`` key of ``adata_rna``. Default: the representation that was aligned.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            ``P @ rep`` for the image cells (``n × d``) and ``rep`` itself for the RNA
            cells (``m × d``): one space, for plotting, kNN and FOSCTTM.
        """
        if rep is None:
            R = self.rep_rna
            if R is None:
                raise SparsecellError(
                    "this result holds no RNA representation", "pass rep= (array or obsm key)"
                )
        elif isinstance(rep, str):
            if self.adata_rna is None or rep not in self.adata_rna.obsm:
                raise SparsecellError(f"'{rep}' is not an obsm key of the RNA data", "check it")
            R = self.adata_rna.obsm[rep]
        else:
            R = rep
        R = R.toarray() if sp.issparse(R) else np.asarray(R, dtype=np.float64)
        if R.ndim != 2 or R.shape[0] != self.shape[1]:
            raise SparsecellError(
                f"the RNA representation must have {self.shape[1]} rows", "pass m × d"
            )
        return self._project(R), R

    def _project(self, R: np.ndarray) -> np.ndarray:
        from .predict import coupled_targets

        return coupled_targets(self._T, R)

    # ------------------------------------------------------------------ imputation

    def impute(
        self,
        adata_rna: Any = None,
        genes: Sequence | None = None,
        *,
        layer: str | None = None,
    ) -> Any:
        """Coupling-weighted expression of RNA cells, per image cell (``P @ E``).

        Parameters
        ----------
        adata_rna
            Expression of the RNA cells: an AnnData (``X`` or ``layer``), or an array /
            sparse matrix ``m × genes``. Default: the AnnData given to the result.
            Normalise (e.g. ``normalize_total`` + ``log1p``) beforehand if wanted.
        genes
            Genes (names or column indices) to impute; default all.
        layer
            AnnData layer to read instead of ``X``.

        Returns
        -------
        anndata.AnnData or numpy.ndarray
            For AnnData input: image cells × genes (``obs`` of the image cells, ``var``
            of the selected genes, float32 ``X``); for an array: the ``n × genes`` array.
            Computed in blocks of image cells, sparse inputs stay sparse until a block.
        """
        from .predict import coupled_targets

        data = self.adata_rna if adata_rna is None else adata_rna
        if data is None:
            raise SparsecellError("no RNA expression to impute from", "pass adata_rna=")
        values, names = coupled_targets(self._T, data, genes, layer=layer, return_names=True)
        if not (hasattr(data, "var_names") and hasattr(data, "obs_names")):
            return values
        import anndata as ad

        var = data.var.loc[[str(g) for g in names]].copy()
        out = ad.AnnData(X=values.astype(np.float32), obs=self.obs_img.copy(), var=var)
        out.uns["gwmap_impute"] = {"params": {"layer": layer, "n_genes": int(len(names))}}
        return out

    # ------------------------------------------------------------------ summary and io

    def summary(self) -> dict[str, Any]:
        """Scalars describing the coupling and the solve (JSON-ready; unknown values None)."""
        n, m = self.shape
        mass = self._row_mass()
        col = np.asarray(self._T.sum(axis=0), dtype=np.float64).ravel()
        sol = self.solution
        out = {
            "n_img": int(n),
            "n_rna": int(m),
            "format": "csr" if sp.issparse(self._T) else "dense",
            "nnz": int(self._T.nnz if sp.issparse(self._T) else np.count_nonzero(self._T)),
            "mass": float(mass.sum()),
            "row_mass_min": float(mass.min()),
            "row_mass_max": float(mass.max()),
            "col_mass_min": float(col.min()),
            "col_mass_max": float(col.max()),
            "objective": self.objective,
            "entropy": self.entropy,
            "converged": self.converged,
            "n_iter": int(getattr(sol, "n_iter", 0)),
            "epsilon": float(getattr(sol, "epsilon", float("nan"))),
            "method": str(getattr(sol, "method", "")),
            "backend": str(getattr(sol, "backend", "")),
            "n_warnings": len(self.warnings),
        }
        return {k: _finite_or_none(v) for k, v in out.items()}

    def to_anndata(self, *, labels: dict[str, pd.DataFrame] | None = None) -> Any:
        """The image cells as an AnnData: obs, the co-embedding and the result's summary.

        ``obsm["X_gwmap"]`` holds the image cells projected into the RNA representation
        (when one is known), ``obs`` the image obs plus ``<key>`` / ``<key>_confidence``
        for each ``labels`` entry (``{key: transfer_labels(key)}``), and
        ``uns["gwmap"]`` the ``params``, ``summary`` and ``warnings``.
        """
        import anndata as ad

        obs = self.obs_img.copy()
        for key, df in (labels or {}).items():
            obs[key] = df["label"].to_numpy()
            obs[f"{key}_confidence"] = df["confidence"].to_numpy()
        out = ad.AnnData(obs=obs)
        if self.rep_rna is not None:
            out.obsm["X_gwmap"] = self.coembed()[0].astype(np.float32)
        out.uns["gwmap"] = {
            "params": _jsonable(self.params),
            "summary": self.summary(),
            "warnings": self.warnings,
        }
        return out

    def write(self, path: str | os.PathLike, *, extra_files: dict[str, str] | None = None) -> Path:
        """Save to a folder, atomically (a failed write leaves the old folder intact).

        Layout: ``coupling.npz`` (SciPy sparse for CSR couplings, a numpy archive for
        dense ones), ``img.h5ad`` / ``rna.h5ad`` (obs of each side and the aligned
        representation in ``obsm["rep"]``; no expression), ``result.json`` (the
        solution's fields, params, summary) and ``manifest.json``.

        Parameters
        ----------
        path
            The folder (replaced if it exists).
        extra_files
            More text files to write into the same folder in the same atomic step
            (file name → content), e.g. a table of transferred labels.
        """
        path = Path(path)
        sol = self.solution
        fields = {
            "objective": self.objective,
            "entropy": self.entropy,
            "trace": [float(v) for v in self.trace],
            "converged": self.converged,
            "n_iter": int(getattr(sol, "n_iter", 0)),
            "epsilon": float(getattr(sol, "epsilon", float("nan"))),
            "method": str(getattr(sol, "method", "dense")),
            "backend": str(getattr(sol, "backend", "none")),
            "params": _jsonable(getattr(sol, "params", {}) or {}),
            "warnings": list(getattr(sol, "warnings", [])),
        }
        fields = {k: _finite_or_none(v) for k, v in fields.items()}
        import anndata as ad

        with atomic_dir(path) as tmp:
            if sp.issparse(self._T):
                sp.save_npz(tmp / "coupling.npz", self._T, compressed=True)
            else:
                np.savez_compressed(tmp / "coupling.npz", coupling=self._T)
            for side, obs, rep in (
                ("img", self.obs_img, self.rep_img),
                ("rna", self.obs_rna, self.rep_rna),
            ):
                a = ad.AnnData(obs=_h5ad_safe(obs))
                if rep is not None:
                    a.obsm["rep"] = rep
                a.write_h5ad(tmp / f"{side}.h5ad")
            doc = {
                "format": _FORMAT,
                "solution": fields,
                "params": _jsonable(self.params),
                "summary": self.summary(),
                "own_warnings": list(self._own_warnings),
            }
            atomic_write_text(tmp / "result.json", dump_json(doc))
            atomic_write_text(
                tmp / "manifest.json",
                dump_json(manifest("gwmap_result", _jsonable(self.params), format=_FORMAT)),
            )
            for name, text in (extra_files or {}).items():
                if Path(name).name != name or name in _RESULT_FILES:
                    raise SparsecellError(f"extra file name {name!r} is not allowed", "rename it")
                atomic_write_text(tmp / name, text)
        return path

    @classmethod
    def read(cls, path: str | os.PathLike, *, adata_rna: Any = None) -> GWResult:
        """Load a folder written by :meth:`write` (nothing is unpickled)."""
        import anndata as ad

        path = Path(path)
        need = ("coupling.npz", "img.h5ad", "rna.h5ad", "result.json")
        missing = [f for f in need if not (path / f).exists()]
        if missing:
            raise SparsecellError(
                f"{path} is not a GW-map result folder (missing {', '.join(missing)})",
                "pass a folder written by GWResult.write or `sparsecell gwmap align`",
            )
        doc = json.loads((path / "result.json").read_text())
        if doc.get("format") != _FORMAT:
            raise SparsecellError(
                f"{path}: unknown result format {doc.get('format')!r}", "re-run the alignment"
            )
        with np.load(path / "coupling.npz", allow_pickle=False) as z:
            files = set(z.files)
            if "coupling" in files:
                T = z["coupling"]
            else:
                T = None
        if T is None:
            T = sp.load_npz(path / "coupling.npz").tocsr()
        img = ad.read_h5ad(path / "img.h5ad")
        rna = ad.read_h5ad(path / "rna.h5ad")
        fields = dict(doc["solution"])
        for k in ("objective", "entropy", "epsilon"):
            if fields.get(k) is None:
                fields[k] = float("nan")
        sol = _solution_from_fields(coupling=T, **fields)
        res = cls(
            sol,
            img.obs,
            rna.obs,
            adata_rna=adata_rna,
            rep_img=img.obsm.get("rep"),
            rep_rna=rna.obsm.get("rep"),
            params=doc.get("params", {}),
        )
        if doc.get("own_warnings"):
            res._own_warnings.extend(doc["own_warnings"])
        return res


def _entropy(T: Any) -> float:
    """``-Σ T log T`` over the positive entries."""
    v = T.data if sp.issparse(T) else np.asarray(T, dtype=np.float64).ravel()
    v = v[v > 0]
    return float(-(v * np.log(v)).sum())


def _finite_or_none(v: Any) -> Any:
    """Non-finite floats as None (JSON has no NaN)."""
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def _h5ad_safe(obs: pd.DataFrame) -> pd.DataFrame:
    """obs with string index and columns anndata can write (object columns as strings)."""
    out = obs.copy()
    out.index = out.index.astype(str)
    out.columns = [str(c) for c in out.columns]
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].map(lambda v: v if pd.isna(v) else str(v))
    return out


def _jsonable(obj: Any) -> Any:
    """Plain JSON types (numbers, strings, lists, dicts); other objects by their repr."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist() if obj.size <= 64 else f"<array {obj.shape}>"
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return repr(obj)


__all__ = ["GWResult"]
