"""Sparsity–fidelity frontier: train over a grid of k (or λ) and record FVU against L0."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .._errors import SparsecellError
from .._io import atomic_dir
from .trainer import K_ARCHS, train


def sweep(
    X: Any,
    arch: str = "topk",
    values: Sequence[float] = (8, 16, 32, 64),
    *,
    out: str | os.PathLike | None = None,
    save_models: bool = False,
    expansion: int = 16,
    seed: int = 0,
    **kwargs: Any,
) -> pd.DataFrame:
    """Train one SAE per value of the sparsity knob and tabulate the frontier.

    Parameters
    ----------
    X
        ``n × d`` embeddings.
    arch
        Architecture; the knob is ``k`` for topk/batchtopk/matryoshka and the sparsity
        coefficient λ for relu/jumprelu/gated.
    values
        The grid of k (or λ) values.
    out
        Folder for ``frontier.csv`` and ``frontier.png`` (and ``models/`` with
        ``save_models``); written atomically.
    save_models
        Also save every trained model under ``out/models/<knob>=<value>``.
    expansion, seed, **kwargs
        Passed to :func:`sparsecell.sae.train`.

    Returns
    -------
    pandas.DataFrame
        One row per value: the knob, ``fvu``, ``mse``, ``cosine``, ``l0``, ``dead_frac``,
        ``dense_frac``.
    """
    if len(values) == 0:
        raise SparsecellError("the sweep grid is empty", "pass at least one value")
    knob = "k" if arch in K_ARCHS else "sparsity_coeff"
    rows, models = [], []
    for v in values:
        kw = dict(kwargs)
        if knob == "k":
            kw["k"] = int(v)
        else:
            kw["sparsity_coeff"] = float(v)
        sae = train(X, arch=arch, expansion=expansion, seed=seed, **kw)
        m = {
            key: sae.metrics[key]
            for key in ("fvu", "mse", "cosine", "l0", "dead_frac", "dense_frac")
        }
        rows.append({"arch": arch, knob: v, **m})
        models.append(sae)
    df = pd.DataFrame(rows)
    if out is not None:
        with atomic_dir(out) as tmp:
            df.to_csv(tmp / "frontier.csv", index=False)
            plot_frontier(df, tmp / "frontier.png", knob)
            if save_models:
                for v, sae in zip(values, models, strict=True):
                    sae.save(str(tmp / "models" / f"{knob}={v}"))
    return df


def plot_frontier(df: pd.DataFrame, path: str | Path, knob: str) -> None:
    """FVU against L0, one point per trained model, labelled by the knob."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=120)
    for arch, g in df.groupby("arch"):
        g = g.sort_values("l0")
        ax.plot(g["l0"], g["fvu"], "o-", label=arch)
        for _, r in g.iterrows():
            ax.annotate(
                f"{knob}={r[knob]:g}",
                (r["l0"], r["fvu"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xscale("log")
    ax.set_xlabel("L0 (active latents per sample)")
    ax.set_ylabel("FVU")
    ax.set_title("Sparsity–fidelity frontier")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
