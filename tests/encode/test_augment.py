"""Augmentations: shapes, seeds, exact pixel permutations, known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsecell.encode.augment import (
    Augment,
    intensity_jitter,
    random_flip_rotate,
    random_resized_crop,
)


def _x(B=64, C=3, S=16, dtype=torch.float32, seed=0):
    return torch.randn(B, C, S, S, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _d4(u: torch.Tensor) -> list[torch.Tensor]:
    """The 8 symmetries of the square applied to one unit C × S × S."""
    rots = [torch.rot90(u, k, dims=(-2, -1)) for k in range(4)]
    return rots + [r.flip(-1) for r in rots]


def _which(u: torch.Tensor, out: torch.Tensor) -> int:
    hits = [i for i, t in enumerate(_d4(u)) if torch.equal(t, out)]
    assert hits, "output is not a symmetry of the input"
    return hits[0]


AUGS = {
    "flip_rotate": lambda x, g: random_flip_rotate(x, g),
    "crop": lambda x, g: random_resized_crop(x, g, p=1.0),
    "jitter": lambda x, g: intensity_jitter(x, g, gain=0.2, offset=0.3),
    "all": lambda x, g: Augment()(x, g),
}


@pytest.mark.parametrize("name", sorted(AUGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_seed(name, dtype):
    f = AUGS[name]
    x = _x(dtype=dtype)
    a = f(x, torch.Generator().manual_seed(1))
    b = f(x, torch.Generator().manual_seed(1))
    c = f(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == dtype and a.device == x.device
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.isfinite(a).all()


def test_flip_rotate_is_a_uniform_symmetry_per_unit():
    x = _x(B=400, C=2, S=8)
    out = random_flip_rotate(x, torch.Generator().manual_seed(0))
    seen = np.array([_which(x[i], out[i]) for i in range(len(x))])
    counts = np.bincount(seen, minlength=8)
    assert (counts > 0).all()  # every one of the 8 symmetries occurs
    assert counts.max() < 2.5 * counts.min()  # roughly uniform (expected 50 each)
    # an exact permutation: the multiset of pixel values per unit is unchanged
    assert torch.equal(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


def test_rotate_only_gives_rotations():
    x = _x(B=200, C=1, S=6)
    out = random_flip_rotate(x, torch.Generator().manual_seed(0), flip=False)
    seen = {_which(x[i], out[i]) for i in range(len(x))}
    assert seen == {0, 1, 2, 3}


def test_flip_rotate_off_is_identity():
    x = _x()
    out = random_flip_rotate(x, torch.Generator(), flip=False, rotate=False)
    assert torch.equal(out, x)


def test_crop_known_answers():
    x = _x(B=8, C=2, S=12)
    g = torch.Generator().manual_seed(0)
    full = random_resized_crop(x, g, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(full, x, atol=1e-5, rtol=0)  # the whole unit: identity
    kept = random_resized_crop(x, g, p=0.0)
    assert torch.equal(kept, x)
    const = torch.full((4, 2, 12, 12), 3.0)
    out = random_resized_crop(const, g, scale=(0.2, 0.5))
    torch.testing.assert_close(out, const)  # resampling a constant keeps it
    # a zoom into the unit: the crop of a horizontal ramp is a narrower ramp
    ramp = torch.arange(12.0).expand(1, 1, 12, 12).clone()
    z = random_resized_crop(ramp, g, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    slope = (z[0, 0, :, 4:8] - z[0, 0, :, 3:7]).mean()  # interior: no border clamping
    assert slope == pytest.approx(0.5, abs=1e-4)


def test_jitter_is_per_channel_affine_within_bounds():
    x = _x(B=32, C=3, S=8)
    gain, offset = 0.2, 0.3
    out = intensity_jitter(x, torch.Generator().manual_seed(0), gain=gain, offset=offset)
    # recover g and o per (unit, channel) from two pixels, check all pixels agree
    a, b = x.flatten(2), out.flatten(2)
    g = (b[..., 1] - b[..., 0]) / (a[..., 1] - a[..., 0])
    o = b[..., 0] - g * a[..., 0]
    torch.testing.assert_close(b, a * g[..., None] + o[..., None], atol=1e-4, rtol=1e-4)
    assert (g >= 1 - gain - 1e-5).all() and (g <= 1 + gain + 1e-5).all()
    assert (o.abs() <= offset + 1e-5).all()
    assert torch.equal(intensity_jitter(x, torch.Generator(), gain=0, offset=0), x)
