"""process / qc_fields end to end: QC verdicts, skipped files, units, labels, the real TIFF."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
import tifffile
from images_helpers import CHANNELS, blurred, disk_field, empty_field, grid_centres, write_set

import sparsecell.images as im
from sparsecell import SparsecellError


def _bad_set(tmp_path, field_set):
    """The good set plus a blurred, an empty, a corrupt and an unlisted field."""
    img, meta, fields = field_set
    extra = {
        "blurred.tif": blurred(fields["f0.tif"], 3),
        "empty.tif": empty_field(seed=9),
        "small.tif": disk_field([(50, 50)], size=100, seed=7),  # smaller than one patch
    }
    extra_meta = write_set(img, extra)
    (img / "corrupt.tif").write_bytes(b"II*\x00" + b"\x00" * 10)  # a TIFF header, no IFD
    tifffile.imwrite(img / "stray.tif", fields["f1.tif"], photometric="minisblack")
    rows = [meta, extra_meta, pd.DataFrame({"file": ["corrupt.tif"]})]
    return img, pd.concat(rows, ignore_index=True)


def test_qc_flags_blur_empty_corrupt_and_unlisted(tmp_path, field_set):
    img, meta = _bad_set(tmp_path, field_set)
    with pytest.warns(im.UnlistedFileWarning, match="stray.tif"):
        sh = im.process(meta, img, tmp_path / "out", size=128, dead_channel="dead", progress=False)
    qc = pd.read_csv(tmp_path / "out" / "qc.csv").set_index("file")
    status = qc["status"].to_dict()
    assert status == {
        **{f"f{i}.tif": "ok" for i in range(5)},
        "blurred.tif": "failed_qc",
        "empty.tif": "failed_qc",
        "small.tif": "no_units",
        "corrupt.tif": "unreadable",
        "stray.tif": "unlisted",
    }
    assert qc.loc["blurred.tif", "reason"].startswith("out of focus")
    assert qc.loc["empty.tif", "reason"].startswith("empty (background fraction")
    assert qc.loc["corrupt.tif", "reason"].startswith("unreadable:")
    assert qc.loc["stray.tif", "reason"] == "no metadata row"
    assert qc.loc["small.tif", "reason"] == "no units: the field is smaller than 128 × 128 pixels"
    assert qc.loc["blurred.tif", "focus"] < 0.25 * qc.loc["f0.tif", "focus"]
    assert qc["passed"].sum() == 5
    s = sh.summary
    counts = ("n_fields_ok", "n_failed_qc", "n_unreadable", "n_unlisted", "n_no_units")
    assert tuple(s[k] for k in counts) == (5, 2, 1, 1, 1) and s["n_files"] == 10
    assert len(sh) == s["n_units"] == 5 * 4  # 256 / 128 = 2 → 4 patches per field
    assert set(sh.obs["file"]) == {f"f{i}.tif" for i in range(5)}
    # the same verdicts from qc_fields alone, and an absolute focus limit works too
    with pytest.warns(im.UnlistedFileWarning):
        alone = im.qc_fields(meta, img, dead_channel="dead", progress=False).set_index("file")
    assert alone["status"].to_dict() == {**status, "small.tif": "ok"}  # no units cut here
    with pytest.warns(im.UnlistedFileWarning):
        cfg = im.QCConfig(min_focus_rel=None, min_focus=1e-2, max_background_fraction=None)
        absq = im.qc_fields(meta, img, dead_channel="dead", qc=cfg, progress=False)
    absq = absq.set_index("file")
    assert absq.loc["blurred.tif", "status"] == "failed_qc"
    assert absq.loc["f0.tif", "status"] == "ok"


def test_patch_units_obs_and_death_rate(tmp_path, field_set):
    img, meta, fields = field_set
    sh = im.process(meta, img, tmp_path / "out", size=64, dead_channel="dead", progress=False)
    assert sh.channels == CHANNELS and sh.unit_size == 64 and len(sh) == 5 * 16
    obs = sh.obs
    for col in ("file", "genotype", "line", "plate", "well", "field", "y", "x"):
        assert col in obs.columns
    assert isinstance(obs["genotype"].dtype, pd.CategoricalDtype)
    assert set(obs["genotype"]) == {"Control", "SNCA"}
    # content equals the source pixels (float16 tolerance)
    for i in [0, 17, 79]:
        r = obs.iloc[i]
        src = fields[r["file"]][:, r["y"] : r["y"] + 64, r["x"] : r["x"] + 64]
        np.testing.assert_allclose(sh[i].astype(np.float32), src, rtol=2.0**-11)
    # 4 nuclei of 16 are dead in every field: rates in [0, 1], field mean ≈ 0.25
    rate = obs["cell_death_rate"]
    assert rate.between(0, 1).all() and rate.mean() == pytest.approx(0.25, abs=0.05)
    qc = pd.read_csv(tmp_path / "out" / "qc.csv")
    assert qc["n_nuclei"].tolist() == [16] * 5
    assert qc["field_death_rate"].to_numpy() == pytest.approx(0.25, abs=0.02)
    assert sh.manifest["label_channels"] == ["dead"]
    assert sh.manifest["config"]["nuclear_channel"] == "nuclei"  # picked by name


def test_cell_mode_crops_and_per_cell_death(tmp_path):
    centres = grid_centres(n_side=3, size=192, jitter=3, seed=4)
    fields = {"a.tif": disk_field(centres, size=192, radius=8, dead={0, 4, 8}, seed=4)}
    meta = write_set(tmp_path / "img", fields)
    sh = im.process(
        meta,
        tmp_path / "img",
        tmp_path / "out",
        mode="cell",
        size=48,
        dead_channel="dead",
        nuclear_channel="nuclei",
        channels=["nuclei", "dead"],
        progress=False,
    )
    assert len(sh) == 9 and sh.channels == ["nuclei", "dead"]
    obs = sh.obs
    truth = [
        int(np.argmin([np.hypot(y - cy, x - cx) for cy, cx in centres]))
        for y, x in obs[["nucleus_y", "nucleus_x"]].to_numpy()
    ]
    np.testing.assert_array_equal(obs["cell_death_rate"], [float(i in {0, 4, 8}) for i in truth])
    assert obs["cell_death_rate"].mean() == pytest.approx(1 / 3)
    for i in range(len(sh)):  # nucleus at the crop centre
        nuc = sh[i][0].astype(np.float32) > 500
        assert np.abs(np.argwhere(nuc).mean(axis=0) - 24).max() <= 1.0


def test_bad_requests_write_nothing(tmp_path, field_set):
    img, meta, _ = field_set
    out = tmp_path / "out"
    with pytest.raises(SparsecellError, match="dead_channel 'cytotox' is not one of"):
        im.process(meta, img, out, dead_channel="cytotox", progress=False)
    with pytest.raises(SparsecellError, match="unknown mode"):
        im.process(meta, img, out, mode="tile", progress=False)
    cfg = im.QCConfig(max_background_fraction=0.5)  # every field "empty"
    with pytest.raises(SparsecellError, match=r"no units from 5 file\(s\) \(5 × empty"):
        im.process(meta, img, out, qc=cfg, progress=False)
    with pytest.raises(SparsecellError, match="needs a nuclear channel"):
        im.process(meta, img, out, mode="cell", channel_names=["a", "b", "c"], progress=False)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img"]


def test_interrupted_run_leaves_nothing(tmp_path, field_set, monkeypatch):
    img, meta, _ = field_set
    # the module (its name is shadowed by the function in the package namespace)
    proc = importlib.import_module("sparsecell.images.process")

    calls = {"n": 0}
    real = proc._cut

    def cut_then_interrupt(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(proc, "_cut", cut_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        im.process(meta, img, tmp_path / "out", shard_size=3, progress=False)
    assert calls["n"] == 3  # two fields (8 units, 2 full shards) were written by then
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img"]


def test_real_neuron_tiff(tmp_path):
    try:
        path = im.sample_neuron_path()
    except SparsecellError:
        pytest.skip("ndev-sampledata is not installed")
    field = im.read_field(path)
    assert field.shape == (4, 623, 502) and field.dtype == np.uint16
    meta = pd.DataFrame({"file": [path.name], "genotype": ["Control"]})
    with pytest.warns(im.UnlistedFileWarning):  # the package ships other TIFFs beside it
        sh = im.process(meta, path.parent, tmp_path / "out", size=128, progress=False)
    assert len(sh) == (623 // 128) * (502 // 128) == 12
    assert sh.channels == ["AF647", "AF568", "AF488", "DAPI"]  # from the OME metadata
    expect = [(y, x) for y in range(0, 512, 128) for x in range(0, 384, 128)]
    assert list(zip(sh.obs["y"], sh.obs["x"], strict=True)) == expect
    units = sh[:].astype(np.float32)
    for u, (y, x) in zip(units, expect, strict=True):
        np.testing.assert_allclose(u, field[:, y : y + 128, x : x + 128], rtol=2.0**-11)
    qc = pd.read_csv(tmp_path / "out" / "qc.csv").set_index("file")
    assert qc.loc[path.name, "status"] == "ok"
    # per-patch QC: background-only patches go when a foreground minimum is set
    cfg = im.QCConfig(min_unit_foreground=0.02)
    with pytest.warns(im.UnlistedFileWarning):
        kept = im.process(meta, path.parent, tmp_path / "out2", qc=cfg, progress=False)
    assert 0 < len(kept) < 12 and (kept.obs["foreground_fraction"] >= 0.02).all()
    assert kept.summary["n_units_dropped"] == 12 - len(kept)
    dropped = sh.obs[sh.obs["foreground_fraction"] < 0.02]
    assert len(dropped) == 12 - len(kept)
    # its one nucleus (DAPI) is found whole
    tab = im.nuclei_table(im.segment_nuclei(field[3]))
    assert len(tab) == 1 and 4000 < tab["area"].iloc[0] < 9000
