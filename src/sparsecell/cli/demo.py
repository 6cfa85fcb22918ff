"""``sparsecell demo``: the main job on built-in data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import _friendly, format_metrics


@_friendly
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/demo"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run the main job on built-in data and print where the results are.

    Until the image and atlas stages land, the demo trains a TopK SAE on superposed
    known features (512 features in 64 dimensions) and reports how well it recovers them.
    """
    from .. import sae as sae_mod
    from .._io import atomic_write_text, dump_json
    from ..datasets import sparse_features

    typer.echo("sparsecell demo: 512 known features superposed in 64 dimensions, 100,000 samples")
    data = sparse_features(512, 64, active=5, n_samples=100_000, seed=0)
    model_dir = out / "sae"
    sae = sae_mod.train(
        data.X,
        arch="topk",
        k=5,
        expansion=16,
        seed=0,
        epochs=10,
        batch_size=512,
        lr=3e-3,
        out=model_dir,
        progress=not quiet,
    )
    rec = sae_mod.feature_recovery(sae, data.features)
    metrics = {**{k: v for k, v in sae.metrics.items() if k != "freq_hist"}, **rec}
    atomic_write_text(out / "metrics.json", dump_json(metrics))
    typer.echo(format_metrics(metrics, f"{sae!r}"))
    typer.echo(f"results: {out.resolve()} (model in {model_dir}, metrics in {out}/metrics.json)")
