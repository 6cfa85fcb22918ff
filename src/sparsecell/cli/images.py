"""``sparsecell images``: microscopy fields to units (QC, patches, phantom)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .._errors import SparsecellError
from ._common import DeadOpt, ImgDirOpt, MetaOpt, _friendly

app = typer.Typer(no_args_is_help=True, help="Microscopy fields to units: QC, patches.")


@app.command("qc")
@_friendly
def images_qc(
    image_dir: ImgDirOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="QC table to write (.csv).")],
    metadata: MetaOpt = None,
    dead_channel: DeadOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Field QC alone (focus, intensity, background): a table with every field's figures."""
    from .. import images
    from .._io import atomic_write_text

    df = images.qc_fields(metadata, image_dir, dead_channel=dead_channel, progress=not quiet)
    atomic_write_text(out, df.to_csv(index=False))
    counts = df["status"].value_counts().to_dict()
    typer.echo(", ".join(f"{v} {k}" for k, v in counts.items()) + f"; table in {out}")


@app.command("patch")
@_friendly
def images_patch(
    image_dir: ImgDirOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Shard folder to write.")],
    metadata: MetaOpt = None,
    mode: Annotated[
        str, typer.Option(help="patch (grid) or cell (nucleus-centred crops).")
    ] = "patch",
    size: Annotated[int, typer.Option(help="Unit size in pixels.")] = 128,
    dead_channel: DeadOpt = None,
    nuclear_channel: Annotated[
        str | None, typer.Option(help="Name/index of the nuclear channel (cell mode, death).")
    ] = None,
    shard_size: Annotated[int, typer.Option(help="Units per shard file.")] = 4096,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Read, QC and cut fields into units (patches or cell crops), with cell-death rates."""
    from .. import images

    if mode not in ("patch", "cell"):
        raise SparsecellError(f"--mode '{mode}' is not known", "use patch or cell")
    shards = images.process(
        metadata,
        image_dir,
        out,
        mode=mode,
        size=size,
        dead_channel=dead_channel,
        nuclear_channel=nuclear_channel,
        shard_size=shard_size,
        progress=not quiet,
    )
    summ = shards.summary or {}
    typer.echo(
        f"{len(shards)} units of {len(shards.channels)} channels ({', '.join(shards.channels)}) "
        f"from {summ.get('n_fields_ok', '?')} fields "
        f"({summ.get('n_failed_qc', 0)} failed QC, {summ.get('n_unreadable', 0)} unreadable); "
        f"shards and qc.csv in {out}"
    )


@app.command("phantom")
@_friendly
def images_phantom(
    out: Annotated[Path, typer.Option("--out", "-o", help="Shard folder (or fields folder).")],
    n_units: Annotated[int, typer.Option(help="Units to generate.")] = 2000,
    size: Annotated[int, typer.Option(help="Unit size in pixels.")] = 128,
    fields: Annotated[
        int, typer.Option(help="Write this many TIFF fields + metadata.csv instead of units.")
    ] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Generate the built-in phantom neuron data (ground truth in obs, gt_* columns)."""
    from .. import datasets, images

    if fields > 0:
        datasets.phantom_fields(out, n_fields=fields, seed=seed)
        typer.echo(f"{fields} TIFF fields and metadata.csv written to {out}")
        return
    ph = datasets.phantom(n_units, size, seed=seed, progress=not quiet)
    images.write_shards(out, ph.units, ph.obs, ph.channels, seed=seed)
    typer.echo(
        f"{n_units} phantom units ({', '.join(ph.channels)}; {len(ph.factors)} ground-truth "
        f"factors) written to {out}"
    )
