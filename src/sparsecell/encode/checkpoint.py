"""Encoder checkpoints: ``model.safetensors`` + ``cfg.json``, written atomically.

Nothing is ever unpickled: the weights (with the per-channel normalisation buffers
``norm_mean`` / ``norm_scale``) are safetensors, everything else is JSON.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .._checkpoint import load_weights, read_cfg, write_checkpoint
from .._errors import SparsecellError
from .._io import manifest
from .config import EncoderConfig, EncoderTrainConfig
from .models import Encoder

SCHEMA_VERSION = 1
KIND = "sparsecell.encoder"


def save(
    model: Encoder,
    path: str | os.PathLike,
    *,
    metrics: dict[str, Any] | None = None,
    train_cfg: EncoderTrainConfig | None = None,
) -> Path:
    """Write the encoder to folder ``path`` atomically (replacing it as a whole).

    Parameters
    ----------
    model
        The encoder.
    path
        Target folder.
    metrics
        Figures to record (default ``model.metrics``).
    train_cfg
        Training configuration to record (default ``model.train_config``).

    Returns
    -------
    pathlib.Path
        The folder written.
    """
    path = Path(path)
    if metrics is None:
        metrics = model.metrics
    if train_cfg is None:
        train_cfg = model.train_config
    cfg = {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "encoder": model.cfg.to_dict(),
        "normalization": {
            "channels": list(model.cfg.channels),
            "mean": model.norm_mean.detach().cpu().tolist(),
            "std": model.norm_scale.detach().cpu().tolist(),
            "stored_as": "norm_mean / norm_scale tensors in model.safetensors",
        },
        "classes": model.classes,
        "train": train_cfg.to_dict() if train_cfg is not None else None,
        "metrics": metrics,
        "manifest": manifest(
            KIND,
            model.cfg.to_dict(),
            train=train_cfg.to_dict() if train_cfg is not None else None,
            seed=train_cfg.seed if train_cfg is not None else None,
        ),
    }
    return write_checkpoint(path, model, cfg, {"kind": KIND})


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Encoder:
    """Load an encoder saved by :func:`save` (or ``model.save``).

    Parameters
    ----------
    path
        Checkpoint folder.
    device
        Where to put the weights.

    Returns
    -------
    Encoder
        In eval mode, with ``metrics``, ``train_config`` and ``classes`` restored.
    """
    path = Path(path)
    cfg = read_cfg(path, "encoder", SCHEMA_VERSION)
    if cfg.get("kind", KIND) != KIND or "encoder" not in cfg:
        raise SparsecellError(
            f"{path} is not an encoder checkpoint (kind {cfg.get('kind')!r})",
            "pass a folder written by sparsecell.encode",
        )
    model = Encoder(EncoderConfig.from_dict(cfg["encoder"]))
    load_weights(model, path)
    model.metrics = cfg.get("metrics")
    model.classes = cfg.get("classes")
    model.train_config = EncoderTrainConfig.from_dict(cfg["train"]) if cfg.get("train") else None
    return model.to(device).eval()


__all__ = ["load", "save"]
