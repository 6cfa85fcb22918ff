"""Reading fields (axis layouts, z-stack MIP) and validating metadata against the folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

import sparsecell.images as im
from sparsecell import SparsecellError

RNG = np.random.default_rng(0)
CYX = RNG.integers(0, 4000, (3, 40, 56), dtype=np.uint16)  # distinct H and W
ZCYX = RNG.integers(0, 4000, (5, 3, 40, 56), dtype=np.uint16)
MIP = ZCYX.max(axis=0)


MB = {"photometric": "minisblack"}


@pytest.mark.parametrize(
    "data, kwargs, expect",
    [
        (CYX, {"photometric": "rgb", "planarconfig": "separate"}, CYX),  # stored 'SYX'
        (CYX, MB, CYX),  # tifffile's shaped file: 'QYX'
        (CYX, {**MB, "metadata": None}, CYX),  # no metadata: 'IYX'
        (CYX, {**MB, "metadata": {"axes": "CYX"}}, CYX),
        (CYX, {**MB, "ome": True}, CYX),
        (CYX, {"imagej": True}, CYX),
        (CYX.transpose(1, 2, 0).copy(), {**MB, "metadata": {"axes": "YXC"}}, CYX),
        (ZCYX, {**MB, "metadata": {"axes": "ZCYX"}}, MIP),
        (ZCYX, {"imagej": True, "metadata": {"axes": "ZCYX"}}, MIP),
        (ZCYX.transpose(1, 0, 2, 3).copy(), {**MB, "ome": True, "metadata": {"axes": "CZYX"}}, MIP),
        (ZCYX[:, :1], {**MB, "ome": True, "metadata": {"axes": "ZCYX"}}, MIP[:1]),
        (ZCYX[:, 0], {"imagej": True, "metadata": {"axes": "ZYX"}}, MIP[:1]),
        (CYX[0], MB, CYX[:1]),
    ],
    ids=[
        "SYX",
        "QYX",
        "IYX",
        "CYX",
        "ome-CYX",
        "imagej-CYX",
        "YXC",
        "ZCYX",
        "imagej-ZCYX",
        "ome-CZYX",
        "ome-Z1YX",
        "imagej-ZYX",
        "YX",
    ],
)
def test_axis_layouts_round_trip(tmp_path, data, kwargs, expect):
    p = tmp_path / "f.tif"
    tifffile.imwrite(p, data, **kwargs)
    got = im.read_field(p)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, expect)
    info = im.read_field_info(p)
    assert (info.n_channels, info.height, info.width) == expect.shape


def test_rgb_samples_are_channels(tmp_path):
    rgb = RNG.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.testing.assert_array_equal(im.read_field(tmp_path / "rgb.tif"), rgb.transpose(2, 0, 1))


def test_ambiguous_axes_need_a_hint(tmp_path):
    p = tmp_path / "zc.tif"
    tifffile.imwrite(p, ZCYX, **MB)  # stored as 'QQYX': tifffile cannot say what Q is
    with pytest.raises(SparsecellError, match="cannot tell what axis 0 .*, axis 1"):
        im.read_field(p)
    np.testing.assert_array_equal(im.read_field(p, axes="ZCYX"), MIP)
    np.testing.assert_array_equal(im.read_field(p, z_axis=0), MIP)
    with pytest.raises(SparsecellError, match="cannot tell what axis 0"):
        im.read_field(p, channel_axis=1)  # axis 0 still unnamed
    np.testing.assert_array_equal(im.read_field(p, channel_axis=1, z_axis=0), MIP)
    # the other reading: axis 0 is channels, axis 1 planes
    np.testing.assert_array_equal(im.read_field(p, axes="CZYX"), ZCYX.max(axis=1))
    mean = im.read_field(p, axes="ZCYX", projection="mean")
    np.testing.assert_allclose(mean, ZCYX.mean(axis=0), rtol=1e-6)
    with pytest.raises(SparsecellError, match="3 letters but the image of zc.tif is 4-D"):
        im.read_field(p, axes="CYX")


def test_time_axis_is_refused_unless_relabelled(tmp_path):
    p = tmp_path / "t.tif"
    tifffile.imwrite(p, ZCYX, **MB, metadata={"axes": "TCYX"})
    with pytest.raises(SparsecellError, match="axis 'T' of length 5"):
        im.read_field(p)
    np.testing.assert_array_equal(im.read_field(p, axes="ZCYX"), MIP)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(SparsecellError, match="not found"):
        im.read_field(tmp_path / "nope.tif")


# ---------------------------------------------------------------------------- metadata


def _folder(tmp_path, n=3, channels=3):
    d = tmp_path / "img"
    d.mkdir()
    for i in range(n):
        tifffile.imwrite(d / f"f{i}.tif", CYX[:channels], **MB, metadata={"axes": "CYX"})
    return d


def test_metadata_aliases_and_string_ids(tmp_path):
    d = _folder(tmp_path)
    csv = tmp_path / "meta.csv"
    csv.write_text(
        "Filename,Well,Site,Patient,Condition,Plate,Channels\n"
        "f0.tif,A01,001,P7,Control,007,a;b;c\n"
        "f1.tif,A02,002,P8,SNCA,007,a;b;c\n"
        "f2.tif,A03,003,P8,SNCA,007,a;b;c\n"
    )
    meta = im.read_metadata(csv)
    assert {"file", "well", "field", "line", "genotype", "condition", "plate"} <= set(meta)
    assert meta["field"].tolist() == ["001", "002", "003"]  # zeros kept
    assert meta["plate"].tolist() == ["007"] * 3
    assert meta["genotype"].tolist() == ["Control", "SNCA", "SNCA"]
    fs = im.validate(csv, d)
    assert fs.channels == ["a", "b", "c"]
    assert len(fs.table) == 3 and not fs.unlisted and not fs.unreadable


def test_metadata_row_with_missing_file_lists_them(tmp_path):
    d = _folder(tmp_path)
    meta = pd.DataFrame({"file": ["f0.tif", "gone1.tif", "f1.tif", "sub/gone2.tif"]})
    with pytest.raises(SparsecellError, match="2 metadata row") as e:
        im.validate(meta, d)
    assert "gone1.tif" in str(e.value) and "sub/gone2.tif" in str(e.value)


def test_channel_count_mismatch_lists_the_files(tmp_path):
    d = _folder(tmp_path, n=2, channels=3)
    tifffile.imwrite(d / "two.tif", CYX[:2], **MB, metadata={"axes": "CYX"})
    tifffile.imwrite(d / "four.tif", np.concatenate([CYX, CYX[:1]]), **MB, metadata={"axes": "CYX"})
    meta = pd.DataFrame({"file": ["f0.tif", "f1.tif", "two.tif", "four.tif"]})
    with pytest.raises(SparsecellError, match="same number of channels") as e:
        im.validate(meta, d)
    msg = str(e.value)
    assert "2 channel(s): two.tif" in msg and "4 channel(s): four.tif" in msg
    assert "3 channel(s): f0.tif, f1.tif" in msg


def test_file_without_metadata_is_warned_and_excluded(tmp_path):
    d = _folder(tmp_path, n=3)
    meta = pd.DataFrame({"file": ["f0.tif", "f2.tif"]})
    with pytest.warns(im.UnlistedFileWarning, match="1 image file.*f1.tif"):
        fs = im.validate(meta, d)
    assert [p.name for p in fs.unlisted] == ["f1.tif"]
    assert fs.table["file"].tolist() == ["f0.tif", "f2.tif"]


def test_channel_names_must_match_the_count(tmp_path):
    d = _folder(tmp_path)
    meta = pd.DataFrame({"file": ["f0.tif", "f1.tif", "f2.tif"], "channels": ["a,b"] * 3})
    with pytest.raises(SparsecellError, match="names 2 channel"):
        im.validate(meta, d)
    fs = im.validate(meta.drop(columns="channels"), d)
    assert fs.channels == ["c0", "c1", "c2"]
    fs = im.validate(meta.drop(columns="channels"), d, channel_names=["x", "y", "z"])
    assert fs.channels == ["x", "y", "z"]


def test_metadata_table_errors(tmp_path):
    with pytest.raises(SparsecellError, match="no file column"):
        im.read_metadata(pd.DataFrame({"well": ["A01"]}))
    with pytest.raises(SparsecellError, match="more than once: a.tif"):
        im.read_metadata(pd.DataFrame({"file": ["a.tif", "a.tif"]}))
    with pytest.raises(SparsecellError, match="not found"):
        im.read_metadata(tmp_path / "missing.csv")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        (tmp_path / "m.parquet").write_bytes(b"PAR1")
        with pytest.raises(SparsecellError, match="pyarrow"):
            im.read_metadata(tmp_path / "m.parquet")


def test_ome_channel_names_are_used(tmp_path):
    d = tmp_path / "img"
    d.mkdir()
    tifffile.imwrite(
        d / "a.ome.tif", CYX, **MB, ome=True, metadata={"Channel": {"Name": ["m", "l", "n"]}}
    )
    assert im.read_field_info(d / "a.ome.tif").channel_names == ("m", "l", "n")
    assert im.validate(None, d).channels == ["m", "l", "n"]
