"""Cell-death rate from a dead-cell stain (CytoTox-like), as in the seed paper.

The dead-cell channel of a field is thresholded once: global Otsu over the field, floored
a few noise widths above the median so that a field without dead cells does not split its
background noise (or a fixed value). The cell-death rate of a region is the fraction of
its *nuclear* pixels above that threshold. For a patch the region is the patch (all nuclei
in it); for a cell-centred crop it is the crop's own nucleus. A region without nuclear
pixels has rate NaN.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .qc import foreground_threshold
from .units import window_fraction

__all__ = ["cell_death_rate", "dead_threshold", "death_rate_cells", "death_rate_windows"]


def dead_threshold(
    dead: np.ndarray, method: Literal["otsu"] | float = "otsu", noise_sigmas: float = 5.0
) -> float:
    """Threshold of a field's dead-cell channel.

    Parameters
    ----------
    dead
        2-D dead-cell channel of one field.
    method
        ``'otsu'`` (global Otsu over the field, the paper's rule) or a fixed value.
    noise_sigmas
        Floor of the Otsu threshold: ``median + noise_sigmas · 1.4826 · MAD`` of the
        channel. Where dead cells exist Otsu lies far above it and nothing changes; in a
        field without dead cells plain Otsu would split background noise and call most
        nuclei dead. 0 gives the paper's plain Otsu.

    Returns
    -------
    float
        Pixels strictly above it count as dead-stained; a flat channel gives its value
        (so nothing is above).
    """
    return foreground_threshold(dead, method, noise_sigmas)


def cell_death_rate(
    nuclei: np.ndarray,
    dead: np.ndarray,
    threshold: float | Literal["otsu"] = "otsu",
    noise_sigmas: float = 5.0,
) -> float:
    """Fraction of nuclear pixels above the dead-cell threshold, over a whole image.

    Parameters
    ----------
    nuclei
        Nuclear mask (bool) or labels (0 = background), 2-D.
    dead
        Dead-cell channel, same shape.
    threshold
        A value, or ``'otsu'`` to compute it from ``dead`` (see :func:`dead_threshold`).
    noise_sigmas
        Noise floor of the Otsu threshold (see :func:`dead_threshold`).

    Returns
    -------
    float
        The rate in [0, 1]; NaN without nuclear pixels.
    """
    t = dead_threshold(dead, threshold, noise_sigmas)
    nuc = nuclei > 0
    n = int(nuc.sum())
    return float(np.count_nonzero(dead[nuc] > t)) / n if n else float("nan")


def death_rate_windows(
    nuclei: np.ndarray, dead_above: np.ndarray, positions: np.ndarray, size: int
) -> np.ndarray:
    """Cell-death rate of square windows (patches).

    Parameters
    ----------
    nuclei
        Nuclear mask or labels of the field.
    dead_above
        Boolean mask of dead-channel pixels above the field's threshold.
    positions
        ``n × 2`` top-left corners of the windows.
    size
        Window side.

    Returns
    -------
    numpy.ndarray
        ``n`` rates; NaN for windows without nuclear pixels.
    """
    return window_fraction(dead_above, positions, size, within=nuclei > 0)


def death_rate_cells(labels: np.ndarray, dead_above: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Cell-death rate of individual nuclei.

    Parameters
    ----------
    labels
        Nuclei labels of the field.
    dead_above
        Boolean mask of dead-channel pixels above the field's threshold.
    ids
        Labels of the nuclei wanted.

    Returns
    -------
    numpy.ndarray
        Per nucleus the fraction of its pixels above threshold (NaN for an absent label).
    """
    flat = labels.ravel()
    n = max(int(flat.max()) + 1, int(np.max(ids, initial=0)) + 1)
    area = np.bincount(flat, minlength=n).astype(np.float64)
    hit = np.bincount(flat, weights=dead_above.ravel().astype(np.float64), minlength=n)
    ids = np.asarray(ids, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(area[ids] > 0, hit[ids] / np.maximum(area[ids], 1), np.nan)
