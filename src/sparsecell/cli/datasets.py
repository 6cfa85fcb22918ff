"""``sparsecell datasets``: write built-in data sets to files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import _friendly

app = typer.Typer(no_args_is_help=True, help="Write built-in data sets to files.")


@app.command("sparse-features")
@_friendly
def data_sparse_features(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for X.npy, features.npy.")],
    n_features: Annotated[int, typer.Option(help="True features.")] = 512,
    d: Annotated[int, typer.Option(help="Dimensions.")] = 64,
    active: Annotated[float, typer.Option(help="Mean active features per sample.")] = 5.0,
    n_samples: Annotated[int, typer.Option(help="Samples.")] = 50_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write superposed known features (ground truth for SAEs) to a folder."""
    import numpy as np

    from .._io import atomic_dir, dump_json, manifest
    from ..datasets import sparse_features

    data = sparse_features(n_features, d, active, n_samples, seed=seed)
    params = {"n_features": n_features, "d": d, "active": active, "n_samples": n_samples}
    with atomic_dir(out) as tmp:
        np.save(tmp / "X.npy", data.X)
        np.save(tmp / "features.npy", data.features)
        (tmp / "manifest.json").write_text(
            dump_json(manifest("sparsecell.datasets.sparse_features", params, seed=seed))
        )
    typer.echo(f"wrote {n_samples} × {d} samples of {n_features} features to {out}/X.npy")
