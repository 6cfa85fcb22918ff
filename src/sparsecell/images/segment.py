"""Nuclei segmentation of a nuclear channel (Hoechst / DAPI).

Gaussian smoothing → threshold (Otsu with a noise floor, or a fixed value) → holes filled
→ distance transform → markers at the h-maxima of the distance, with a depth relative to
each object's size (so one round or kidney-shaped nucleus gives one marker and two
touching ones give two) → watershed of the negative distance inside the
mask → objects outside ``[min_area, max_area]`` removed → labels renumbered 1..n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .._errors import SparsecellError
from .qc import foreground_threshold

__all__ = ["NucleiConfig", "nuclei_table", "segment_nuclei"]


@dataclass(frozen=True)
class NucleiConfig:
    """Settings of :func:`segment_nuclei`."""

    sigma: float = 2.0
    """Gaussian smoothing before thresholding, in pixels (0 for none)."""

    threshold: Literal["otsu"] | float = "otsu"
    """``'otsu'`` per field (raised to the noise floor), or a fixed value in raw units."""

    noise_sigmas: float = 3.0
    """Noise floor of the Otsu threshold in robust standard deviations above the median
    of the smoothed channel (0 for plain Otsu)."""

    min_area: int = 30
    """Smallest nucleus kept, in pixels."""

    max_area: int | None = None
    """Largest nucleus kept, in pixels (``None``: no limit); drops clumps and debris."""

    split_rel: float = 0.3
    """Touching nuclei are split where the distance map dips: a second seed needs a
    depth of at least this fraction of its object's largest distance (two equal disks
    are split when their centres are more than ~1.4 radii apart; 0 disables splitting,
    giving connected components)."""

    split_h: float = 2.0
    """Least depth, in pixels, of a seed (keeps small ragged objects whole)."""

    def __post_init__(self) -> None:
        if self.min_area < 0 or (self.max_area is not None and self.max_area < self.min_area):
            raise SparsecellError(
                f"nucleus area range [{self.min_area}, {self.max_area}] is empty",
                "use 0 <= min_area <= max_area",
            )
        if isinstance(self.threshold, str) and self.threshold != "otsu":
            raise SparsecellError(
                f"NucleiConfig.threshold={self.threshold!r} is not understood",
                "use 'otsu' or a number",
            )


def segment_nuclei(image: np.ndarray, config: NucleiConfig | None = None) -> np.ndarray:
    """Label the nuclei of one nuclear-channel image.

    Parameters
    ----------
    image
        2-D nuclear channel (any numeric dtype).
    config
        Segmentation settings; default :class:`NucleiConfig()`.

    Returns
    -------
    numpy.ndarray
        ``int32`` labels of the same shape: 0 background, 1..n nuclei.
    """
    cfg = config or NucleiConfig()
    if image.ndim != 2:
        raise SparsecellError(
            f"segment_nuclei needs a 2-D image, got shape {image.shape}", "pass one channel"
        )
    img = image.astype(np.float32, copy=False)
    if cfg.sigma > 0:
        img = ndi.gaussian_filter(img, cfg.sigma)
    t = foreground_threshold(img, cfg.threshold, cfg.noise_sigmas)
    mask = ndi.binary_fill_holes(img > t)
    if not mask.any():
        return np.zeros(image.shape, np.int32)
    if cfg.split_rel > 0:
        labels = _split(mask, cfg)
    else:
        labels, _ = ndi.label(mask)
    return _filter_areas(labels.astype(np.int32, copy=False), cfg.min_area, cfg.max_area)


def _split(mask: np.ndarray, cfg: NucleiConfig) -> np.ndarray:
    """Distance-transform watershed, object by object (on its bounding box: fast on
    sparse fields, where most of the image is background)."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    dist = ndi.distance_transform_edt(mask)
    comps, _ = ndi.label(mask)
    labels = np.zeros(mask.shape, np.int32)
    eight = np.ones((3, 3), bool)
    nxt = 1
    for k, sl in enumerate(ndi.find_objects(comps), start=1):
        if sl is None:
            continue
        obj = comps[sl] == k
        if obj.sum() < cfg.min_area:
            continue  # too small to keep, whole or split
        d = np.where(obj, dist[sl], 0.0)
        peak = float(d.max())
        # the depth a seed needs: relative to the object's size, at least split_h
        need = max(cfg.split_rel * peak, cfg.split_h, 1e-6)
        n = 1
        if peak >= 1.0 + need:  # else no second seed can be deep enough
            seeds, n = ndi.label(h_maxima(np.pad(d / need, 1), 1.0)[1:-1, 1:-1] & obj, eight)
        view = labels[sl]
        if n <= 1:
            view[obj] = nxt
            nxt += 1
            continue
        ws = watershed(-d, seeds, mask=obj)
        view[obj] = ws[obj] + (nxt - 1)
        nxt += n
    return labels


def _filter_areas(labels: np.ndarray, min_area: int, max_area: int | None) -> np.ndarray:
    areas = np.bincount(labels.ravel())
    keep = areas >= min_area
    if max_area is not None:
        keep &= areas <= max_area
    keep[0] = False
    new = np.zeros(len(areas), np.int32)
    new[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new[labels]


def nuclei_table(labels: np.ndarray) -> pd.DataFrame:
    """Centroid and area of every labelled nucleus.

    Parameters
    ----------
    labels
        Labels from :func:`segment_nuclei` (0 is background).

    Returns
    -------
    pandas.DataFrame
        One row per label present, columns ``label``, ``y``, ``x`` (centroid, float
        pixels) and ``area`` (pixels), sorted by label.
    """
    flat = labels.ravel()
    n = int(flat.max()) + 1 if flat.size else 1
    area = np.bincount(flat, minlength=n)
    yy, xx = np.indices(labels.shape)
    sy = np.bincount(flat, weights=yy.ravel(), minlength=n)
    sx = np.bincount(flat, weights=xx.ravel(), minlength=n)
    ids = np.flatnonzero(area)
    ids = ids[ids > 0]
    return pd.DataFrame(
        {
            "label": ids.astype(np.int64),
            "y": sy[ids] / area[ids],
            "x": sx[ids] / area[ids],
            "area": area[ids].astype(np.int64),
        }
    )
