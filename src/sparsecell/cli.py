"""The ``sparsecell`` command: one sub-command group per stage.

Every command writes into an output folder it names, shows progress on long work and
exits with code 2 and one line ``sparsecell: error: <what> (<fix>)`` on bad input.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ._errors import SparsecellError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="sparsecell: resolve superposition in image embeddings with sparse autoencoders.",
    pretty_exceptions_enable=False,
)
images_app = typer.Typer(no_args_is_help=True, help="Microscopy fields to units: QC, patches.")
encode_app = typer.Typer(no_args_is_help=True, help="Train image encoders and embed units.")
sae_app = typer.Typer(no_args_is_help=True, help="Train, evaluate and sweep sparse autoencoders.")
lab_app = typer.Typer(no_args_is_help=True, help="Superposition lab: alignment and fidelity.")
data_app = typer.Typer(no_args_is_help=True, help="Write built-in data sets to files.")
# in the order of the data flow: images → embeddings → SAE latents → measurements
app.add_typer(images_app, name="images")
app.add_typer(encode_app, name="encode")
app.add_typer(sae_app, name="sae")
app.add_typer(lab_app, name="lab")
app.add_typer(data_app, name="datasets")


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
    from .datasets import read_embeddings

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


@sae_app.command("train")
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
    from . import sae as sae_mod

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


@sae_app.command("eval")
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
    from . import sae as sae_mod
    from ._io import atomic_write_text, dump_json

    sae = sae_mod.load(model)
    X = _load_input(input, obsm)
    metrics = sae_mod.evaluate(sae, X, max_samples=max_samples)
    typer.echo(format_metrics(metrics, f"{sae!r} on {input.name}"))
    if json_out is not None:
        atomic_write_text(json_out, dump_json(metrics))
        typer.echo(f"metrics written to {json_out}")


@sae_app.command("sweep")
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
    from . import sae as sae_mod

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


@sae_app.command("encode")
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

    from . import sae as sae_mod
    from ._io import atomic_write_bytes

    if out.suffix != ".npz":
        raise SparsecellError(f"--out must end in .npz, got '{out.name}'", "e.g. --out latents.npz")
    sae = sae_mod.load(model)
    Z = sae.encode(_load_input(input, obsm))
    buf = io.BytesIO()
    sp.save_npz(buf, Z)
    atomic_write_bytes(out, buf.getvalue())
    typer.echo(f"{Z.shape[0]} × {Z.shape[1]} latents, mean L0 {Z.nnz / Z.shape[0]:.2f}, in {out}")


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
    from ._io import atomic_write_text, dump_json

    d = {
        "metric": res.metric,
        "score": float(res.score),
        "per_fold": [float(v) for v in getattr(res, "per_fold", [])],
    }
    typer.echo(f"{title}: {res.metric} = {d['score']:.4f}")
    if d["per_fold"]:
        typer.echo("per fold: " + ", ".join(f"{v:.4f}" for v in d["per_fold"]))
    if json_out is not None:
        atomic_write_text(json_out, dump_json(d))
        typer.echo(f"written to {json_out}")


@lab_app.command("align")
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
    from . import lab

    res = lab.alignment(
        _load_input(a, obsm_a), _load_input(b, obsm_b), metric=metric, folds=folds, seed=seed
    )
    _echo_result(res, f"{a.name} → {b.name}", json_out)


@lab_app.command("fidelity")
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
    from . import lab

    s = _obs_column(semantic) if semantic is not None else None
    res = lab.fidelity(_load_input(input, obsm), semantic=s, metric=metric, k=k, seed=seed)
    _echo_result(res, input.name, json_out)


MetaOpt = Annotated[
    Path | None, typer.Option("--metadata", help="CSV/parquet mapping files to well, line, ...")
]
ImgDirOpt = Annotated[Path, typer.Option("--image-dir", "-d", help="Folder of TIFF fields.")]
DeadOpt = Annotated[
    str | None, typer.Option("--dead-channel", help="Name/index of the dead-cell stain.")
]


@images_app.command("qc")
@_friendly
def images_qc(
    image_dir: ImgDirOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="QC table to write (.csv).")],
    metadata: MetaOpt = None,
    dead_channel: DeadOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Field QC alone (focus, intensity, background): a table with every field's figures."""
    from . import images
    from ._io import atomic_write_text

    df = images.qc_fields(metadata, image_dir, dead_channel=dead_channel, progress=not quiet)
    atomic_write_text(out, df.to_csv(index=False))
    counts = df["status"].value_counts().to_dict()
    typer.echo(", ".join(f"{v} {k}" for k, v in counts.items()) + f"; table in {out}")


@images_app.command("patch")
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
    from . import images

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


@images_app.command("phantom")
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
    from . import datasets, images

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


def _load_units(path: Path):
    """Units from a shard folder (``manifest.json`` inside) or an ``N × C × H × W`` .npy."""
    import numpy as np

    if path.is_dir():
        from .images import open_shards

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


@encode_app.command("train")
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
    from . import encode

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


@encode_app.command("embed")
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
    from . import encode

    enc = encode.load(model)
    U = _load_units(units)
    E = encode.embed(enc, U, batch_size=batch_size, device=device, progress=not quiet)
    obs = getattr(U, "obs", None)
    written = encode.write_embeddings(out, E, obs, model=enc)
    typer.echo(f"{E.shape[0]} × {E.shape[1]} embeddings written to {written}")


@data_app.command("sparse-features")
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

    from ._io import atomic_dir, dump_json, manifest
    from .datasets import sparse_features

    data = sparse_features(n_features, d, active, n_samples, seed=seed)
    params = {"n_features": n_features, "d": d, "active": active, "n_samples": n_samples}
    with atomic_dir(out) as tmp:
        np.save(tmp / "X.npy", data.X)
        np.save(tmp / "features.npy", data.features)
        (tmp / "manifest.json").write_text(
            dump_json(manifest("sparsecell.datasets.sparse_features", params, seed=seed))
        )
    typer.echo(f"wrote {n_samples} × {d} samples of {n_features} features to {out}/X.npy")


@app.command("demo")
@_friendly
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/demo"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run the main job on built-in data and print where the results are.

    Until the image and atlas stages land, the demo trains a TopK SAE on superposed
    known features (512 features in 64 dimensions) and reports how well it recovers them.
    """
    from . import sae as sae_mod
    from ._io import atomic_write_text, dump_json
    from .datasets import sparse_features

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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        app(args=argv, prog_name="sparsecell")
    except SparsecellError as e:  # raised outside a command (should not happen)
        print(f"sparsecell: error: {e}", file=sys.stderr)
        sys.exit(2)


__all__ = ["app", "format_metrics", "main"]
