"""Helpers shared by the command groups: error handling, input loaders, options."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import typer

from .._errors import SparsecellError


def _friendly(fn):
    """Turn SparsecellError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SparsecellError as e:
            typer.echo(f"sparsecell: error: {e}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("sparsecell: interrupted (finished outputs are intact)", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _load_input(path: Path, obsm: str | None):
    from ..datasets import read_embeddings

    return read_embeddings(path, obsm=obsm)


def format_metrics(metrics: dict[str, Any], title: str = "metrics") -> str:
    """A two-column text table of the scalar entries of ``metrics``."""
    rows = [(k, v) for k, v in metrics.items() if isinstance(v, int | float)]
    width = max((len(k) for k, _ in rows), default=6)
    lines = [title, "-" * (width + 14)]
    for k, v in rows:
        val = f"{v:d}" if isinstance(v, int) else f"{v:.4g}"
        lines.append(f"{k:<{width}}  {val:>12}")
    return "\n".join(lines)


InputOpt = Annotated[Path, typer.Option("--input", "-i", help="Embeddings: .npy or .h5ad.")]
ObsmOpt = Annotated[
    str | None, typer.Option("--obsm", help="For .h5ad input: the obsm key (default: X).")
]
ArchOpt = Annotated[str, typer.Option(help="topk, batchtopk, relu, jumprelu, gated or matryoshka.")]


def _obs_column(spec: str, numeric: bool = True):
    """Read ``FILE.csv:column`` (or ``.h5ad:obs_column``) into a 1-D array."""
    import numpy as np
    import pandas as pd

    path, _, col = spec.rpartition(":")
    if not path or not col:
        raise SparsecellError(
            f"--semantic '{spec}' is not FILE:COLUMN", "e.g. --semantic obs.csv:cell_death_rate"
        )
    p = Path(path)
    if not p.exists():
        raise SparsecellError(f"semantic file not found: {p}", "check the path")
    if p.suffix == ".h5ad":
        import anndata as ad

        df = ad.read_h5ad(p, backed="r").obs
    else:
        df = pd.read_csv(p)
    if col not in df.columns:
        raise SparsecellError(
            f"column '{col}' not in {p.name}", f"available: {', '.join(map(str, df.columns))}"
        )
    return np.asarray(df[col], dtype=float) if numeric else np.asarray(df[col])


def _echo_result(res: Any, title: str, json_out: Path | None) -> None:
    from .._io import atomic_write_text, dump_json

    d = {
        "metric": res.metric,
        "score": float(res.score),
        "per_fold": [float(v) for v in getattr(res, "per_fold", [])],
        "params": dict(getattr(res, "params", {}) or {}),
    }
    typer.echo(f"{title}: {res.metric} = {d['score']:.4f}")
    if d["per_fold"]:
        typer.echo("per fold: " + ", ".join(f"{v:.4f}" for v in d["per_fold"]))
    if json_out is not None:
        atomic_write_text(json_out, dump_json(d))
        typer.echo(f"written to {json_out}")


MetaOpt = Annotated[
    Path | None, typer.Option("--metadata", help="CSV/parquet mapping files to well, line, ...")
]
ImgDirOpt = Annotated[Path, typer.Option("--image-dir", "-d", help="Folder of TIFF fields.")]
DeadOpt = Annotated[
    str | None, typer.Option("--dead-channel", help="Name/index of the dead-cell stain.")
]


def _load_units(path: Path):
    """Units from a shard folder (``manifest.json`` inside) or an ``N × C × H × W`` .npy."""
    import numpy as np

    if path.is_dir():
        from ..images import open_shards

        return open_shards(path)
    if not path.exists():
        raise SparsecellError(f"units not found: {path}", "pass a shard folder or a .npy file")
    if path.suffix != ".npy":
        raise SparsecellError(
            f"unsupported units file '{path.name}'", "pass a shard folder or an N×C×H×W .npy"
        )
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.ndim != 4:
        raise SparsecellError(
            f"{path.name} holds a {arr.ndim}-D array, expected N × C × H × W", "reshape it"
        )
    return arr
