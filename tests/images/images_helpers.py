"""Synthetic fields for the image tests: bright disks (nuclei) on a noisy background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage as ndi

CHANNELS = ["cyto", "nuclei", "dead"]


def disk_field(
    centres,
    size: int = 256,
    radius: float = 8.0,
    dead: set[int] | frozenset[int] = frozenset(),
    seed: int = 0,
) -> np.ndarray:
    """``3 × size × size`` uint16: cytoplasm rings, nuclei disks, dead stain in ``dead``.

    Background ~100 ± 5 counts; nuclei 1000 (+ texture); cytoplasm 600 around each
    nucleus with sharp puncta; dead stain 3000 over the nuclei listed in ``dead`` (2 px
    wider than the nucleus, so each segmented nucleus is wholly dead or alive).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = np.full((3, size, size), 100.0)
    for i, (cy, cx) in enumerate(centres):
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        cell = r2 <= (2.2 * radius) ** 2
        nuc = r2 <= radius**2
        img[0][cell] = 600
        img[1][nuc] = 1000
        if i in dead:  # the stain fills the nucleus and spills a little around it
            img[2][r2 <= (radius + 2) ** 2] = 3000
    # puncta: sharp single-pixel spots inside cells (texture for the focus measure)
    spots = (rng.random((size, size)) < 0.05) & (img[0] > 300)
    img[0][spots] += 1500
    img[1] += 200 * (rng.random((size, size)) < 0.1) * (img[1] > 300)
    img += rng.normal(0, 5, img.shape)
    return np.clip(np.rint(img), 0, 65535).astype(np.uint16)


def grid_centres(n_side: int = 4, size: int = 256, jitter: float = 4.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    step = size / n_side
    c = [(step * (i + 0.5), step * (j + 0.5)) for i in range(n_side) for j in range(n_side)]
    return [(y + rng.uniform(-jitter, jitter), x + rng.uniform(-jitter, jitter)) for y, x in c]


def blurred(field: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    out = np.stack([ndi.gaussian_filter(c.astype(np.float64), sigma) for c in field])
    return np.rint(out).astype(np.uint16)


def empty_field(size: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(100 + rng.normal(0, 5, (3, size, size))), 0, None).astype(np.uint16)


def write_set(root: Path, fields: dict[str, np.ndarray], **meta_cols) -> pd.DataFrame:
    """Write fields as CYX TIFFs into ``root`` and return a metadata table for them."""
    root.mkdir(parents=True, exist_ok=True)
    for name, f in fields.items():
        tifffile.imwrite(root / name, f, photometric="minisblack", metadata={"axes": "CYX"})
    names = list(fields)
    meta = pd.DataFrame(
        {
            "file": names,
            "well": [f"A{i + 1:02d}" for i in range(len(names))],
            "field": [str(i + 1) for i in range(len(names))],
            "line": [f"L{i % 2}" for i in range(len(names))],
            "genotype": ["Control" if i % 2 == 0 else "SNCA" for i in range(len(names))],
            "plate": ["P1"] * len(names),
            "channels": [";".join(CHANNELS)] * len(names),
        }
    )
    for k, v in meta_cols.items():
        meta[k] = v
    return meta
