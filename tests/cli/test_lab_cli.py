"""CLI of the lab metrics and of `sae encode` (latents to .npz)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

import sparsecell as spc
from sparsecell.cli import app

runner = CliRunner()


def test_sae_encode_then_align(tmp_path):
    data = spc.datasets.sparse_features(64, 16, active=3, n_samples=1500, seed=0)
    np.save(tmp_path / "X.npy", data.X)
    r = runner.invoke(
        app,
        [
            "sae",
            "train",
            "-i",
            str(tmp_path / "X.npy"),
            "-o",
            str(tmp_path / "m"),
            "--k",
            "3",
            "--expansion",
            "4",
            "--epochs",
            "3",
            "--batch-size",
            "256",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "sae",
            "encode",
            "-m",
            str(tmp_path / "m"),
            "-i",
            str(tmp_path / "X.npy"),
            "-o",
            str(tmp_path / "Z.npz"),
        ],
    )
    assert r.exit_code == 0, r.output
    Z = sp.load_npz(tmp_path / "Z.npz")
    api = spc.sae.load(tmp_path / "m").encode(data.X)
    assert (Z != api).nnz == 0  # the file holds exactly the API's codes
    r = runner.invoke(
        app,
        [
            "lab",
            "align",
            "--a",
            str(tmp_path / "Z.npz"),
            "--b",
            str(tmp_path / "Z.npz"),
            "--metric",
            "semi_matching",
            "--json",
            str(tmp_path / "a.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "a.json").read_text())
    # a representation against itself: every unit matches itself exactly
    assert res["score"] == pytest.approx(1.0, abs=1e-6)
    assert len(res["per_fold"]) == 5


def test_fidelity_with_semantic_column(tmp_path):
    rng = np.random.default_rng(0)
    E = rng.standard_normal((600, 5)).astype(np.float32)
    np.save(tmp_path / "E.npy", E)
    pd.DataFrame({"death": E[:, 0] * 2.0, "noise": rng.standard_normal(600)}).to_csv(
        tmp_path / "obs.csv", index=False
    )
    out = {}
    for col in ("death", "noise"):
        r = runner.invoke(
            app,
            [
                "lab",
                "fidelity",
                "-i",
                str(tmp_path / "E.npy"),
                "--semantic",
                f"{tmp_path / 'obs.csv'}:{col}",
                "--json",
                str(tmp_path / f"{col}.json"),
            ],
        )
        assert r.exit_code == 0, r.output
        out[col] = json.loads((tmp_path / f"{col}.json").read_text())["score"]
    # a variable that is a coordinate of E is locally smooth; pure noise is not
    assert out["death"] < 0.5 < out["noise"]


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("obs.csv:missing", "not in obs.csv"),
        ("nofile.csv:x", "not found"),
        ("justtext", "FILE:COLUMN"),
    ],
)
def test_fidelity_bad_semantic(tmp_path, spec, needle):
    np.save(tmp_path / "E.npy", np.zeros((20, 3), np.float32))
    pd.DataFrame({"x": np.arange(20)}).to_csv(tmp_path / "obs.csv", index=False)
    spec = spec.replace("obs.csv", str(tmp_path / "obs.csv")).replace(
        "nofile.csv", str(tmp_path / "nofile.csv")
    )
    r = runner.invoke(app, ["lab", "fidelity", "-i", str(tmp_path / "E.npy"), "--semantic", spec])
    assert r.exit_code == 2
    assert needle in r.stderr and r.stderr.startswith("sparsecell: error: ")


def test_align_unknown_metric(tmp_path):
    np.save(tmp_path / "A.npy", np.random.default_rng(0).standard_normal((50, 4)))
    r = runner.invoke(
        app,
        [
            "lab",
            "align",
            "--a",
            str(tmp_path / "A.npy"),
            "--b",
            str(tmp_path / "A.npy"),
            "--metric",
            "magic",
        ],
    )
    assert r.exit_code == 2 and "magic" in r.stderr


@pytest.mark.parametrize("inner", ["loo", "gcv"])
def test_align_ridge_inner_cv_option(tmp_path, inner):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((300, 6))
    np.save(tmp_path / "A.npy", A)
    np.save(
        tmp_path / "B.npy", A @ rng.standard_normal((6, 4)) + 0.1 * rng.standard_normal((300, 4))
    )
    args = ["lab", "align", "--a", str(tmp_path / "A.npy"), "--b", str(tmp_path / "B.npy")]
    r = runner.invoke(
        app, [*args, "--metric", "ridge", "--inner-cv", inner, "--json", str(tmp_path / "r.json")]
    )
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["params"]["inner_cv"] == inner
    assert res["score"] > 0.9  # B is a noisy linear map of A
    bad = runner.invoke(app, [*args, "--metric", "ridge", "--inner-cv", "kfold"])
    assert bad.exit_code == 2 and "kfold" in bad.stderr and "gcv" in bad.stderr


def test_align_mutual_knn_k_option(tmp_path):
    rng = np.random.default_rng(2)
    np.save(tmp_path / "A.npy", rng.standard_normal((200, 5)))
    args = ["lab", "align", "--a", str(tmp_path / "A.npy"), "--b", str(tmp_path / "A.npy")]
    r = runner.invoke(
        app, [*args, "--metric", "mutual_knn", "--k", "7", "--json", str(tmp_path / "m.json")]
    )
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m.json").read_text())["score"] == 1.0  # itself


def test_device_option_reaches_the_metrics_and_a_missing_gpu_is_a_clear_error(
    tmp_path, monkeypatch
):
    import torch

    from sparsecell.lab import _accel

    rng = np.random.default_rng(3)
    A = rng.standard_normal((120, 5))
    np.save(tmp_path / "A.npy", A)
    pd.DataFrame({"s": A[:, 0]}).to_csv(tmp_path / "obs.csv", index=False)
    align = ["lab", "align", "--a", str(tmp_path / "A.npy"), "--b", str(tmp_path / "A.npy")]
    fid = ["lab", "fidelity", "--input", str(tmp_path / "A.npy")]
    fid += ["--semantic", f"{tmp_path / 'obs.csv'}:s"]
    asked = []
    real = _accel.lab_device
    monkeypatch.setattr(_accel, "lab_device", lambda d: asked.append(d) or real(d))
    for args in (align + ["--metric", "cka"], fid):
        r = runner.invoke(app, [*args, "--device", "cpu"])
        assert r.exit_code == 0, r.output
    assert asked and set(asked) == {"cpu"}
    if not torch.cuda.is_available():
        for args in (align + ["--metric", "cka"], fid):
            r = runner.invoke(app, [*args, "--device", "cuda"])
            assert r.exit_code == 2 and "no GPU is visible" in r.stderr
            assert r.stderr.startswith("sparsecell: error: ")
