"""Atomic writes and manifests: a rerun or a crash never leaves a half-written artefact."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder that replaces ``target`` only on success.

    If the body raises, the temporary folder is removed and ``target`` (if it
    existed) is left exactly as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    backup = None
    if target.exists():
        backup = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, backup)
    os.replace(tmp, target)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    atomic_write_bytes(path, text.encode())


def versions() -> dict[str, str]:
    """Versions of the packages that shape a result, for manifests."""
    import numpy
    import torch

    from . import __version__

    return {
        "sparsecell": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def manifest(kind: str, config: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """What made an artefact: its kind, config, versions, time and any extra fields."""
    return {
        "kind": kind,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "config": config or {},
        **extra,
    }


def dump_json(obj: Any) -> str:
    """Stable, readable JSON for artefacts on disk."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
