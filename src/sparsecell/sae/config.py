"""Dataclass configs of an SAE (its shape) and of its training (how it was fitted)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

Normalize = Literal["center_scale", "zscore", "none"]


@dataclass
class SAEConfig:
    """The shape of a sparse autoencoder; saved in ``cfg.json`` next to the weights."""

    arch: str = "topk"
    """Architecture name from the registry: topk, batchtopk, relu, jumprelu, gated, matryoshka."""
    d_in: int = 0
    """Input dimension (set from the data when training)."""
    d_sae: int = 0
    """Number of latents; 0 means ``expansion * d_in``."""
    expansion: int = 16
    """Latents per input dimension when ``d_sae`` is 0."""
    k: int = 32
    """Active latents per sample (topk, batchtopk, matryoshka)."""
    normalize: Normalize = "center_scale"
    """Input normalisation fitted on the training data: mean-centring plus one scale so that
    E‖x‖² = d_in (``center_scale``), per-dimension z-score (``zscore``) or ``none``."""
    jumprelu_init_threshold: float = 0.1
    """Initial JumpReLU threshold (normalised space, where pre-activations are O(1))."""
    jumprelu_bandwidth: float = 0.05
    """Width of the rectangle kernel of the JumpReLU straight-through estimator."""
    matryoshka_prefixes: tuple[int, ...] = ()
    """Nested dictionary sizes (ascending, last = d_sae); empty gives 5 doubling prefixes."""

    def resolved(self) -> SAEConfig:
        """A copy with ``d_sae`` filled in."""
        c = dataclasses.replace(self)
        if c.d_sae <= 0:
            c.d_sae = int(c.expansion * c.d_in)
        if c.arch == "matryoshka" and not c.matryoshka_prefixes and c.d_sae > 0:
            sizes = [c.d_sae]
            while len(sizes) < 5 and sizes[-1] // 2 >= max(c.k, 1):
                sizes.append(sizes[-1] // 2)
            c.matryoshka_prefixes = tuple(sorted(sizes))
        c.matryoshka_prefixes = tuple(int(p) for p in c.matryoshka_prefixes)
        return c

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["matryoshka_prefixes"] = list(self.matryoshka_prefixes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "matryoshka_prefixes" in d:
            d["matryoshka_prefixes"] = tuple(d["matryoshka_prefixes"])
        return cls(**d)


@dataclass
class TrainConfig:
    """How to train an SAE."""

    batch_size: int = 4096
    """Samples per optimisation step (global, across all processes)."""
    epochs: float = 10.0
    """Passes over the data; ignored when ``steps`` is set."""
    steps: int | None = None
    """Total optimisation steps (overrides ``epochs``)."""
    lr: float | None = None
    """Adam learning rate; ``None`` gives 4e-3 · sqrt(16384 / d_sae) capped at 1e-2 (the
    shape of Gao et al.'s 2024 scaling law, tuned for cell-embedding-sized runs)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up, capped at a tenth of training for short runs."""
    decay_frac: float = 0.2
    """Fraction of training at the end over which the learning rate decays linearly to 0."""
    sparsity_coeff: float | None = None
    """λ of the sparsity penalty: L1 for relu and gated, L0 for jumprelu; ``None`` picks
    the architecture's default."""
    sparsity_warmup_frac: float = 0.05
    """Fraction of training over which λ ramps linearly from 0."""
    auxk_coeff: float = 1.0 / 32.0
    """Weight of the AuxK dead-latent loss (0 disables it)."""
    auxk: int | None = None
    """Dead latents used by AuxK; ``None`` gives d_in // 2."""
    dead_window: int | None = None
    """A latent is dead after this many samples without firing; ``None`` gives
    min(10 million, 1 epoch)."""
    geometric_median_init: bool = True
    """Initialise the decoder bias at the geometric median of a sample (else the mean)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Encoder matmul precision: bf16 autocast on GPU and on CPUs with native bf16,
    fp32 elsewhere. Master weights, optimiser and losses stay fp32."""
    device: str = "auto"
    """``auto`` picks CUDA when present, else CPU."""
    resident: bool | None = None
    """Keep the whole data set on the device; ``None`` decides by size."""
    cuda_graph: bool = True
    """On CUDA, record whole training steps as CUDA graphs where the architecture allows
    (topk): removes per-step launch overhead."""
    chunk_size: int = 65_536
    """Rows read at a time when streaming from disk."""
    seed: int = 0
    """Seeds initialisation and data order."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every this many steps (0: only at the end)."""
    log_every: int = 50
    """Steps between progress-bar updates of the loss."""
    progress: bool = True
    """Show a progress bar."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


__all__ = ["Normalize", "SAEConfig", "TrainConfig"]
