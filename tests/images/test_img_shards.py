"""Shards: write → open → slicing and batches return the data; writes are atomic."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import sparsecell.images as im
from sparsecell import SparsecellError

# float16 keeps 11 significant bits: |x16 - x| <= 2**-11 * |x| (round to nearest)
F16_RTOL = 2.0**-11


def _units(n=23, C=2, S=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, C, S, S)) * 5000).astype(np.float32)


def _obs(n):
    return pd.DataFrame(
        {
            "genotype": pd.Categorical(["Control", "SNCA"] * (n // 2) + ["Control"] * (n % 2)),
            "well": [f"{i:03d}" for i in range(n)],
            "y": np.arange(n) * 8,
            "cell_death_rate": np.where(np.arange(n) % 3 == 0, np.nan, 0.25),
            "ok": np.arange(n) % 2 == 0,
        }
    )


def test_round_trip_slicing_and_obs(tmp_path):
    X = _units()
    sh = im.write_shards(tmp_path / "s", X, _obs(len(X)), ["mito", "dead"], shard_size=5)
    assert len(sh) == 23 and sh.n_shards == 5 and sh.shard_sizes == [5, 5, 5, 5, 3]
    assert sh.channels == ["mito", "dead"] and sh.unit_size == 8 and sh.dtype == np.float16
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "manifest.json",
        "obs.csv",
        *[f"units-{k:05d}.npy" for k in range(5)],
    ]
    full = sh[:].astype(np.float32)
    np.testing.assert_allclose(full, X, rtol=F16_RTOL, atol=0)
    ref = full  # compare every access below against the stored values exactly
    np.testing.assert_array_equal(sh[3:17], ref[3:17])  # spans shards
    np.testing.assert_array_equal(sh[7], ref[7])
    np.testing.assert_array_equal(sh[-1], ref[-1])
    np.testing.assert_array_equal(sh[::4], ref[::4])
    idx = np.array([22, 0, 5, 5, 13])
    np.testing.assert_array_equal(sh[idx], ref[idx])
    mask = np.arange(23) % 7 == 1
    np.testing.assert_array_equal(sh[mask], ref[mask])
    assert sh[20:100].shape == (3, 2, 8, 8) and sh[30:40].shape == (0, 2, 8, 8)
    with pytest.raises(IndexError):
        sh[23]
    obs = sh.obs
    assert obs.index.tolist()[:3] == ["u0", "u1", "u2"]
    assert isinstance(obs["genotype"].dtype, pd.CategoricalDtype)
    assert obs["well"].tolist()[:2] == ["000", "001"]  # strings keep their zeros
    assert obs["y"].dtype == np.int64 and obs["ok"].dtype == bool
    assert obs["cell_death_rate"].isna().sum() == 8
    man = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert man["kind"] == "unit_shards" and man["n_units"] == 23 and "versions" in man


def test_iter_batches_cover_every_unit_once(tmp_path):
    X = _units(n=37)
    sh = im.write_shards(tmp_path / "s", X, shard_size=8, dtype="float32")
    np.testing.assert_array_equal(np.concatenate(list(sh.iter_batches(10))), X)  # float32: exact
    assert [len(b) for b in sh.iter_batches(10)] == [10, 10, 10, 7]
    assert [len(b) for b in sh.iter_batches(10, drop_last=True)] == [10, 10, 10]
    for mode in (True, "global", "shard"):
        seen = []
        for idx, b in sh.iter_batches(6, shuffle=mode, seed=1, with_index=True):
            np.testing.assert_array_equal(b, X[idx])
            seen.append(idx)
        order = np.concatenate(seen)
        assert sorted(order.tolist()) == list(range(37))  # each unit exactly once
        assert not np.array_equal(order, np.arange(37))  # and shuffled
    a = np.concatenate([i for i, _ in sh.iter_batches(6, shuffle=True, seed=3, with_index=True)])
    b = np.concatenate([i for i, _ in sh.iter_batches(6, shuffle=True, seed=3, with_index=True)])
    np.testing.assert_array_equal(a, b)  # same seed, same order


def test_iterable_of_batches_and_single_units(tmp_path):
    X = _units(n=9)
    gen = (x for x in [X[:4], X[4], X[5:]])
    sh = im.write_shards(tmp_path / "s", gen, shard_size=4, dtype="float32")
    np.testing.assert_array_equal(sh[:], X)
    assert sh.obs.index.tolist() == [f"u{i}" for i in range(9)]


def test_failure_while_writing_leaves_no_folder(tmp_path):
    X = _units(n=10)

    def boom():
        yield X[:4]
        yield X[4:8]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        im.write_shards(tmp_path / "s", boom(), shard_size=3)
    assert list(tmp_path.iterdir()) == []  # no target, no temporary left behind
    with pytest.raises(SparsecellError, match="obs has 3 rows for 10 units"):
        im.write_shards(tmp_path / "s", X, pd.DataFrame({"a": [1, 2, 3]}))
    assert list(tmp_path.iterdir()) == []
    # an existing shard folder survives a failed rewrite untouched
    first = im.write_shards(tmp_path / "s", X, shard_size=4)
    with pytest.raises(RuntimeError):
        im.write_shards(tmp_path / "s", boom(), shard_size=4)
    np.testing.assert_array_equal(im.open_shards(tmp_path / "s")[:], first[:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_bad_input_and_foreign_folders(tmp_path):
    X = _units(n=4)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("do not delete")
    with pytest.raises(SparsecellError, match="not empty and holds no unit shards"):
        im.write_shards(tmp_path / "mine", X)
    assert (tmp_path / "mine" / "thesis.txt").exists()
    bad = X.copy()
    bad[2, 0, 0, 0] = np.nan
    with pytest.raises(SparsecellError, match="NaN or inf"):
        im.write_shards(tmp_path / "a", bad)
    with pytest.raises(SparsecellError, match="square"):
        im.write_shards(tmp_path / "a", X[:, :, :, :6])
    with pytest.raises(SparsecellError, match="3 channel names for units with 2"):
        im.write_shards(tmp_path / "a", X, channels=["a", "b", "c"])
    with pytest.raises(SparsecellError, match="repeat"):
        im.write_shards(tmp_path / "a", X, channels=["a", "a"])
    with pytest.raises(SparsecellError, match="dtype"):
        im.write_shards(tmp_path / "a", X, dtype="int8")
    with pytest.raises(SparsecellError, match="empty"):
        im.write_shards(tmp_path / "a", np.zeros((0, 2, 8, 8), np.float32))
    with pytest.raises(SparsecellError, match="no manifest.json"):
        im.open_shards(tmp_path / "mine")
    assert not (tmp_path / "a").exists()
    im.write_shards(tmp_path / "b", X, shard_size=2)
    (tmp_path / "b" / "units-00001.npy").unlink()
    with pytest.raises(SparsecellError, match="lacks shard file.*units-00001.npy"):
        im.open_shards(tmp_path / "b")


def test_float16_clips_saturated_counts(tmp_path):
    X = np.full((2, 1, 4, 4), 65535.0, np.float32)
    X[1] = 1000.0
    sh = im.write_shards(tmp_path / "s", X)
    assert sh.manifest["n_clipped"] == 16
    assert float(sh[0].max()) == 65504.0 and np.isfinite(sh[:].astype(np.float32)).all()
