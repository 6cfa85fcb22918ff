"""Checkpoint folders shared by every trained model: ``model.safetensors`` + ``cfg.json``.

Nothing is ever unpickled (weights are safetensors, everything else JSON), and a folder
is replaced as a whole through :func:`sparsecell._io.atomic_dir`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._errors import SparsecellError
from ._io import atomic_dir, dump_json

MODEL_FILE = "model.safetensors"
CFG_FILE = "cfg.json"


def write_checkpoint(
    path: Path,
    module: torch.nn.Module,
    cfg: dict[str, Any],
    metadata: dict[str, str],
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``module``'s weights and ``cfg`` into folder ``path`` atomically.

    ``extra(tmp)`` may add more files to the temporary folder before it replaces ``path``.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_dir(path) as tmp:
        save_file(tensors, str(tmp / MODEL_FILE), metadata=metadata)
        (tmp / CFG_FILE).write_text(dump_json(cfg))
        if extra is not None:
            extra(tmp)
    return path


def read_cfg(path: Path, what: str, schema_version: int) -> dict[str, Any]:
    """``cfg.json`` of a checkpoint folder, with clear errors for a missing or bad one."""
    f = path / CFG_FILE
    if not path.is_dir() or not f.exists() or not (path / MODEL_FILE).exists():
        raise SparsecellError(
            f"no {what} checkpoint at {path}",
            "pass the folder that holds model.safetensors and cfg.json",
        )
    try:
        cfg = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise SparsecellError(f"{f} is not valid JSON: {e}", "re-save the model") from e
    v = cfg.get("schema_version")
    if v != schema_version:
        raise SparsecellError(
            f"checkpoint schema version {v} is not supported"
            f" (this sparsecell reads {schema_version})",
            "upgrade sparsecell or re-train",
        )
    return cfg


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load ``model.safetensors`` of folder ``path`` into ``module`` (strict)."""
    try:
        module.load_state_dict(load_file(str(path / MODEL_FILE)), strict=True)
    except (RuntimeError, OSError, ValueError, SafetensorError) as e:
        raise SparsecellError(
            f"cannot load weights from {path / MODEL_FILE}: {e}",
            "the checkpoint is damaged; re-train or restore it",
        ) from e
