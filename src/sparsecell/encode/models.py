"""A residual CNN encoder for image units, trained from scratch.

Layout (``EncoderConfig`` names): a 3×3 stem (stride ``stem_stride``) → ``stages`` stages
of ``blocks`` basic residual blocks (two 3×3 convolutions, identity or 1×1 shortcut),
``width · 2**i`` channels, every stage after the first at half the resolution → a 1×1
convolution to ``embed_dim`` channels + norm + ReLU: the per-position *tokens* → global
average pool: the *embedding*. A two-layer MLP *projection head* maps the embedding to the
space of the contrastive loss; it is used only in training (as in SimCLR / SupCon).

Inputs are raw units; the per-channel normalisation fitted at training time lives in the
model as the buffers ``norm_mean`` / ``norm_scale``, so it travels with the checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._errors import SparsecellError
from .config import EncoderConfig


def _norm(kind: str, c: int, groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(c)
    if kind == "group":
        return nn.GroupNorm(math.gcd(max(1, groups), c), c)
    raise SparsecellError(f"unknown norm='{kind}'", "choose batch or group")


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual shortcut (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = _norm(norm, cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = _norm(norm, cout, groups)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout, groups)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.n1(self.conv1(x)), inplace=True)
        return F.relu(self.n2(self.conv2(h)) + self.short(x), inplace=True)


class Encoder(nn.Module):
    """Residual CNN: raw units ``B × C × H × W`` → embeddings ``B × embed_dim``.

    Attributes
    ----------
    cfg
        The :class:`EncoderConfig`.
    metrics
        Figures recorded by training (probe accuracies, loss), or ``None``.
    train_config
        The :class:`EncoderTrainConfig` it was trained with, or ``None``.
    classes
        The label values of the supervised training, in code order, or ``None``.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        if cfg.in_channels < 1:
            raise SparsecellError("in_channels must be positive", "train on units with channels")
        if cfg.width < 1 or cfg.stages < 1 or cfg.blocks < 1 or cfg.embed_dim < 1:
            raise SparsecellError(
                f"width={cfg.width}, stages={cfg.stages}, blocks={cfg.blocks} and"
                f" embed_dim={cfg.embed_dim} must all be positive",
                "pass positive sizes",
            )
        self.cfg = cfg
        nk, g = cfg.norm, cfg.groups
        w = cfg.width
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.in_channels, w, 3, cfg.stem_stride, 1, bias=False),
            _norm(nk, w, g),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        cin = w
        for i in range(cfg.stages):
            cout = w * 2**i
            for b in range(cfg.blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                layers.append(BasicBlock(cin, cout, stride, nk, g))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self.neck = nn.Sequential(
            nn.Conv2d(cin, cfg.embed_dim, 1, bias=False),
            _norm(nk, cfg.embed_dim, g),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(
            nn.Linear(cfg.embed_dim, cfg.embed_dim),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.embed_dim, cfg.proj_dim),
        )
        self.register_buffer("norm_mean", torch.zeros(cfg.in_channels))
        self.register_buffer("norm_scale", torch.ones(cfg.in_channels))
        self.metrics: dict[str, Any] | None = None
        self.train_config = None
        self.classes: list[Any] | None = None
        self.reset_parameters(0)

    # ------------------------------------------------------------------ sizes
    @property
    def in_channels(self) -> int:
        return self.cfg.in_channels

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    @property
    def device(self) -> torch.device:
        return self.norm_mean.device

    def reset_parameters(self, seed: int) -> None:
        """He-normal convolutions, unit norms with the last norm of each block at 0."""
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(
                        m.weight, mode="fan_out", nonlinearity="relu", generator=gen
                    )
                elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Linear):
                    bound = 1.0 / math.sqrt(m.in_features)
                    nn.init.uniform_(m.weight, -bound, bound, generator=gen)
                    nn.init.zeros_(m.bias)
            # zero-init residual branches (Goyal et al. 2017): every block starts as identity
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.n2.weight)

    # ------------------------------------------------------------ normalisation
    def set_normalization(self, mean: Any, scale: Any) -> None:
        """Per-channel statistics of raw units: ``x_n = (x - mean) / scale``."""
        mean = torch.as_tensor(np.asarray(mean, dtype=np.float32)).reshape(-1)
        scale = torch.as_tensor(np.asarray(scale, dtype=np.float32)).reshape(-1)
        if mean.numel() != self.in_channels or scale.numel() != self.in_channels:
            raise SparsecellError(
                f"normalisation has {mean.numel()} channels, the encoder {self.in_channels}",
                "pass one mean and one scale per channel",
            )
        with torch.no_grad():
            self.norm_mean.copy_(mean)
            self.norm_scale.copy_(scale)

    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.norm_mean[:, None, None]) / self.norm_scale[:, None, None]

    # ------------------------------------------------------------------ forward
    def feature_map(self, xn: torch.Tensor) -> torch.Tensor:
        """Token map ``B × embed_dim × h × w`` of *normalised* input."""
        return self.neck(self.stages(self.stem(xn)))

    def embed_normalized(self, xn: torch.Tensor) -> torch.Tensor:
        """Embedding ``B × embed_dim`` of *normalised* input (the training path)."""
        return self.feature_map(xn).float().mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``B × embed_dim`` of raw units ``B × C × H × W``."""
        return self.embed_normalized(self.normalize_input(x))

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Per-position tokens ``B × (h·w) × embed_dim`` of the last stage (raw input).

        Their mean over positions is the embedding :meth:`forward` returns.
        """
        f = self.feature_map(self.normalize_input(x)).float()
        return f.flatten(2).transpose(1, 2)

    def project(self, emb: torch.Tensor) -> torch.Tensor:
        """L2-normalised projection-head output (the space of the contrastive loss)."""
        return F.normalize(self.head(emb).float(), dim=1)

    # ------------------------------------------------------------------ helpers
    def embed(self, units: Any, **kwargs: Any) -> np.ndarray:
        """Embeddings of ``units``; see :func:`sparsecell.encode.embed`."""
        from .embed import embed

        return embed(self, units, **kwargs)

    def save(self, path: str, metrics: dict[str, Any] | None = None) -> None:
        """Write ``model.safetensors`` + ``cfg.json`` to folder ``path``, atomically."""
        from .checkpoint import save

        save(self, path, metrics=metrics)

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"Encoder(in_channels={c.in_channels}, width={c.width}, stages={c.stages},"
            f" blocks={c.blocks}, norm={c.norm!r}, embed_dim={c.embed_dim})"
        )


__all__ = ["BasicBlock", "Encoder"]
