"""Gene modules at several resolutions, and the hierarchy formed by how they nest.

``gene_modules`` correlates the selected genes across cells (Pearson), links every gene to its
``k`` most correlated genes (positive correlations only; weight = correlation; the graph is
symmetrised by keeping the larger weight), and runs Leiden (modularity, python-igraph) at each
resolution. Modules smaller than ``min_size`` are marked ``-1`` (unassigned). The hierarchy:
the parent of a module at a finer resolution is the module at the next coarser resolution that
holds most of its genes; ``containment`` is that fraction (1.0 = perfectly nested).

Determinism: igraph draws its random numbers from a Python generator; each Leiden run gets a
fresh ``random.Random(seed)`` (set with ``igraph.set_random_number_generator`` and restored to
the ``random`` module afterwards), so a seed gives the same modules in every run, and the global
``random`` state is left untouched. Module ids are then renumbered by size (largest first, ties
by the smallest gene index), so the ids do not depend on Leiden's internal labels.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import SparsecellError
from ..core.graph import leiden

log = logging.getLogger(__name__)

__all__ = ["GeneModules", "gene_modules"]

_TOP = 5  # genes listed per node


def _matrix_and_names(data: Any, genes: Sequence | None):
    names = None
    if hasattr(data, "var_names") and hasattr(data, "obs_names"):
        X, names = data.X, np.asarray(data.var_names, dtype=object)
    elif isinstance(data, pd.DataFrame):
        X, names = data.to_numpy(), np.asarray(data.columns, dtype=object)
    else:
        X = data
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    if X.ndim != 2 or not np.issubdtype(X.dtype, np.number):
        raise SparsecellError("expression must be a numeric cells × genes matrix", "check it")
    X = X.astype(np.float64, copy=False)
    if names is None:
        if genes is None:
            names = np.asarray([f"g{i}" for i in range(X.shape[1])], dtype=object)
        else:
            names = np.asarray([str(g) for g in genes], dtype=object)
            if names.size != X.shape[1]:
                raise SparsecellError(
                    f"{names.size} gene names for a matrix with {X.shape[1]} columns",
                    "pass one name per column (or a DataFrame / AnnData)",
                )
            genes = None
    if genes is not None:
        pos = {str(g): i for i, g in enumerate(names)}
        missing = [str(g) for g in genes if str(g) not in pos]
        if missing:
            raise SparsecellError(
                f"{len(missing)} gene(s) not found, e.g. {missing[:3]}", "check the gene names"
            )
        idx = np.asarray([pos[str(g)] for g in genes], dtype=int)
        X, names = X[:, idx], names[idx]
    names = np.asarray([str(g) for g in names], dtype=object)
    if len(set(names)) != names.size:
        raise SparsecellError("gene names are not unique", "make them unique first")
    if not np.all(np.isfinite(X)):
        raise SparsecellError("expression holds NaN or infinite values", "impute or drop them")
    return X, names


def _correlation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    Xc = X - X.mean(axis=0)
    sd = np.sqrt(np.einsum("ij,ij->j", Xc, Xc))
    ok = sd > 1e-12 * (1.0 + np.abs(X).max(axis=0) * np.sqrt(X.shape[0]))
    Xc[:, ok] /= sd[ok]
    Xc[:, ~ok] = 0.0
    C = Xc.T @ Xc
    np.clip(C, -1.0, 1.0, out=C)
    np.fill_diagonal(C, 0.0)
    return C, ok


def _knn_graph(C: np.ndarray, k: int, min_corr: float = 0.0) -> sp.csr_matrix:
    """Symmetric kNN graph on correlations > min_corr (weight = correlation, max both ways)."""
    g = C.shape[0]
    kk = min(k, g - 1)
    idx = np.argpartition(-C, kk - 1, axis=1)[:, :kk]
    rows = np.repeat(np.arange(g), kk)
    w = C[rows, idx.ravel()]
    keep = w > max(min_corr, 0.0)
    A = sp.csr_matrix((w[keep], (rows[keep], idx.ravel()[keep])), shape=(g, g))
    return A.maximum(A.T).tocsr()


def _relabel(memb: np.ndarray, min_size: int) -> np.ndarray:
    """Renumber by size (largest first, ties by first gene); modules < min_size → -1."""
    labs, first, counts = np.unique(memb, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    out = np.full(memb.size, -1, dtype=np.int64)
    nxt = 0
    for j in order:
        if counts[j] < min_size:
            continue
        out[memb == labs[j]] = nxt
        nxt += 1
    return out


_NUM = re.compile(r"^\d+[a-z]?$", re.IGNORECASE)


def _program_of(name: str) -> list[str]:
    """Nested prefixes of a gene name: 'CA_AIS_02' → ['CA_AIS', 'CA']; 'TP53' → []."""
    parts = re.split(r"[_\-.]", name)
    if len(parts) < 2 or not _NUM.match(parts[-1]):
        return []
    parts = parts[:-1]
    return ["_".join(parts[: i + 1]) for i in range(len(parts))][::-1]


def _module_name(genes: list[str], top: list[str], min_share: float = 0.6) -> str:
    progs = [_program_of(g) for g in genes]
    depth = max((len(p) for p in progs), default=0)
    for lvl in range(depth):  # most specific first
        cnt = Counter(p[lvl] if len(p) > lvl else None for p in progs)
        cnt.pop(None, None)
        if cnt:
            name, c = cnt.most_common(1)[0]
            if c >= min_share * len(genes):
                return name
    # coarsest prefixes, then the two most common programs together ("P00+P01")
    cnt = Counter(p[-1] for p in progs if p)
    if cnt:
        name, c = cnt.most_common(1)[0]
        if c >= min_share * len(genes):
            return name
    cnt = Counter(p[0] for p in progs if p)
    if len(cnt) >= 2:
        (n1, c1), (n2, c2) = cnt.most_common(2)
        if c1 + c2 >= min_share * len(genes):
            return f"{n1}+{n2}"
    return "/".join(top[:3])


@dataclass
class GeneModules:
    """Gene modules at several resolutions and their nesting.

    Attributes
    ----------
    table
        One row per gene: ``gene``, ``degree`` (weighted degree in the kNN graph) and
        ``module_<res>`` per resolution (module id, ``-1`` = unassigned).
    tree
        One row per module (plus ``root``): ``node`` (``r<level>m<id>``), ``level``,
        ``resolution``, ``module``, ``parent``, ``n_genes``, ``containment`` (fraction of its
        genes inside its parent), ``top_genes`` (by within-module weighted degree, ``;``-joined)
        and ``name``.
    resolutions
        Resolutions, coarse to fine.
    params
        How the modules were made.
    warnings
        Adaptations made on the way.
    """

    table: pd.DataFrame
    tree: pd.DataFrame
    resolutions: tuple[float, ...]
    params: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def modules(self, resolution: float) -> dict[str, list[str]]:
        """Genes per module (by node name) at one resolution."""
        col = _col(resolution)
        if col not in self.table.columns:
            raise SparsecellError(f"no modules at resolution {resolution}", f"{self.resolutions}")
        sub = self.tree[self.tree["resolution"] == float(resolution)]
        out = {}
        for _, row in sub.iterrows():
            m = self.table[col] == row["module"]
            out[row["node"]] = self.table.loc[m, "gene"].tolist()
        return out

    # -- Newick ---------------------------------------------------------------------------
    def to_newick(self, genes: bool = False) -> str:
        """The hierarchy as a Newick string.

        Nodes are labelled ``node|name`` (quoted), branch length 1 per level; with
        ``genes=True`` the genes are the leaves of the finest modules.
        """
        children: dict[str, list[str]] = {}
        for _, row in self.tree.iterrows():
            if row["parent"]:
                children.setdefault(row["parent"], []).append(row["node"])
        rows = self.tree.set_index("node")
        finest = _col(self.resolutions[-1]) if self.resolutions else None

        def quote(s: str) -> str:
            return "'" + s.replace("'", "''") + "'"

        def rec(node: str) -> str:
            kids = [rec(c) for c in children.get(node, [])]
            r = rows.loc[node]
            if genes and finest is not None and r["resolution"] == self.resolutions[-1]:
                members = self.table.loc[self.table[finest] == r["module"], "gene"]
                kids = [quote(str(g)) for g in members]
            label = quote(node if node == "root" else f"{node}|{r['name']}")
            length = "" if node == "root" else ":1"
            return (f"({','.join(kids)})" if kids else "") + label + length

        return rec("root") + ";"

    # -- figure ---------------------------------------------------------------------------
    def plot(self, ax=None, max_label: int = 28):
        """Draw the hierarchy: one row per resolution, edges parent → child, node area ∝ genes.

        Returns the matplotlib ``Axes`` (a new figure is made when ``ax`` is None).
        """
        if ax is None:
            from matplotlib.figure import Figure

            n_leaves = max(1, int((self.tree["resolution"] == self.resolutions[-1]).sum()))
            fig = Figure(figsize=(max(6.0, 0.9 * n_leaves + 2), 1.4 * len(self.resolutions) + 2))
            ax = fig.add_subplot(111)
        children: dict[str, list[str]] = {}
        for _, row in self.tree.iterrows():
            if row["parent"]:
                children.setdefault(row["parent"], []).append(row["node"])
        rows = self.tree.set_index("node")
        xpos: dict[str, float] = {}
        counter = [0.0]

        def place(node: str) -> float:
            kids = children.get(node, [])
            if not kids:
                xpos[node] = counter[0]
                counter[0] += 1.0
            else:
                xpos[node] = float(np.mean([place(c) for c in kids]))
            return xpos[node]

        place("root")
        total = max(float(rows["n_genes"].max()), 1.0)
        for node, x in xpos.items():
            r = rows.loc[node]
            y = -int(r["level"])
            if r["parent"]:
                px, py = xpos[r["parent"]], -int(rows.loc[r["parent"], "level"])
                ax.plot(
                    [px, x],
                    [py, y],
                    color="0.5",
                    lw=0.5 + 2.5 * float(r["containment"]),
                    alpha=0.35 + 0.65 * float(r["containment"]),
                    zorder=1,
                )
            ax.scatter(
                [x],
                [y],
                s=40 + 900 * float(r["n_genes"]) / total,
                color="C0" if node != "root" else "0.3",
                alpha=0.8,
                zorder=2,
            )
            if node != "root":
                label = str(r["name"])
                label = label if len(label) <= max_label else label[: max_label - 1] + "…"
                ax.annotate(
                    f"{label}\n({int(r['n_genes'])})",
                    (x, y),
                    textcoords="offset points",
                    xytext=(0, -14),
                    ha="center",
                    va="top",
                    fontsize=7,
                )
        ax.set_yticks([-i for i in range(len(self.resolutions) + 1)])
        ax.set_yticklabels(["all"] + [f"res {r:g}" for r in self.resolutions])
        ax.set_xticks([])
        ax.set_ylim(-len(self.resolutions) - 0.8, 0.4)
        ax.set_xlim(-0.8, max(counter[0] - 0.2, 0.8))
        for s in ("top", "right", "bottom"):
            ax.spines[s].set_visible(False)
        ax.set_title(
            "gene-module hierarchy (node area ∝ genes, edge width ∝ containment)", fontsize=9
        )
        return ax

    # -- disk -----------------------------------------------------------------------------
    def write(self, path: str | Path) -> Path:
        """Write ``table.csv``, ``tree.csv``, ``tree.nwk``, ``figure.png``, ``manifest.json``.

        The folder is replaced atomically (nothing half-written on failure).
        """
        from .._io import atomic_dir, dump_json, manifest

        path = Path(path)
        with atomic_dir(path) as tmp:
            self.table.to_csv(tmp / "table.csv", index=False)
            self.tree.to_csv(tmp / "tree.csv", index=False)
            (tmp / "tree.nwk").write_text(self.to_newick() + "\n")
            ax = self.plot()
            fig = ax.figure
            fig.tight_layout()
            fig.savefig(tmp / "figure.png", dpi=120)
            man = manifest(
                "gwmap.gene_modules",
                self.params,
                resolutions=list(self.resolutions),
                n_genes=int(len(self.table)),
                modules_per_resolution=self.n_modules(),
                warnings=self.warnings,
            )
            (tmp / "manifest.json").write_text(dump_json(man))
        return path

    def n_modules(self) -> dict[str, int]:
        """Number of modules (excluding unassigned genes) per resolution."""
        return {f"{r:g}": int((self.tree["resolution"] == r).sum()) for r in self.resolutions}


def _col(res: float) -> str:
    return f"module_{float(res):g}"


def gene_modules(
    expression_or_predicted: Any,
    genes: Sequence | None = None,
    *,
    resolutions: Sequence[float] = (0.2, 0.5, 1.0, 2.0),
    k: int = 10,
    min_size: int = 5,
    seed: int = 0,
    method: str = "leiden",
    min_corr: float = 0.0,
) -> GeneModules:
    """Gene modules by Leiden at several resolutions on a gene–gene correlation kNN graph.

    Parameters
    ----------
    expression_or_predicted
        Cells × genes matrix (AnnData, DataFrame, array or sparse): measured expression, coupled
        targets or predicted expression of image cells.
    genes
        Genes to use (e.g. those with ``z > 3`` from ``couple_then_predict``): names selecting
        columns of an AnnData/DataFrame, or names for the columns of a plain array. ``None``:
        all columns.
    resolutions
        Leiden (modularity) resolutions; sorted coarse → fine for the hierarchy.
    k
        Neighbours per gene in the correlation graph (positive correlations only).
    min_size
        Modules with fewer genes are marked ``-1`` (unassigned) and left out of the tree.
    seed
        Seed of Leiden's random generator (see the module docstring).
    method
        ``"leiden"`` (the only method so far).
    min_corr
        Only correlations above this become edges (default 0: all positive ones among the
        ``k`` nearest).

    Returns
    -------
    GeneModules

    Raises
    ------
    SparsecellError
        Fewer than 3 genes or 3 cells, NaN, unknown genes, duplicated names, bad parameters.
    """
    if method != "leiden":
        raise SparsecellError(f"unknown method '{method}'", "use method='leiden'")
    res = sorted({float(r) for r in resolutions})
    if not res or min(res) <= 0:
        raise SparsecellError("resolutions must be positive numbers", "e.g. (0.2, 0.5, 1, 2)")
    if int(k) < 1:
        raise SparsecellError(f"k={k} is too small", "use k ≥ 1")
    if int(min_size) < 1:
        raise SparsecellError(f"min_size={min_size}", "use min_size ≥ 1")
    X, names = _matrix_and_names(expression_or_predicted, genes)
    n_cells, n_genes = X.shape
    if n_genes < 3 or n_cells < 3:
        raise SparsecellError(
            f"{n_genes} genes × {n_cells} cells is too small for modules",
            "pass at least 3 genes and 3 cells",
        )
    warns: list[str] = []
    C, ok = _correlation(X)
    if not ok.all():
        msg = f"{int((~ok).sum())} constant gene(s) have no correlations; they stay unassigned"
        log.warning(msg)
        warns.append(msg)
    A = _knn_graph(C, int(k), float(min_corr))
    degree = np.asarray(A.sum(axis=1)).ravel()

    labels = []
    for r in res:
        memb = leiden(A, r, random_state=seed)
        memb[~ok] = -(np.arange((~ok).sum()) + 1)  # isolated genes: singletons
        lab = _relabel(memb, int(min_size))
        if lab.max(initial=-1) < 0:
            msg = f"resolution {r:g}: no module reaches min_size={int(min_size)}"
            log.warning(msg)
            warns.append(msg)
        labels.append(lab)
    table = pd.DataFrame({"gene": names, "degree": degree})
    for r, lab in zip(res, labels, strict=True):
        table[_col(r)] = lab

    # tree
    nodes = [
        {
            "node": "root",
            "level": 0,
            "resolution": 0.0,
            "module": -1,
            "parent": "",
            "n_genes": int((labels[0] >= 0).sum()) if labels else 0,
            "containment": 1.0,
            "top_genes": "",
            "name": "all",
        }
    ]
    for li, (r, lab) in enumerate(zip(res, labels, strict=True)):
        for m in range(int(lab.max()) + 1 if lab.size and lab.max() >= 0 else 0):
            members = np.flatnonzero(lab == m)
            if li == 0:
                parent, cont = "root", 1.0
            else:
                prev = labels[li - 1][members]
                assigned = prev[prev >= 0]
                if assigned.size == 0:
                    parent, cont = "root", 0.0
                else:
                    vals, cnt = np.unique(assigned, return_counts=True)
                    j = int(np.argmax(cnt))
                    parent = f"r{li}m{int(vals[j])}"
                    cont = float(cnt[j]) / members.size
            sub = A[members][:, members]
            wdeg = np.asarray(sub.sum(axis=1)).ravel()
            top_idx = members[np.lexsort((members, -wdeg))][:_TOP]
            top = [str(names[i]) for i in top_idx]
            nodes.append(
                {
                    "node": f"r{li + 1}m{m}",
                    "level": li + 1,
                    "resolution": r,
                    "module": m,
                    "parent": parent,
                    "n_genes": int(members.size),
                    "containment": cont,
                    "top_genes": ";".join(top),
                    "name": _module_name([str(names[i]) for i in members], top),
                }
            )
    tree = pd.DataFrame(nodes)
    for r in res:  # unique names within a resolution
        sel = tree.index[tree["resolution"] == r]
        seen: Counter = Counter()
        for i in sel:
            nm = tree.at[i, "name"]
            seen[nm] += 1
            if seen[nm] > 1:
                tree.at[i, "name"] = f"{nm} ({seen[nm]})"
    params = {
        "method": method,
        "resolutions": res,
        "k": int(k),
        "min_corr": float(min_corr),
        "min_size": int(min_size),
        "seed": int(seed),
        "n_genes": int(n_genes),
        "n_cells": int(n_cells),
        "graph": "kNN on positive Pearson correlations across cells, max-symmetrised",
        "leiden": "igraph community_leiden(modularity, weights, n_iterations=-1)",
    }
    return GeneModules(
        table=table, tree=tree, resolutions=tuple(res), params=params, warnings=warns
    )
