"""Reproductions ``toy`` and ``digits`` (quick configurations): tables, files, and the
direction of the measured effect.

Measured direction (docs/lab.md): on the quick toy configuration (relu, 16 neurons; seeds
0, 1, 2) and on digits (seeds 0, 1, 2) SAE latents do NOT raise semi-matching above the
neurons' — the paper's expectation fails there (in the full toy run it holds only at 32
relu neurons and 16/32 linear neurons). The tests assert what does hold: the toy models
are in superposition (neurons' semi-matching far below 1), most SAE latents are alive, the
digit nets are accurate, and the measured sign, so that a change which flips it is noticed
(and documented) rather than missed.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sparsecell import SparsecellError
from sparsecell.lab import reproductions

COLUMNS = {"representation", "metric", "score", "score_sd", "holds", "delta_sae_minus_neurons"}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "toy"
    return out, reproductions.get("toy")(out, seed=0, quick=True)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "digits"
    return out, reproductions.get("digits")(out, seed=0, quick=True)


def _files(out, name):
    assert {p.name for p in out.iterdir()} == {
        "table.csv",
        "figure.png",
        "manifest.json",
        "summary.md",
    }
    man = json.loads((out / "manifest.json").read_text())
    assert man["kind"] == f"sparsecell.lab.reproduce.{name}" and man["seed"] == 0
    assert man["config"]["quick"] is True
    return pd.read_csv(out / "table.csv")


def test_toy_table_and_files(toy_run):
    out, table = toy_run
    assert COLUMNS | {"n_hidden", "hidden_activation", "sae_mean_max_cos"} <= set(table.columns)
    assert set(table["representation"]) == {"neurons", "sae"}
    assert list(table["n_hidden"].unique()) == [16]
    disk = _files(out, "toy")
    assert len(disk) == len(table)
    pd.testing.assert_series_equal(disk["score"], table["score"], check_names=False)
    assert "Claim" in (out / "summary.md").read_text()


def test_toy_what_holds(toy_run):
    _, table = toy_run
    sm = table[table["metric"] == "semi_matching"].set_index("representation")
    # 64 features in 16 neurons in different arrangements: neuron matching is poor
    # (measured 0.25 for seeds 0-2; bound 0.5)
    assert sm.loc["neurons", "score"] < 0.5
    assert sm.loc["sae", "n_units_a"] > 100  # most of the 128 latents are alive
    # measured sign on the quick configuration (seeds 0, 1, 2: -0.10 to -0.12, fold sd
    # about 0.01): the SAE latents score below the neurons
    assert sm.loc["sae", "score"] < sm.loc["neurons", "score"]
    assert not sm.loc["sae", "holds"]


def test_digits_table_and_what_holds(digits_run):
    out, table = digits_run
    assert COLUMNS | {"layer", "acc_a", "acc_b", "sae_fvu"} <= set(table.columns)
    disk = _files(out, "digits")
    assert len(disk) == len(table)
    # both MLPs classify held-out digits well (measured 0.96-0.97)
    assert table["acc_a"].iloc[0] > 0.9 and table["acc_b"].iloc[0] > 0.9
    assert table["sae_fvu"].iloc[0] < 0.2  # measured 0.03
    sm = table[table["metric"] == "semi_matching"].set_index("representation")
    # neurons of two nets match well (measured 0.83); SAE latents far less (measured 0.38,
    # 0.42 for seeds 0, 1): the paper's expected increase does not hold here
    assert sm.loc["neurons", "score"] > 0.6
    assert sm.loc["sae", "score"] < sm.loc["neurons", "score"]
    text = (out / "summary.md").read_text()
    assert "Test accuracy" in text and "does NOT hold" in text


def test_bad_options_raise(tmp_path):
    with pytest.raises(SparsecellError, match="unknown option"):
        reproductions.get("toy")(tmp_path / "x", quick=True, no_such=1)
    with pytest.raises(SparsecellError, match="metric"):
        reproductions.get("digits")(tmp_path / "y", quick=True, metrics=("cosine",))
    with pytest.raises(SparsecellError, match="unknown reproduction"):
        reproductions.get("nope")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
