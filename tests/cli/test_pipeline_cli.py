"""Images → units → encoder → embeddings → SAE from the command line, on a real TIFF."""

from __future__ import annotations

import shutil

import anndata as ad
import pandas as pd
import pytest
from typer.testing import CliRunner

import sparsecell as spc
from sparsecell.cli import app

runner = CliRunner()


def _ok(*args: str):
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, (args, r.output, r.stderr)
    return r


def test_real_tiff_to_sae(tmp_path):
    try:
        src = spc.images.sample_neuron_path()
    except spc.SparsecellError:
        pytest.skip("ndev-sampledata is not installed")
    (tmp_path / "img").mkdir()
    shutil.copy(src, tmp_path / "img" / "neuron.tiff")
    img, units = str(tmp_path / "img"), str(tmp_path / "units")
    _ok("images", "qc", "-d", img, "-o", str(tmp_path / "qc.csv"), "-q")
    qc = pd.read_csv(tmp_path / "qc.csv")
    assert list(qc["status"]) == ["ok"]
    r = _ok("images", "patch", "-d", img, "-o", units, "-q")
    assert "12 units of 4 channels" in r.output  # 623//128 × 502//128 patches
    # width 8 at 128×128 is the shape that crashed torch's channels_last CPU backward
    _ok(
        "encode",
        "train",
        "-u",
        units,
        "-o",
        str(tmp_path / "enc"),
        "--mode",
        "selfsup",
        "--width",
        "8",
        "--embed-dim",
        "8",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "-q",
    )
    _ok(
        "encode",
        "embed",
        "-m",
        str(tmp_path / "enc"),
        "-u",
        units,
        "-o",
        str(tmp_path / "emb.h5ad"),
        "-q",
    )
    a = ad.read_h5ad(tmp_path / "emb.h5ad")
    assert a.obsm["X_cnn"].shape == (12, 8)
    _ok(
        "sae",
        "train",
        "-i",
        str(tmp_path / "emb.h5ad"),
        "--obsm",
        "X_cnn",
        "-o",
        str(tmp_path / "sae"),
        "--k",
        "2",
        "--expansion",
        "4",
        "--batch-size",
        "4",
        "--epochs",
        "3",
        "-q",
    )
    assert spc.sae.load(tmp_path / "sae").d_in == 8


def test_patch_refuses_bad_mode(tmp_path):
    r = runner.invoke(
        app, ["images", "patch", "-d", str(tmp_path), "-o", str(tmp_path / "u"), "--mode", "blob"]
    )
    assert r.exit_code == 2 and "--mode 'blob'" in r.stderr


def test_phantom_fields_to_embeddings(tmp_path):
    """The README's image walk-through on the built-in phantom, end to end."""
    data, units = str(tmp_path / "data"), str(tmp_path / "units")
    _ok("images", "phantom", "--out", data, "--fields", "4", "-q")
    r = _ok(
        "images",
        "patch",
        "-d",
        data,
        "--metadata",
        f"{data}/metadata.csv",
        "-o",
        units,
        "--dead-channel",
        "dead",
        "-q",
    )
    assert "4 fields" in r.output and "(mito, lyso, nuclei, dead)" in r.output
    shards = spc.images.open_shards(units)
    assert {"genotype", "line", "cell_death_rate"} <= set(shards.obs.columns)
    assert shards.obs["genotype"].nunique() == 4  # 4 fields cycle through the genotypes
    _ok(
        "encode",
        "train",
        "-u",
        units,
        "-o",
        str(tmp_path / "enc"),
        "--label-key",
        "genotype",
        "--width",
        "8",
        "--embed-dim",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "-q",
    )
    enc = spc.encode.load(tmp_path / "enc")
    assert "dead" not in enc.cfg.channels  # the dead-cell stain is a label, not an input
    _ok(
        "encode",
        "embed",
        "-m",
        str(tmp_path / "enc"),
        "-u",
        units,
        "-o",
        str(tmp_path / "emb"),
        "-q",
    )
    assert (tmp_path / "emb" / "embeddings.npy").exists()


def test_phantom_units_to_shards(tmp_path):
    _ok("images", "phantom", "--out", str(tmp_path / "u"), "--n-units", "40", "--size", "32", "-q")
    s = spc.images.open_shards(tmp_path / "u")
    assert len(s) == 40 and s.channels == ["mito", "lyso", "nuclei", "dead"]
    assert s[0:2].shape == (2, 4, 32, 32)
    assert any(c.startswith("gt_") for c in s.obs.columns)
