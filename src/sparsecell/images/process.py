"""From an image folder and its metadata table to unit shards and a QC table, in one call.

For every field: read (z-stacks projected), measure QC (focus, intensity, background),
judge it against :class:`QCConfig`, cut units (patches or cell-centred crops), label their
cell-death rate from the dead-cell channel, drop units below the per-unit foreground
limit, and stream the units into shards. A field that cannot be read is skipped with its
reason. Everything lands in ``out`` atomically: ``units-*.npy``, ``obs.csv``, ``qc.csv``
and ``manifest.json`` (with the run summary); an interrupted run leaves nothing there.

When the relative focus rule is on and the run has enough fields, QC runs over all fields
first (to know the run's median focus) and the passing fields are cut afterwards (kept in
memory from the first pass up to 512 MiB, read a second time beyond); otherwise each field
is read once.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._errors import SparsecellError
from .._io import atomic_dir, atomic_write_text
from .io import STANDARD_OBS, FieldSet, read_field, validate
from .qc import FieldQC, QCConfig, field_qc, judge
from .segment import NucleiConfig, nuclei_table, segment_nuclei
from .shards import ShardWriter, UnitShards, check_target, finish_shards, open_shards
from .units import crop_units, extract_patches, window_fraction
from .viability import dead_threshold, death_rate_cells, death_rate_windows

__all__ = ["ProcessSummary", "process", "qc_fields"]

#: Most bytes of fields kept in memory between the QC pass and the units pass.
_CACHE_BYTES = 512 << 20

#: Columns of obs / qc.csv that sparsecell fills in (metadata may not use these names).
_UNIT_COLS = (
    "y",
    "x",
    "foreground_fraction",
    "cell_death_rate",
    "nucleus_label",
    "nucleus_y",
    "nucleus_x",
    "nucleus_area",
)
_RESERVED = frozenset(
    {
        *_UNIT_COLS,
        "unit",
        "passed",
        "status",
        "reason",
        "focus",
        "mean_intensity",
        "background_fraction",
        "height",
        "width",
        "n_z",
        "n_nuclei",
        "n_units",
        "n_units_dropped",
        "dead_threshold",
        "field_death_rate",
    }
)

#: Channel names taken as the nuclear stain when ``nuclear_channel`` is not given.
NUCLEAR_NAMES = ("nuclei", "nucleus", "nuclear", "dapi", "hoechst", "dna", "h33342", "draq5")


@dataclass
class ProcessSummary:
    """Counts of a :func:`process` run (also stored as ``manifest['summary']``).

    Attributes
    ----------
    n_files
        Files considered: metadata rows plus unlisted image files.
    n_fields_ok
        Fields that passed QC and gave units.
    n_failed_qc
        Fields that failed field QC.
    n_unreadable
        Corrupt or unreadable files (skipped).
    n_unlisted
        Image files without a metadata row (excluded).
    n_no_units
        Fields that passed QC but gave no unit (e.g. no nucleus, field smaller than a unit).
    n_units
        Units written.
    n_units_dropped
        Units cut but left out (unit QC, crops leaving the field).
    seconds
        Wall time of the run.
    """

    n_files: int = 0
    n_fields_ok: int = 0
    n_failed_qc: int = 0
    n_unreadable: int = 0
    n_unlisted: int = 0
    n_no_units: int = 0
    n_units: int = 0
    n_units_dropped: int = 0
    seconds: float = 0.0

    @property
    def units_per_second(self) -> float:
        """Units written per second of wall time."""
        return self.n_units / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON), with ``units_per_second``."""
        d = dataclasses.asdict(self)
        d["units_per_second"] = self.units_per_second
        return d


# ---------------------------------------------------------------------------- set-up


@dataclass
class _Setup:
    fields: FieldSet
    names: list[str]  # all channels of the files
    keep: list[int]  # channels of the units
    dead: int | None
    nuclear: int | None
    qc_channels: list[int]
    mode: str
    size: int
    qc: QCConfig
    nuclei: NucleiConfig
    edge: str
    dead_method: Literal["otsu"] | float
    dead_noise_sigmas: float
    read_kw: dict[str, Any]
    projection: str


def _channel(spec: str | int, names: list[str], what: str) -> int:
    if isinstance(spec, int | np.integer) and not isinstance(spec, bool):
        i = int(spec)
        if not -len(names) <= i < len(names):
            raise SparsecellError(
                f"{what}={spec} is out of range for {len(names)} channels",
                f"use 0..{len(names) - 1} or a name ({', '.join(names)})",
            )
        return i % len(names)
    if str(spec) in names:
        return names.index(str(spec))
    low = [n.lower() for n in names]
    if str(spec).lower() in low and low.count(str(spec).lower()) == 1:
        return low.index(str(spec).lower())
    raise SparsecellError(
        f"{what} {spec!r} is not one of the channels ({', '.join(names)})",
        "name a channel as listed, or pass its index",
    )


def _setup(
    metadata,
    image_dir,
    *,
    mode: str,
    size: int,
    channels,
    dead_channel,
    nuclear_channel,
    qc: QCConfig,
    nuclei: NucleiConfig | None,
    edge: str,
    dead_method,
    dead_noise_sigmas: float,
    channel_names,
    read_kw: dict[str, Any],
    projection: str,
    need_units: bool,
) -> _Setup:
    if mode not in ("patch", "cell"):
        raise SparsecellError(f"unknown mode {mode!r}", "use mode='patch' or mode='cell'")
    if int(size) < 1:
        raise SparsecellError(f"size={size} must be positive", "use e.g. size=128")
    if not isinstance(qc, QCConfig):
        raise SparsecellError(f"qc must be a QCConfig, got {type(qc).__name__}", "")
    if projection not in ("max", "mean"):
        raise SparsecellError(f"unknown projection {projection!r}", "use 'max' or 'mean'")
    fs = validate(metadata, image_dir, channel_names=channel_names, **read_kw)
    clash = sorted(set(map(str, fs.table.columns)) & _RESERVED)
    if clash:
        raise SparsecellError(
            f"metadata column(s) {', '.join(clash)} clash with columns sparsecell writes",
            "rename them in the metadata table",
        )
    names = fs.channels
    keep = (
        list(range(len(names)))
        if channels is None
        else [_channel(c, names, "channel") for c in channels]
    )
    if not keep:
        raise SparsecellError("channels is empty", "keep at least one channel")
    if len(set(keep)) != len(keep):
        raise SparsecellError("channels lists a channel twice", "list each channel once")
    dead = None if dead_channel is None else _channel(dead_channel, names, "dead_channel")
    nuclear = None
    if nuclear_channel is not None:
        nuclear = _channel(nuclear_channel, names, "nuclear_channel")
    elif need_units and (mode == "cell" or dead is not None):
        hits = [i for i, n in enumerate(names) if n.lower() in NUCLEAR_NAMES]
        if len(hits) != 1:
            why = "cell mode" if mode == "cell" else "the cell-death rate"
            raise SparsecellError(
                f"{why} needs a nuclear channel and none could be picked from ({', '.join(names)})",
                "pass nuclear_channel= (a name or an index)",
            )
        nuclear = hits[0]
    if qc.channels is not None:
        qc_ch = [_channel(c, names, "QCConfig.channels") for c in qc.channels]
    else:
        qc_ch = [c for c in keep if c != dead] or list(keep)
    return _Setup(
        fields=fs,
        names=names,
        keep=keep,
        dead=dead,
        nuclear=nuclear,
        qc_channels=qc_ch,
        mode=mode,
        size=int(size),
        qc=qc,
        nuclei=nuclei or NucleiConfig(),
        edge=edge,
        dead_method=dead_method,
        dead_noise_sigmas=dead_noise_sigmas,
        read_kw=read_kw,
        projection=projection,
    )


# ---------------------------------------------------------------------------- per field


def _meta_of(row: pd.Series) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("path", "channels")}


def _measure(path: str, s: _Setup, rec: dict[str, Any]) -> tuple[np.ndarray | None, FieldQC | None]:
    """Read and measure one field; on failure mark ``rec`` unreadable."""
    try:
        pixels = read_field(path, projection=s.projection, **s.read_kw)
    except SparsecellError as e:
        rec.update(status="unreadable", reason=f"unreadable: {e}")
        return None, None
    except Exception as e:  # a corrupt file is skipped, the run goes on
        rec.update(status="unreadable", reason=f"unreadable: {type(e).__name__}: {e}")
        return None, None
    if pixels.shape[0] != len(s.names):
        rec.update(
            status="unreadable",
            reason=f"unreadable: {pixels.shape[0]} channels, expected {len(s.names)}",
        )
        return None, None
    fq = field_qc(pixels, s.qc_channels, s.qc)
    rec.update(
        height=pixels.shape[1],
        width=pixels.shape[2],
        focus=fq.focus,
        mean_intensity=fq.mean_intensity,
        background_fraction=fq.background_fraction,
        **{f"mean_{n}": m for n, m in zip(s.names, fq.channel_means, strict=True)},
    )
    return pixels, fq


def _cut(
    pixels: np.ndarray, foreground: np.ndarray, s: _Setup, rec: dict[str, Any]
) -> tuple[np.ndarray, pd.DataFrame]:
    """Units of one field and their obs rows (metadata added by the caller)."""
    S = s.size
    labels = None
    if s.nuclear is not None and (s.mode == "cell" or s.dead is not None):
        labels = segment_nuclei(pixels[s.nuclear], s.nuclei)
        rec["n_nuclei"] = int(labels.max())
    cols: dict[str, Any] = {}
    if s.mode == "patch":
        units, pos = extract_patches(pixels[s.keep], S)
        n_cut = len(units)
    else:
        assert labels is not None
        tab = nuclei_table(labels)
        units, pos, kept = crop_units(pixels[s.keep], tab[["y", "x"]].to_numpy(), S, s.edge)
        n_cut = len(tab)
        tab = tab.iloc[kept]
        cols = {
            "nucleus_label": tab["label"].to_numpy(),
            "nucleus_y": tab["y"].to_numpy(),
            "nucleus_x": tab["x"].to_numpy(),
            "nucleus_area": tab["area"].to_numpy(),
        }
    fg = window_fraction(foreground, pos, S)
    obs = pd.DataFrame({"y": pos[:, 0], "x": pos[:, 1], "foreground_fraction": fg, **cols})
    if s.dead is not None:
        assert labels is not None
        dead = pixels[s.dead]
        t = dead_threshold(dead, s.dead_method, s.dead_noise_sigmas)
        above = dead > t
        nuc = labels > 0
        rec["dead_threshold"] = t
        n_nuc = int(nuc.sum())
        rec["field_death_rate"] = (
            float(np.count_nonzero(above & nuc)) / n_nuc if n_nuc else float("nan")
        )
        if s.mode == "patch":
            obs["cell_death_rate"] = death_rate_windows(labels, above, pos, S)
        else:
            obs["cell_death_rate"] = death_rate_cells(labels, above, cols["nucleus_label"])
    ok = np.ones(len(units), bool)
    if s.qc.min_unit_foreground > 0:
        ok = fg >= s.qc.min_unit_foreground
    if not ok.all():
        units, obs = units[ok], obs[ok].reset_index(drop=True)
    rec["n_units"] = len(units)
    rec["n_units_dropped"] = n_cut - len(units)
    if not len(units):
        rec.update(status="no_units", reason=_no_units_reason(s, rec, n_cut, len(ok)))
    return units, obs


def _no_units_reason(s: _Setup, rec: dict[str, Any], n_cut: int, n_inside: int) -> str:
    if s.mode == "cell" and rec.get("n_nuclei", 0) == 0:
        return "no units: no nucleus found"
    if s.mode == "patch" and n_cut == 0:
        return f"no units: the field is smaller than {s.size} × {s.size} pixels"
    if s.mode == "cell" and n_inside == 0:
        return f"no units: every nucleus is too close to the edge for a {s.size}-pixel crop"
    return f"no units: all below min_unit_foreground={s.qc.min_unit_foreground:g}"


# ---------------------------------------------------------------------------- runs


def _records(s: _Setup) -> list[dict[str, Any]]:
    recs = []
    for _, row in s.fields.table.iterrows():
        rec: dict[str, Any] = {**_meta_of(row), "status": "ok", "reason": ""}
        rec["_path"] = row["path"]
        info = s.fields.info.get(row["path"])
        if info is None:
            rec.update(status="unreadable", reason=s.fields.unreadable[row["path"]])
        else:
            rec["n_z"] = info.n_z
        recs.append(rec)
    return recs


def _relative_median(s: _Setup, recs: list[dict[str, Any]]) -> float | None:
    if s.qc.min_focus_rel is None:
        return None
    bg_max = s.qc.max_background_fraction
    foci = [
        r["focus"]
        for r in recs
        if "focus" in r
        and r["focus"] > 0
        and (bg_max is None or r["background_fraction"] <= bg_max)  # not an empty field
    ]
    if len(foci) < s.qc.min_fields_rel:
        return None
    return float(np.median(foci))


def _apply_judgement(s: _Setup, rec: dict[str, Any], median: float | None) -> None:
    reasons = judge(rec["focus"], rec["mean_intensity"], rec["background_fraction"], s.qc, median)
    if reasons:
        rec.update(status="failed_qc", reason="; ".join(reasons))


def _foreground(pixels: np.ndarray, thresholds: dict[int, float]) -> np.ndarray:
    fg = np.zeros(pixels.shape[1:], bool)
    for c, t in thresholds.items():
        fg |= pixels[c] > t
    return fg


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="field", disable=not progress, leave=False)


def _run_fields(
    s: _Setup, recs: list[dict[str, Any]], progress: bool, cut: bool
) -> Iterator[tuple[np.ndarray, pd.DataFrame, dict[str, Any]]]:
    """QC every field (and cut units of the passing ones when ``cut``)."""
    readable = sum(1 for r in recs if r["status"] == "ok")
    two_pass = cut and s.qc.min_focus_rel is not None and readable >= s.qc.min_fields_rel
    kept: dict[int, dict[int, float]] = {}
    cache: dict[int, np.ndarray] = {}  # fields kept from the QC pass, so as not to re-read
    cached = 0
    with _bar(len(recs), "QC" if (two_pass or not cut) else "fields", progress) as bar:
        for i, rec in enumerate(recs):
            if rec["status"] == "ok":
                pixels, fq = _measure(rec["_path"], s, rec)
                if fq is not None:
                    kept[i] = fq.thresholds
                    if two_pass and pixels is not None and cached + pixels.nbytes <= _CACHE_BYTES:
                        cache[i] = pixels
                        cached += pixels.nbytes
                    if cut and not two_pass:
                        _apply_judgement(s, rec, None)
                        if rec["status"] == "ok":
                            assert pixels is not None
                            units, obs = _cut(pixels, fq.foreground, s, rec)
                            yield units, obs, rec
                del pixels, fq
            bar.update(1)
    if cut and not two_pass:
        return
    median = _relative_median(s, recs)
    for i in kept:
        _apply_judgement(s, recs[i], median)
    if not cut:
        return
    todo = [i for i in kept if recs[i]["status"] == "ok"]
    with _bar(len(todo), "units", progress) as bar:
        for i in todo:
            rec = recs[i]
            try:
                pixels = cache.pop(i, None)
                if pixels is None:
                    pixels = read_field(rec["_path"], projection=s.projection, **s.read_kw)
            except Exception as e:  # it was readable a moment ago; still not fatal
                rec.update(status="unreadable", reason=f"unreadable: {type(e).__name__}: {e}")
                bar.update(1)
                continue
            units, obs = _cut(pixels, _foreground(pixels, kept[i]), s, rec)
            bar.update(1)
            yield units, obs, rec


def _qc_table(s: _Setup, recs: list[dict[str, Any]], root: Path | None) -> pd.DataFrame:
    rows = [{k: v for k, v in r.items() if k != "_path"} for r in recs]
    for f in s.fields.unlisted:
        name = str(f.relative_to(root)) if root is not None else str(f)
        rows.append({"file": name, "status": "unlisted", "reason": "no metadata row"})
    df = pd.DataFrame(rows)
    df.insert(df.columns.get_loc("status"), "passed", df["status"] == "ok")
    front = ["file", "passed", "status", "reason"]
    return df[front + [c for c in df.columns if c not in front]]


def _summary(qc_tab: pd.DataFrame, n_units: int, seconds: float) -> ProcessSummary:
    st = qc_tab["status"]
    dropped = qc_tab["n_units_dropped"].fillna(0).sum() if "n_units_dropped" in qc_tab else 0
    return ProcessSummary(
        n_files=len(qc_tab),
        n_fields_ok=int((st == "ok").sum()),
        n_failed_qc=int((st == "failed_qc").sum()),
        n_unreadable=int((st == "unreadable").sum()),
        n_unlisted=int((st == "unlisted").sum()),
        n_no_units=int((st == "no_units").sum()),
        n_units=int(n_units),
        n_units_dropped=int(dropped),
        seconds=float(seconds),
    )


def _obs_frame(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """One obs table: file and standard metadata first, then other metadata, then unit
    columns; ``genotype`` categorical; index ``u0``, ``u1``, …."""
    obs = pd.concat(parts, ignore_index=True)
    for c in STANDARD_OBS:
        if c not in obs.columns:
            obs[c] = np.nan
    first = [c for c in ("file", *STANDARD_OBS) if c in obs.columns]
    last = [c for c in _UNIT_COLS if c in obs.columns]
    middle = [c for c in obs.columns if c not in first and c not in last]
    obs = obs[first + middle + last]
    obs["genotype"] = obs["genotype"].astype("category")
    obs.index = pd.Index([f"u{i}" for i in range(len(obs))], name="unit")
    return obs


def _reasons_line(qc_tab: pd.DataFrame) -> str:
    bad = qc_tab[~qc_tab["passed"]]
    if bad.empty:
        return "no field gave units"
    kinds = bad["reason"].str.split(r" \(|:", regex=True).str[0].value_counts()
    return "; ".join(f"{n} × {k}" for k, n in kinds.items())


def qc_fields(
    metadata: str | os.PathLike | pd.DataFrame | None,
    image_dir: str | os.PathLike | None,
    *,
    channels: Sequence[str | int] | None = None,
    dead_channel: str | int | None = None,
    qc: QCConfig = QCConfig(),
    channel_names: Sequence[str] | None = None,
    axes: str | None = None,
    channel_axis: int | None = None,
    z_axis: int | None = None,
    projection: Literal["max", "mean"] = "max",
    progress: bool = True,
) -> pd.DataFrame:
    """Field QC alone (no units): the table ``process`` would write as ``qc.csv``.

    Use it to choose :class:`QCConfig` limits before a long run. Parameters are those of
    :func:`process`.

    Returns
    -------
    pandas.DataFrame
        One row per file: ``file``, ``passed``, ``status`` (``ok``, ``failed_qc``,
        ``unreadable``, ``unlisted``), ``reason``, metadata columns, ``focus``,
        ``mean_intensity``, ``background_fraction``, ``mean_<channel>``, ``height``,
        ``width``, ``n_z``.
    """
    read_kw = dict(axes=axes, channel_axis=channel_axis, z_axis=z_axis)
    s = _setup(
        metadata,
        image_dir,
        mode="patch",
        size=1,
        channels=channels,
        dead_channel=dead_channel,
        nuclear_channel=None,
        qc=qc,
        nuclei=None,
        edge="drop",
        dead_method="otsu",
        dead_noise_sigmas=5.0,
        channel_names=channel_names,
        read_kw=read_kw,
        projection=projection,
        need_units=False,
    )
    recs = _records(s)
    for _ in _run_fields(s, recs, progress, cut=False):
        pass
    root = None if image_dir is None else Path(image_dir)
    return _qc_table(s, recs, root)


def process(
    metadata: str | os.PathLike | pd.DataFrame | None,
    image_dir: str | os.PathLike | None,
    out: str | os.PathLike,
    mode: Literal["patch", "cell"] = "patch",
    size: int = 128,
    channels: Sequence[str | int] | None = None,
    dead_channel: str | int | None = None,
    nuclear_channel: str | int | None = None,
    qc: QCConfig = QCConfig(),
    shard_size: int = 4096,
    seed: int = 0,
    progress: bool = True,
    *,
    nuclei: NucleiConfig | None = None,
    edge: Literal["drop", "pad"] = "drop",
    dead_threshold: Literal["otsu"] | float = "otsu",
    dead_noise_sigmas: float = 5.0,
    channel_names: Sequence[str] | None = None,
    axes: str | None = None,
    channel_axis: int | None = None,
    z_axis: int | None = None,
    projection: Literal["max", "mean"] = "max",
    dtype: Literal["float16", "float32"] = "float16",
) -> UnitShards:
    """Read, QC and cut every field into units, label viability, write shards + ``qc.csv``.

    Parameters
    ----------
    metadata
        Metadata table (path or DataFrame; see :func:`sparsecell.images.read_metadata`),
        or ``None`` to take every TIFF under ``image_dir`` with no metadata.
    image_dir
        Folder of the images; ``file`` entries are relative to it. TIFFs in it without a
        metadata row are excluded with a warning and listed in ``qc.csv``.
    out
        Output folder, written atomically (an earlier shard folder there is replaced; any
        other non-empty folder is refused).
    mode
        ``'patch'``: non-overlapping ``size × size`` patches from the top-left corner
        (partial patches at the right and bottom edges are left out). ``'cell'``: crops
        centred on segmented nuclei.
    size
        Unit side in pixels (128 as in the seed paper).
    channels
        Channels kept in the units (names or indices, in the order wanted); ``None`` keeps
        all, the dead-cell channel included (it is a label channel the encoder drops).
    dead_channel
        Dead-cell stain (name or index): gives ``obs['cell_death_rate']``, the fraction of
        nuclear pixels above the field's Otsu threshold of this channel (per patch: all
        nuclei in it; per cell crop: its own nucleus; NaN without nuclei).
    nuclear_channel
        Nuclear stain for segmentation (cell mode, cell-death rate); ``None`` picks the
        channel named like ``nuclei``, ``DAPI`` or ``Hoechst`` when one is needed.
    qc
        Field and unit QC limits (:class:`QCConfig`).
    shard_size
        Most units per shard file.
    seed
        Recorded in the manifest (nothing here is random).
    progress
        Show progress bars (tqdm).
    nuclei
        Segmentation settings (:class:`NucleiConfig`; min/max nucleus area etc.).
    edge
        Cell mode: ``'drop'`` crops that would leave the field (default) or ``'pad'`` them
        with zeros.
    dead_threshold
        ``'otsu'`` (per field, as in the paper) or a fixed threshold in raw units.
    dead_noise_sigmas
        Floor of the Otsu dead-cell threshold in robust standard deviations above the
        channel's median, so that a field without dead cells does not read as dying (0
        for the paper's plain Otsu).
    channel_names
        Names of the files' channels in order, when neither the metadata's ``channels``
        column nor OME metadata name them (default ``c0``, ``c1``, …).
    axes, channel_axis, z_axis, projection
        How to read the files (see :func:`sparsecell.images.read_field`).
    dtype
        Shard dtype, ``'float16'`` (default; relative precision 2⁻¹¹) or ``'float32'``.

    Returns
    -------
    UnitShards
        The written units (``.obs``, ``.channels``, ``.summary``, ``.path``); the QC table
        is ``out/qc.csv``.

    Raises
    ------
    SparsecellError
        Bad inputs (see :func:`sparsecell.images.validate`), or no field giving any unit
        (the message counts the reasons; nothing is written).
    """
    t0 = time.perf_counter()
    target = check_target(out)
    if edge not in ("drop", "pad"):
        raise SparsecellError(f"unknown edge mode {edge!r}", "use edge='drop' or 'pad'")
    read_kw = dict(axes=axes, channel_axis=channel_axis, z_axis=z_axis)
    s = _setup(
        metadata,
        image_dir,
        mode=mode,
        size=size,
        channels=channels,
        dead_channel=dead_channel,
        nuclear_channel=nuclear_channel,
        qc=qc,
        nuclei=nuclei,
        edge=edge,
        dead_method=dead_threshold,
        dead_noise_sigmas=dead_noise_sigmas,
        channel_names=channel_names,
        read_kw=read_kw,
        projection=projection,
        need_units=True,
    )
    root = None if image_dir is None else Path(image_dir)
    recs = _records(s)
    kept_names = [s.names[i] for i in s.keep]
    config = {
        "mode": mode,
        "size": int(size),
        "channels": kept_names,
        "dead_channel": None if s.dead is None else s.names[s.dead],
        "nuclear_channel": None if s.nuclear is None else s.names[s.nuclear],
        "qc": dataclasses.asdict(qc),
        "nuclei": dataclasses.asdict(s.nuclei),
        "edge": edge,
        "dead_threshold": dead_threshold,
        "dead_noise_sigmas": dead_noise_sigmas,
        "projection": projection,
        **read_kw,
        "image_dir": None if image_dir is None else str(image_dir),
        "metadata": metadata if isinstance(metadata, str | os.PathLike | None) else "DataFrame",
        "shard_size": int(shard_size),
        "dtype": str(dtype),
    }
    with atomic_dir(target) as tmp:
        writer = ShardWriter(tmp, shard_size, dtype)
        parts: list[pd.DataFrame] = []
        for units, obs, rec in _run_fields(s, recs, progress, cut=True):
            if len(units):
                writer.add(units)
                meta = {k: v for k, v in rec.items() if k in s.fields.table.columns}
                meta.pop("path", None)
                meta.pop("channels", None)
                parts.append(obs.assign(**meta))
        qc_tab = _qc_table(s, recs, root)
        if writer.n == 0:
            writer.close()
            raise SparsecellError(
                f"no units from {len(qc_tab)} file(s) ({_reasons_line(qc_tab)})",
                "relax QCConfig / NucleiConfig limits, or check the images with images.qc_fields",
            )
        atomic_write_text(tmp / "qc.csv", qc_tab.to_csv(index=False))
        obs_all = _obs_frame(parts)
        summary = _summary(qc_tab, writer.n, time.perf_counter() - t0)
        finish_shards(
            tmp,
            writer,
            obs_all,
            kept_names,
            config=config,
            seed=seed,
            label_channels=[] if s.dead is None or s.dead not in s.keep else [s.names[s.dead]],
            summary=summary.as_dict(),
        )
    return open_shards(target)
