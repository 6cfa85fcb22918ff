"""SAE checkpoints: ``model.safetensors`` + ``cfg.json`` (+ resumable training state).

Nothing is ever unpickled: weights and optimiser tensors are safetensors, everything
else is JSON. Every write goes through a temporary folder and a rename, so a crash or a
kill leaves either the previous checkpoint or the new one, never a mixture.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .._checkpoint import MODEL_FILE, load_weights, read_cfg, write_checkpoint
from .._errors import SparsecellError
from .._io import dump_json, manifest
from ._base import SparseAutoencoder
from .config import SAEConfig, TrainConfig

SCHEMA_VERSION = 1
STATE_FILE = "train_state.safetensors"
STATE_JSON = "train_state.json"


def save(
    sae: SparseAutoencoder,
    path: str | os.PathLike,
    *,
    metrics: dict[str, Any] | None = None,
    train_cfg: TrainConfig | None = None,
    train_state: tuple[torch.optim.Optimizer, int, torch.Tensor] | None = None,
) -> Path:
    """Write the SAE (and optionally its optimiser state) to folder ``path`` atomically.

    Parameters
    ----------
    sae
        The model.
    path
        Target folder; replaced as a whole if it exists.
    metrics
        Evaluation figures to record in ``cfg.json``.
    train_cfg
        The training configuration to record.
    train_state
        ``(optimizer, step, samples_since_fired)`` to make training resumable.

    Returns
    -------
    pathlib.Path
        The folder written.
    """
    path = Path(path)
    if metrics is None:
        metrics = getattr(sae, "metrics", None)
    if train_cfg is None:
        train_cfg = getattr(sae, "train_config", None)
    cfg = {
        "schema_version": SCHEMA_VERSION,
        "arch": sae.arch,
        "sae": sae.cfg.to_dict(),
        "normalization": {
            "kind": sae.cfg.normalize,
            "stored_as": "norm_mean / norm_scale tensors in model.safetensors",
        },
        "train": train_cfg.to_dict() if train_cfg is not None else None,
        "metrics": metrics,
        "manifest": manifest("sparsecell.sae", seed=train_cfg.seed if train_cfg else None),
    }

    def write_state(tmp: Path) -> None:
        if train_state is None:
            return
        opt, step, since_fired = train_state
        sd = opt.state_dict()
        tensors = {"since_fired": since_fired.detach().cpu().contiguous()}
        for pid, st in sd["state"].items():
            for name, t in st.items():
                tensors[f"opt.{pid}.{name}"] = torch.as_tensor(t).detach().cpu().contiguous()
        save_file(tensors, str(tmp / STATE_FILE))
        groups = [
            {k: float(v) if torch.is_tensor(v) else v for k, v in g.items()}
            for g in sd["param_groups"]
        ]
        (tmp / STATE_JSON).write_text(dump_json({"step": step, "param_groups": groups}))

    return write_checkpoint(path, sae, cfg, {"arch": sae.arch}, write_state)


def _read_cfg(path: Path) -> dict[str, Any]:
    return read_cfg(path, "SAE", SCHEMA_VERSION)


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load an SAE saved by :func:`save` (or ``sae.save``).

    Parameters
    ----------
    path
        Checkpoint folder.
    device
        Where to put the weights.

    Returns
    -------
    SparseAutoencoder
        The model in eval mode, with ``metrics`` and ``train_config`` restored.
    """
    from .registry import get

    path = Path(path)
    cfg = _read_cfg(path)
    sae = get(cfg["arch"])(SAEConfig.from_dict(cfg["sae"]))
    load_weights(sae, path)
    sae.metrics = cfg.get("metrics")
    sae.train_config = TrainConfig.from_dict(cfg["train"]) if cfg.get("train") else None
    return sae.to(device).eval()


def load_train_state(
    path: str | os.PathLike,
    sae: SparseAutoencoder,
    opt: torch.optim.Optimizer,
    since_fired: torch.Tensor,
    cfg: SAEConfig,
    tc: TrainConfig,
) -> int:
    """Restore weights, optimiser and dead-latent counters in place; return the step."""
    path = Path(path)
    saved = _read_cfg(path)
    if SAEConfig.from_dict(saved["sae"]).resolved() != cfg:
        raise SparsecellError(
            f"the checkpoint in {path} was trained with other SAE settings",
            "resume with the same arch, k and expansion, or use a new --out",
        )
    dev = sae.device
    sae.load_state_dict({k: v.to(dev) for k, v in load_file(str(path / MODEL_FILE)).items()})
    tensors = load_file(str(path / STATE_FILE))
    meta = json.loads((path / STATE_JSON).read_text())
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = t.to(dev) if name != "step" else t
    # hyper-parameters of the run being resumed win over the saved ones (device flags, lr)
    own = ("lr", "fused", "foreach", "capturable", "differentiable")
    groups = [
        {**saved, **{k: cur[k] for k in own if k in cur}}
        for saved, cur in zip(meta["param_groups"], opt.param_groups, strict=True)
    ]
    opt.load_state_dict({"state": state, "param_groups": groups})
    since_fired.copy_(tensors["since_fired"].to(dev))
    return int(meta["step"])
