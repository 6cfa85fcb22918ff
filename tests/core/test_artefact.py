"""The artefact contract: manifest fields, atomicity, and the cache key (is_current)."""

from pathlib import Path

import pytest

from sparsecell import SparsecellError
from sparsecell._artefact import (
    input_hash,
    is_current,
    read_manifest,
    write_artefact,
)


def _make(tmp: Path, cfg: dict, src: Path) -> Path:
    with write_artefact(
        tmp / "out", "sparsecell.test.thing", config=cfg, inputs={"x": src}, seed=3
    ) as d:
        (d / "a.txt").write_text("payload")
    return tmp / "out"


def test_manifest_records_contract(tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"abc")
    out = _make(tmp_path, {"k": 1}, src)
    man = read_manifest(out)
    assert man["kind"] == "sparsecell.test.thing"
    assert man["config"] == {"k": 1}
    assert man["seed"] == 3
    assert man["inputs"]["x"] == input_hash(src)
    assert {"versions", "created", "wall_s", "peak_mem_mb", "content_hash"} <= set(man)
    assert man["peak_mem_mb"] > 0


def test_is_current_tracks_config_inputs_and_content(tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"abc")
    out = _make(tmp_path, {"k": 1}, src)
    assert is_current(out, "sparsecell.test.thing", {"k": 1}, {"x": src})
    assert not is_current(out, "sparsecell.test.other", {"k": 1}, {"x": src})
    assert not is_current(out, "sparsecell.test.thing", {"k": 2}, {"x": src})
    src.write_bytes(b"abd")  # an input changed
    assert not is_current(out, "sparsecell.test.thing", {"k": 1}, {"x": src})
    src.write_bytes(b"abc")
    assert is_current(out, "sparsecell.test.thing", {"k": 1}, {"x": src})
    (out / "a.txt").write_text("tampered")  # the artefact's own files changed
    assert not is_current(out, "sparsecell.test.thing", {"k": 1}, {"x": src})


def test_parent_artefact_is_hashed_by_recorded_content(tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"abc")
    parent = _make(tmp_path, {"k": 1}, src)
    assert input_hash(parent) == read_manifest(parent)["content_hash"]


def test_failed_write_leaves_previous_artefact(tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"abc")
    out = _make(tmp_path, {"k": 1}, src)
    before = read_manifest(out)
    with pytest.raises(RuntimeError):
        with write_artefact(out, "sparsecell.test.thing", config={"k": 2}) as d:
            (d / "a.txt").write_text("half")
            raise RuntimeError("boom")
    assert read_manifest(out) == before
    assert (out / "a.txt").read_text() == "payload"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_kind_must_be_namespaced(tmp_path):
    with pytest.raises(ValueError, match="sparsecell"):
        with write_artefact(tmp_path / "o", "sae"):
            pass


def test_missing_or_bad_manifest_is_one_line(tmp_path):
    with pytest.raises(SparsecellError, match="no manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(SparsecellError, match="not a manifest"):
        read_manifest(tmp_path)
    assert not is_current(tmp_path, "sparsecell.test.thing")
