"""Reproduction ``toy``: SAE latents raise neuron-level alignment between two toy models.

Claim (Longon, Klindt & Khosla, arXiv 2510.03186, toy setting): two toy models of
superposition that differ only by seed hold the same features in different superposition
arrangements, so mapping metrics that match *units* (semi-matching, soft-matching) score
their neurons low; replacing each model's neurons by the latents of a sparse autoencoder
trained on its hidden layer disentangles the features and raises those scores.

Settings (the paper's exact toy settings were not available to us; these are our choices):
64 features, each active with probability 0.1 with a ``U(0, 1)`` value, uniform importance,
into 8, 16 and 32 neurons, for two hidden layers: ``relu`` (``h = ReLU(W x)``, a privileged
neuron basis) and ``linear`` (Elhage's original ``h = W x``, whose neuron basis is
arbitrary, so neuron matching is expected to be poor); 4000 Adam steps of 1024 samples,
lr 3e-3. For each width, ``n_pairs`` pairs of models (seeds ``seed + 2i`` and
``seed + 2i + 1``). Each model gets a TopK SAE (k = 4, 128 latents = 2 × the number of
features, 20 epochs over 50,000 fresh samples of its own hidden layer). Alignment A → B is
measured on a shared held-out sample of 10,000 feature vectors with 5-fold
cross-validation, on the neurons and on the SAE latents (dead units dropped by
:func:`sparsecell.lab.alignment`). The quick configuration (tests) keeps the relu model at
16 neurons, one pair, shorter training and semi-matching only.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from ..._errors import SparsecellError

METRICS = ("semi_matching", "soft_matching", "ridge")

FULL = {
    "n_features": 64,
    "p": 0.1,
    "importance": 1.0,
    "activations": ("relu", "linear"),
    "widths": (8, 16, 32),
    "steps": 4000,
    "batch_size": 1024,
    "lr": 3e-3,
    "n_pairs": 2,
    "sae_k": 4,
    "sae_d": 128,
    "sae_samples": 50_000,
    "sae_epochs": 20.0,
    "n_eval": 10_000,
    "folds": 5,
    "metrics": METRICS,
}
QUICK = {
    **FULL,
    "activations": ("relu",),
    "widths": (16,),
    "steps": 1200,
    "n_pairs": 1,
    "sae_samples": 15_000,
    "sae_epochs": 8.0,
    "n_eval": 2000,
    "metrics": ("semi_matching",),
}


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[reproduce] {msg}", file=sys.stderr, flush=True)


def settings(quick: bool, options: dict[str, Any]) -> dict[str, Any]:
    """The configuration of a run: the full or quick defaults updated by ``options``."""
    base = dict(QUICK if quick else FULL)
    bad = sorted(set(options) - set(base))
    if bad:
        raise SparsecellError(
            f"unknown option(s) for this reproduction: {', '.join(bad)}",
            f"choose from {', '.join(sorted(base))}",
        )
    base.update(options)
    for key in ("activations", "widths", "metrics"):
        base[key] = tuple(base[key])
    unknown = sorted(set(base["metrics"]) - set(METRICS))
    if unknown:
        raise SparsecellError(
            f"unsupported metric(s) {', '.join(unknown)}", f"choose from {', '.join(METRICS)}"
        )
    if sorted(set(base["activations"]) - {"relu", "linear"}):
        raise SparsecellError(
            f"unknown hidden activation(s) in {base['activations']}", "use relu and/or linear"
        )
    if int(base["n_pairs"]) < 1:
        raise SparsecellError("n_pairs must be at least 1", "e.g. n_pairs=2")
    return base


def aggregate(rows: list[dict[str, Any]], group: list[str]) -> pd.DataFrame:
    """One row per ``group`` + representation + metric: mean over pairs of the fold-mean
    scores; ``score_sd`` the SD over folds (one pair) or over pairs (several)."""
    raw = pd.DataFrame(rows)
    out = []
    for key, g in raw.groupby([*group, "representation", "metric"], sort=False):
        scores = g["score"].to_numpy(float)
        if len(g) == 1:
            folds = np.asarray(g["per_fold"].iloc[0], float)
            sd, over = (float(np.std(folds, ddof=1)) if len(folds) > 1 else float("nan")), "folds"
        else:
            sd, over = float(np.std(scores, ddof=1)), "pairs"
        d = dict(zip([*group, "representation", "metric"], key, strict=True))
        d.update(
            score=float(scores.mean()),
            score_sd=sd,
            sd_over=over,
            n_pairs=len(g),
            per_pair=";".join(f"{s:.4f}" for s in scores),
            n_units_a=int(g["n_units_a"].mean()),
            n_units_b=int(g["n_units_b"].mean()),
        )
        out.append(d)
    table = pd.DataFrame(out)
    # holds: does the SAE score exceed the neurons' (for every pair, not only on average)?
    table["delta_sae_minus_neurons"] = np.nan
    table["holds"] = False
    for _key, g in table.groupby([*group, "metric"], sort=False):
        if set(g["representation"]) != {"neurons", "sae"}:
            continue
        neu = g[g["representation"] == "neurons"].iloc[0]
        sae = g[g["representation"] == "sae"].iloc[0]
        pn = np.array(neu["per_pair"].split(";"), float)
        ps = np.array(sae["per_pair"].split(";"), float)
        table.loc[g.index, "delta_sae_minus_neurons"] = sae["score"] - neu["score"]
        table.loc[g.index, "holds"] = bool(np.all(ps > pn))
    return table


def figure(table: pd.DataFrame, x: str, title: str, row: str | None = None):
    """Grouped bars (neurons vs SAE latents) against ``x``: one panel per metric, one row of
    panels per value of ``row``."""
    from matplotlib.figure import Figure

    metrics = list(dict.fromkeys(table["metric"]))
    rows = list(dict.fromkeys(table[row])) if row else [None]
    fig = Figure(figsize=(4.2 * len(metrics), 3.4 * len(rows)))
    axes = fig.subplots(len(rows), len(metrics), squeeze=False)
    xs = list(dict.fromkeys(table[x]))
    pos = np.arange(len(xs))
    for r, rv in enumerate(rows):
        part = table if rv is None else table[table[row] == rv]
        for ax, metric in zip(axes[r], metrics, strict=True):
            sub = part[part["metric"] == metric]
            for j, (rep, color) in enumerate((("neurons", "#888888"), ("sae", "#1f77b4"))):
                s = sub[sub["representation"] == rep].set_index(x).reindex(xs)
                ax.bar(
                    pos + (j - 0.5) * 0.38,
                    s["score"],
                    width=0.38,
                    yerr=s["score_sd"].fillna(0.0),
                    capsize=3,
                    color=color,
                    label="SAE latents" if rep == "sae" else "neurons",
                )
            ax.set_xticks(pos, [str(v) for v in xs])
            ax.set_xlabel(x)
            ax.set_title(metric if rv is None else f"{metric} ({row}={rv})", fontsize=9)
            ax.set_ylim(0, 1.05)
        axes[r][0].set_ylabel("alignment A → B")
    axes[0][0].legend(loc="upper right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.set_layout_engine("tight")
    return fig


def holds_summary(
    table: pd.DataFrame, group: str | list[str], claim: str
) -> tuple[str, dict[str, bool]]:
    """Markdown lines saying where the SAE beat the neurons, and a dict metric → held
    everywhere."""
    group = [group] if isinstance(group, str) else list(group)
    lines = [f"**Claim:** {claim}", ""]
    verdict = {}
    for metric, g in table[table["representation"] == "sae"].groupby("metric", sort=False):
        ok = bool(g["holds"].all())
        verdict[str(metric)] = ok
        cells = ", ".join(
            " ".join(f"{c}={r[c]}" for c in group)
            + f": {r['delta_sae_minus_neurons']:+.3f}"
            + ("" if r["holds"] else " (no)")
            for _, r in g.iterrows()
        )
        lines.append(
            f"- {metric}: {'holds' if ok else 'does NOT hold everywhere'} (SAE − neurons: {cells})"
        )
    return "\n".join(lines) + "\n", verdict


def reproduce_toy(
    out: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    quick: bool = False,
    progress: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """Neurons vs SAE latents: alignment between two toy models of superposition.

    Parameters
    ----------
    out
        Folder for ``table.csv``, ``figure.png``, ``manifest.json`` and ``summary.md``
        (written atomically); ``None`` writes nothing.
    seed
        Base seed (models use ``seed + 2i`` and ``seed + 2i + 1``; SAEs and samples derive
        from it).
    quick
        Reduced configuration (relu model, 16 neurons, one pair, shorter training,
        semi-matching only) for tests.
    progress
        Print progress to stderr.
    **options
        Override any setting of :data:`FULL` (``widths``, ``n_pairs``, ``sae_k``, ...).

    Returns
    -------
    pandas.DataFrame
        One row per activation × width × representation × metric:
        ``hidden_activation``, ``n_hidden``, ``representation``
        (``neurons``/``sae``), ``metric``, ``score``, ``score_sd``, ``sd_over``,
        ``n_pairs``, ``per_pair``, ``n_units_a``, ``n_units_b``,
        ``delta_sae_minus_neurons``, ``holds`` (SAE above neurons for every pair), and the
        models' ``features_per_dimension``, ``sae_mean_max_cos`` (means over models).
    """
    from .. import alignment
    from ..toy import (
        ToyConfig,
        sae_recovery,
        sample_features,
        toy_sae,
        train_toys,
    )

    cfg = settings(quick, options)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    stats: dict[tuple[str, int], dict[str, list[float]]] = {}
    X_eval = sample_features(int(cfg["n_eval"]), cfg, seed=int(seed) + 999_983)
    grid = [(act, int(w)) for act in cfg["activations"] for w in cfg["widths"]]
    for act, width in grid:
        tc = ToyConfig(
            n_features=int(cfg["n_features"]),
            n_hidden=int(width),
            p=float(cfg["p"]),
            importance=float(cfg["importance"]),
            hidden_activation=act,
            steps=int(cfg["steps"]),
            batch_size=int(cfg["batch_size"]),
            lr=float(cfg["lr"]),
            seed=int(seed),
        )
        seeds = [int(seed) + i for i in range(2 * int(cfg["n_pairs"]))]
        _log(progress, f"{act}, width {width}: training {len(seeds)} toy models")
        models = train_toys(tc, seeds)
        st = stats.setdefault((act, width), {"fpd": [], "rec": []})
        saes = []
        for mdl in models:
            sae = toy_sae(
                mdl,
                int(cfg["sae_samples"]),
                k=int(cfg["sae_k"]),
                d_sae=int(cfg["sae_d"]),
                seed=mdl.cfg.seed,
                epochs=float(cfg["sae_epochs"]),
                device="cpu",
            )
            saes.append(sae)
            st["fpd"].append(mdl.features_per_dimension())
            st["rec"].append(sae_recovery(mdl, sae)["mean_max_cos"])
        for pair in range(int(cfg["n_pairs"])):
            a, b = 2 * pair, 2 * pair + 1
            reps = {
                "neurons": (models[a].hidden(X_eval), models[b].hidden(X_eval)),
                "sae": (
                    saes[a].encode(models[a].hidden(X_eval)),
                    saes[b].encode(models[b].hidden(X_eval)),
                ),
            }
            for rep, (A, B) in reps.items():
                for metric in cfg["metrics"]:
                    _log(progress, f"{act}, width {width}, pair {pair}: {rep} {metric}")
                    res = alignment(A, B, metric=metric, folds=int(cfg["folds"]), seed=seed)
                    rows.append(
                        {
                            "hidden_activation": act,
                            "n_hidden": int(width),
                            "pair": pair,
                            "representation": rep,
                            "metric": metric,
                            "score": float(res.score),
                            "per_fold": list(map(float, res.per_fold)),
                            "n_units_a": res.n_units_a,
                            "n_units_b": res.n_units_b,
                        }
                    )
    table = aggregate(rows, ["hidden_activation", "n_hidden"])
    keys = list(zip(table["hidden_activation"], table["n_hidden"], strict=True))
    table["features_per_dimension"] = [float(np.mean(stats[k]["fpd"])) for k in keys]
    table["sae_mean_max_cos"] = [float(np.mean(stats[k]["rec"])) for k in keys]
    runtime = time.perf_counter() - t0
    if out is not None:
        from . import write_reproduction

        claim = (
            "SAE latents raise semi- and soft-matching between two toy models that differ "
            "only by seed (arXiv 2510.03186)."
        )
        text, verdict = holds_summary(table, ["hidden_activation", "n_hidden"], claim)
        text += (
            f"\nSettings: {'quick' if quick else 'full'}; {cfg['n_features']} features, "
            f"p={cfg['p']}, hidden activation(s) {list(cfg['activations'])}, widths "
            f"{list(cfg['widths'])}, {cfg['n_pairs']} model pair(s) per width, TopK SAE "
            f"k={cfg['sae_k']}, {cfg['sae_d']} latents; {cfg['n_eval']} held-out samples, "
            f"{cfg['folds']} folds. Runtime {runtime:.0f} s.\n"
        )
        fig = figure(
            table,
            "n_hidden",
            "toy models (64 features): neurons vs SAE latents",
            row="hidden_activation",
        )
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
        params.update(quick=bool(quick), runtime_s=round(runtime, 1), holds=verdict)
        write_reproduction(out, "toy", table, fig, params, seed=int(seed), summary=text)
    return table


__all__ = ["FULL", "METRICS", "QUICK", "reproduce_toy"]
