"""The `sparsecell` command: happy paths and one-line errors with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import sparsecell as spc
from sparsecell.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    r = run(
        "datasets",
        "sparse-features",
        "-o",
        str(d / "sf"),
        "--n-features",
        "128",
        "--d",
        "16",
        "--active",
        "3",
        "--n-samples",
        "4000",
    )
    assert r.exit_code == 0, r.output
    return d / "sf"


def _one_error_line(r) -> str:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("sparsecell: error: ")
    return lines[0]


def test_help_lists_stages():
    r = run("--help")
    assert r.exit_code == 0
    for cmd in ("sae", "datasets", "demo"):
        assert cmd in r.output
    r = run("sae", "--help")
    for cmd in ("train", "eval", "sweep"):
        assert cmd in r.output


def test_train_eval_roundtrip(data_dir, tmp_path):
    X = np.load(data_dir / "X.npy")
    assert X.shape == (4000, 16)
    out = tmp_path / "m"
    r = run(
        "sae",
        "train",
        "-i",
        str(data_dir / "X.npy"),
        "-o",
        str(out),
        "--k",
        "3",
        "--expansion",
        "4",
        "--epochs",
        "3",
        "--batch-size",
        "256",
        "-q",
    )
    assert r.exit_code == 0, r.output
    assert "fvu" in r.output and "model written to" in r.output
    assert (out / "model.safetensors").exists() and (out / "cfg.json").exists()
    r = run(
        "sae",
        "eval",
        "-m",
        str(out),
        "-i",
        str(data_dir / "X.npy"),
        "--json",
        str(tmp_path / "ev.json"),
    )
    assert r.exit_code == 0, r.output
    ev = json.loads((tmp_path / "ev.json").read_text())
    # the CLI evaluates the same model on the same data as the API does
    api = spc.sae.evaluate(spc.sae.load(out), X)
    assert ev["fvu"] == pytest.approx(api["fvu"], rel=1e-9)
    assert ev["l0"] <= 3.0


def test_train_from_h5ad_obsm(tmp_path):
    import anndata as ad

    X = spc.datasets.sparse_features(64, 8, active=2, n_samples=2000, seed=2).X
    a = ad.AnnData(np.zeros((2000, 1), np.float32))
    a.obsm["X_cnn"] = X
    a.write_h5ad(tmp_path / "e.h5ad")
    r = run(
        "sae",
        "train",
        "-i",
        str(tmp_path / "e.h5ad"),
        "--obsm",
        "X_cnn",
        "-o",
        str(tmp_path / "m"),
        "--k",
        "2",
        "--expansion",
        "4",
        "--epochs",
        "2",
        "--batch-size",
        "256",
        "-q",
    )
    assert r.exit_code == 0, r.output
    assert spc.sae.load(tmp_path / "m").d_in == 8
    r = run(
        "sae",
        "train",
        "-i",
        str(tmp_path / "e.h5ad"),
        "--obsm",
        "X_umap",
        "-o",
        str(tmp_path / "m2"),
    )
    line = _one_error_line(r)
    assert "X_cnn" in line  # names the keys that exist
    assert not (tmp_path / "m2").exists()


def test_sweep_writes_frontier(data_dir, tmp_path):
    out = tmp_path / "sw"
    r = run(
        "sae",
        "sweep",
        "-i",
        str(data_dir / "X.npy"),
        "-o",
        str(out),
        "--values",
        "2,6",
        "--expansion",
        "4",
        "--epochs",
        "10",
        "--batch-size",
        "256",
        "-q",
    )
    assert r.exit_code == 0, r.output
    import pandas as pd

    df = pd.read_csv(out / "frontier.csv")
    assert list(df["k"]) == [2, 6]
    assert (out / "frontier.png").stat().st_size > 1000
    assert df["fvu"].iloc[1] < df["fvu"].iloc[0]  # more latents per sample, better fit


@pytest.mark.parametrize(
    "case, needle",
    [
        ("nan", "row 7 contains NaN"),
        ("empty", "empty"),
        ("k_too_big", "smaller than the number of latents"),
        ("bad_arch", "unknown SAE architecture"),
        ("bad_ext", "unsupported input format"),
        ("missing", "not found"),
        ("one_d", "1-D array"),
    ],
)
def test_train_bad_input(tmp_path, case, needle):
    X = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    extra: list[str] = []
    path = tmp_path / "X.npy"
    if case == "nan":
        X[7, 3] = np.nan
    if case == "empty":
        X = X[:0]
    if case == "k_too_big":
        extra = ["--k", "40", "--expansion", "4"]
    if case == "bad_arch":
        extra = ["--arch", "sparsest"]
    if case == "one_d":
        X = X[:, 0]
    if case == "bad_ext":
        path = tmp_path / "X.csv"
        path.write_text("1,2\n")
    elif case != "missing":
        np.save(path, X)
    if case == "missing":
        path = tmp_path / "nothing.npy"
    out = tmp_path / "out"
    r = run("sae", "train", "-i", str(path), "-o", str(out), "--steps", "5", "-q", *extra)
    assert needle in _one_error_line(r)
    assert not out.exists(), "a failed run must not leave an output folder"


def test_nonfinite_loss_is_reported_and_nothing_written(tmp_path):
    X = np.random.default_rng(0).standard_normal((1024, 8)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    out = tmp_path / "out"
    r = run(
        "sae",
        "train",
        "-i",
        str(tmp_path / "X.npy"),
        "-o",
        str(out),
        "--arch",
        "relu",
        "--lr",
        "1e12",
        "--steps",
        "50",
        "--batch-size",
        "128",
        "-q",
    )
    assert "non-finite" in _one_error_line(r)
    assert not out.exists()


def test_eval_wrong_dimension(data_dir, tmp_path):
    out = tmp_path / "m"
    r = run(
        "sae",
        "train",
        "-i",
        str(data_dir / "X.npy"),
        "-o",
        str(out),
        "--k",
        "2",
        "--expansion",
        "2",
        "--steps",
        "5",
        "--batch-size",
        "256",
        "-q",
    )
    assert r.exit_code == 0, r.output
    np.save(tmp_path / "Y.npy", np.zeros((10, 9), np.float32))
    r = run("sae", "eval", "-m", str(out), "-i", str(tmp_path / "Y.npy"))
    assert "has 9 features but this SAE expects 16" in _one_error_line(r)


def test_eval_missing_model(data_dir, tmp_path):
    r = run("sae", "eval", "-m", str(tmp_path / "none"), "-i", str(data_dir / "X.npy"))
    assert "no SAE checkpoint" in _one_error_line(r)


def test_demo_recovers_features(tmp_path):
    r = run("demo", "-o", str(tmp_path / "demo"), "-q")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    # the demo's promise: the SAE finds the 512 planted features (measured 0.997)
    assert m["mean_max_cos"] >= 0.9
    assert "results:" in r.output
