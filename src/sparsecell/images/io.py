"""Read fields (TIFF / OME-TIFF, optional z-stacks) and the metadata table that maps them.

A *field* is one image file, returned as a ``C × Y × X`` array in the file's own dtype.
Axes come from tifffile's series axes (OME, ImageJ and tifffile's own metadata), e.g.
``'CYX'``, ``'ZCYX'``, ``'CZYX'``, ``'YXC'``, ``'YXS'`` (RGB), ``'ZYX'``; a z axis is reduced
by maximum-intensity projection. Singleton axes of any kind are dropped. When the file does
not say what an axis is (tifffile reports ``'Q'`` or ``'I'``), a single such axis is taken
as channels if the file has no channel axis; anything else is ambiguous and must be named
with ``axes=``, ``channel_axis=`` or ``z_axis=``.

The *metadata table* (CSV, TSV or parquet, or a DataFrame) has one row per file:
``file`` (path relative to the image folder, or absolute) and, where known, ``well``,
``field``, ``line`` (patient), ``genotype`` (or ``condition``), ``plate`` and ``channels``
(channel names in file order, separated by ``;``, ``|`` or ``,``). Column names are matched
case-insensitively; other columns are carried through to the units' ``obs``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from .._errors import SparsecellError

__all__ = [
    "TIFF_SUFFIXES",
    "FieldInfo",
    "FieldSet",
    "UnlistedFileWarning",
    "read_field",
    "read_field_info",
    "read_metadata",
    "validate",
]

#: File suffixes recognised as image fields (case-insensitive; ``.ome.tif`` included).
TIFF_SUFFIXES = (".tif", ".tiff")

#: Standard metadata columns and the names accepted for them (case-insensitive).
_ALIASES: dict[str, tuple[str, ...]] = {
    "file": ("file", "filename", "file_name", "path", "image", "image_file", "image_path"),
    "well": ("well", "well_id"),
    "field": ("field", "site", "fov", "field_id"),
    "line": ("line", "cell_line", "patient", "patient_line"),
    "genotype": ("genotype",),
    "condition": ("condition",),
    "plate": ("plate", "plate_id"),
    "channels": ("channels", "channel_names"),
}
#: Columns every units ``obs`` carries (NaN where the metadata does not say).
STANDARD_OBS = ("genotype", "line", "plate", "well", "field")
_UNKNOWN_AXES = "QI"  # tifffile's codes for "unknown" and "generic sequence"


class UnlistedFileWarning(UserWarning):
    """Image files found in the image folder that have no row in the metadata table."""


# ---------------------------------------------------------------------------- axes


@dataclass(frozen=True)
class _AxisPlan:
    squeeze: tuple[int, ...]  # singleton axes to drop (indices into the stored array)
    order: str  # axes of the array after squeezing, e.g. "ZCYX"
    n_channels: int
    n_z: int
    height: int
    width: int


def _axis_index(ax: int | str, ndim: int, what: str) -> int:
    if isinstance(ax, str):
        raise SparsecellError(
            f"{what} must be an axis index, got {ax!r}", "pass an integer, or use axes='ZCYX'"
        )
    i = int(ax)
    if not -ndim <= i < ndim:
        raise SparsecellError(
            f"{what}={ax} is out of range for a {ndim}-D image", f"pass 0..{ndim - 1}"
        )
    return i % ndim


def _plan_axes(
    stored_axes: str,
    shape: tuple[int, ...],
    *,
    axes: str | None = None,
    channel_axis: int | None = None,
    z_axis: int | None = None,
    name: str = "",
) -> _AxisPlan:
    """How to turn an array with ``stored_axes`` into ``C × Y × X`` (+ z to project)."""
    where = f" of {name}" if name else ""
    ndim = len(shape)
    if axes is not None:
        if len(axes) != ndim:
            raise SparsecellError(
                f"axes={axes!r} has {len(axes)} letters but the image{where} is {ndim}-D "
                f"(shape {tuple(shape)}, stored axes {stored_axes!r})",
                "give one letter per axis, e.g. 'ZCYX'",
            )
        ax = list(axes.upper())
    else:
        ax = list(stored_axes.upper())
    for idx, letter, what in ((channel_axis, "C", "channel_axis"), (z_axis, "Z", "z_axis")):
        if idx is None:
            continue
        i = _axis_index(idx, ndim, what)
        ax = ["Q" if (a == letter and j != i) else a for j, a in enumerate(ax)]
        ax[i] = letter
    if "S" in ax:  # RGB / planar samples are channels unless the file has channels too
        i = ax.index("S")
        if "C" not in ax:
            ax[i] = "C"
        elif shape[i] == 1:
            ax[i] = "1"
    for letter in "CZYX":
        if ax.count(letter) > 1:
            raise SparsecellError(
                f"axis '{letter}' appears {ax.count(letter)} times in {''.join(ax)!r}{where}",
                "name each axis once with axes=",
            )
    if "Y" not in ax or "X" not in ax:
        raise SparsecellError(
            f"image{where} has no Y and X axes (axes {''.join(ax)!r}, shape {tuple(shape)})",
            "name them with axes=, e.g. axes='CYX'",
        )
    squeeze: list[int] = []
    unknown: list[int] = []
    for i, a in enumerate(ax):
        if a in "CZYX":
            continue
        if shape[i] == 1:
            squeeze.append(i)
        elif a in _UNKNOWN_AXES:
            unknown.append(i)
        else:
            raise SparsecellError(
                f"image{where} has an axis '{a}' of length {shape[i]} "
                f"(axes {''.join(ax)!r}, shape {tuple(shape)}); only channels (C) and "
                "z-planes (Z) can be reduced",
                "relabel it with axes=, channel_axis= or z_axis=, or split the file",
            )
    if unknown:
        if len(unknown) == 1 and "C" not in ax:
            ax[unknown[0]] = "C"
        else:
            desc = ", ".join(f"axis {i} (length {shape[i]})" for i in unknown)
            raise SparsecellError(
                f"cannot tell what {desc} of image{where} is (axes {''.join(ax)!r}, "
                f"shape {tuple(shape)})",
                "say it with axes='ZCYX' (one letter per axis), channel_axis= or z_axis=",
            )
    kept = [a for i, a in enumerate(ax) if i not in squeeze]
    dims = {a: shape[i] for i, a in enumerate(ax) if i not in squeeze}
    return _AxisPlan(
        squeeze=tuple(squeeze),
        order="".join(kept),
        n_channels=int(dims.get("C", 1)),
        n_z=int(dims.get("Z", 1)),
        height=int(dims["Y"]),
        width=int(dims["X"]),
    )


def _apply_plan(data: np.ndarray, plan: _AxisPlan, projection: str) -> np.ndarray:
    if plan.squeeze:
        data = np.squeeze(data, axis=plan.squeeze)
    order = plan.order
    if "Z" in order:
        zi = order.index("Z")
        if projection == "max":
            data = data.max(axis=zi)
        else:
            data = data.mean(axis=zi, dtype=np.float64).astype(np.float32)
        order = order.replace("Z", "")
    if "C" not in order:
        data = data[None]
        order = "C" + order
    return np.ascontiguousarray(np.transpose(data, [order.index(a) for a in "CYX"]))


# ---------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class FieldInfo:
    """What a field's header says, without reading its pixels.

    Attributes
    ----------
    path
        The file.
    axes
        The stored axes as tifffile reports them (e.g. ``'ZCYX'``).
    shape
        The stored shape.
    dtype
        The pixel type.
    n_channels, n_z, height, width
        The field after axis resolution: ``n_channels × height × width`` once the
        ``n_z`` planes are projected.
    channel_names
        Channel names from OME metadata, when the file has them and they match
        ``n_channels``.
    """

    path: Path
    axes: str
    shape: tuple[int, ...]
    dtype: np.dtype
    n_channels: int
    n_z: int
    height: int
    width: int
    channel_names: tuple[str, ...] | None = None


def _ome_channel_names(tif) -> list[str] | None:
    xml = tif.ome_metadata if tif.is_ome else None
    if not xml:
        return None
    names = re.findall(r"<(?:\w+:)?Channel\b[^>]*?\bName=\"([^\"]*)\"", xml)
    return names or None


def _open_tiff(path: Path):
    import tifffile

    if not path.exists():
        raise SparsecellError(f"image file not found: {path}", "check the path")
    return tifffile.TiffFile(path)


def read_field_info(
    path: str | os.PathLike,
    *,
    axes: str | None = None,
    channel_axis: int | None = None,
    z_axis: int | None = None,
) -> FieldInfo:
    """Read a field's header: stored axes and shape, and the shape after axis resolution.

    Parameters
    ----------
    path
        A TIFF or OME-TIFF file.
    axes, channel_axis, z_axis
        Axis overrides, as for :func:`read_field`.

    Returns
    -------
    FieldInfo
        Header facts; no pixel data is read.

    Raises
    ------
    SparsecellError
        For axes that cannot be resolved. Unreadable files raise whatever tifffile raises
        (``tifffile.TiffFileError``, ``ValueError``, ``OSError``).
    """
    p = Path(path)
    with _open_tiff(p) as tif:
        series = tif.series[0]
        stored, shape = str(series.axes), tuple(int(s) for s in series.shape)
        plan = _plan_axes(
            stored, shape, axes=axes, channel_axis=channel_axis, z_axis=z_axis, name=p.name
        )
        names = _ome_channel_names(tif)
    if names is not None and len(names) != plan.n_channels:
        names = None
    return FieldInfo(
        path=p,
        axes=stored,
        shape=shape,
        dtype=np.dtype(series.dtype),
        n_channels=plan.n_channels,
        n_z=plan.n_z,
        height=plan.height,
        width=plan.width,
        channel_names=None if names is None else tuple(names),
    )


def read_field(
    path: str | os.PathLike,
    *,
    axes: str | None = None,
    channel_axis: int | None = None,
    z_axis: int | None = None,
    projection: Literal["max", "mean"] = "max",
) -> np.ndarray:
    """Read one field as a ``C × Y × X`` array, z-stacks reduced by a projection.

    Parameters
    ----------
    path
        A TIFF or OME-TIFF file (first series).
    axes
        Override the stored axes, one letter per stored dimension (``'ZCYX'``, ``'YXC'``,
        ``'CZYX'``, …; ``T``, ``Q`` and other letters of length 1 are dropped).
    channel_axis
        Index of the stored dimension holding channels (when the file does not say).
    z_axis
        Index of the stored dimension holding z-planes (when the file does not say).
    projection
        How to reduce z: ``'max'`` (maximum-intensity projection, keeps the dtype) or
        ``'mean'`` (float32).

    Returns
    -------
    numpy.ndarray
        ``C × Y × X``, C-contiguous, in the file's dtype (float32 for ``'mean'``).

    Raises
    ------
    SparsecellError
        Missing file, or axes that cannot be resolved. A corrupt file raises tifffile's or
        numpy's own error (``process`` records it and goes on).
    """
    if projection not in ("max", "mean"):
        raise SparsecellError(
            f"unknown projection {projection!r}", "use projection='max' or 'mean'"
        )
    p = Path(path)
    with _open_tiff(p) as tif:
        series = tif.series[0]
        plan = _plan_axes(
            str(series.axes),
            tuple(int(s) for s in series.shape),
            axes=axes,
            channel_axis=channel_axis,
            z_axis=z_axis,
            name=p.name,
        )
        data = series.asarray()
    return _apply_plan(np.asarray(data), plan, projection)


# ---------------------------------------------------------------------------- metadata


def _split_channels(value: object) -> tuple[str, ...] | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    if not text:
        return None
    sep = next((s for s in (";", "|", ",") if s in text), None)
    parts = [text] if sep is None else text.split(sep)
    return tuple(p.strip() for p in parts)


def read_metadata(metadata: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """Read and normalise the metadata table.

    Parameters
    ----------
    metadata
        A CSV (``.csv``), TSV (``.tsv``/``.txt``) or parquet file (needs pyarrow or
        fastparquet), or a DataFrame. One row per image file.

    Returns
    -------
    pandas.DataFrame
        A copy with standard column names (``file``, ``well``, ``field``, ``line``,
        ``genotype``, ``condition``, ``plate``, ``channels``; aliases such as ``filename``,
        ``patient`` or ``site`` renamed, case-insensitively), identifier columns as strings,
        and ``genotype`` taken from ``condition`` when only the latter is given. Other
        columns are kept as they are.

    Raises
    ------
    SparsecellError
        Unreadable file, no ``file`` column, empty table, duplicated or empty file entries.
    """
    if isinstance(metadata, pd.DataFrame):
        df = metadata.copy()
        src = "metadata table"
    else:
        p = Path(metadata)
        src = p.name
        if not p.exists():
            raise SparsecellError(f"metadata table not found: {p}", "check the path")
        suffix = p.suffix.lower()
        ids = [a for names in _ALIASES.values() for a in names]
        try:
            if suffix == ".parquet" or suffix == ".pq":
                df = pd.read_parquet(p)
            elif suffix in (".tsv", ".txt", ".tab"):
                df = pd.read_csv(p, sep="\t", dtype=_str_dtypes(p, "\t", ids))
            else:
                df = pd.read_csv(p, dtype=_str_dtypes(p, ",", ids))
        except ImportError as e:
            raise SparsecellError(
                f"cannot read parquet file {p.name}: {e}",
                "pip install pyarrow, or save the table as CSV",
            ) from e
        except (ValueError, OSError, pd.errors.ParserError) as e:
            raise SparsecellError(
                f"cannot read metadata table {p.name}: {e}", "save it as a CSV"
            ) from e
    lower = {str(c).strip().lower(): c for c in df.columns}
    rename: dict[object, str] = {}
    for std, names in _ALIASES.items():
        for a in names:
            if a in lower and lower[a] not in rename and std not in rename.values():
                rename[lower[a]] = std
                break
    df = df.rename(columns=rename)
    if "file" not in df.columns:
        raise SparsecellError(
            f"{src} has no file column (columns: {', '.join(map(str, df.columns)) or 'none'})",
            "add a 'file' column with each image's path relative to the image folder",
        )
    if len(df) == 0:
        raise SparsecellError(f"{src} has no rows", "add one row per image file")
    blank = df["file"].isna() | (df["file"].astype(str).str.strip() == "")
    if blank.any():
        rows = ", ".join(str(i) for i in np.flatnonzero(blank.to_numpy())[:10])
        raise SparsecellError(f"{src} has rows without a file name (rows {rows})", "fill them")
    for col in ("file", "well", "field", "line", "genotype", "condition", "plate"):
        if col in df.columns:
            df[col] = df[col].map(lambda v: v if pd.isna(v) else str(v).strip())
    dup = df["file"][df["file"].duplicated(keep=False)].unique()
    if len(dup):
        raise SparsecellError(
            f"{src} lists {len(dup)} file(s) more than once: {_short(list(dup))}",
            "keep one row per image file",
        )
    if "genotype" not in df.columns and "condition" in df.columns:
        df["genotype"] = df["condition"]
    return df.reset_index(drop=True)


def _str_dtypes(p: Path, sep: str, ids: list[str]) -> dict[str, type]:
    """Read identifier columns as strings (so a well '01' or plate '007' keeps its zeros)."""
    header = pd.read_csv(p, sep=sep, nrows=0).columns
    return {c: str for c in header if str(c).strip().lower() in ids}


def _user_stacklevel() -> int:
    """``stacklevel`` that points a warning at the first caller outside this package."""
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here:
        frame, level = frame.f_back, level + 1
    return level


def _short(items: Sequence[object], n: int = 10) -> str:
    items = [str(i) for i in items]
    more = f", … ({len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


# ---------------------------------------------------------------------------- validation


@dataclass
class FieldSet:
    """The fields of a run after validation.

    Attributes
    ----------
    table
        Metadata rows of the files to process, with ``path`` (the resolved file path).
    channels
        Channel names, one per channel of every field.
    info
        Header facts per path (``str(path)`` → :class:`FieldInfo`) for readable files.
    unreadable
        ``str(path)`` → reason for files whose header cannot be read (skipped later).
    unlisted
        Image files in the image folder without a metadata row (excluded, with a warning).
    """

    table: pd.DataFrame
    channels: list[str]
    info: dict[str, FieldInfo] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    unlisted: list[Path] = field(default_factory=list)


def _is_tiff(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in TIFF_SUFFIXES


def _scan(image_dir: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(image_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            p = Path(root) / f
            if not f.startswith(".") and _is_tiff(p):
                out.append(p)
    return out


def validate(
    metadata: str | os.PathLike | pd.DataFrame | None,
    image_dir: str | os.PathLike | None,
    *,
    channel_names: Sequence[str] | None = None,
    axes: str | None = None,
    channel_axis: int | None = None,
    z_axis: int | None = None,
) -> FieldSet:
    """Match the metadata table with the image folder and check the fields agree.

    Parameters
    ----------
    metadata
        Metadata table (see :func:`read_metadata`), or ``None`` to take every TIFF in
        ``image_dir`` as a field with no metadata.
    image_dir
        Folder of the images (searched recursively for ``.tif``/``.tiff``). ``None``
        resolves relative ``file`` entries against the metadata file's folder (or the
        working directory) and skips the search for unlisted files.
    channel_names
        Names of the fields' channels in file order; overrides the metadata's
        ``channels`` column and OME channel names. Default: metadata, then OME, then
        ``c0``, ``c1``, ….
    axes, channel_axis, z_axis
        Axis overrides, as for :func:`read_field`.

    Returns
    -------
    FieldSet
        The fields to process, their channel names and what was left out.

    Raises
    ------
    SparsecellError
        Metadata rows whose file is missing (all listed); fields with different channel
        counts (files listed per count); channel names that disagree with the channel
        count; no readable field.

    Warns
    -----
    UnlistedFileWarning
        Image files in ``image_dir`` without a metadata row; they are excluded.
    """
    root = None if image_dir is None else Path(image_dir)
    if root is not None and not root.is_dir():
        raise SparsecellError(f"image folder not found: {root}", "check the path")
    if metadata is None:
        if root is None:
            raise SparsecellError("no metadata and no image folder", "pass at least one")
        files = _scan(root)
        if not files:
            raise SparsecellError(f"no .tif/.tiff files in {root}", "check the image folder")
        table = pd.DataFrame({"file": [str(f.relative_to(root)) for f in files]})
        base = root
    else:
        table = read_metadata(metadata)
        if root is not None:
            base = root
        elif isinstance(metadata, pd.DataFrame):
            base = Path.cwd()
        else:
            base = Path(metadata).resolve().parent
    paths = [Path(f) if Path(f).is_absolute() else base / f for f in table["file"]]
    missing = [f for f, p in zip(table["file"], paths, strict=True) if not p.is_file()]
    if missing:
        raise SparsecellError(
            f"{len(missing)} metadata row(s) name files that do not exist in {base}: "
            f"{_short(missing)}",
            "fix the file column, or remove those rows",
        )
    table = table.copy()
    table["path"] = [str(p) for p in paths]
    unlisted: list[Path] = []
    if root is not None and metadata is not None:
        listed = {os.path.normcase(os.path.realpath(p)) for p in paths}
        unlisted = [f for f in _scan(root) if os.path.normcase(os.path.realpath(f)) not in listed]
        if unlisted:
            warnings.warn(
                f"{len(unlisted)} image file(s) in {root} have no metadata row and are "
                f"excluded: {_short([f.relative_to(root) for f in unlisted])}",
                UnlistedFileWarning,
                stacklevel=_user_stacklevel(),
            )
    info: dict[str, FieldInfo] = {}
    unreadable: dict[str, str] = {}
    for p in paths:
        try:
            info[str(p)] = read_field_info(p, axes=axes, channel_axis=channel_axis, z_axis=z_axis)
        except SparsecellError:
            raise
        except Exception as e:  # a corrupt file is recorded, not fatal
            unreadable[str(p)] = f"unreadable: {type(e).__name__}: {e}"
    if not info:
        raise SparsecellError(
            f"none of the {len(paths)} image file(s) can be read "
            f"(first: {next(iter(unreadable.values()))})",
            "check that they are TIFF files",
        )
    by_count: dict[int, list[str]] = {}
    for p, fi in info.items():
        by_count.setdefault(fi.n_channels, []).append(os.path.relpath(p, base))
    if len(by_count) > 1:
        parts = "; ".join(f"{n} channel(s): {_short(fs, 5)}" for n, fs in sorted(by_count.items()))
        raise SparsecellError(
            f"the fields do not all have the same number of channels ({parts})",
            "process files with different channel sets separately, or fix the axes "
            "with axes=/channel_axis=",
        )
    n_ch = next(iter(by_count))
    channels = _resolve_channel_names(table, info, n_ch, channel_names)
    return FieldSet(
        table=table, channels=channels, info=info, unreadable=unreadable, unlisted=unlisted
    )


def _resolve_channel_names(
    table: pd.DataFrame,
    info: dict[str, FieldInfo],
    n_ch: int,
    channel_names: Sequence[str] | None,
) -> list[str]:
    if channel_names is not None:
        names = [str(c) for c in channel_names]
        source = "channel_names"
    elif "channels" in table.columns and table["channels"].notna().any():
        per_row = {_split_channels(v) for v in table["channels"]} - {None}
        if len(per_row) > 1:
            raise SparsecellError(
                "the metadata's channels column differs between rows: "
                + "; ".join(" | ".join(r) for r in sorted(per_row)),  # type: ignore[arg-type]
                "give every file the same channel names, in file order",
            )
        names = list(next(iter(per_row)))  # type: ignore[arg-type]
        source = "the metadata's channels column"
    else:
        ome = [fi.channel_names for fi in info.values() if fi.channel_names is not None]
        if ome:
            if len(set(ome)) > 1:
                warnings.warn(
                    "OME channel names differ between files; using those of the first "
                    f"({', '.join(ome[0])})",
                    UserWarning,
                    stacklevel=_user_stacklevel(),
                )
            return list(ome[0])
        return [f"c{i}" for i in range(n_ch)]
    if len(names) != n_ch:
        raise SparsecellError(
            f"{source} names {len(names)} channel(s) ({', '.join(names)}) but the fields "
            f"have {n_ch}",
            "give one name per channel, in file order",
        )
    if len(set(names)) != len(names):
        raise SparsecellError(f"channel names repeat: {', '.join(names)}", "make them unique")
    return names
