"""``sparsecell lab``: superposition lab (alignment, fidelity, toy models, reproductions)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .._errors import SparsecellError
from ._common import InputOpt, ObsmOpt, _echo_result, _friendly, _load_input, _obs_column

app = typer.Typer(no_args_is_help=True, help="Superposition lab: alignment, fidelity, toy models.")

DeviceOpt = Annotated[
    str,
    typer.Option(
        help="cpu, cuda, cuda:N or auto (the GPU when present): where the heavy products, "
        "decompositions and neighbour searches run; same result."
    ),
]


@app.command("align")
@_friendly
def lab_align(
    a: Annotated[Path, typer.Option("--a", help="Representation A: .npy, .h5ad or .npz.")],
    b: Annotated[Path, typer.Option("--b", help="Representation B (same rows as A).")],
    metric: Annotated[
        str,
        typer.Option(
            help="semi_matching, soft_matching, ridge, cka, "
            "cka_debiased, rsa, procrustes, mutual_knn."
        ),
    ] = "semi_matching",
    obsm_a: Annotated[str | None, typer.Option(help="obsm key of A (.h5ad).")] = None,
    obsm_b: Annotated[str | None, typer.Option(help="obsm key of B (.h5ad).")] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    k: Annotated[int, typer.Option(help="Neighbours (mutual_knn).")] = 10,
    inner_cv: Annotated[
        str, typer.Option(help="ridge's penalty search: auto, loo (exact LOO) or gcv.")
    ] = "auto",
    device: DeviceOpt = "cpu",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result here.")] = None,
) -> None:
    """Alignment of two representations of the same samples (arXiv 2510.03186)."""
    from .. import lab

    extra: dict[str, object] = {}
    if metric == "ridge":
        extra["inner_cv"] = inner_cv
    elif metric == "mutual_knn":
        extra["k"] = k
    res = lab.alignment(
        _load_input(a, obsm_a),
        _load_input(b, obsm_b),
        metric=metric,
        folds=folds,
        seed=seed,
        device=device,
        **extra,
    )
    _echo_result(res, f"{a.name} → {b.name}", json_out)


@app.command("fidelity")
@_friendly
def lab_fidelity(
    input: InputOpt,
    semantic: Annotated[
        str | None, typer.Option(help="FILE.csv:COLUMN (or .h5ad:obs column) of the variable.")
    ] = None,
    metric: Annotated[
        str, typer.Option(help="knn_ratio, morans_i, ridge_r2, effective_rank.")
    ] = "knn_ratio",
    obsm: ObsmOpt = None,
    k: Annotated[int, typer.Option(help="Neighbours.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: DeviceOpt = "cpu",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result here.")] = None,
) -> None:
    """Geometric fidelity of an embedding against a semantic variable (arXiv 2606.31394)."""
    from .. import lab

    s = _obs_column(semantic) if semantic is not None else None
    res = lab.fidelity(
        _load_input(input, obsm), semantic=s, metric=metric, k=k, seed=seed, device=device
    )
    _echo_result(res, input.name, json_out)


@app.command("toy")
@_friendly
def lab_toy(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for summary, W and figure.")],
    features: Annotated[int, typer.Option(help="Number of sparse input features.")] = 64,
    hidden: Annotated[int, typer.Option(help="Number of hidden neurons.")] = 16,
    p: Annotated[float, typer.Option(help="Probability that a feature is active.")] = 0.1,
    importance: Annotated[
        float, typer.Option(help="Importance decay r (importance_i = r**i; 1 = uniform).")
    ] = 1.0,
    activation: Annotated[
        str, typer.Option(help="Hidden activation: relu (privileged basis) or linear.")
    ] = "relu",
    steps: Annotated[int, typer.Option(help="Adam steps.")] = 4000,
    batch_size: Annotated[int, typer.Option(help="Samples per step.")] = 1024,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 3e-3,
    sae: Annotated[
        bool, typer.Option("--sae/--no-sae", help="Train a TopK SAE on the hidden layer.")
    ] = True,
    sae_k: Annotated[int, typer.Option(help="SAE active latents per sample.")] = 4,
    sae_expansion: Annotated[int, typer.Option(help="SAE latents per hidden neuron.")] = 8,
    sae_samples: Annotated[int, typer.Option(help="SAE training samples.")] = 50_000,
    threshold: Annotated[
        float, typer.Option(help="Norm above which a feature counts as represented.")
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print less.")] = False,
) -> None:
    """Train a toy model of superposition (Elhage et al. 2022) and summarise it."""
    import numpy as np

    from .. import lab
    from .._io import atomic_dir, dump_json, manifest
    from ._common import format_metrics

    cfg = lab.ToyConfig(
        n_features=features,
        n_hidden=hidden,
        p=p,
        importance=importance,
        hidden_activation=activation,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
    ).validate()
    if sae and (sae_k < 1 or sae_expansion < 1 or sae_samples < 2):
        raise SparsecellError(
            f"--sae-k, --sae-expansion and --sae-samples must be positive, got {sae_k}, "
            f"{sae_expansion}, {sae_samples}",
            "e.g. --sae-k 4 --sae-expansion 8, or --no-sae",
        )
    if not quiet:
        typer.echo(f"training a toy model {features} → {hidden} (p={p}, {activation}) ...")
    model = lab.train_toy(cfg)
    sae_model = None
    if sae:
        if not quiet:
            typer.echo(f"training a TopK SAE (k={sae_k}, {sae_expansion}× latents) ...")
        sae_model = lab.toy_sae(
            model, sae_samples, k=sae_k, expansion=sae_expansion, seed=seed, progress=False
        )
    summ = lab.toy_summary(model, sae_model, threshold=threshold)
    fig = lab.plot_toy(model, threshold=threshold)
    with atomic_dir(out) as tmp:
        (tmp / "summary.json").write_text(dump_json(summ))
        np.save(tmp / "W.npy", model.W)
        fig.savefig(tmp / "figure.png", dpi=120, bbox_inches="tight")
        params = {**cfg.to_dict(), "threshold": threshold}
        if sae:
            params.update(sae_k=sae_k, sae_expansion=sae_expansion, sae_samples=sae_samples)
        (tmp / "manifest.json").write_text(
            dump_json(manifest("sparsecell.lab.toy", params, seed=seed))
        )
    typer.echo(format_metrics(summ, repr(model)))
    typer.echo(f"written to {out} (summary.json, W.npy, figure.png)")


@app.command("reproduce")
@_friendly
def lab_reproduce(
    name: Annotated[str, typer.Argument(help="Reproduction: toy, digits or phantom.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for table, figure, manifest.")],
    seed: Annotated[int, typer.Option(help="Base random seed.")] = 0,
    quick: Annotated[bool, typer.Option(help="Reduced configuration (minutes → seconds).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress messages.")] = False,
) -> None:
    """Reproduce a paper's claim: writes table.csv, figure.png, manifest.json, summary.md."""
    import pandas as pd

    from ..lab import reproductions

    try:
        fn = reproductions.get(name)
    except (ImportError, AttributeError) as e:
        raise SparsecellError(
            f"reproduction '{name}' is not available in this installation ({e})",
            "update sparsecell or choose another reproduction",
        ) from None
    table = fn(out, seed=seed, quick=quick, progress=not quiet)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        typer.echo(table.drop(columns=["per_pair"], errors="ignore").to_string(index=False))
    summary = Path(out) / "summary.md"
    if summary.exists() and not quiet:
        typer.echo(summary.read_text().rstrip())
    typer.echo(f"written to {out} (table.csv, figure.png, manifest.json, summary.md)")
