"""Gene modules by Leiden at several resolutions and their nesting."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
from gwmap_predict_helpers import nested_programs

from sparsecell._errors import SparsecellError
from sparsecell.gwmap.modules import gene_modules

RES = (0.2, 1.0)
# k=15 > 11 sub-program mates, so every gene also links to genes of its sibling sub-program
# (r ≈ 0.42) and the coarse level can merge the two siblings
K = 15


@pytest.fixture(scope="module")
def data():
    return nested_programs()


@pytest.fixture(scope="module")
def gm(data):
    X, names = data
    return gene_modules(X, names, resolutions=RES, k=K, min_size=3, seed=0)


def _truth(names, level):
    return [n[1] if level == "super" else n[1:3] for n in names]


def test_nested_programs_recovered(gm, data):
    _, names = data
    t = gm.table.set_index("gene").loc[names]
    for col, level, n_mod in (("module_0.2", "super", 2), ("module_1", "sub", 4)):
        # exactly the planted partition (correlations 0.85 within a sub-program, 0.42 between
        # siblings, 0 across super-programs on 400 cells: the partition is unambiguous, so the
        # tolerance is zero misassigned genes)
        assert t[col].nunique() == n_mod and (t[col] >= 0).all()
        ct = pd.crosstab(t[col], _truth(names, level))
        assert ((ct > 0).sum(axis=1) == 1).all() and ((ct > 0).sum(axis=0) == 1).all(), ct
    fine = gm.tree[gm.tree["resolution"] == 1.0]
    coarse = gm.tree[gm.tree["resolution"] == 0.2].set_index("node")
    assert len(fine) == 4 and len(coarse) == 2
    for _, row in fine.iterrows():
        members = t.index[t["module_1"] == row["module"]]
        parent_genes = t.index[t["module_0.2"] == coarse.loc[row["parent"], "module"]]
        # the parent is the super-program holding the sub-program: containment exactly 1
        assert set(members) <= set(parent_genes)
        assert row["containment"] == 1.0
        assert row["n_genes"] == 12
        assert row["name"] == members[0][:3]  # named after the program prefix, e.g. "P01"
    assert set(coarse["name"]) == {"P00+P01", "P10+P11"}
    assert sorted(len(v) for v in gm.modules(1.0).values()) == [12, 12, 12, 12]
    assert (coarse["parent"] == "root").all()


def test_deterministic_and_leaves_global_random_alone(data):
    X, names = data
    random.seed(123)
    before = random.random()
    random.seed(123)
    a = gene_modules(X, names, resolutions=(0.5, 2.0), k=8, min_size=2, seed=3)
    after = random.random()
    b = gene_modules(X, names, resolutions=(0.5, 2.0), k=8, min_size=2, seed=3)
    assert before == after  # igraph's generator was a private Random(seed), then restored
    pd.testing.assert_frame_equal(a.table, b.table)
    pd.testing.assert_frame_equal(a.tree, b.tree)


def test_newick_and_write(gm, tmp_path):
    nwk = gm.to_newick()
    assert nwk.endswith("'root';") and nwk.count("(") == nwk.count(")")
    for node in gm.tree["node"]:
        assert f"'{node}" in nwk
    assert gm.to_newick(genes=True).count("P00_") == 12
    out = gm.write(tmp_path / "mods")
    files = {p.name for p in out.iterdir()}
    assert files == {"table.csv", "tree.csv", "tree.nwk", "figure.png", "manifest.json"}
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    man = json.loads((out / "manifest.json").read_text())
    assert man["kind"] == "gwmap.gene_modules"
    assert man["modules_per_resolution"] == {"0.2": 2, "1": 4}
    back = pd.read_csv(out / "tree.csv", keep_default_na=False)
    assert list(back["node"]) == list(gm.tree["node"])


def test_min_size_marks_small_modules_unassigned(data):
    X, names = data
    gm = gene_modules(X, names, resolutions=RES, k=K, min_size=13)
    # the 12-gene sub-program modules fall below min_size; the 24-gene ones stay
    assert (gm.table["module_1"] == -1).all()
    assert (gm.table["module_0.2"] >= 0).all()
    assert gm.n_modules() == {"0.2": 2, "1": 0}


def test_min_corr_drops_weak_edges(data):
    X, names = data
    rng = np.random.default_rng(9)
    z = rng.normal(size=X.shape[0])
    extra = np.column_stack([z + 0.3 * rng.normal(size=z.size) for _ in range(2)])
    # two genes correlated (r ≈ 0.9) only with each other; with min_corr=0.2 their chance
    # correlations with the others (|r| < 0.2 on 400 cells, sd ≈ 0.05) are not edges, so they
    # form a 2-gene module, which min_size=3 marks unassigned
    gm = gene_modules(
        np.c_[X, extra], [*names, "ODD_1", "ODD_2"], resolutions=RES, k=K, min_size=3, min_corr=0.2
    )
    t = gm.table.set_index("gene")
    assert (t.loc[["ODD_1", "ODD_2"], "module_1"] == -1).all()
    assert (t.loc[names, "module_1"] >= 0).all()


def test_bad_input(data):
    X, names = data
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(SparsecellError, match="NaN"):
        gene_modules(Xn, names)
    with pytest.raises(SparsecellError, match="gene names"):
        gene_modules(X, names[:-1])
    with pytest.raises(SparsecellError, match="not found"):
        gene_modules(pd.DataFrame(X, columns=names), ["nope"])
    with pytest.raises(SparsecellError, match="resolutions"):
        gene_modules(X, names, resolutions=(0.0,))
    with pytest.raises(SparsecellError, match="too small"):
        gene_modules(X[:, :2], names[:2])
    with pytest.raises(SparsecellError, match="method"):
        gene_modules(X, names, method="louvain")
