"""``sparsecell lab toy`` and ``sparsecell lab reproduce``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sparsecell.cli import app

runner = CliRunner()


def _one_error_line(r):
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("sparsecell: error: ")
    return lines[0]


def test_lab_toy_writes_summary_w_and_figure(tmp_path):
    out = tmp_path / "toy"
    args = ["lab", "toy", "--features", "24", "--hidden", "6", "--p", "0.05"]
    args += ["--steps", "300", "--sae-k", "2", "--sae-expansion", "4", "--sae-samples", "4000"]
    r = runner.invoke(app, [*args, "--seed", "0", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} == {
        "summary.json",
        "W.npy",
        "figure.png",
        "manifest.json",
    }
    W = np.load(out / "W.npy")
    assert W.shape == (6, 24)
    s = json.loads((out / "summary.json").read_text())
    assert s["n_features"] == 24 and s["n_hidden"] == 6
    assert s["features_per_dimension"] == pytest.approx(float(np.sum(W**2)) / 6)
    assert "sae_mean_max_cos" in s
    assert "features_per_dimension" in r.stdout and str(out) in r.stdout


@pytest.mark.parametrize(
    "bad, needle",
    [
        (["--hidden", "0"], "n_hidden"),
        (["--p", "2"], "p (probability"),
        (["--activation", "tanh"], "activation"),
        (["--sae-k", "0"], "--sae-k"),
    ],
)
def test_lab_toy_bad_input(tmp_path, bad, needle):
    out = tmp_path / "toy"
    r = runner.invoke(app, ["lab", "toy", "--steps", "5", *bad, "--out", str(out)])
    assert needle in _one_error_line(r)
    assert not out.exists()


def test_lab_reproduce_toy_quick(tmp_path):
    out = tmp_path / "r"
    r = runner.invoke(app, ["lab", "reproduce", "toy", "--quick", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert {"table.csv", "figure.png", "manifest.json", "summary.md"} <= {
        p.name for p in out.iterdir()
    }
    assert "semi_matching" in r.stdout and str(out) in r.stdout


def test_lab_reproduce_unknown_name(tmp_path):
    out = tmp_path / "r"
    r = runner.invoke(app, ["lab", "reproduce", "nope", "--out", str(out)])
    assert "unknown reproduction 'nope'" in _one_error_line(r)
    assert not out.exists()
