"""Dataclass configs of an image encoder (its shape) and of its training (how it was fitted)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

Norm = Literal["batch", "group"]
Mode = Literal["supcon", "selfsup"]

_TUPLE_FIELDS = ("channels", "unit_size", "crop_scale", "crop_ratio", "label_channels")


def _from_dict(cls, d: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    d = {k: v for k, v in d.items() if k in names}
    for k in _TUPLE_FIELDS:
        if k in d and d[k] is not None:
            d[k] = tuple(d[k])
    return cls(**d)


def _to_dict(obj) -> dict[str, Any]:
    d = dataclasses.asdict(obj)
    for k in _TUPLE_FIELDS:
        if k in d and d[k] is not None:
            d[k] = list(d[k])
    return d


@dataclass
class EncoderConfig:
    """The shape of a residual CNN encoder; saved in ``cfg.json`` next to the weights."""

    in_channels: int = 0
    """Input channels (set from the data when training)."""
    channels: tuple[str, ...] = ()
    """Names of the input channels, in order, when the training units had names; embedding
    units with named channels then picks these by name (empty: by position)."""
    unit_size: tuple[int, ...] = ()
    """``(H, W)`` of the training units (for the record; any size can be embedded)."""
    width: int = 32
    """Channels of the stem and the first stage; each later stage doubles them."""
    stages: int = 3
    """Residual stages; every stage after the first halves the resolution."""
    blocks: int = 1
    """Residual basic blocks (two 3×3 convolutions each) per stage."""
    stem_stride: int = 2
    """Stride of the 3×3 stem convolution (2 halves the input before the first stage)."""
    norm: Norm = "batch"
    """Normalisation layers: ``batch`` (BatchNorm) or ``group`` (GroupNorm, batch-size
    independent also in training)."""
    groups: int = 8
    """GroupNorm groups (lowered to a divisor of the channel count where needed)."""
    embed_dim: int = 64
    """Dimension of the embedding: a 1×1 convolution maps the last stage to ``embed_dim``
    per-position tokens, whose global average is the embedding."""
    proj_dim: int = 64
    """Output dimension of the MLP projection head used only by the contrastive loss."""

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        return _from_dict(cls, d)


@dataclass
class EncoderTrainConfig:
    """How to train an encoder (supervised contrastive against a momentum encoder + queue)."""

    mode: Mode = "supcon"
    """``supcon``: positives are all keys of the same label (Khosla et al. 2020);
    ``selfsup``: the only positive is the other augmented view of the same unit (MoCo)."""
    epochs: float = 10.0
    """Passes over the training units; ignored when ``steps`` is set."""
    steps: int | None = None
    """Total optimisation steps (overrides ``epochs``)."""
    batch_size: int = 256
    """Units per optimisation step (lowered to the number of training units if larger)."""
    optimizer: Literal["sgd", "adamw"] = "sgd"
    """``sgd`` (with momentum, as in the seed paper) or ``adamw``."""
    lr: float | None = None
    """Peak learning rate; ``None`` gives 0.1 for SGD (the seed paper) and 1e-3 for AdamW."""
    sgd_momentum: float = 0.9
    """Momentum of SGD."""
    weight_decay: float | None = None
    """``None`` gives 1e-4 for SGD and 0.05 for AdamW."""
    warmup_frac: float = 0.05
    """Fraction of training with a linear learning-rate warm-up; then cosine decay to 0."""
    temperature: float = 0.07
    """Temperature of the contrastive loss."""
    momentum: float = 0.995
    """Key-encoder momentum: ``key = m · key + (1 - m) · query`` after every step."""
    queue_size: int = 4096
    """Keys kept from earlier batches as extra contrast (65,536 in the seed paper). Capped
    at the number of training units (half of them in ``selfsup`` mode, where an older key
    of the same unit would be a false negative)."""
    flip: bool = True
    """Random horizontal and vertical flips."""
    rotate: bool = True
    """Random 90° rotations (square units)."""
    crop_prob: float = 0.5
    """Probability of a random resized crop per view."""
    crop_scale: tuple[float, float] = (0.5, 1.0)
    """Range of the crop's area as a fraction of the unit."""
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    """Range of the crop's aspect ratio."""
    gain: float = 0.1
    """Per-channel intensity gain jitter: a factor uniform in [1 - gain, 1 + gain]."""
    offset: float = 0.1
    """Per-channel intensity offset jitter, uniform in ±offset channel standard deviations."""
    label_channels: tuple[str, ...] = ("dead",)
    """Named channels that are labels, not encoder input (the dead-cell stain): dropped
    when the units' channel names are known."""
    holdout_frac: float = 0.2
    """Fraction of labelled units held out of training to report probe accuracy (0: none)."""
    probe_max_units: int = 20_000
    """At most this many training units are embedded to fit the reported probes."""
    norm_max_units: int = 10_000
    """Per-channel normalisation statistics are fitted on at most this many units."""
    precision: Literal["auto", "fp32", "tf32", "bf16"] = "auto"
    """``auto``: ``tf32`` on CUDA, ``fp32`` on CPU. ``fp32``: strict float32; ``tf32``:
    float32 weights with TF32 convolutions and matmuls on CUDA; ``bf16``: bf16 autocast
    (on an H100 only ~10% faster than TF32 for the default model: 13.6k against 12.4k
    128×128×3 units/s)."""
    device: str = "auto"
    """``auto`` picks CUDA when present, else CPU."""
    prefetch: bool = True
    """Read the next batches in background threads while the current one trains."""
    read_workers: int = 0
    """Reader threads; 0: one on CPU, up to four with a GPU."""
    seed: int = 0
    """Seeds initialisation, the hold-out split, data order and augmentations."""
    log_every: int = 10
    """Steps between progress-bar updates of the loss."""
    progress: bool = True
    """Show a progress bar."""

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderTrainConfig:
        return _from_dict(cls, d)


__all__ = ["EncoderConfig", "EncoderTrainConfig", "Mode", "Norm"]
