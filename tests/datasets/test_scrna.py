"""simulate_scrna: form, determinism, and programs that follow their driving factors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sparsecell._errors import SparsecellError
from sparsecell.datasets import phantom, phantom_factors, simulate_scrna


@pytest.fixture(scope="module")
def rna():
    return simulate_scrna(1500, n_genes=600, seed=0)


def _program_score(a, program):
    """Signed mean log-normalised expression of a program's genes."""
    X = a.X.toarray()
    X = np.log1p(X / X.sum(axis=1, keepdims=True) * 1e4)
    m = (a.var["program"] == program).to_numpy()
    return X[:, m] @ np.sign(a.var["loading"].to_numpy()[m]) / m.sum()


def test_shape_counts_and_metadata(rna):
    assert rna.shape == (1500, 600)
    X = rna.X
    assert X.format == "csr" and X.dtype == np.float32
    assert np.all(X.data == np.round(X.data)) and X.data.min() > 0
    assert 0.05 < X.nnz / (1500 * 600) < 0.9  # sparse, but not empty
    assert set(rna.var["program"].cat.categories) >= {"MITO", "LYSO", "CA_AIS", "HK", "SNCA"}
    assert "MITO_01" in rna.var_names and "CA_AIS_01" in rna.var_names
    assert {"genotype", "line", "gt_progression", "gt_death_stage", "source"} <= set(rna.obs)
    progs = rna.uns["simulate_scrna"]["programs"]
    assert rna.obsm["X_programs"].shape == (1500, len(progs))
    assert rna.uns["simulate_scrna"]["params"]["seed"] == 0


def test_deterministic_by_seed():
    a = simulate_scrna(200, n_genes=100, seed=3)
    b = simulate_scrna(200, n_genes=100, seed=3)
    c = simulate_scrna(200, n_genes=100, seed=4)
    assert (a.X != b.X).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs)
    assert (a.X != c.X).nnz > 0


@pytest.mark.parametrize(
    "program, factor",
    [
        ("MITO", "gt_mito_potential"),
        ("PROG", "gt_progression"),
        ("DEATH", "gt_death_stage"),
        ("CA_AIS", "gt_neurite_integrity"),
    ],
)
def test_program_follows_its_factor(rna, program, factor):
    # 20-80 genes per program at ~1.5 counts per gene: the program score averages out
    # the NB noise; with 1500 cells a correlation > 0.5 is far above the ~0.05 noise level
    # (measured 0.6-0.95 for these programs when written)
    r = np.corrcoef(_program_score(rna, program), rna.obs[factor].astype(float))[0, 1]
    assert r > 0.5


def test_genotypes_separable(rna):
    from sklearn.decomposition import PCA
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import NearestCentroid
    from sklearn.pipeline import make_pipeline

    X = rna.X.toarray()
    X = np.log1p(X / X.sum(axis=1, keepdims=True) * 1e4)
    clf = make_pipeline(PCA(20, random_state=0), NearestCentroid())
    acc = cross_val_score(clf, X, rna.obs["genotype"], cv=3).mean()
    assert acc > 0.7  # 4 balanced classes: chance 0.25 (measured 0.91 when written)


def test_factors_path_reproduces_labels():
    ph = phantom(40, 32, seed=2)
    a = simulate_scrna(factors=ph.obs, n_genes=80, seed=0)
    assert list(a.obs["source"]) == list(ph.obs.index)
    assert list(a.obs["genotype"]) == list(ph.obs["genotype"])
    assert list(a.obs["line"]) == list(ph.obs["line"])
    # phantom_factors draws exactly the phantom's ground truth, without images
    f = phantom_factors(40, size=32, seed=2)
    pd.testing.assert_frame_equal(f, ph.obs.drop(columns="cell_death_rate"))


def test_missing_factor_columns_make_programs_inactive():
    f = pd.DataFrame({"genotype": ["Control", "GBA"] * 20})
    a = simulate_scrna(factors=f, n_genes=80, seed=0)
    progs = a.uns["simulate_scrna"]["programs"]
    A = a.obsm["X_programs"]
    assert np.all(A[:, progs.index("MITO")] == 0)
    np.testing.assert_array_equal(A[:, progs.index("GBA")], [0, 1] * 20)
    assert "gt_mito_potential" in a.uns["simulate_scrna"]["missing_factors"]


def test_bad_arguments():
    with pytest.raises(SparsecellError, match="n_cells"):
        simulate_scrna(0)
    with pytest.raises(SparsecellError, match="n_genes"):
        simulate_scrna(10, n_genes=10)
    with pytest.raises(SparsecellError, match="genotype"):
        simulate_scrna(factors=pd.DataFrame({"x": [1, 2]}))
    with pytest.raises(SparsecellError, match="rows"):
        simulate_scrna(5, factors=phantom_factors(4))
    with pytest.raises(SparsecellError, match="NaN"):
        simulate_scrna(factors=pd.DataFrame({"genotype": ["a"], "gt_progression": [np.nan]}))
    with pytest.raises(SparsecellError, match="seed"):
        simulate_scrna(10, seed=-1)
