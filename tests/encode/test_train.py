"""Training: the encoder learns image statistics; arrays and shards; bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from encode_helpers import TINY, FakeShards, make_blobs

import sparsecell.encode as enc
from sparsecell import SparsecellError


def test_supcon_probe_beats_chance(trained):
    m = trained.metrics
    # 3 balanced classes (chance 1/3). Tolerance: at least chance + 0.4 for the linear probe
    # and chance + 0.3 for kNN on the 60 held-out units (observed: 1.0 and ~1.0).
    assert m["chance"] == pytest.approx(1 / 3, abs=0.05)
    assert m["linear_acc"] >= m["chance"] + 0.4
    assert m["knn_acc"] >= m["chance"] + 0.3
    assert m["n_heldout"] == 60 and m["n_train"] == 240
    assert m["steps"] == 4 * (240 // 64) and len(m["loss_per_epoch"]) == 4
    assert all(np.isfinite(m["loss_per_epoch"]))
    assert trained.classes == [0, 1, 2]
    assert trained.train_config.mode == "supcon"
    assert not trained.training and trained.device.type == "cpu"


def test_normalisation_fitted_on_training_units(blobs, trained):
    X, _ = blobs
    # statistics of the 240 training units: close to those of all 300
    np.testing.assert_allclose(trained.norm_mean.numpy(), X.mean(axis=(0, 2, 3)), rtol=0.05)
    np.testing.assert_allclose(trained.norm_scale.numpy(), X.std(axis=(0, 2, 3)), rtol=0.05)


def test_same_seed_same_model_and_selfsup_runs():
    X, y = make_blobs(96, seed=1)
    kw = dict(TINY, steps=2, batch_size=32, device="cpu")  # bit-exact only on CPU
    a = enc.train(X, y, seed=3, **kw)
    b = enc.train(X, y, seed=3, **kw)
    np.testing.assert_array_equal(enc.embed(a, X, progress=False), enc.embed(b, X, progress=False))
    s = enc.train(X, mode="selfsup", seed=3, optimizer="adamw", norm="group", **kw)
    assert s.metrics["mode"] == "selfsup" and "linear_acc" not in s.metrics  # no labels
    assert s.metrics["queue_size"] <= s.metrics["n_train"] // 2
    assert s.classes is None


def test_training_from_shards_streams_and_drops_label_channel():
    X, y = make_blobs(160, seed=2)
    dead = np.random.default_rng(0).random((160, 1, 32, 32), dtype=np.float32)
    X3 = np.concatenate([X[:, :1], dead, X[:, 1:]], axis=1)
    obs = pd.DataFrame(
        {"genotype": np.array(["Control", "GBA", "SNCA"])[y]},
        index=[f"u{i}" for i in range(160)],
    )
    sh = FakeShards(X3, obs, ["mito", "dead", "nuclei"], shard_size=50)
    m = enc.train(sh, label_key="genotype", steps=3, **dict(TINY, batch_size=32))
    assert m.in_channels == 2 and m.cfg.channels == ("mito", "nuclei")
    assert m.classes == ["Control", "GBA", "SNCA"]
    assert "linear_acc" in m.metrics
    assert sh.max_read < len(sh)  # never everything in one read
    # embedding by name from the shards (dead channel included) = from the 2-channel array
    e1 = enc.embed(m, sh, batch_size=64, progress=False)
    e2 = enc.embed(m, X3[:, [0, 2]].astype(np.float16).astype(np.float32), progress=False)
    np.testing.assert_allclose(e1, e2, atol=1e-5)


def test_bad_input_errors(blobs):
    X, y = blobs
    Xs, ys = X[:40], y[:40]
    bad = Xs.copy()
    bad[7, 1, 3, 3] = np.nan
    with pytest.raises(SparsecellError, match="unit 7 contains NaN"):
        enc.train(bad, ys, **TINY)
    with pytest.raises(SparsecellError, match="39 labels for 40 units"):
        enc.train(Xs, ys[:39], **TINY)
    with pytest.raises(SparsecellError, match="at least 2 classes"):
        enc.train(Xs, np.zeros(40), **TINY)
    with pytest.raises(SparsecellError, match="needs labels"):
        enc.train(Xs, **TINY)
    with pytest.raises(SparsecellError, match="4-D"):
        enc.train(Xs[:, 0], ys, **TINY)
    with pytest.raises(SparsecellError, match="unknown encoder training option 'widht'"):
        enc.train(Xs, ys, widht=8)
    with pytest.raises(SparsecellError, match="obs table"):
        enc.train(Xs, label_key="genotype", **TINY)
    sh = FakeShards(Xs, pd.DataFrame({"g": ys}), ["a", "b"])
    with pytest.raises(SparsecellError, match="no column 'genotype'"):
        enc.train(sh, label_key="genotype", **TINY)
    with pytest.raises(SparsecellError, match="label of unit 2 is missing"):
        enc.train(Xs, np.where(np.arange(40) == 2, None, ys).astype(object), **TINY)
    with pytest.raises(SparsecellError, match="momentum"):
        enc.train(Xs, ys, **dict(TINY, momentum=1.0))
