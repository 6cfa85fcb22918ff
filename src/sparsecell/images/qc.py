"""Quality control of fields and units: focus, intensity, background, foreground per unit.

Per field and per QC channel:

- **foreground threshold** ``t = max(Otsu, median + noise_sigmas · 1.4826 · MAD)``, or a
  fixed value. The noise floor keeps Otsu from splitting pure noise in half, so an empty
  field is seen as empty.
- **foreground** = pixels above ``t`` in any QC channel; **background fraction** = 1 −
  foreground fraction.
- **focus** = mean squared Laplacian of the channel, scaled by its dynamic range
  (99.9th percentile − median), over the foreground dilated by 3 px (a 7 × 7 square);
  the median over QC channels. It is the variance of the Laplacian restricted to where
  the cells are, made dimensionless, so it does not depend on bit depth or on how crowded
  a field is. A field with no foreground has focus 0.
- **mean intensity** = mean of the channel means (raw units).

A field fails when any configured limit is crossed; the reasons are listed in the QC
table. The relative focus rule compares each field with the median focus of the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from .._errors import SparsecellError

__all__ = [
    "ChannelStats",
    "FieldQC",
    "QCConfig",
    "channel_stats",
    "field_qc",
    "focus_score",
    "foreground_threshold",
    "judge",
]

_SAMPLE = 262_144  # pixels used for robust statistics (a fixed stride, no randomness)


@dataclass(frozen=True)
class QCConfig:
    """Thresholds of field and unit quality control (``None`` switches a rule off)."""

    channels: tuple[str | int, ...] | None = None
    """Channels (names or indices) that QC looks at; ``None``: all but the dead-cell one."""

    min_focus: float | None = None
    """Absolute minimum focus (dimensionless, see the module docstring; sharp fields of
    real neurons score around 1e-2, a Gaussian blur of 1.5 px brings them below 3e-3)."""

    min_focus_rel: float | None = 0.25
    """A field fails when its focus is below this fraction of the run's median focus
    (applied when the run has at least ``min_fields_rel`` readable fields)."""

    min_fields_rel: int = 3
    """Fewest readable fields for the relative focus rule to apply."""

    min_mean_intensity: float | None = None
    """Minimum mean intensity over the QC channels (raw units, e.g. counts)."""

    max_background_fraction: float | None = 0.998
    """A field whose background fraction exceeds this is empty."""

    threshold: Literal["otsu"] | float = "otsu"
    """Foreground threshold: ``'otsu'`` per field and channel (with the noise floor), or
    one fixed value in raw units for all QC channels."""

    noise_sigmas: float = 5.0
    """Noise floor of the Otsu threshold, in robust standard deviations above the
    median (0 for plain Otsu)."""

    min_unit_foreground: float = 0.0
    """Units whose foreground fraction is below this are dropped (0 keeps all; e.g.
    0.02 drops background-only patches)."""

    def __post_init__(self) -> None:
        if isinstance(self.threshold, str) and self.threshold != "otsu":
            raise SparsecellError(
                f"QCConfig.threshold={self.threshold!r} is not understood",
                "use 'otsu' or a number",
            )
        for name in ("max_background_fraction", "min_unit_foreground", "min_focus_rel"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise SparsecellError(f"QCConfig.{name}={v} is outside [0, 1]", "fix it")
        if self.channels is not None:
            object.__setattr__(self, "channels", tuple(self.channels))


@dataclass(frozen=True)
class ChannelStats:
    """Robust statistics of one channel (exact for integer images, from a fixed-stride
    sample of at most 262,144 pixels for float images)."""

    lo: float
    hi: float
    median: float
    sigma: float  # 1.4826 · MAD: the noise of the background where it dominates
    p999: float  # 99.9th percentile


def channel_stats(image: np.ndarray) -> ChannelStats:
    """Minimum, maximum, median, robust sigma and 99.9th percentile of a channel.

    Parameters
    ----------
    image
        A 2-D channel.

    Returns
    -------
    ChannelStats
        The figures (integer images go through a histogram: exact and O(n)).
    """
    flat = image.ravel()
    lo, hi = float(flat.min()), float(flat.max())
    if flat.dtype.kind in "ui" and hi - lo <= (1 << 20):
        counts = np.bincount((flat - flat.dtype.type(lo)).astype(np.intp, copy=False))
        vals = np.arange(len(counts), dtype=np.float64) + lo
        cum = np.cumsum(counts)
        n = cum[-1]

        def q(p: float) -> float:
            return float(vals[int(np.searchsorted(cum, p * (n - 1) + 1))])

        med = q(0.5)
        dev = np.abs(vals - med)
        order = np.argsort(dev, kind="stable")
        dcum = np.cumsum(counts[order])
        mad = float(dev[order][int(np.searchsorted(dcum, 0.5 * (n - 1) + 1))])
        p999 = q(0.999)
    else:
        step = max(1, flat.size // _SAMPLE)
        smp = flat[::step].astype(np.float64)
        med, p999 = (float(v) for v in np.quantile(smp, [0.5, 0.999]))
        mad = float(np.median(np.abs(smp - med)))
    return ChannelStats(lo=lo, hi=hi, median=med, sigma=1.4826 * mad, p999=p999)


def foreground_threshold(
    image: np.ndarray,
    method: Literal["otsu"] | float = "otsu",
    noise_sigmas: float = 5.0,
    stats: ChannelStats | None = None,
) -> float:
    """Threshold between background and foreground of one channel.

    Parameters
    ----------
    image
        A 2-D channel.
    method
        ``'otsu'``, or a number returned as it is.
    noise_sigmas
        The Otsu threshold is raised to at least ``median + noise_sigmas · 1.4826 · MAD``.
    stats
        The channel's :func:`channel_stats`, when already known.

    Returns
    -------
    float
        The threshold; pixels strictly above it are foreground.
    """
    if not isinstance(method, str):
        return float(method)
    from skimage.filters import threshold_otsu

    st = stats or channel_stats(image)
    if st.hi <= st.lo:
        return st.hi
    t = float(threshold_otsu(image))
    if noise_sigmas > 0:
        t = max(t, st.median + noise_sigmas * st.sigma)
    return t


def focus_score(
    image: np.ndarray, foreground: np.ndarray | None = None, stats: ChannelStats | None = None
) -> float:
    """Dimensionless focus of one channel: mean squared Laplacian over the foreground.

    Parameters
    ----------
    image
        A 2-D channel.
    foreground
        Where to measure (dilated by 3 px here); ``None`` measures the whole field.
    stats
        The channel's :func:`channel_stats`, when already known.

    Returns
    -------
    float
        ``mean(laplace(image / range)²)`` over the region, ``range`` = 99.9th percentile −
        median (or max − min when that is 0); 0 for a flat channel or an empty region.
    """
    st = stats or channel_stats(image)
    rng = st.p999 - st.median
    if rng <= 0:
        rng = st.hi - st.lo
    if rng <= 0:
        return 0.0
    if foreground is not None:
        region = ndi.maximum_filter(foreground.view(np.uint8), size=7).view(bool)
        if not region.any():
            return 0.0
    lap = ndi.laplace(image.astype(np.float32) / np.float32(rng))
    vals = lap if foreground is None else lap[region]
    vals = vals.astype(np.float64)
    return float(np.mean(vals * vals))


@dataclass
class FieldQC:
    """Figures of one field.

    Attributes
    ----------
    focus
        Median over QC channels of :func:`focus_score`.
    mean_intensity
        Mean over QC channels of the channel means (raw units).
    background_fraction
        Fraction of pixels below the threshold in every QC channel.
    channel_means
        Mean of every channel of the field (all channels, raw units).
    thresholds
        Foreground threshold per QC channel (index → value).
    foreground
        ``H × W`` boolean mask: above threshold in any QC channel.
    """

    focus: float
    mean_intensity: float
    background_fraction: float
    channel_means: list[float]
    thresholds: dict[int, float]
    foreground: np.ndarray


def field_qc(pixels: np.ndarray, qc_channels: Sequence[int], config: QCConfig) -> FieldQC:
    """Measure one field.

    Parameters
    ----------
    pixels
        ``C × H × W`` field.
    qc_channels
        Indices of the channels QC looks at.
    config
        Thresholds (``threshold`` and ``noise_sigmas`` are used here).

    Returns
    -------
    FieldQC
        The figures and the foreground mask.
    """
    fg = np.zeros(pixels.shape[1:], dtype=bool)
    thresholds: dict[int, float] = {}
    foci = []
    for c in qc_channels:
        st = channel_stats(pixels[c])
        t = foreground_threshold(pixels[c], config.threshold, config.noise_sigmas, st)
        thresholds[int(c)] = t
        above = pixels[c] > t
        fg |= above
        foci.append(focus_score(pixels[c], above, st))
    means = [float(pixels[c].mean(dtype=np.float64)) for c in range(pixels.shape[0])]
    return FieldQC(
        focus=float(np.median(foci)) if foci else 0.0,
        mean_intensity=float(np.mean([means[c] for c in qc_channels])),
        background_fraction=1.0 - float(fg.mean()),
        channel_means=means,
        thresholds=thresholds,
        foreground=fg,
    )


def judge(
    focus: float,
    mean_intensity: float,
    background_fraction: float,
    config: QCConfig,
    median_focus: float | None = None,
) -> list[str]:
    """Reasons a field fails QC (an empty list when it passes).

    Parameters
    ----------
    focus, mean_intensity, background_fraction
        The field's figures (see :class:`FieldQC`).
    config
        The limits.
    median_focus
        The run's median focus for the relative rule (``None`` skips it).

    Returns
    -------
    list of str
        Human-readable reasons, e.g. ``'empty (background fraction 0.9999 > 0.998)'``.
    """
    reasons = []
    bg_max = config.max_background_fraction
    if bg_max is not None and background_fraction > bg_max:
        reasons.append(f"empty (background fraction {background_fraction:.4f} > {bg_max:g})")
    if config.min_focus is not None and focus < config.min_focus:
        reasons.append(f"out of focus (focus {focus:.3g} < {config.min_focus:g})")
    if config.min_focus_rel is not None and median_focus is not None and median_focus > 0:
        limit = config.min_focus_rel * median_focus
        if focus < limit:
            reasons.append(
                f"out of focus (focus {focus:.3g} < {config.min_focus_rel:g} × run median "
                f"{median_focus:.3g})"
            )
    if config.min_mean_intensity is not None and mean_intensity < config.min_mean_intensity:
        reasons.append(
            f"too dim (mean intensity {mean_intensity:.4g} < {config.min_mean_intensity:g})"
        )
    return reasons
