"""`sparsecell gwmap modules`: couple-then-predict and gene modules from the command line."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sparsecell.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["gwmap", "modules", *args])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """RNA cells from simulate_scrna and image cells whose features mix its program activities.

    Image cell i is RNA cell perm[i] (the known pairing); the coupling holds exactly that.
    """
    from sparsecell.datasets import simulate_scrna
    from sparsecell.gwmap.result import GWResult

    d = tmp_path_factory.mktemp("gwmods")
    rna = simulate_scrna(300, n_genes=160, seed=0)
    rng = np.random.default_rng(0)
    perm = rng.permutation(rna.n_obs)
    A = np.asarray(rna.obsm["X_programs"])[perm]
    feats = A @ rng.normal(size=(A.shape[1], 10)) + 0.3 * rng.normal(size=(A.shape[0], 10))
    img = ad.AnnData(
        obs=pd.DataFrame(
            {"genotype": rna.obs["genotype"].to_numpy()[perm]},
            index=[f"i{j}" for j in range(rna.n_obs)],
        )
    )
    img.obsm["X_sae_pca"] = feats
    img.write_h5ad(d / "img.h5ad")
    rna.write_h5ad(d / "rna.h5ad")
    T = np.zeros((rna.n_obs, rna.n_obs))
    T[np.arange(rna.n_obs), perm] = 1.0 / rna.n_obs
    GWResult.from_coupling(T, img.obs, rna.obs).write(d / "align")
    np.savez_compressed(d / "coupling.npz", coupling=T)
    return d


def test_roundtrip_from_align_folder(files, tmp_path):
    out = tmp_path / "mods"
    r = run(
        "--result", str(files / "align"), "--image", str(files / "img.h5ad"),
        "--rna", str(files / "rna.h5ad"), "--rep-image", "X_sae_pca",
        "--genes", "100", "--permutations", "20", "--resolutions", "0.5,1",
        "--k", "8", "--min-size", "3", "--out", str(out),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "predictable at z ≥ 3" in r.output and "modules per resolution" in r.output
    df = pd.read_csv(out / "predictions.csv", index_col=0)
    assert len(df) == 100 and {"r", "z", "p", "n"} <= set(df.columns)
    # program genes are driven by the activities the image features encode; background
    # genes (GENE_*) by nothing: the median program gene beats every background gene's r
    prog = df[~df.index.str.startswith(("GENE_", "HK_"))]
    bg = df[df.index.str.startswith("GENE_")]
    assert len(prog) > 10 and len(bg) > 5
    assert prog["r"].median() > bg["r"].max()
    assert (prog["z"] >= 3).sum() >= 10
    files_out = {p.name for p in (out / "modules").iterdir()}
    assert {"table.csv", "tree.csv", "tree.nwk", "figure.png", "manifest.json"} <= files_out
    table = pd.read_csv(out / "modules" / "table.csv")
    assert set(table["gene"]) == set(df.index[df["z"] >= 3])
    man = json.loads((out / "manifest.json").read_text())
    assert man["kind"] == "gwmap.modules" and man["config"]["permutations"] == 20


def test_coupling_file_and_groups(files, tmp_path):
    common = [
        "--result", str(files / "coupling.npz"), "--image", str(files / "img.h5ad"),
        "--rna", str(files / "rna.h5ad"), "--rep-image", "X_sae_pca", "--genes", "0",
        "--permutations", "20", "--resolutions", "1",
    ]  # fmt: skip
    r = run(*common, "--out", str(tmp_path / "pooled"))
    assert r.exit_code == 0, r.output
    r = run(
        *common, "--groups", "genotype", "--modules-on", "rna", "--out", str(tmp_path / "within")
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "within" / "modules" / "tree.nwk").exists()
    man = json.loads((tmp_path / "within" / "manifest.json").read_text())
    assert man["predict_params"]["groups"] == ["Control", "GBA", "LRRK2", "SNCA"]
    assert man["predict_params"]["null"] == "rna" and man["config"]["null"] == "rna"
    r = run(*common, "--null", "image", "--out", str(tmp_path / "imgnull"))
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "imgnull" / "manifest.json").read_text())
    assert man["predict_params"]["null"] == "image"
    r = run(*common, "--rna-groups", "genotype", "--out", str(tmp_path / "rnagroups"))
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "rnagroups" / "manifest.json").read_text())
    assert "within rna_groups" in man["predict_params"]["permutation"]
    pooled = pd.read_csv(tmp_path / "pooled" / "predictions.csv", index_col=0)
    within = pd.read_csv(tmp_path / "within" / "predictions.csv", index_col=0)
    # SNCA/LRRK2 program genes differ between genotypes only (the image features carry the
    # genotype through the program activities): predictable when pooled (median z ≈ 7 in a
    # reference run), not within genotype (median z ≈ 1); thresholds 3 leave wide margins
    geno = pooled.index.str.startswith(("SNCA_", "LRRK2_"))
    assert geno.sum() >= 4
    assert pooled.loc[geno, "z"].median() > 3
    assert within.loc[geno, "z"].median() < 3


def _one_error_line(r) -> str:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("sparsecell: error: ")
    return lines[0]


def test_errors_exit_2_and_write_nothing(files, tmp_path):
    out = tmp_path / "bad"
    small = ad.read_h5ad(files / "rna.h5ad")[:50].copy()
    small.write_h5ad(tmp_path / "small.h5ad")
    r = run(
        "--result", str(files / "coupling.npz"), "--image", str(files / "img.h5ad"),
        "--rna", str(tmp_path / "small.h5ad"), "--out", str(out),
    )  # fmt: skip
    assert "coupling is 300 × 300" in _one_error_line(r)
    assert not out.exists()
    r = run(
        "--result", str(files / "coupling.npz"), "--image", str(files / "img.h5ad"),
        "--rna", str(files / "rna.h5ad"), "--rep-image", "nope", "--out", str(out),
    )  # fmt: skip
    assert "--rep-image" in _one_error_line(r)
    r = run(
        "--result", str(files / "coupling.npz"), "--image", str(files / "img.h5ad"),
        "--rna", str(files / "rna.h5ad"), "--resolutions", "a,b", "--out", str(out),
    )  # fmt: skip
    assert "--resolutions" in _one_error_line(r)
    base = [
        "--result", str(files / "coupling.npz"), "--image", str(files / "img.h5ad"),
        "--rna", str(files / "rna.h5ad"), "--rep-image", "X_sae_pca", "--out", str(out),
    ]  # fmt: skip
    assert "--null" in _one_error_line(run(*base, "--null", "cells"))
    assert "--rna-groups 'donor'" in _one_error_line(run(*base, "--rna-groups", "donor"))
    assert not out.exists() and not any(tmp_path.glob(".bad*"))
