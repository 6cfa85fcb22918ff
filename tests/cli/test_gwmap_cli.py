"""`sparsecell gwmap align`: round trip on a toy pair, errors exit 2 and write nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from sparsecell.cli import app
from sparsecell.gwmap.metrics import foscttm
from sparsecell.gwmap.result import GWResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gwmap"))
from gwmap_align_helpers import TOY_EPS, toy_pair  # noqa: E402

runner = CliRunner()


def _inputs(tmp_path):
    img, rna, truth = toy_pair()
    img.write_h5ad(tmp_path / "img.h5ad")
    rna.write_h5ad(tmp_path / "rna.h5ad")
    return truth


def _args(tmp_path, *extra):
    return [
        "gwmap", "align",
        "--image", str(tmp_path / "img.h5ad"),
        "--rna", str(tmp_path / "rna.h5ad"),
        "--out", str(tmp_path / "out"),
        "--epsilon", str(TOY_EPS),
        "--max-iter", "30",
        "-q",
        *extra,
    ]  # fmt: skip


def test_align_round_trip(tmp_path):
    truth = _inputs(tmp_path)
    r = runner.invoke(
        app, _args(tmp_path, "--rep-rna", "X_rep", "--transfer", "ct", "--transfer-mode", "hard")
    )
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    assert "objective" in r.output and "label_transfer_accuracy" in r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["label_transfer_accuracy"] == 1.0  # exact isometry, hard transfer
    labels = pd.read_csv(out / "labels.csv", index_col="cell")
    assert list(labels.columns) == ["label", "confidence"] and len(labels) == 40
    res = GWResult.read(out)
    assert foscttm(res.coupling, truth=truth) < 0.01
    assert res.params["epsilon"] == TOY_EPS
    assert json.loads((out / "manifest.json").read_text())["kind"] == "gwmap_result"
    np.testing.assert_allclose(res.coupling.sum(), 1.0, rtol=1e-4)


def test_errors_exit_2_and_write_nothing(tmp_path):
    _inputs(tmp_path)
    for extra, msg in [
        (["--rep-rna", "X_nope"], "not an obsm key"),
        (["--transfer", "nope"], "not an obs column"),
        (["--cost", "cosine"], "unknown"),
        (["--n-pcs", "99"], "too large"),
    ]:
        r = runner.invoke(app, _args(tmp_path, *extra))
        assert r.exit_code == 2, r.output
        assert "sparsecell: error:" in r.output and msg in r.output
        assert not (tmp_path / "out").exists()
    args = _args(tmp_path)
    args[args.index("--image") + 1] = str(tmp_path / "missing.h5ad")
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "not found" in r.output
    assert not (tmp_path / "out").exists()
