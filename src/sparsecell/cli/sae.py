"""``sparsecell sae``: train, evaluate, sweep and apply sparse autoencoders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .._errors import SparsecellError
from ._common import ArchOpt, InputOpt, ObsmOpt, _friendly, _load_input, format_metrics

app = typer.Typer(no_args_is_help=True, help="Train, evaluate and sweep sparse autoencoders.")


@app.command("train")
@_friendly
def sae_train(
    input: InputOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the trained model.")],
    obsm: ObsmOpt = None,
    arch: ArchOpt = "topk",
    k: Annotated[int, typer.Option(help="Active latents per sample (k-archs).")] = 32,
    expansion: Annotated[int, typer.Option(help="Latents per input dimension.")] = 16,
    d_sae: Annotated[int, typer.Option(help="Number of latents (overrides expansion).")] = 0,
    epochs: Annotated[float, typer.Option(help="Passes over the data.")] = 10.0,
    steps: Annotated[int | None, typer.Option(help="Total steps (overrides epochs).")] = None,
    batch_size: Annotated[int, typer.Option(help="Samples per step.")] = 4096,
    lr: Annotated[
        float | None, typer.Option(help="Learning rate (default: scaled by size).")
    ] = None,
    sparsity_coeff: Annotated[
        float | None, typer.Option(help="λ for relu/gated (L1) and jumprelu (L0).")
    ] = None,
    normalize: Annotated[str, typer.Option(help="center_scale, zscore or none.")] = "center_scale",
    precision: Annotated[str, typer.Option(help="auto, fp32 or bf16 encoder matmuls.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    checkpoint_every: Annotated[
        int, typer.Option(help="Resumable checkpoint every N steps (0: end only).")
    ] = 0,
    resume: Annotated[bool, typer.Option(help="Resume from the state in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a sparse autoencoder on embeddings and save it to --out."""
    from .. import sae as sae_mod

    X = _load_input(input, obsm)
    sae = sae_mod.train(
        X,
        arch=arch,
        k=k,
        expansion=expansion,
        seed=seed,
        out=out,
        resume=resume,
        d_sae=d_sae,
        epochs=epochs,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        sparsity_coeff=sparsity_coeff,
        normalize=normalize,
        precision=precision,
        device=device,
        checkpoint_every=checkpoint_every,
        progress=not quiet,
    )
    if getattr(sae, "metrics", None) is not None:
        typer.echo(format_metrics(sae.metrics, f"{sae!r} on {input.name}"))
        typer.echo(f"model written to {out}")


@app.command("eval")
@_friendly
def sae_eval(
    model: Annotated[Path, typer.Option("--model", "-m", help="Folder of a trained SAE.")],
    input: InputOpt,
    obsm: ObsmOpt = None,
    max_samples: Annotated[int | None, typer.Option(help="Evaluate on a random subset.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the metrics to this JSON file.")
    ] = None,
) -> None:
    """Evaluate a trained SAE on embeddings: FVU, MSE, cosine, L0, dead and dense latents."""
    from .. import sae as sae_mod
    from .._io import atomic_write_text, dump_json

    sae = sae_mod.load(model)
    X = _load_input(input, obsm)
    metrics = sae_mod.evaluate(sae, X, max_samples=max_samples)
    typer.echo(format_metrics(metrics, f"{sae!r} on {input.name}"))
    if json_out is not None:
        atomic_write_text(json_out, dump_json(metrics))
        typer.echo(f"metrics written to {json_out}")


@app.command("sweep")
@_friendly
def sae_sweep(
    input: InputOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for frontier.csv/.png.")],
    values: Annotated[
        str, typer.Option(help="Comma-separated k values (or λ for relu/jumprelu/gated).")
    ] = "8,16,32,64",
    obsm: ObsmOpt = None,
    arch: ArchOpt = "topk",
    expansion: Annotated[int, typer.Option(help="Latents per input dimension.")] = 16,
    epochs: Annotated[float, typer.Option(help="Passes over the data per model.")] = 10.0,
    batch_size: Annotated[int, typer.Option(help="Samples per step.")] = 4096,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    save_models: Annotated[bool, typer.Option(help="Also save every model.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train over a grid of k (or λ) and write the sparsity–fidelity frontier."""
    from .. import sae as sae_mod

    try:
        grid = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise SparsecellError(
            f"--values '{values}' is not a comma-separated list of numbers", "e.g. 8,16,32"
        ) from None
    X = _load_input(input, obsm)
    df = sae_mod.sweep(
        X,
        arch=arch,
        values=grid,
        out=out,
        save_models=save_models,
        expansion=expansion,
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        device=device,
        progress=not quiet,
    )
    typer.echo(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    typer.echo(f"frontier written to {out}/frontier.csv and {out}/frontier.png")


@app.command("encode")
@_friendly
def sae_encode(
    model: Annotated[Path, typer.Option("--model", "-m", help="Folder of a trained SAE.")],
    input: InputOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Latents file (.npz, sparse CSR).")],
    obsm: ObsmOpt = None,
) -> None:
    """Encode embeddings into sparse SAE latents (scipy CSR saved as .npz)."""
    import io

    import scipy.sparse as sp

    from .. import sae as sae_mod
    from .._io import atomic_write_bytes

    if out.suffix != ".npz":
        raise SparsecellError(f"--out must end in .npz, got '{out.name}'", "e.g. --out latents.npz")
    sae = sae_mod.load(model)
    Z = sae.encode(_load_input(input, obsm))
    buf = io.BytesIO()
    sp.save_npz(buf, Z)
    atomic_write_bytes(out, buf.getvalue())
    typer.echo(f"{Z.shape[0]} × {Z.shape[1]} latents, mean L0 {Z.nnz / Z.shape[0]:.2f}, in {out}")
