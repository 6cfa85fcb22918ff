"""Training an encoder: supervised contrastive learning against a momentum encoder + queue.

One step (MoCo-style, as in the seed paper): a batch of raw units is normalised per
channel, augmented twice; the query encoder embeds and projects view 1, the momentum
(key) encoder — updated as ``key = m · key + (1 - m) · query`` — view 2; the loss
contrasts queries with the batch's keys and a queue of earlier keys (positives: same
label in ``supcon`` mode, the same unit in ``selfsup`` mode); the keys then enter the
queue. SGD with momentum (lr 0.1) or AdamW, linear warm-up and cosine decay.

Units stream from arrays or shards a batch at a time (read in a background thread); a
labelled fraction is held out, and after training linear-probe and kNN accuracies on
it are recorded in ``model.metrics``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .._device import cuda_tf32, resolve_device
from .._errors import SparsecellError
from ..config import split_kwargs as _split_kwargs
from ._data import (
    Units,
    channel_stats,
    encode_labels,
    memory_format,
    prefetch,
    read_workers,
)
from .augment import Augment
from .config import EncoderConfig, EncoderTrainConfig
from .models import Encoder
from .supcon import KeyQueue, moco_supcon_loss, momentum_update


def split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route keyword arguments to EncoderConfig or EncoderTrainConfig (or fail clearly).

    ``in_channels``, ``channels``, ``unit_size`` (set from the data) and ``mode`` are not
    options."""
    m, t = _split_kwargs(
        kwargs,
        EncoderConfig,
        EncoderTrainConfig,
        exclude=("in_channels", "channels", "unit_size", "mode"),
        what="encoder training option",
    )
    return m, t


def check_train_config(tc: EncoderTrainConfig) -> None:
    """Settings errors caught before any work."""
    checks = [
        (tc.mode in ("supcon", "selfsup"), f"unknown mode '{tc.mode}'", "use supcon or selfsup"),
        (tc.batch_size >= 2, f"batch_size={tc.batch_size} must be at least 2", "raise it"),
        (tc.temperature > 0, f"temperature={tc.temperature} must be positive", "e.g. 0.07"),
        (0 <= tc.momentum < 1, f"momentum={tc.momentum} must be in [0, 1)", "e.g. 0.995"),
        (tc.queue_size >= 0, f"queue_size={tc.queue_size} must be >= 0", "e.g. 4096"),
        (0 <= tc.holdout_frac < 1, f"holdout_frac={tc.holdout_frac} must be in [0, 1)", "0.2"),
        (tc.optimizer in ("sgd", "adamw"), f"unknown optimizer '{tc.optimizer}'", "sgd|adamw"),
        (
            tc.precision in ("auto", "fp32", "tf32", "bf16"),
            f"unknown precision '{tc.precision}'",
            "choose auto, fp32, tf32 or bf16",
        ),
        (tc.steps is None or tc.steps >= 1, f"steps={tc.steps} must be positive", "pass >= 1"),
        (tc.steps is not None or tc.epochs > 0, f"epochs={tc.epochs} must be > 0", "pass > 0"),
        (0 <= tc.crop_prob <= 1, f"crop_prob={tc.crop_prob} must be in [0, 1]", "e.g. 0.5"),
    ]
    for ok, what, fix in checks:
        if not ok:
            raise SparsecellError(what, fix)


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _split(y: np.ndarray | None, n: int, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices, sorted; stratified by label where every class allows it."""
    idx = np.arange(n)
    if y is None or frac <= 0:
        return idx, idx[:0]
    from sklearn.model_selection import train_test_split

    _, counts = np.unique(y, return_counts=True)
    n_test = int(math.ceil(frac * n))
    strat = y if counts.min() >= 2 and len(counts) <= n_test <= n - len(counts) else None
    tr, te = train_test_split(idx, test_size=frac, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(te)


def _batches(idx: np.ndarray, B: int, total: int, seed: int) -> Iterator[np.ndarray]:
    """``total`` batches of ``B`` indices: a fresh permutation of ``idx`` every epoch."""
    per_epoch = len(idx) // B
    step, epoch = 0, 0
    while step < total:
        perm = np.random.default_rng([seed, epoch]).permutation(idx)
        for j in range(per_epoch):
            if step >= total:
                return
            yield perm[j * B : (j + 1) * B]
            step += 1
        epoch += 1


def _compute_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (``None``: no autocast)."""
    return torch.bfloat16 if precision == "bf16" else None


def train(
    units: Any,
    labels: Any = None,
    *,
    mode: str = "supcon",
    label_key: str | None = None,
    channels: Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    callback: Callable[[int, Encoder, dict[str, float]], None] | None = None,
    **kwargs: Any,
) -> Encoder:
    """Train a residual CNN encoder on image units.

    Parameters
    ----------
    units
        ``N × C × H × W`` array (numpy, memmap, h5py, torch) or shards
        (``sparsecell.images.open_shards(...)``, or any object with ``len()``, ``[i:j]``
        slicing and ``.obs``); read a batch at a time, never all at once.
    labels
        One label per unit (any hashable values); required for ``supcon`` unless
        ``label_key`` is given. In ``selfsup`` mode they are used only for the probes.
    mode
        ``supcon`` (supervised contrastive, the seed paper) or ``selfsup`` (positives are
        the other view of the same unit only).
    label_key
        For shards: the ``obs`` column holding the labels (e.g. ``"genotype"``).
    channels
        Names of the units' channels (shards carry them). Channels named in
        ``label_channels`` (default ``("dead",)``) are dropped.
    out
        Folder to save the trained model into (``model.safetensors`` + ``cfg.json``).
    callback
        Called as ``callback(step, model, logs)`` after every step.
    **kwargs
        Fields of :class:`EncoderConfig` (``width``, ``stages``, ``blocks``, ``norm``,
        ``embed_dim``, …) and :class:`EncoderTrainConfig` (``epochs``, ``steps``,
        ``batch_size``, ``optimizer``, ``lr``, ``temperature``, ``momentum``,
        ``queue_size``, ``device``, ``seed``, ``holdout_frac``, augmentation fields, …).

    Returns
    -------
    Encoder
        The trained query encoder on CPU in eval mode; ``model.metrics`` holds the loss
        per epoch and, with labels and ``holdout_frac > 0``, ``linear_acc``, ``knn_acc``
        and ``chance`` on the held-out units (probes fitted on training-unit embeddings).
    """
    from tqdm.auto import tqdm

    from .checkpoint import save
    from .embed import embed_units
    from .probe import probe

    model_kw, tr_kw = split_kwargs(kwargs)
    tc = EncoderTrainConfig(mode=mode, **tr_kw)  # type: ignore[arg-type]
    check_train_config(tc)
    seed = tc.seed
    src = Units(units, channels)

    # channels: drop label channels (the dead-cell stain) when names are known
    if src.channels is not None:
        keep = [i for i, c in enumerate(src.channels) if c not in set(tc.label_channels)]
        if not keep:
            raise SparsecellError(
                f"every channel of the units is a label channel ({src.channels})",
                "pass units with image channels or change label_channels",
            )
        src.keep_channels(keep)

    # labels
    if label_key is not None:
        if labels is not None:
            raise SparsecellError("both labels and label_key given", "pass one of them, not both")
        if src.obs is None:
            raise SparsecellError(
                "label_key needs units with an obs table (shards)",
                "pass the labels themselves with labels=",
            )
        if label_key not in src.obs.columns:
            raise SparsecellError(
                f"obs has no column '{label_key}' (it has {list(src.obs.columns)})",
                "pass one of the obs columns as label_key",
            )
        labels = src.obs[label_key].to_numpy()
    y: np.ndarray | None = None
    classes: list[Any] | None = None
    if labels is not None:
        y, classes = encode_labels(labels, src.n)
    if tc.mode == "supcon":
        if y is None:
            raise SparsecellError(
                "supervised contrastive training needs labels",
                "pass labels= or label_key=, or use mode='selfsup'",
            )
        if len(classes) < 2:
            raise SparsecellError(
                f"supervised contrastive training needs at least 2 classes, got {classes}",
                "pass labels with two or more values, or use mode='selfsup'",
            )

    train_idx, held_idx = _split(y, src.n, tc.holdout_frac, seed)
    if len(train_idx) < 2:
        raise SparsecellError(
            f"only {len(train_idx)} training unit(s)", "pass more units or lower holdout_frac"
        )
    rng = np.random.default_rng(seed)

    # per-channel normalisation (also the first NaN check)
    stat_idx = train_idx
    if len(stat_idx) > tc.norm_max_units:
        stat_idx = np.sort(rng.choice(train_idx, tc.norm_max_units, replace=False))
    mean, std = channel_stats(src, stat_idx)

    cfg = EncoderConfig(
        in_channels=src.n_channels,
        channels=tuple(src.kept_names() or ()),
        unit_size=tuple(src.shape[1:]),
        **model_kw,
    )
    model = Encoder(cfg)
    model.reset_parameters(seed)
    model.set_normalization(mean, std)
    device = resolve_device(tc.device)
    cuda = device.type == "cuda"
    fmt = memory_format(device)
    model.to(device=device, memory_format=fmt)
    key = copy.deepcopy(model)
    key.requires_grad_(False)
    cdt = _compute_dtype(tc.precision)

    B = min(tc.batch_size, len(train_idx))
    per_epoch = len(train_idx) // B
    total = tc.steps if tc.steps is not None else max(1, math.ceil(tc.epochs * per_epoch))
    cap = len(train_idx) if tc.mode == "supcon" else len(train_idx) // 2
    queue = KeyQueue(min(tc.queue_size, cap), cfg.proj_dim).to(device)
    lr = tc.lr if tc.lr is not None else (0.1 if tc.optimizer == "sgd" else 1e-3)
    wd = tc.weight_decay
    if wd is None:
        wd = 1e-4 if tc.optimizer == "sgd" else 0.05
    if tc.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=tc.sgd_momentum, weight_decay=wd
        )
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    warmup = int(tc.warmup_frac * total)
    aug = Augment.from_config(tc)
    gen = torch.Generator().manual_seed(seed)
    y_all = torch.from_numpy(y) if y is not None else None

    def read(idx: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        t = torch.from_numpy(src.read(idx))
        return idx, (t.pin_memory() if cuda else t)

    def autocast():
        if cdt is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=cdt)

    show = tc.progress
    loss_sum = torch.zeros((), device=device)
    loss_n = 0
    epoch_losses: list[float] = []
    logs: dict[str, float] = {}
    model.train()
    key.train()
    step = 0
    old_bench = torch.backends.cudnn.benchmark
    tf32 = cuda_tf32(tc.precision != "fp32")
    tf32.__enter__()
    bar = tqdm(total=total, disable=not show, desc=f"encode {tc.mode}", unit="step")
    batches = _batches(train_idx, B, total, seed)
    workers = read_workers(tc.read_workers, device)
    try:
        torch.backends.cudnn.benchmark = cuda or old_bench
        for idx, xb in prefetch(read, batches, on=tc.prefetch, workers=workers):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warmup, lr)
            x = xb.to(device, non_blocking=True)
            yb = y_all[idx].to(device, non_blocking=True) if y_all is not None else None
            with torch.no_grad():
                xn = model.normalize_input(x)
                v1 = aug(xn, gen).contiguous(memory_format=fmt)
                v2 = aug(xn, gen).contiguous(memory_format=fmt)
            with autocast():
                q = model.project(model.embed_normalized(v1))
            with torch.no_grad():
                momentum_update(key, model, tc.momentum)
                with autocast():
                    k = key.project(key.embed_normalized(v2))
            loss = moco_supcon_loss(
                q, k, yb if tc.mode == "supcon" else None, queue, tc.temperature, tc.mode
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            queue.enqueue(k, yb)
            loss_sum += loss.detach()
            loss_n += 1
            step += 1
            end_of_epoch = step % per_epoch == 0 or step == total
            if not cuda or step % tc.log_every == 0 or end_of_epoch:
                lv = float(loss.detach())
                if not math.isfinite(lv):
                    raise SparsecellError(
                        f"training loss became non-finite at step {step}",
                        "lower the learning rate (lr) or check the units",
                    )
                logs = {"loss": lv, "lr": opt.param_groups[0]["lr"]}
                if step % tc.log_every == 0 or end_of_epoch:
                    bar.set_postfix(loss=f"{lv:.3f}", refresh=False)
            if end_of_epoch:
                epoch_losses.append(float(loss_sum) / max(1, loss_n))
                loss_sum.zero_()
                loss_n = 0
            bar.update(1)
            if callback is not None:
                callback(step, model, logs)
    finally:
        bar.close()
        torch.backends.cudnn.benchmark = old_bench
        tf32.__exit__(None, None, None)

    model.eval()
    metrics: dict[str, Any] = {
        "mode": tc.mode,
        "steps": step,
        "epochs": step / per_epoch,
        "batch_size": B,
        "queue_size": queue.size,
        "loss_per_epoch": epoch_losses,
        "final_loss": epoch_losses[-1] if epoch_losses else float("nan"),
        "n_train": int(len(train_idx)),
        "n_heldout": int(len(held_idx)),
    }
    if y is not None and len(held_idx) > 0:
        fit_idx = train_idx
        if len(fit_idx) > tc.probe_max_units:
            fit_idx = np.sort(rng.choice(train_idx, tc.probe_max_units, replace=False))
        both = np.concatenate([fit_idx, held_idx])
        E = embed_units(
            model, src, both, max(B, 64), device, progress=show, workers=tc.read_workers
        )
        test = np.zeros(len(both), dtype=bool)
        test[len(fit_idx) :] = True
        res = probe(E, y[both], seed=seed, test=test)
        metrics.update(
            linear_acc=res["linear_acc"],
            knn_acc=res["knn_acc"],
            chance=res["chance"],
            n_probe_train=res["n_train"],
            n_probe_test=res["n_test"],
        )
    model.to(memory_format=torch.contiguous_format).cpu()
    model.metrics = metrics
    model.train_config = tc
    model.classes = classes
    if out is not None:
        save(model, out)
    return model


__all__ = ["check_train_config", "lr_at", "split_kwargs", "train"]
