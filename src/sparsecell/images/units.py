"""Cut fields into units: a grid of non-overlapping patches, or crops centred on nuclei.

Positions are the top-left corner ``(y, x)`` of each unit in its field, in pixels.

- **Patches** tile the field from its top-left corner in row-major order; the strip of
  ``H mod size`` rows at the bottom and ``W mod size`` columns at the right that cannot
  hold a whole patch is left out (as the seed paper's non-overlapping 128×128 patches).
- **Cell crops** put the nucleus centroid (rounded) at pixel ``(size // 2, size // 2)``
  of the crop. A crop that would leave the field is dropped (``edge='drop'``, default:
  no unit ever holds made-up pixels) or padded with zeros (``edge='pad'``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .._errors import SparsecellError

__all__ = ["crop_units", "extract_patches", "patch_positions", "window_fraction"]


def _check_size(size: int, height: int, width: int) -> int:
    size = int(size)
    if size < 1:
        raise SparsecellError(f"unit size {size} must be positive", "use e.g. size=128")
    return size


def patch_positions(height: int, width: int, size: int) -> np.ndarray:
    """Top-left corners of the non-overlapping ``size × size`` patches of a field.

    Parameters
    ----------
    height, width
        Field shape in pixels.
    size
        Patch side in pixels.

    Returns
    -------
    numpy.ndarray
        ``n × 2`` int64 ``(y, x)`` in row-major order; ``n = (height // size) ·
        (width // size)`` (0 when the field is smaller than one patch).
    """
    size = _check_size(size, height, width)
    ys = np.arange(height // size, dtype=np.int64) * size
    xs = np.arange(width // size, dtype=np.int64) * size
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def extract_patches(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a ``C × H × W`` field into non-overlapping patches.

    Parameters
    ----------
    image
        ``C × H × W`` field.
    size
        Patch side in pixels.

    Returns
    -------
    units : numpy.ndarray
        ``N × C × size × size`` float32, row-major over the grid.
    positions : numpy.ndarray
        ``N × 2`` top-left ``(y, x)`` (see :func:`patch_positions`).
    """
    if image.ndim != 3:
        raise SparsecellError(f"expected a C × H × W field, got shape {image.shape}", "")
    C, H, W = image.shape
    pos = patch_positions(H, W, size)
    ny, nx = H // size, W // size
    grid = image[:, : ny * size, : nx * size].reshape(C, ny, size, nx, size)
    units = np.ascontiguousarray(grid.transpose(1, 3, 0, 2, 4), dtype=np.float32)
    return units.reshape(ny * nx, C, size, size), pos


def crop_units(
    image: np.ndarray,
    centres: np.ndarray,
    size: int,
    edge: Literal["drop", "pad"] = "drop",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops of ``size × size`` centred on points (e.g. nucleus centroids).

    Parameters
    ----------
    image
        ``C × H × W`` field.
    centres
        ``n × 2`` ``(y, x)`` centres in pixels (float allowed; rounded).
    size
        Crop side in pixels; the centre lands on pixel ``(size // 2, size // 2)``.
    edge
        ``'drop'`` leaves out crops that would extend past the field; ``'pad'`` keeps
        them, zero-filled outside the field.

    Returns
    -------
    units : numpy.ndarray
        ``m × C × size × size`` float32.
    positions : numpy.ndarray
        ``m × 2`` int64 top-left ``(y, x)`` in field coordinates (negative when padded).
    kept : numpy.ndarray
        Indices into ``centres`` of the crops returned.
    """
    if edge not in ("drop", "pad"):
        raise SparsecellError(f"unknown edge mode {edge!r}", "use edge='drop' or 'pad'")
    C, H, W = image.shape
    size = _check_size(size, H, W)
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    tl = np.floor(centres + 0.5).astype(np.int64) - size // 2
    inside = (tl[:, 0] >= 0) & (tl[:, 1] >= 0) & (tl[:, 0] + size <= H) & (tl[:, 1] + size <= W)
    kept = np.flatnonzero(inside) if edge == "drop" else np.arange(len(tl))
    units = np.zeros((len(kept), C, size, size), np.float32)
    for k, i in enumerate(kept):
        y0, x0 = tl[i]
        ya, xa = max(y0, 0), max(x0, 0)
        yb, xb = min(y0 + size, H), min(x0 + size, W)
        if ya < yb and xa < xb:
            units[k, :, ya - y0 : yb - y0, xa - x0 : xb - x0] = image[:, ya:yb, xa:xb]
    return units, tl[kept], kept


def window_fraction(
    mask: np.ndarray, positions: np.ndarray, size: int, within: np.ndarray | None = None
) -> np.ndarray:
    """Per window: fraction of its pixels where ``mask`` is true.

    Parameters
    ----------
    mask
        ``H × W`` boolean.
    positions
        ``n × 2`` top-left ``(y, x)`` of ``size × size`` windows (may extend past the field;
        only the part inside counts).
    size
        Window side.
    within
        Optional ``H × W`` boolean: the fraction is taken over the window's pixels where
        ``within`` is true instead of over all of them (NaN when there are none).

    Returns
    -------
    numpy.ndarray
        ``n`` float64 fractions.
    """
    num = _window_sums(mask if within is None else (mask & within), positions, size)
    if within is None:
        den = _window_sums(np.ones(mask.shape, bool), positions, size)
    else:
        den = _window_sums(within, positions, size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def _window_sums(mask: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
    H, W = mask.shape
    sat = np.zeros((H + 1, W + 1), np.int64)
    np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1, out=sat[1:, 1:])
    pos = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
    y0 = np.clip(pos[:, 0], 0, H)
    x0 = np.clip(pos[:, 1], 0, W)
    y1 = np.clip(pos[:, 0] + size, 0, H)
    x1 = np.clip(pos[:, 1] + size, 0, W)
    return (sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]).astype(np.float64)
