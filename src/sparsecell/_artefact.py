"""The artefact contract: every stage writes its outputs through :func:`write_artefact`.

An artefact is a folder holding the stage's files and ``manifest.json``::

    {"kind": "sparsecell.<stage>.<what>", "config": {...}, "config_hash": "...",
     "inputs": {"name": "<content hash>", ...}, "content_hash": "...",
     "files": {"units-00000.npy": 1048576, ...}, "versions": {...}, "seed": 0,
     "created": "...", "wall_s": 1.2, "peak_mem_mb": 812}

``content_hash`` is a hash of the folder's files (manifest excluded), computed once when
the artefact is written, so a downstream artefact records *what* it was made from, not
where it lay; ``files`` lists each file's size. :func:`is_current` answers "is this
artefact current for this config and these inputs" — the pipeline's cache key — and checks
the artefact's own files by a stat each (same names, same sizes), never re-reading them,
so a rerun over gigabytes of shards stays fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ._errors import SparsecellError
from ._io import atomic_dir, dump_json, manifest

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable hash of a JSON-able config (key order does not matter)."""
    return hashlib.sha256(dump_json(dict(config)).encode()).hexdigest()[:16]


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 (first 16 hex digits) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _files(root: Path) -> list[tuple[str, Path]]:
    """``(relative name, path)`` of every file under ``root``, sorted; the manifest and
    hidden entries (temporary files) excluded."""
    out = []
    for f in root.rglob("*"):
        parts = f.relative_to(root).parts
        if f.is_file() and parts != (MANIFEST,) and not any(q.startswith(".") for q in parts):
            out.append(("/".join(parts), f))
    return sorted(out)


def folder_hash(path: str | os.PathLike) -> str:
    """Hash of every file under a folder (relative names and bytes), manifest excluded."""
    h = hashlib.sha256()
    for rel, f in _files(Path(path)):
        h.update(rel.encode() + b"\0" + file_hash(f).encode() + b"\0")
    return h.hexdigest()[:16]


def _sizes(path: str | os.PathLike) -> dict[str, int]:
    return {rel: f.stat().st_size for rel, f in _files(Path(path))}


def input_hash(path: str | os.PathLike) -> str:
    """Content hash of an input: an artefact's recorded ``content_hash``, a folder's or a
    file's bytes."""
    p = Path(path)
    if (p / MANIFEST).is_file():
        man = read_manifest(p)
        if man.get("content_hash"):
            return str(man["content_hash"])
    if p.is_dir():
        return folder_hash(p)
    if p.is_file():
        return file_hash(p)
    raise SparsecellError(f"input {p} does not exist", "check the path")


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """``manifest.json`` of an artefact folder; a clear error for a missing or bad one."""
    f = Path(path) / MANIFEST
    try:
        man = json.loads(f.read_text())
    except FileNotFoundError:
        raise SparsecellError(
            f"no manifest at {f}", "is this a sparsecell output folder?"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SparsecellError(f"{f} is not valid JSON: {e}", "re-create the artefact") from None
    if not isinstance(man, dict):
        raise SparsecellError(f"{f} is not a manifest (not a JSON object)", "re-create it")
    return man


def _peak_mem_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def _hash_inputs(inputs: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (inputs or {}).items():
        # a path (os.PathLike) is hashed by content; a str is taken as a given hash/identity
        out[name] = value if isinstance(value, str) else input_hash(value)
    return out


@contextlib.contextmanager
def write_artefact(
    path: str | os.PathLike,
    kind: str,
    *,
    config: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    seed: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Iterator[Path]:
    """Write an artefact folder atomically, with its manifest.

    Use as ``with write_artefact(out, "sparsecell.sae.latents", config=cfg, inputs={"X":
    path}) as tmp: ...write files into tmp...``. On success the manifest (kind, config and
    its hash, input hashes, content hash, versions, seed, wall time, peak memory) is added
    and the folder replaces ``path`` in one rename; on error nothing at ``path`` changes.

    Parameters
    ----------
    path
        The artefact folder.
    kind
        ``"sparsecell.<stage>.<what>"``.
    config
        The stage's settings (JSON-able).
    inputs
        ``name → Path`` of parent artefacts or files (hashed by content here), or
        ``name → str``: a hash or identity given by the caller (used as is).
    seed
        The seed the stage used, if any.
    extra
        More manifest fields.
    """
    if not kind.startswith("sparsecell."):
        raise ValueError(f"artefact kind must start with 'sparsecell.', got {kind!r}")
    hashed = _hash_inputs(inputs)
    t0 = time.perf_counter()
    with atomic_dir(path) as tmp:
        yield tmp
        cfg = dict(config or {})
        man = manifest(
            kind,
            cfg,
            config_hash=config_hash(cfg),
            inputs=hashed,
            content_hash=folder_hash(tmp),
            files=_sizes(tmp),
            seed=seed,
            wall_s=round(time.perf_counter() - t0, 3),
            peak_mem_mb=round(_peak_mem_mb(), 1),
            **dict(extra or {}),
        )
        (tmp / MANIFEST).write_text(dump_json(man))


def is_current(
    path: str | os.PathLike,
    kind: str,
    config: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> bool:
    """True when ``path`` is a finished artefact of ``kind`` made with this config from
    inputs with these contents, and its own files are still there with the sizes they
    were written with (one stat each; contents are hashed only at write time)."""
    p = Path(path)
    if not (p / MANIFEST).is_file():
        return False
    try:
        man = read_manifest(p)
    except SparsecellError:
        return False
    if man.get("kind") != kind or man.get("config_hash") != config_hash(dict(config or {})):
        return False
    try:
        if man.get("inputs", {}) != _hash_inputs(inputs):
            return False
    except SparsecellError:
        return False
    return man.get("files") == _sizes(p)


__all__ = [
    "MANIFEST",
    "config_hash",
    "file_hash",
    "folder_hash",
    "input_hash",
    "is_current",
    "read_manifest",
    "write_artefact",
]
