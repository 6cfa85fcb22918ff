"""``sparsecell encode``: train image encoders and embed units."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import _friendly, _load_units, _obs_column, format_metrics

app = typer.Typer(no_args_is_help=True, help="Train image encoders and embed units.")


@app.command("train")
@_friendly
def encode_train(
    units: Annotated[Path, typer.Option("--units", "-u", help="Shard folder or N×C×H×W .npy.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the trained encoder.")],
    label_key: Annotated[
        str | None, typer.Option(help="obs column of the shards to contrast (e.g. genotype).")
    ] = None,
    labels: Annotated[
        str | None, typer.Option(help="FILE.csv:COLUMN of labels (for .npy units).")
    ] = None,
    mode: Annotated[str, typer.Option(help="supcon (supervised) or selfsup.")] = "supcon",
    epochs: Annotated[float, typer.Option(help="Passes over the units.")] = 10.0,
    batch_size: Annotated[int, typer.Option(help="Units per step.")] = 128,
    embed_dim: Annotated[int, typer.Option(help="Embedding dimension.")] = 64,
    width: Annotated[int, typer.Option(help="Channels of the first stage.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train the residual CNN encoder (supervised contrastive, momentum queue)."""
    from .. import encode

    U = _load_units(units)
    y = _obs_column(labels, numeric=False) if labels is not None else None
    model = encode.train(
        U,
        y,
        mode=mode,
        label_key=label_key,
        out=out,
        epochs=epochs,
        batch_size=batch_size,
        embed_dim=embed_dim,
        width=width,
        device=device,
        seed=seed,
        progress=not quiet,
    )
    if getattr(model, "metrics", None):
        typer.echo(format_metrics(model.metrics, f"encoder → {out}"))
    typer.echo(f"encoder written to {out}")


@app.command("embed")
@_friendly
def encode_embed(
    model: Annotated[Path, typer.Option("--model", "-m", help="Folder of a trained encoder.")],
    units: Annotated[Path, typer.Option("--units", "-u", help="Shard folder or N×C×H×W .npy.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="*.h5ad (obsm['X_cnn']) or a folder (.npy + csv).")
    ],
    batch_size: Annotated[int, typer.Option(help="Units per batch.")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Embed units with a trained encoder; writes .h5ad or embeddings.npy + obs.csv."""
    from .. import encode

    enc = encode.load(model)
    U = _load_units(units)
    E = encode.embed(enc, U, batch_size=batch_size, device=device, progress=not quiet)
    obs = getattr(U, "obs", None)
    written = encode.write_embeddings(out, E, obs, model=enc)
    typer.echo(f"{E.shape[0]} × {E.shape[1]} embeddings written to {written}")
