"""The ``phantom`` reproduction (arXiv 2606.31394's geometric contamination), quick size."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sparsecell import SparsecellError
from sparsecell.lab.reproductions import get
from sparsecell.lab.reproductions.phantom import COLUMNS, image_vectors, reproduce_phantom


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[pd.DataFrame, object]:
    out = tmp_path_factory.mktemp("repro") / "phantom"
    return reproduce_phantom(out, seed=0, quick=True), out


def test_quick_table_and_files(quick):
    table, out = quick
    assert list(table.columns) == COLUMNS
    assert set(table.genotype) == {"Control", "SNCA", "GBA", "LRRK2"}
    assert set(table.metric) == {"knn_ratio", "morans_i", "ridge_r2"}
    reps = set(table.representation)
    assert reps == {"cnn", "sae_gated_x4", "sae_gated_x16", "sae_topk_x4", "sae_topk_x16"}
    assert len(table) == 4 * 5 * 3
    assert np.all(np.isfinite(table.value.to_numpy(dtype=float)))
    assert table.better_than_cnn.dtype == bool
    # the paper's figures sit on SNCA's CNN and 16x Gated rows only
    paper = table[table.paper_value.notna()]
    assert set(paper.genotype) == {"SNCA"}
    assert set(paper.representation) == {"cnn", "sae_gated_x16"}
    # 200 units per genotype (800 balanced over 4)
    assert set(table.n_units) == {200}
    for name in ("table.csv", "figure.png", "manifest.json", "summary.md"):
        assert (out / name).stat().st_size > 0
    back = pd.read_csv(out / "table.csv")
    assert len(back) == len(table)
    man = json.loads((out / "manifest.json").read_text())
    assert man["kind"] == "sparsecell.lab.reproduce.phantom"
    assert man["seed"] == 0 and man["config"]["quick"] is True
    assert "direction held" in (out / "summary.md").read_text()


def test_better_than_cnn_matches_metric_direction(quick):
    table, _ = quick
    sae = table[table.representation != "cnn"]
    lower = sae.metric == "knn_ratio"
    expect = np.where(lower, sae.value < sae.cnn_value, sae.value > sae.cnn_value)
    assert np.array_equal(sae.better_than_cnn.to_numpy(), expect)


def test_sae_beats_cnn_where_it_held_across_seeds(quick):
    # Measured at the quick size over seeds 0, 1 and 2 (report of issue 4), two directions
    # held in every seed: the 16x Gated SAE (the paper's) has a lower kNN ratio than the
    # CNN in SNCA (the paper's genotype; CNN - SAE = 0.09, 0.12, 0.11), and every SAE has a
    # higher ridge R² than the CNN in LRRK2. Moran's I, and the other genotypes, flipped
    # between seeds, so they are not asserted. Margin 0: the claim is the direction.
    table, _ = quick
    knn = table[(table.metric == "knn_ratio") & (table.genotype == "SNCA")]
    g16 = knn[knn.representation == "sae_gated_x16"]
    assert len(g16) == 1 and bool(g16.better_than_cnn.iloc[0]), knn
    r2 = table[(table.metric == "ridge_r2") & (table.genotype == "LRRK2")]
    sae = r2[r2.representation != "cnn"]
    assert len(sae) == 4 and sae.better_than_cnn.all(), r2


def test_registry_returns_this_function():
    assert get("phantom") is reproduce_phantom


def test_own_tokens_path_and_image_vectors():
    rng = np.random.default_rng(0)
    n, P, d = 120, 4, 8
    s = rng.random(n)
    T = rng.standard_normal((n, P, d)).astype(np.float32) + s[:, None, None]
    obs = pd.DataFrame({"genotype": np.repeat(["a", "b"], n // 2), "cell_death_rate": s})
    table = reproduce_phantom(
        tokens=T,
        obs=obs,
        archs=("topk",),
        expansions=(2,),
        k=2,
        sae_epochs=2.0,
        metrics=("knn_ratio",),
        sae_batch_size=128,
    )
    assert set(table.genotype) == {"a", "b"}
    assert set(table.representation) == {"cnn", "sae_topk_x2"}
    # image vectors: mean over an image's tokens, dead latents dropped, unit L2 rows
    Z = sp.csr_matrix(np.array([[1.0, 0, 0], [3.0, 0, 0], [0, 0, 2.0], [0, 0, 0]]))
    V, live = image_vectors(Z, 2, 2)
    assert live == 2
    np.testing.assert_allclose(V, [[1.0, 0.0], [0.0, 1.0]])


def test_bad_options_raise():
    with pytest.raises(SparsecellError, match="unknown option"):
        reproduce_phantom(quick=True, n_unit=10)
    with pytest.raises(SparsecellError, match="obs"):
        reproduce_phantom(tokens=np.zeros((4, 2, 3)), obs=None)
    with pytest.raises(SparsecellError, match="unsupported metric"):
        reproduce_phantom(quick=True, metrics=("cka",))
