"""Checkpoints: safetensors + JSON, exact round trips, atomic replacement, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_helpers import ARCHS

import sparsecell as spc
import sparsecell._checkpoint
from sparsecell.sae import checkpoint


def _leftovers(folder: Path) -> list[str]:
    """Hidden temporary/backup folders that an atomic write must never leave behind."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip(arch, trained, toy, tmp_path):
    sae = trained(arch)
    sae.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["cfg.json", "model.safetensors"]
    cfg = json.loads((tmp_path / "m" / "cfg.json").read_text())
    assert cfg["schema_version"] == checkpoint.SCHEMA_VERSION == 1
    assert cfg["arch"] == arch and cfg["sae"]["arch"] == arch
    assert cfg["metrics"]["fvu"] == sae.metrics["fvu"]
    assert cfg["train"]["seed"] == 0
    back = spc.sae.load(tmp_path / "m")
    assert type(back) is type(sae)
    assert back.cfg == sae.cfg
    assert back.metrics == sae.metrics
    assert back.train_config == sae.train_config
    assert not back.training
    sd, bd = sae.state_dict(), back.state_dict()
    assert sd.keys() == bd.keys()
    for k in sd:
        assert torch.equal(sd[k], bd[k]), k
    X = toy.X[:500]
    Z0, Z1 = sae.encode(X), back.encode(X)
    assert (Z0 != Z1).nnz == 0
    np.testing.assert_array_equal(sae.reconstruct(X), back.reconstruct(X))


def test_batchtopk_threshold_is_saved(trained, tmp_path):
    sae = trained("batchtopk")
    sae.save(tmp_path / "m")
    assert float(spc.sae.load(tmp_path / "m").threshold) == float(sae.threshold) > 0


def test_train_with_out_writes_a_loadable_checkpoint(toy, tmp_path):
    sae = spc.sae.train(
        toy.X, k=3, expansion=4, steps=20, batch_size=256, progress=False, out=tmp_path / "run"
    )
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"model.safetensors", "cfg.json"} <= names
    assert _leftovers(tmp_path) == []
    back = spc.sae.load(tmp_path / "run")
    assert (back.encode(toy.X[:300]) != sae.encode(toy.X[:300])).nnz == 0


def test_failed_save_keeps_the_old_checkpoint(trained, tmp_path, monkeypatch):
    target = tmp_path / "m"
    trained("topk").save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    # the weights are written by the shared checkpoint writer
    monkeypatch.setattr(sparsecell._checkpoint, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        trained("relu").save(target)
    after = {p.name: p.read_bytes() for p in target.iterdir()}
    assert after == before
    assert _leftovers(tmp_path) == []
    assert spc.sae.load(target).arch == "topk"


def test_save_replaces_an_existing_checkpoint(trained, tmp_path):
    target = tmp_path / "m"
    trained("topk").save(target)
    (target / "stale.txt").write_text("from the old run")
    trained("relu").save(target)
    assert spc.sae.load(target).arch == "relu"
    assert not (target / "stale.txt").exists()  # replaced as a whole, not merged
    assert _leftovers(tmp_path) == []


def test_load_missing_or_incomplete_folder(tmp_path):
    with pytest.raises(spc.SparsecellError, match="no SAE checkpoint"):
        spc.sae.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(spc.SparsecellError, match="no SAE checkpoint"):
        spc.sae.load(tmp_path / "empty")


def test_load_without_weights_file(trained, tmp_path):
    trained("topk").save(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(spc.SparsecellError, match="no SAE checkpoint"):
        spc.sae.load(tmp_path / "m")


@pytest.mark.parametrize("version", [2, 0, None, "1"])
def test_load_rejects_other_schema_versions(version, trained, tmp_path):
    trained("topk").save(tmp_path / "m")
    f = tmp_path / "m" / "cfg.json"
    cfg = json.loads(f.read_text())
    if version is None:
        del cfg["schema_version"]
    else:
        cfg["schema_version"] = version
    f.write_text(json.dumps(cfg))
    with pytest.raises(spc.SparsecellError, match="schema version"):
        spc.sae.load(tmp_path / "m")


def test_load_rejects_invalid_json(trained, tmp_path):
    trained("topk").save(tmp_path / "m")
    (tmp_path / "m" / "cfg.json").write_text("{not json")
    with pytest.raises(spc.SparsecellError, match="not valid JSON"):
        spc.sae.load(tmp_path / "m")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_load_rejects_damaged_weights(damage, trained, tmp_path):
    trained("topk").save(tmp_path / "m")
    f = tmp_path / "m" / "model.safetensors"
    b = f.read_bytes()
    f.write_bytes(b[: len(b) // 2] if damage == "truncate" else b"garbage")
    with pytest.raises(spc.SparsecellError, match="cannot load weights"):
        spc.sae.load(tmp_path / "m")


def test_load_rejects_weights_of_another_shape(trained, tmp_path):
    trained("topk").save(tmp_path / "m")
    f = tmp_path / "m" / "cfg.json"
    cfg = json.loads(f.read_text())
    cfg["sae"]["d_sae"] = 64
    f.write_text(json.dumps(cfg))
    with pytest.raises(spc.SparsecellError, match="cannot load weights"):
        spc.sae.load(tmp_path / "m")


def test_load_rejects_unknown_arch(trained, tmp_path):
    trained("topk").save(tmp_path / "m")
    f = tmp_path / "m" / "cfg.json"
    cfg = json.loads(f.read_text())
    cfg["arch"] = "transcoder"
    f.write_text(json.dumps(cfg))
    with pytest.raises(spc.SparsecellError, match="unknown SAE architecture 'transcoder'"):
        spc.sae.load(tmp_path / "m")
