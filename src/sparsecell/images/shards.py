"""Units on disk in shards, streamed back without loading the whole set.

A shard folder holds ``units-00000.npy``, ``units-00001.npy``, … (each ``n_k × C × S × S``
with ``n_k <= shard_size``, ``float16`` or ``float32``), ``obs.csv`` (one row per unit, in
order, index ``unit``) and ``manifest.json`` (channels, unit size, dtype, shard sizes, obs
column types, and what made them: config, versions, seed). It is written into a temporary
sibling folder that replaces the target only when complete, so an interrupted or failed
write leaves nothing behind (and an older folder of the same name untouched).

``float16`` keeps 11 significant bits: a value comes back within a relative 2⁻¹¹ (≈ 4.9e-4)
of what was written; values beyond ±65504 are clipped to it (the count is recorded as
``n_clipped`` in the manifest; 16-bit cameras saturate at 65535, one float16 step away).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._errors import SparsecellError
from .._io import atomic_dir, atomic_write_text, dump_json, manifest

__all__ = ["FORMAT", "UnitShards", "open_shards", "write_shards"]

#: Format name written to ``manifest.json``.
FORMAT = "sparsecell.unit_shards"
FORMAT_VERSION = 1
_SHARD = "units-{:05d}.npy"
_F16_MAX = float(np.finfo(np.float16).max)


# ---------------------------------------------------------------------------- writing


def _check_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise SparsecellError(
            f"shard dtype {dt} is not supported", "use dtype='float16' or 'float32'"
        )
    return dt


def check_target(out: str | os.PathLike) -> Path:
    """Refuse to replace a folder that is not a shard folder (and holds something).

    Parameters
    ----------
    out
        The folder about to be written.

    Returns
    -------
    pathlib.Path
        ``out`` as a path.
    """
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise SparsecellError(f"output {p} exists and is not a folder", "choose another path")
    if p.is_dir() and any(p.iterdir()):
        m = p / "manifest.json"
        try:
            ok = json.loads(m.read_text()).get("format") == FORMAT
        except (OSError, ValueError):
            ok = False
        if not ok:
            raise SparsecellError(
                f"output folder {p} is not empty and holds no unit shards",
                "choose a new or empty folder (an earlier shard folder is replaced)",
            )
    return p


class ShardWriter:
    """Append units to shards in a folder (used inside an atomic write).

    Parameters
    ----------
    folder
        Where the shard files go (normally the temporary folder of ``atomic_dir``).
    shard_size
        Most units per shard file.
    dtype
        ``float16`` or ``float32`` on disk.
    """

    def __init__(self, folder: Path, shard_size: int = 4096, dtype: Any = "float16") -> None:
        if int(shard_size) < 1:
            raise SparsecellError(f"shard_size={shard_size} must be positive", "use e.g. 4096")
        self.folder = Path(folder)
        self.shard_size = int(shard_size)
        self.dtype = _check_dtype(dtype)
        self.unit_shape: tuple[int, int, int] | None = None
        self.sizes: list[int] = []
        self.n = 0
        self.n_clipped = 0
        self._mm: np.memmap | None = None
        self._fill = 0

    def add(self, batch: np.ndarray) -> None:
        """Append ``n × C × S × S`` units (or one ``C × S × S`` unit)."""
        x = np.asarray(batch)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise SparsecellError(
                f"units must be N × C × S × S, got shape {x.shape}", "pass channels-first units"
            )
        if x.shape[2] != x.shape[3]:
            raise SparsecellError(
                f"units must be square, got {x.shape[2]} × {x.shape[3]}", "crop them square"
            )
        if self.unit_shape is None:
            self.unit_shape = tuple(int(s) for s in x.shape[1:])  # type: ignore[assignment]
        elif tuple(x.shape[1:]) != self.unit_shape:
            raise SparsecellError(
                f"unit shape changed from {self.unit_shape} to {tuple(x.shape[1:])} after "
                f"{self.n} units",
                "give every unit the same channels and size",
            )
        if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
            raise SparsecellError(f"units must be real numbers, got {x.dtype}", "cast them")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise SparsecellError(
                f"units {self.n}..{self.n + len(x) - 1} contain NaN or inf",
                "drop or repair non-finite units first",
            )
        if self.dtype == np.float16:
            big = np.abs(x) > _F16_MAX
            if big.any():
                self.n_clipped += int(big.sum())
                x = np.clip(x, -_F16_MAX, _F16_MAX)
        pos = 0
        while pos < len(x):
            if self._mm is None:
                self._open()
            assert self._mm is not None
            take = min(len(x) - pos, self.shard_size - self._fill)
            self._mm[self._fill : self._fill + take] = x[pos : pos + take]
            self._fill += take
            pos += take
            self.n += take
            if self._fill == self.shard_size:
                self._finish()

    def _open(self) -> None:
        assert self.unit_shape is not None
        path = self.folder / _SHARD.format(len(self.sizes))
        self._mm = np.lib.format.open_memmap(
            path, mode="w+", dtype=self.dtype, shape=(self.shard_size, *self.unit_shape)
        )
        self._fill = 0

    def _finish(self) -> None:
        assert self._mm is not None
        mm, fill = self._mm, self._fill
        self._mm = None
        path = self.folder / _SHARD.format(len(self.sizes))
        mm.flush()
        offset = int(mm.offset)
        del mm
        if fill < self.shard_size:  # the last shard: cut the file to its true length
            _shrink_npy(path, fill, self.dtype, self.unit_shape, offset)  # type: ignore[arg-type]
        self.sizes.append(fill)
        self._fill = 0

    def close(self) -> list[int]:
        """Finish the last shard; returns the number of units per shard."""
        if self._mm is not None:
            if self._fill:
                self._finish()
            else:
                path = self.folder / _SHARD.format(len(self.sizes))
                self._mm = None
                path.unlink(missing_ok=True)
        return list(self.sizes)


def _shrink_npy(
    path: Path, n: int, dtype: np.dtype, unit_shape: tuple[int, ...], offset: int
) -> None:
    """Make a ``.npy`` file hold only its first ``n`` rows: rewrite the header for the
    new shape (same length, thanks to the format's padding) and truncate the data; copy
    into a new file in the rare case the header length changes."""
    import io

    shape = (n, *unit_shape)
    buf = io.BytesIO()
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": shape,
    }
    np.lib.format.write_array_header_1_0(buf, header)
    hdr = buf.getvalue()
    nbytes = n * int(np.prod(unit_shape)) * dtype.itemsize
    if len(hdr) == offset:
        with open(path, "r+b") as fh:
            fh.write(hdr)
            fh.truncate(offset + nbytes)
        return
    src = np.load(path, mmap_mode="r")
    tmp = path.with_name(path.name + ".part.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    for s in range(0, n, 256):
        out[s : s + 256] = src[s : min(s + 256, n)]
    out.flush()
    del out, src
    os.replace(tmp, path)


def prepare_obs(obs: pd.DataFrame | None, n: int) -> pd.DataFrame:
    """Check ``obs`` against ``n`` units and give it string unit ids (``u0``, …) if needed."""
    if obs is None:
        obs = pd.DataFrame(index=pd.RangeIndex(n))
    if not isinstance(obs, pd.DataFrame):
        raise SparsecellError(f"obs must be a pandas DataFrame, got {type(obs).__name__}", "")
    if len(obs) != n:
        raise SparsecellError(
            f"obs has {len(obs)} rows for {n} units", "give one obs row per unit, in order"
        )
    obs = obs.copy()
    if isinstance(obs.index, pd.RangeIndex) or pd.api.types.is_integer_dtype(obs.index):
        obs.index = pd.Index([f"u{i}" for i in range(n)])
    else:
        obs.index = obs.index.astype(str)
    if obs.index.has_duplicates:
        raise SparsecellError("obs index has duplicate unit ids", "make them unique")
    obs.index.name = "unit"
    return obs


def _obs_types(obs: pd.DataFrame) -> tuple[dict[str, str], dict[str, list[str]]]:
    types: dict[str, str] = {}
    cats: dict[str, list[str]] = {}
    for c in obs.columns:
        s = obs[c]
        if isinstance(s.dtype, pd.CategoricalDtype):
            types[str(c)] = "category"
            cats[str(c)] = [str(v) for v in s.cat.categories]
        elif pd.api.types.is_bool_dtype(s):
            types[str(c)] = "bool"
        elif pd.api.types.is_integer_dtype(s):
            types[str(c)] = "int64"
        elif pd.api.types.is_float_dtype(s):
            types[str(c)] = "float64"
        else:
            types[str(c)] = "str"
    return types, cats


def write_obs(folder: Path, obs: pd.DataFrame) -> dict[str, Any]:
    """Write ``obs.csv`` into ``folder``; returns the manifest fields describing it."""
    out = obs.copy()
    for c in out.columns:
        if isinstance(out[c].dtype, pd.CategoricalDtype):
            out[c] = out[c].astype(object).map(lambda v: v if pd.isna(v) else str(v))
    if any(str(c) == "unit" for c in out.columns):
        raise SparsecellError("obs has a column named 'unit'", "rename it (it is the index)")
    atomic_write_text(folder / "obs.csv", out.to_csv(index=True, index_label="unit"))
    types, cats = _obs_types(obs)
    return {"obs_columns": types, "obs_categories": cats}


def _units_iter(units: Any, chunk: int) -> Iterator[np.ndarray]:
    if hasattr(units, "shape") and hasattr(units, "__getitem__") and len(units.shape) == 4:
        for s in range(0, int(units.shape[0]), chunk):
            yield np.asarray(units[s : s + chunk])
    elif isinstance(units, np.ndarray):
        yield units
    else:
        yield from units


def write_shards(
    out: str | os.PathLike,
    units: np.ndarray | Iterable[np.ndarray],
    obs: pd.DataFrame | None = None,
    channels: list[str] | None = None,
    shard_size: int = 4096,
    dtype: Literal["float16", "float32"] | np.dtype = "float16",
    *,
    config: dict[str, Any] | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> UnitShards:
    """Write units (an array, or an iterable of batches) as a shard folder, atomically.

    Parameters
    ----------
    out
        Target folder. An existing shard folder there is replaced (only once the new one
        is complete); any other non-empty folder is refused.
    units
        ``N × C × S × S`` array (numpy, memmap, h5py; read in chunks) or an iterable of
        ``n × C × S × S`` batches / ``C × S × S`` single units.
    obs
        One row per unit, in order (``None``: an empty table). An integer index becomes
        string ids ``u0``, ``u1``, ….
    channels
        One name per channel (``None``: ``c0``, ``c1``, …).
    shard_size
        Most units per shard file.
    dtype
        ``'float16'`` (default; see the module docstring for its precision) or
        ``'float32'``.
    config
        What made the units, recorded in the manifest.
    seed
        Seed of whatever made the units, recorded in the manifest.
    progress
        Show a progress bar.

    Returns
    -------
    UnitShards
        The written folder, opened.
    """
    target = check_target(out)
    dt = _check_dtype(dtype)
    with atomic_dir(target) as tmp:
        writer = ShardWriter(tmp, shard_size, dt)
        it = _units_iter(units, max(1, int(shard_size)))
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="writing shards", unit="batch")
        for batch in it:
            writer.add(batch)
        finish_shards(tmp, writer, obs, channels, config=config, seed=seed)
    return open_shards(target)


def finish_shards(
    folder: Path,
    writer: ShardWriter,
    obs: pd.DataFrame | None,
    channels: list[str] | None,
    *,
    config: dict[str, Any] | None = None,
    seed: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Close ``writer``, write ``obs.csv`` and ``manifest.json``; returns the manifest."""
    sizes = writer.close()
    if writer.n == 0 or writer.unit_shape is None:
        raise SparsecellError("no units to write (the set is empty)", "pass at least one unit")
    C, S, _ = writer.unit_shape
    names = [f"c{i}" for i in range(C)] if channels is None else [str(c) for c in channels]
    if len(names) != C:
        raise SparsecellError(
            f"{len(names)} channel names for units with {C} channels",
            "pass one name per channel",
        )
    if len(set(names)) != len(names):
        raise SparsecellError(f"channel names repeat: {', '.join(names)}", "make them unique")
    obs = prepare_obs(obs, writer.n)
    obs_meta = write_obs(folder, obs)
    man = manifest(
        "unit_shards",
        config,
        format=FORMAT,
        format_version=FORMAT_VERSION,
        channels=names,
        unit_size=S,
        dtype=str(writer.dtype),
        n_units=writer.n,
        shard_size=writer.shard_size,
        shards=[{"file": _SHARD.format(k), "n": n} for k, n in enumerate(sizes)],
        n_clipped=writer.n_clipped,
        seed=seed,
        **obs_meta,
        **extra,
    )
    atomic_write_text(folder / "manifest.json", dump_json(man))
    return man


# ---------------------------------------------------------------------------- reading


class UnitShards:
    """A shard folder opened for reading: ``len``, ``[...]`` indexing and batches.

    Reading never loads more than what is asked for: each access memory-maps the shard
    files it touches, one at a time. Units come back in the stored dtype (``float16`` or
    ``float32``); cast with ``.astype(np.float32)`` where needed.

    Attributes
    ----------
    path
        The folder.
    manifest
        Its ``manifest.json`` as a dict.
    obs
        One row per unit (index: unit ids).
    channels
        Channel names.
    unit_size
        Side ``S`` of the square units.
    dtype
        Stored dtype.
    shard_sizes
        Units per shard file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        p = Path(path)
        mpath = p / "manifest.json"
        if not mpath.is_file():
            raise SparsecellError(
                f"{p} is not a shard folder (no manifest.json)",
                "pass a folder written by write_shards or images.process",
            )
        try:
            man = json.loads(mpath.read_text())
        except ValueError as e:
            raise SparsecellError(f"{mpath} is not valid JSON: {e}", "rewrite the shards") from e
        if man.get("format") != FORMAT:
            raise SparsecellError(
                f"{p} holds {man.get('format') or man.get('kind')!r}, not unit shards",
                "pass a folder written by write_shards or images.process",
            )
        if int(man.get("format_version", 0)) > FORMAT_VERSION:
            raise SparsecellError(
                f"{p} uses shard format version {man['format_version']}, newer than this "
                f"sparsecell reads ({FORMAT_VERSION})",
                "upgrade sparsecell",
            )
        self.path = p
        self.manifest: dict[str, Any] = man
        self.channels: list[str] = [str(c) for c in man["channels"]]
        self.unit_size: int = int(man["unit_size"])
        self.dtype = np.dtype(man["dtype"])
        self._files = [p / s["file"] for s in man["shards"]]
        self.shard_sizes: list[int] = [int(s["n"]) for s in man["shards"]]
        self._offsets = np.concatenate([[0], np.cumsum(self.shard_sizes)]).astype(np.int64)
        missing = [f.name for f in self._files if not f.is_file()]
        if missing:
            raise SparsecellError(
                f"{p} lacks shard file(s) {', '.join(missing)}", "rewrite the shards"
            )
        self.obs = _read_obs(p / "obs.csv", man)
        if len(self.obs) != len(self):
            raise SparsecellError(
                f"{p}: obs.csv has {len(self.obs)} rows for {len(self)} units",
                "rewrite the shards",
            )
        self._cache: tuple[int, np.ndarray] | None = None

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N, C, S, S)``."""
        return (len(self), len(self.channels), self.unit_size, self.unit_size)

    @property
    def n_shards(self) -> int:
        """Number of shard files."""
        return len(self._files)

    @property
    def summary(self) -> dict[str, Any] | None:
        """The run summary written by :func:`sparsecell.images.process` (else ``None``)."""
        return self.manifest.get("summary")

    def __repr__(self) -> str:
        return (
            f"UnitShards({str(self.path)!r}, n={len(self)}, channels={self.channels}, "
            f"unit_size={self.unit_size}, dtype={self.dtype}, shards={self.n_shards})"
        )

    def _map(self, k: int) -> np.ndarray:
        cache = self._cache
        if cache is not None and cache[0] == k:
            return cache[1]
        mm = np.load(self._files[k], mmap_mode="r", allow_pickle=False)
        expect = (self.shard_sizes[k], len(self.channels), self.unit_size, self.unit_size)
        if mm.shape != expect or mm.dtype != self.dtype:
            raise SparsecellError(
                f"{self._files[k].name} holds {mm.shape} {mm.dtype}, manifest says "
                f"{expect} {self.dtype}",
                "rewrite the shards",
            )
        self._cache = (k, mm)
        return mm

    # ------------------------------------------------------------------ reading
    def _read_range(self, a: int, b: int) -> np.ndarray:
        out = np.empty((max(b - a, 0), *self.shape[1:]), self.dtype)
        if b <= a:
            return out
        k0 = int(np.searchsorted(self._offsets, a, side="right")) - 1
        pos = a
        k = k0
        while pos < b:
            lo, hi = int(self._offsets[k]), int(self._offsets[k + 1])
            end = min(b, hi)
            out[pos - a : end - a] = self._map(k)[pos - lo : end - lo]
            pos = end
            k += 1
        return out

    def _read_index(self, idx: np.ndarray) -> np.ndarray:
        """Units at integer indices ``idx`` (any order, repeats allowed)."""
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"unit index out of range for {n} units")
        idx = np.where(idx < 0, idx + n, idx)
        out = np.empty((len(idx), *self.shape[1:]), self.dtype)
        order = np.argsort(idx, kind="stable")
        srt = idx[order]
        shard = np.searchsorted(self._offsets, srt, side="right") - 1
        for k in np.unique(shard):
            sel = np.flatnonzero(shard == k)
            local = srt[sel] - self._offsets[k]
            out[order[sel]] = self._map(int(k))[local]
        return out

    def __getitem__(self, key: int | slice | np.ndarray | list[int]) -> np.ndarray:
        """``[i]`` → ``C × S × S``; ``[i:j(:step)]``, integer arrays, boolean masks →
        ``n × C × S × S`` (copies, in the stored dtype)."""
        n = len(self)
        if isinstance(key, int | np.integer):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"unit {key} out of range for {n} units")
            i %= n
            return self._read_range(i, i + 1)[0]
        if isinstance(key, slice):
            a, b, step = key.indices(n)
            if step == 1:
                return self._read_range(a, max(a, b))
            return self._read_index(np.arange(a, b, step, dtype=np.int64))
        arr = np.asarray(key)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise IndexError(f"boolean mask of shape {arr.shape} for {n} units")
            return self._read_index(np.flatnonzero(arr))
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            if arr.size == 0:
                return self._read_index(np.zeros(0, np.int64))
            raise TypeError(f"cannot index UnitShards with {type(key).__name__}")
        return self._read_index(arr.astype(np.int64))

    def iter_batches(
        self,
        batch_size: int,
        shuffle: bool | Literal["global", "shard"] = False,
        seed: int = 0,
        *,
        drop_last: bool = False,
        with_index: bool = False,
    ) -> Iterator[np.ndarray] | Iterator[tuple[np.ndarray, np.ndarray]]:
        """Iterate over the units in batches, reading one shard file at a time.

        Parameters
        ----------
        batch_size
            Units per batch (the last one may be smaller unless ``drop_last``).
        shuffle
            ``False``: stored order. ``True`` or ``'global'``: a random permutation of all
            units (each batch reads its units shard by shard). ``'shard'``: shards in random
            order, units shuffled within each (sequential reads; a batch mixes at most the
            end of one shard and the start of the next).
        seed
            Seed of the permutation; every unit appears exactly once per pass.
        drop_last
            Leave out a final incomplete batch.
        with_index
            Yield ``(indices, units)`` instead of units.

        Yields
        ------
        numpy.ndarray
            ``b × C × S × S`` batches in the stored dtype (or ``(indices, batch)``).
        """
        if int(batch_size) < 1:
            raise SparsecellError(f"batch_size={batch_size} must be positive", "use e.g. 256")
        if shuffle not in (False, True, "global", "shard"):
            raise SparsecellError(
                f"shuffle={shuffle!r} is not understood", "use False, True, 'global' or 'shard'"
            )
        return self._batches(int(batch_size), shuffle, seed, drop_last, with_index)

    def _batches(self, bs, shuffle, seed, drop_last, with_index):
        n = len(self)
        rng = np.random.default_rng(seed)
        if shuffle == "shard":
            parts = []
            for k in rng.permutation(self.n_shards):
                lo = int(self._offsets[k])
                parts.append(lo + rng.permutation(self.shard_sizes[k]))
            order = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        elif shuffle:
            order = rng.permutation(n)
        else:
            order = None
        for s in range(0, n, bs):
            e = min(s + bs, n)
            if drop_last and e - s < bs:
                return
            if order is None:
                idx = np.arange(s, e, dtype=np.int64)
                batch = self._read_range(s, e)
            else:
                idx = order[s:e].astype(np.int64)
                batch = self._read_index(idx)
            self._cache = None  # unmap before the next batch
            yield (idx, batch) if with_index else batch


def _read_obs(path: Path, man: dict[str, Any]) -> pd.DataFrame:
    if not path.is_file():
        raise SparsecellError(f"{path.parent} lacks obs.csv", "rewrite the shards")
    types: dict[str, str] = man.get("obs_columns", {})
    cats: dict[str, list[str]] = man.get("obs_categories", {})
    dtypes: dict[str, Any] = {"unit": str}
    for c, t in types.items():
        dtypes[c] = {"category": str, "str": str, "int64": "int64", "float64": "float64"}.get(
            t, None
        )
    dtypes = {c: t for c, t in dtypes.items() if t is not None}
    try:
        obs = pd.read_csv(path, index_col="unit", dtype=dtypes)
    except (ValueError, pd.errors.ParserError) as e:
        raise SparsecellError(f"cannot read {path}: {e}", "rewrite the shards") from e
    for c, t in types.items():
        if t == "category" and c in obs.columns:
            obs[c] = pd.Categorical(obs[c], categories=cats.get(c))
        elif t == "bool" and c in obs.columns:
            with contextlib.suppress(TypeError, ValueError):
                obs[c] = obs[c].astype(bool)
    obs.index.name = "unit"
    return obs


def open_shards(path: str | os.PathLike) -> UnitShards:
    """Open a shard folder written by :func:`write_shards` or ``images.process``.

    Parameters
    ----------
    path
        The folder.

    Returns
    -------
    UnitShards
        Lazy access to its units; ``obs``, ``channels``, ``unit_size`` and ``manifest``
        are read at once.
    """
    return UnitShards(path)
