"""Reproduction ``digits``: neurons vs SAE latents between two small networks on real images.

Claim (DNN → DNN setting of arXiv 2510.03186, here on a small real data set): two networks
trained with different seeds represent the same features in different superposition
arrangements; alignment of one hidden layer measured on SAE latents should exceed the
alignment measured on the neurons for unit-matching metrics (semi-, soft-matching).

Settings (our choices): scikit-learn's ``load_digits`` (1797 real 8 × 8 digits, pixels / 16),
a stratified 70/30 train/test split fixed by ``seed``; two MLPs 64 → 128 → 64 → 10 with
ReLU (seeds ``seed + 2i`` and ``seed + 2i + 1``: initialisation and batch order), Adam
lr 1e-3, 60 epochs of batches of 64. The layer compared is the second hidden layer (64
ReLU units). Each net gets a TopK SAE (k = 8, 256 latents = 4 × 64, 20 epochs) trained on
that layer's activations for the *training* images augmented 16-fold (each copy shifted by
a random −1/0/+1 pixel in x and y with zero fill, plus Gaussian pixel noise of sd 0.05 on
the [0, 1] scale, clipped to [0, 1]): about 20,000 training activations instead of 1,257.
Alignment A → B is measured on the 540 held-out test images (un-augmented), 5 folds.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pandas as pd

from ..._errors import SparsecellError
from .toy import METRICS, _log, aggregate, figure, holds_summary

FULL = {
    "hidden": (128, 64),
    "layer": 2,
    "epochs": 60,
    "batch_size": 64,
    "lr": 1e-3,
    "test_size": 0.3,
    "n_pairs": 2,
    "augment": 16,
    "shift": 1,
    "noise": 0.05,
    "sae_k": 8,
    "sae_expansion": 4,
    "sae_epochs": 20.0,
    "folds": 5,
    "metrics": METRICS,
}
QUICK = {
    **FULL,
    "epochs": 25,
    "n_pairs": 1,
    "augment": 6,
    "sae_epochs": 10.0,
    "metrics": ("semi_matching",),
}


def _settings(quick: bool, options: dict[str, Any]) -> dict[str, Any]:
    base = dict(QUICK if quick else FULL)
    bad = sorted(set(options) - set(base))
    if bad:
        raise SparsecellError(
            f"unknown option(s) for this reproduction: {', '.join(bad)}",
            f"choose from {', '.join(sorted(base))}",
        )
    base.update(options)
    base["hidden"] = tuple(int(h) for h in base["hidden"])
    base["metrics"] = tuple(base["metrics"])
    if not 1 <= int(base["layer"]) <= len(base["hidden"]):
        raise SparsecellError(
            f"layer must be between 1 and {len(base['hidden'])}, got {base['layer']}",
            "layers are numbered from the input, 1 = first hidden layer",
        )
    if sorted(set(base["metrics"]) - set(METRICS)):
        raise SparsecellError(
            f"unsupported metric(s) in {base['metrics']}", f"choose from {', '.join(METRICS)}"
        )
    if int(base["n_pairs"]) < 1 or int(base["augment"]) < 1:
        raise SparsecellError("n_pairs and augment must be at least 1", "e.g. n_pairs=2")
    return base


def load(seed: int, test_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits, pixels scaled to [0, 1], a stratified split fixed by ``seed``.

    Returns
    -------
    tuple
        ``X_train, X_test, y_train, y_test`` (images flattened to 64 columns, float32).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    return train_test_split(X, d.target, test_size=test_size, random_state=seed, stratify=d.target)


def augment(X: np.ndarray, copies: int, shift: int, noise: float, seed: int) -> np.ndarray:
    """``copies`` jittered versions of each 8 × 8 image: a random shift of up to ``shift``
    pixels in x and y (zero fill) and Gaussian pixel noise of sd ``noise``, clipped to
    [0, 1]. Returns ``(copies · n) × 64`` float32."""
    rng = np.random.default_rng(seed)
    imgs = X.reshape(-1, 8, 8)
    out = []
    for _ in range(int(copies)):
        dy, dx = rng.integers(-shift, shift + 1, size=(2, len(imgs)))
        pad = np.pad(imgs, ((0, 0), (shift, shift), (shift, shift)))
        rows = shift - dy[:, None] + np.arange(8)[None, :]
        cols = shift - dx[:, None] + np.arange(8)[None, :]
        moved = pad[np.arange(len(imgs))[:, None, None], rows[:, :, None], cols[:, None, :]]
        moved = moved + rng.normal(0.0, noise, moved.shape)
        out.append(np.clip(moved, 0.0, 1.0).reshape(len(imgs), 64))
    return np.concatenate(out).astype(np.float32)


def _mlp(hidden: tuple[int, ...], seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)  # nn.Linear initialises from the global generator
    layers: list[Any] = []
    d = 64
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, 10))
    return nn.Sequential(*layers)


def train_net(
    X: np.ndarray, y: np.ndarray, cfg: dict[str, Any], seed: int
) -> Any:  # torch.nn.Sequential
    """Train one MLP classifier (cross-entropy, Adam) with its own seed."""
    import torch

    from ..toy import _one_thread

    with _one_thread():
        fork = torch.random.fork_rng(devices=[])
        with fork:
            net = _mlp(cfg["hidden"], seed)
        gen = torch.Generator().manual_seed(seed)
        Xt, yt = torch.as_tensor(X), torch.as_tensor(y, dtype=torch.long)
        opt = torch.optim.Adam(net.parameters(), lr=float(cfg["lr"]))
        bs = int(cfg["batch_size"])
        for _ in range(int(cfg["epochs"])):
            perm = torch.randperm(len(Xt), generator=gen)
            for s in range(0, len(Xt), bs):
                idx = perm[s : s + bs]
                loss = torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return net.eval()


def hidden(net: Any, X: np.ndarray, layer: int) -> np.ndarray:
    """Post-ReLU activations of hidden layer ``layer`` (1-based) for images ``X``."""
    import torch

    with torch.no_grad():
        return net[: 2 * int(layer)](torch.as_tensor(X)).numpy().astype(np.float32)


def accuracy(net: Any, X: np.ndarray, y: np.ndarray) -> float:
    """Fraction of images classified correctly."""
    import torch

    with torch.no_grad():
        return float((net(torch.as_tensor(X)).argmax(1).numpy() == y).mean())


def reproduce_digits(
    out: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    quick: bool = False,
    progress: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """Neurons vs SAE latents: alignment of a hidden layer between two digit classifiers.

    Parameters
    ----------
    out
        Folder for ``table.csv``, ``figure.png``, ``manifest.json`` and ``summary.md``
        (written atomically); ``None`` writes nothing.
    seed
        Base seed: the train/test split, the nets (``seed + 2i``, ``seed + 2i + 1``), the
        augmentation and the SAEs.
    quick
        Reduced configuration (shorter training, 6-fold augmentation, one pair,
        semi-matching only).
    progress
        Print progress to stderr.
    **options
        Override any setting of :data:`FULL`.

    Returns
    -------
    pandas.DataFrame
        One row per representation × metric: ``layer``, ``representation``, ``metric``,
        ``score``, ``score_sd``, ``sd_over``, ``n_pairs``, ``per_pair``, ``n_units_a``,
        ``n_units_b``, ``delta_sae_minus_neurons``, ``holds``, and the nets' test accuracy
        (``acc_a``, ``acc_b``: means over pairs; every net's accuracy is in the summary),
        ``sae_fvu`` (mean on the test images).
    """
    from ...sae import evaluate
    from ...sae import train as sae_train
    from .. import alignment
    from ..toy import _one_thread

    cfg = _settings(quick, options)
    t0 = time.perf_counter()
    Xtr, Xte, ytr, yte = load(int(seed), float(cfg["test_size"]))
    Xaug = augment(Xtr, int(cfg["augment"]), int(cfg["shift"]), float(cfg["noise"]), seed)
    layer = int(cfg["layer"])
    rows: list[dict[str, Any]] = []
    accs: list[float] = []
    fvus: list[float] = []
    for pair in range(int(cfg["n_pairs"])):
        reps: dict[str, list[Any]] = {"neurons": [], "sae": []}
        for s in (int(seed) + 2 * pair, int(seed) + 2 * pair + 1):
            _log(progress, f"pair {pair}: training net seed {s}")
            net = train_net(Xtr, ytr, cfg, s)
            accs.append(accuracy(net, Xte, yte))
            H_te = hidden(net, Xte, layer)
            with _one_thread():
                sae = sae_train(
                    hidden(net, Xaug, layer),
                    arch="topk",
                    k=int(cfg["sae_k"]),
                    expansion=int(cfg["sae_expansion"]),
                    seed=s,
                    epochs=float(cfg["sae_epochs"]),
                    batch_size=512,
                    device="cpu",
                    progress=False,
                )
            fvus.append(float(evaluate(sae, H_te)["fvu"]))
            reps["neurons"].append(H_te)
            reps["sae"].append(sae.encode(H_te))
        for rep, (A, B) in reps.items():
            for metric in cfg["metrics"]:
                _log(progress, f"pair {pair}: {rep} {metric}")
                res = alignment(A, B, metric=metric, folds=int(cfg["folds"]), seed=seed)
                rows.append(
                    {
                        "layer": layer,
                        "pair": pair,
                        "representation": rep,
                        "metric": metric,
                        "score": float(res.score),
                        "per_fold": list(map(float, res.per_fold)),
                        "n_units_a": res.n_units_a,
                        "n_units_b": res.n_units_b,
                    }
                )
    table = aggregate(rows, ["layer"])
    table["acc_a"] = float(np.mean(accs[0::2]))
    table["acc_b"] = float(np.mean(accs[1::2]))
    table["sae_fvu"] = float(np.mean(fvus))
    runtime = time.perf_counter() - t0
    if out is not None:
        from . import write_reproduction

        claim = (
            "SAE latents raise semi- and soft-matching of a hidden layer between two "
            "networks trained with different seeds (arXiv 2510.03186, DNN → DNN)."
        )
        text, verdict = holds_summary(table, "layer", claim)
        text += (
            f"\nTest accuracy of every net (pair order): {', '.join(f'{a:.4f}' for a in accs)}; "
            f"SAE FVU on test activations: {', '.join(f'{f:.3f}' for f in fvus)}.\n"
            f"Settings: {'quick' if quick else 'full'}; MLP 64 → "
            f"{' → '.join(map(str, cfg['hidden']))} → 10, layer {layer}, {cfg['epochs']} "
            f"epochs; {cfg['n_pairs']} pair(s); TopK SAE k={cfg['sae_k']}, "
            f"{cfg['sae_expansion']}× latents, trained on {len(Xaug)} augmented activations "
            f"(shift ±{cfg['shift']} px, noise sd {cfg['noise']}); {len(Xte)} test images, "
            f"{cfg['folds']} folds. Runtime {runtime:.0f} s.\n"
        )
        fig = figure(table, "layer", "digits MLPs: neurons vs SAE latents (held-out images)")
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
        params.update(
            quick=bool(quick), runtime_s=round(runtime, 1), holds=verdict, test_accuracy=accs
        )
        write_reproduction(out, "digits", table, fig, params, seed=int(seed), summary=text)
    return table


__all__ = ["FULL", "QUICK", "augment", "load", "reproduce_digits"]
