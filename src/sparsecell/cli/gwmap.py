"""``sparsecell gwmap``: align image cells with scRNA-seq cells (Gromov-Wasserstein)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .._errors import SparsecellError
from ._common import _friendly, format_metrics

app = typer.Typer(
    no_args_is_help=True,
    help="GW-map: couple image cells with scRNA-seq cells, transfer labels, gene modules.",
)


def _read_h5ad(path: Path, what: str):
    import anndata as ad

    if not path.exists():
        raise SparsecellError(f"{what} file not found: {path}", "check the path")
    if path.suffix != ".h5ad":
        raise SparsecellError(f"{what} file '{path.name}' is not .h5ad", "pass an AnnData file")
    try:
        return ad.read_h5ad(path)
    except Exception as e:  # corrupt or foreign file
        raise SparsecellError(f"cannot read {path.name}: {e}", "pass a valid .h5ad file") from e


@app.command("align")
@_friendly
def gwmap_align(
    image: Annotated[Path, typer.Option("--image", help="AnnData (.h5ad) of the image cells.")],
    rna: Annotated[Path, typer.Option("--rna", help="AnnData (.h5ad) of the scRNA-seq cells.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Result folder (written atomically).")],
    rep_image: Annotated[
        str | None, typer.Option("--rep-image", help="obsm key of the image side (default X).")
    ] = None,
    rep_rna: Annotated[
        str | None, typer.Option("--rep-rna", help="obsm key of the RNA side (default X).")
    ] = None,
    n_pcs: Annotated[
        int | None, typer.Option("--n-pcs", help="Reduce each side to this many PCs first.")
    ] = None,
    cost: Annotated[str, typer.Option(help="sqeuclidean, euclidean or knn_geodesic.")] = (
        "sqeuclidean"
    ),
    k: Annotated[int, typer.Option(help="Neighbours for knn_geodesic.")] = 15,
    epsilon: Annotated[float, typer.Option(help="Entropic regularisation (scaled costs).")] = 5e-3,
    problem: Annotated[str, typer.Option(help="balanced, unbalanced or semirelaxed.")] = (
        "balanced"
    ),
    tau: Annotated[float | None, typer.Option(help="Unbalanced: marginal penalty.")] = None,
    label: Annotated[
        str | None, typer.Option(help="obs column on both sides: fused GW with a label cost.")
    ] = None,
    alpha: Annotated[float, typer.Option(help="Weight of the label cost (fused).")] = 0.5,
    transfer: Annotated[
        str | None, typer.Option(help="RNA obs column to transfer to the image cells.")
    ] = None,
    transfer_mode: Annotated[str, typer.Option(help="barycentric or hard.")] = "barycentric",
    method: Annotated[str, typer.Option(help="auto, dense or quantized.")] = "auto",
    backend: Annotated[str, typer.Option(help="torch or pot.")] = "torch",
    device: Annotated[str | None, typer.Option(help="Torch device (default: cuda if any).")] = (
        None
    ),
    max_iter: Annotated[int, typer.Option(help="Outer GW iterations.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Couple image cells with scRNA-seq cells by entropic Gromov-Wasserstein transport.

    Writes OUT/ with coupling.npz, img.h5ad/rna.h5ad (obs and aligned representations),
    result.json, summary.json, manifest.json and, with --transfer, labels.csv.
    """
    from .._io import dump_json
    from ..gwmap.align import align
    from ..gwmap.metrics import label_transfer_accuracy

    if transfer_mode not in ("barycentric", "hard"):
        raise SparsecellError(
            f"--transfer-mode {transfer_mode!r} is unknown", "use barycentric or hard"
        )
    a_img = _read_h5ad(image, "image")
    a_rna = _read_h5ad(rna, "RNA")
    if transfer is not None and transfer not in a_rna.obs.columns:
        raise SparsecellError(
            f"--transfer '{transfer}' is not an obs column of {rna.name}",
            f"available: {', '.join(map(str, a_rna.obs.columns)) or 'none'}",
        )
    res = align(
        a_img,
        a_rna,
        rep_img=rep_image,
        rep_rna=rep_rna,
        n_pcs=n_pcs,
        cost=cost,
        k=k,
        epsilon=epsilon,
        problem=problem,
        tau=tau,
        label=label,
        alpha=alpha,
        method=method,
        backend=backend,
        device=device,
        seed=seed,
        progress=not quiet,
        max_iter=max_iter,
    )
    summary = res.summary()
    extra: dict[str, str] = {}
    if transfer is not None:
        labels = res.transfer_labels(transfer, transfer_mode)
        extra["labels.csv"] = labels.rename_axis("cell").to_csv()
        if transfer in a_img.obs.columns:
            summary["label_transfer_accuracy"] = label_transfer_accuracy(
                labels["label"], a_img.obs[transfer]
            )
    summary["inputs"] = {"image": str(image), "rna": str(rna)}
    extra["summary.json"] = dump_json(summary)
    res.write(out, extra_files=extra)
    typer.echo(format_metrics(summary, title=f"GW-map {image.name} ↔ {rna.name}"))
    typer.echo(f"converged: {'yes' if res.converged else 'no (see result.json: trace)'}")
    for w in res.warnings:
        typer.echo(f"warning: {w}")
    typer.echo(f"written to {out}")


# --- `sparsecell gwmap modules` (couple, then predict; gene-module hierarchy) ----------------
def _modules_read_coupling(path: Path):
    """Coupling (and the obs names of both sides, when known) from a result folder or a file."""
    import numpy as np
    import scipy.sparse as sp

    if not path.exists():
        raise SparsecellError(f"result not found: {path}", "pass a `gwmap align` folder or .npz")
    if path.is_dir():
        if (path / "result.json").exists():
            from ..gwmap.result import GWResult

            res = GWResult.read(path)
            return res.coupling, list(res.obs_img.index), list(res.obs_rna.index)
        path = path / "coupling.npz"
        if not path.exists():
            raise SparsecellError(
                f"{path.parent} holds neither result.json nor coupling.npz",
                "pass a folder written by `sparsecell gwmap align`",
            )
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), None, None
        with np.load(path, allow_pickle=False) as z:
            if "coupling" in z.files:
                return z["coupling"], None, None
            if len(z.files) == 1 and "format" not in z.files:
                return z[z.files[0]], None, None
        return sp.load_npz(path).tocsr(), None, None
    except (OSError, ValueError, KeyError) as e:
        raise SparsecellError(
            f"cannot read a coupling from {path.name}: {e}",
            "pass coupling.npz (dense 'coupling' array or SciPy sparse) or a .npy",
        ) from None


def _modules_align_rows(adata, names, side: str):
    """Reorder ``adata`` to the coupling's cell order when the result knows the cell names."""
    if names is None:
        return adata
    if len(names) != adata.n_obs:
        raise SparsecellError(
            f"the coupling has {len(names)} {side} cells but the {side} file {adata.n_obs}",
            f"pass the {side} data the alignment was run on",
        )
    idx = adata.obs_names.get_indexer([str(n) for n in names])
    if (idx >= 0).all():
        return adata[idx].copy()
    if (idx < 0).all():
        return adata  # named differently: the order is trusted (lengths agree)
    raise SparsecellError(
        f"{int((idx < 0).sum())} {side} cell(s) of the coupling are not in the {side} file",
        f"pass the {side} data the alignment was run on",
    )


def _group_labels(adata, column: str | None, flag: str, side: str):
    """String labels of an obs column (``None`` when no column was asked for)."""
    if column is None:
        return None
    if column not in adata.obs.columns:
        raise SparsecellError(
            f"{flag} '{column}' is not an {side} obs column",
            f"available: {', '.join(map(str, adata.obs.columns))}",
        )
    return adata.obs[column].astype(str).to_numpy()


@app.command("modules")
@_friendly
def gwmap_modules(
    result: Annotated[
        Path, typer.Option("--result", help="`gwmap align` folder, or coupling .npz/.npy.")
    ],
    image: Annotated[Path, typer.Option("--image", help="Image cells (.h5ad), coupling rows.")],
    rna: Annotated[Path, typer.Option("--rna", help="scRNA-seq cells (.h5ad), coupling columns.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (replaced).")],
    rep_image: Annotated[
        str | None,
        typer.Option("--rep-image", help="obsm key of the image features (default: X_pca, X)."),
    ] = None,
    groups: Annotated[
        str | None, typer.Option("--groups", help="Image obs column to cross-validate within.")
    ] = None,
    genes: Annotated[
        int, typer.Option("--genes", help="Test the N most variable genes (0: all).")
    ] = 2000,
    z_min: Annotated[float, typer.Option("--z-min", help="Predictable: z ≥ this.")] = 3.0,
    resolutions: Annotated[
        str, typer.Option("--resolutions", help="Leiden resolutions, comma-separated.")
    ] = "0.2,0.5,1,2",
    permutations: Annotated[int, typer.Option("--permutations", help="Null permutations.")] = 100,
    folds: Annotated[int, typer.Option("--folds", help="Cross-validation folds.")] = 5,
    k: Annotated[int, typer.Option("--k", help="Neighbours per gene in the module graph.")] = 10,
    min_size: Annotated[int, typer.Option("--min-size", help="Smallest module.")] = 5,
    modules_on: Annotated[
        str,
        typer.Option(
            "--modules-on", help="Correlate genes across: targets (image cells) or rna (RNA cells)."
        ),
    ] = "targets",
    null: Annotated[
        str,
        typer.Option(
            "--null",
            help="Permutation null: rna (shuffle RNA cells, re-couple) or image (shuffle targets).",
        ),
    ] = "rna",
    rna_groups: Annotated[
        str | None,
        typer.Option("--rna-groups", help="RNA obs column to shuffle within (--null rna)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Couple, then predict: genes predictable from image features, and their module tree."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from .._io import atomic_dir, dump_json, manifest
    from ..gwmap.modules import gene_modules
    from ..gwmap.predict import couple_then_predict, coupled_targets

    try:
        res_list = [float(r) for r in resolutions.split(",") if r.strip()]
    except ValueError:
        raise SparsecellError(
            f"--resolutions '{resolutions}' is not a list of numbers", "e.g. 0.2,0.5,1,2"
        ) from None
    if not res_list or min(res_list) <= 0:
        raise SparsecellError("--resolutions must be positive numbers", "e.g. 0.2,0.5,1,2")
    if modules_on not in ("targets", "rna"):
        raise SparsecellError(f"--modules-on '{modules_on}'", "use targets or rna")
    if genes < 0:
        raise SparsecellError(f"--genes {genes}", "pass N ≥ 1, or 0 for all genes")
    if null not in ("rna", "image"):
        raise SparsecellError(f"--null '{null}'", "use rna or image")
    if permutations < 2:
        raise SparsecellError(f"--permutations {permutations}", "z-scores need at least 2")
    T, names_img, names_rna = _modules_read_coupling(result)
    a_img = _modules_align_rows(_read_h5ad(image, "image"), names_img, "image")
    a_rna = _modules_align_rows(_read_h5ad(rna, "RNA"), names_rna, "RNA")
    if T.shape != (a_img.n_obs, a_rna.n_obs):
        raise SparsecellError(
            f"coupling is {T.shape[0]} × {T.shape[1]} but the data are "
            f"{a_img.n_obs} image × {a_rna.n_obs} RNA cells",
            "pass the files the alignment was run on",
        )
    # image features
    if rep_image is None:
        rep_image = "X_pca" if "X_pca" in a_img.obsm else None
    if rep_image is not None and rep_image not in a_img.obsm:
        raise SparsecellError(
            f"--rep-image '{rep_image}' not in the image obsm",
            f"available: {', '.join(a_img.obsm.keys()) or 'none (omit it to use X)'}",
        )
    feats = a_img.obsm[rep_image] if rep_image is not None else a_img.X
    if feats is None:
        raise SparsecellError("the image file has no X", "pass --rep-image")
    feats = feats.toarray() if sp.issparse(feats) else np.asarray(feats, dtype=np.float64)
    # RNA expression: log-normalise counts (integer-valued) to 1e4 per cell
    E = a_rna.X
    if E is None:
        raise SparsecellError("the RNA file has no X", "store the expression in .X")
    E = sp.csr_matrix(E, dtype=np.float64) if sp.issparse(E) else np.asarray(E, np.float64)
    vals = E.data if sp.issparse(E) else E
    note = "as given"
    if vals.size and vals.min() >= 0 and np.allclose(vals, np.round(vals)) and vals.max() > 20:
        lib = np.asarray(E.sum(axis=1)).ravel()
        lib[lib == 0] = 1.0
        scale = 1e4 / lib
        if sp.issparse(E):
            E = sp.diags(scale) @ E
            E.data = np.log1p(E.data)
        else:
            E = np.log1p(E * scale[:, None])
        note = "counts: normalised to 1e4 per cell, log1p"
    names = np.asarray(a_rna.var_names, dtype=object)
    if genes and genes < names.size:
        mean = np.asarray(E.mean(axis=0)).ravel()
        sq = np.asarray(E.multiply(E).mean(axis=0) if sp.issparse(E) else (E * E).mean(0))
        var = sq.ravel() - mean**2
        keep = np.sort(np.argsort(-var, kind="stable")[:genes])
        E, names = E[:, keep], names[keep]
    group_vals = _group_labels(a_img, groups, "--groups", "image")
    rna_group_vals = _group_labels(a_rna, rna_groups, "--rna-groups", "RNA")
    Y = coupled_targets(T, E)
    df = couple_then_predict(
        feats,
        T,
        E,
        targets=Y,
        groups=group_vals,
        folds=folds,
        n_permutations=permutations,
        seed=seed,
        progress=True,
        null=null,
        rna_groups=rna_group_vals,
    )
    df.index = pd.Index([str(g) for g in names], name="gene")
    hits = df.index[df["z"] >= z_min].tolist()
    typer.echo(
        f"{len(df)} genes tested on {len(feats)} image cells: {len(hits)} predictable "
        f"at z ≥ {z_min:g}"
    )
    gm = None
    if len(hits) >= 3:
        sel = np.flatnonzero(df["z"].to_numpy() >= z_min)
        if modules_on == "targets":
            M = Y[:, sel]
        else:
            M = E[:, sel].toarray() if sp.issparse(E) else E[:, sel]
        gm = gene_modules(M, hits, resolutions=res_list, k=k, min_size=min_size, seed=seed)
    else:
        typer.echo("fewer than 3 predictable genes: no gene modules")
    config = {
        "result": str(result),
        "image": str(image),
        "rna": str(rna),
        "rep_image": rep_image,
        "groups": groups,
        "genes": genes,
        "z_min": z_min,
        "resolutions": res_list,
        "permutations": permutations,
        "null": null,
        "rna_groups": rna_groups,
        "folds": folds,
        "k": k,
        "min_size": min_size,
        "modules_on": modules_on,
        "seed": seed,
        "expression": note,
    }
    with atomic_dir(out) as tmp:
        df.to_csv(tmp / "predictions.csv")
        if gm is not None:
            gm.write(tmp / "modules")
        (tmp / "manifest.json").write_text(
            dump_json(
                manifest(
                    "gwmap.modules",
                    config,
                    n_predictable=len(hits),
                    predict_params=df.attrs.get("params", {}),
                    warnings=df.attrs.get("warnings", []) + (gm.warnings if gm else []),
                )
            )
        )
    if gm is not None:
        per = ", ".join(f"{r}: {n}" for r, n in gm.n_modules().items())
        typer.echo(f"modules per resolution: {per}")
    typer.echo(f"written to {out}")
