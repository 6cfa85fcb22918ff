"""Batched image augmentations on torch tensors (no torchvision).

Every function takes a ``B × C × H × W`` float tensor on any device and a
``torch.Generator``. The random parameters (a few numbers per unit) are drawn on the
CPU from that generator and moved to the tensor's device, so a seed gives the same
augmentations on CPU and GPU; the pixel work runs on the device without host
synchronisation.

- :func:`random_flip_rotate`: a uniformly random element of the dihedral group of the
  square (flips and 90° rotations) per unit, as the composition of a transpose, a vertical
  and a horizontal flip, each with probability ½ — an exact permutation of the pixels.
- :func:`random_resized_crop`: a random sub-window per unit, resampled bilinearly back to
  ``H × W`` (one batched ``F.grid_sample`` instead of one ``F.interpolate`` per unit).
- :func:`intensity_jitter`: per-unit, per-channel gain and offset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _coin(n: int, p: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=gen) < p).to(device, non_blocking=True)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask[:, None, None, None], a, b)


def random_flip_rotate(
    x: torch.Tensor, gen: torch.Generator, *, flip: bool = True, rotate: bool = True
) -> torch.Tensor:
    """Random flips and 90° rotations of each unit.

    With both on, each of the 8 symmetries of the square is equally likely (a transpose,
    a vertical and a horizontal flip, each with probability ½). ``rotate`` alone gives each
    of the 4 rotations with probability ¼, ``flip`` alone a horizontal and a vertical flip
    with probability ½ each. Rotations by 90° need square units; for others only 180°.
    """
    B = x.shape[0]
    square = x.shape[-1] == x.shape[-2]
    if flip:
        if rotate and square:
            x = _where(_coin(B, 0.5, gen, x.device), x.transpose(-1, -2), x)
        x = _where(_coin(B, 0.5, gen, x.device), x.flip(-2), x)
        x = _where(_coin(B, 0.5, gen, x.device), x.flip(-1), x)
    elif rotate:
        if square:  # 90° counter-clockwise: transpose, then flip rows
            x = _where(_coin(B, 0.5, gen, x.device), x.transpose(-1, -2).flip(-2), x)
        x = _where(_coin(B, 0.5, gen, x.device), x.flip(-2, -1), x)
    return x


def random_resized_crop(
    x: torch.Tensor,
    gen: torch.Generator,
    *,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    p: float = 1.0,
) -> torch.Tensor:
    """A random window of area fraction in ``scale`` and aspect ratio in ``ratio`` per unit,
    resampled bilinearly to the input size; with probability ``1 - p`` the unit is kept.
    """
    B, _, H, W = x.shape
    if p <= 0 or B == 0:
        return x
    area = torch.empty(B).uniform_(scale[0], scale[1], generator=gen)
    logr = torch.empty(B).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = torch.exp(logr)
    # window size as fractions of the unit (clipped to fit), aspect = w / h in pixels
    fw = torch.sqrt(area * r * H / W).clamp(max=1.0)
    fh = torch.sqrt(area / r * W / H).clamp(max=1.0)
    cx = (torch.rand(B, generator=gen) * 2 - 1) * (1 - fw)
    cy = (torch.rand(B, generator=gen) * 2 - 1) * (1 - fh)
    keep = torch.rand(B, generator=gen) >= p
    fw = torch.where(keep, torch.ones_like(fw), fw)
    fh = torch.where(keep, torch.ones_like(fh), fh)
    cx = torch.where(keep, torch.zeros_like(cx), cx)
    cy = torch.where(keep, torch.zeros_like(cy), cy)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0] = fw
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = fh
    theta[:, 1, 2] = cy
    theta = theta.to(device=x.device, dtype=x.dtype, non_blocking=True)
    grid = F.affine_grid(theta, [B, x.shape[1], H, W], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.where(keep.to(x.device)[:, None, None, None], x, out)


def intensity_jitter(
    x: torch.Tensor, gen: torch.Generator, *, gain: float = 0.1, offset: float = 0.1
) -> torch.Tensor:
    """``x · g + o`` with ``g ~ U[1 - gain, 1 + gain]`` and ``o ~ U[-offset, offset]``
    drawn per unit and channel (on normalised units ``offset`` is in standard deviations).
    """
    B, C = x.shape[:2]
    if gain <= 0 and offset <= 0:
        return x
    g = 1 + (torch.rand(B, C, generator=gen) * 2 - 1) * gain
    o = (torch.rand(B, C, generator=gen) * 2 - 1) * offset
    g = g.to(device=x.device, dtype=x.dtype, non_blocking=True)[:, :, None, None]
    o = o.to(device=x.device, dtype=x.dtype, non_blocking=True)[:, :, None, None]
    return torch.addcmul(o, x, g)


@dataclass
class Augment:
    """The training augmentation: crop, then flips / rotations, then intensity jitter.

    Field meanings are those of :class:`~sparsecell.encode.EncoderTrainConfig`.
    """

    flip: bool = True
    rotate: bool = True
    crop_prob: float = 0.5
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    gain: float = 0.1
    offset: float = 0.1

    @classmethod
    def from_config(cls, tc) -> Augment:
        return cls(
            flip=tc.flip,
            rotate=tc.rotate,
            crop_prob=tc.crop_prob,
            crop_scale=tuple(tc.crop_scale),
            crop_ratio=tuple(tc.crop_ratio),
            gain=tc.gain,
            offset=tc.offset,
        )

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.crop_prob > 0:
            x = random_resized_crop(
                x, gen, scale=self.crop_scale, ratio=self.crop_ratio, p=self.crop_prob
            )
        if self.flip or self.rotate:
            x = random_flip_rotate(x, gen, flip=self.flip, rotate=self.rotate)
        return intensity_jitter(x, gen, gain=self.gain, offset=self.offset)


__all__ = ["Augment", "intensity_jitter", "random_flip_rotate", "random_resized_crop"]
