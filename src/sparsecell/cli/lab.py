"""``sparsecell lab``: superposition lab (alignment, fidelity, toy models, reproductions)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import InputOpt, ObsmOpt, _echo_result, _friendly, _load_input, _obs_column

app = typer.Typer(no_args_is_help=True, help="Superposition lab: alignment, fidelity, toy models.")


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
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result here.")] = None,
) -> None:
    """Alignment of two representations of the same samples (arXiv 2510.03186)."""
    from .. import lab

    res = lab.alignment(
        _load_input(a, obsm_a), _load_input(b, obsm_b), metric=metric, folds=folds, seed=seed
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
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result here.")] = None,
) -> None:
    """Geometric fidelity of an embedding against a semantic variable (arXiv 2606.31394)."""
    from .. import lab

    s = _obs_column(semantic) if semantic is not None else None
    res = lab.fidelity(_load_input(input, obsm), semantic=s, metric=metric, k=k, seed=seed)
    _echo_result(res, input.name, json_out)
