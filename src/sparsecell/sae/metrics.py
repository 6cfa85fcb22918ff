"""Honest SAE evaluation: streamed, float64 accumulators, variance about the mean."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._errors import SparsecellError
from ._base import SparseAutoencoder
from ._data import as_float_tensor


@torch.no_grad()
def evaluate(
    sae: SparseAutoencoder,
    X: Any,
    *,
    batch_size: int = 8192,
    max_samples: int | None = None,
    dense_threshold: float = 0.1,
    seed: int = 0,
) -> dict[str, Any]:
    """Reconstruction and sparsity figures of ``sae`` on ``X``.

    Parameters
    ----------
    sae
        A trained SAE.
    X
        ``n × d_in`` data in the original (un-normalised) space.
    batch_size
        Rows per batch.
    max_samples
        Evaluate on a random subset of at most this many rows (``None``: all).
    dense_threshold
        A latent is *dense* if it fires on more than this fraction of samples.
    seed
        Seeds the subset.

    Returns
    -------
    dict
        ``fvu`` (Σ‖x − x̂‖² / Σ‖x − x̄‖², float64), ``mse`` (per element), ``cosine``
        (mean cosine of x and x̂), ``l0`` (mean active latents), ``dead_frac`` (never
        fire on X), ``dense_frac``, ``n_samples``, and ``freq_hist`` (histogram of
        log10 firing frequency of live latents: ``bin_edges`` and ``counts``).
    """
    sae._check_input(X)
    n = X.shape[0]
    rows = None
    if max_samples is not None and n > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))
        n = max_samples
    d, m = sae.d_in, sae.d_sae
    dev = sae.device
    sse = 0.0
    s1 = torch.zeros(d, dtype=torch.float64, device=dev)
    s2 = torch.zeros(d, dtype=torch.float64, device=dev)
    cos_sum = 0.0
    l0_sum = 0
    counts = torch.zeros(m, dtype=torch.float64, device=dev)
    was_training = sae.training
    sae.eval()
    for s in range(0, n, batch_size):
        if rows is None:
            xb = X[s : s + batch_size]
        else:
            xb = (
                X[rows[s : s + batch_size]]
                if not isinstance(X, torch.Tensor)
                else X[torch.from_numpy(rows[s : s + batch_size])]
            )
        x = as_float_tensor(xb).to(dev)
        finite = torch.isfinite(x).all(dim=1)
        if not bool(finite.all()):
            j = int((~finite).nonzero()[0, 0])
            bad = s + j if rows is None else int(rows[s + j])
            raise SparsecellError(
                f"evaluation data row {bad} contains NaN or inf", "drop or impute non-finite rows"
            )
        codes = sae._infer_codes(sae.normalize_input(x))
        x_hat = sae.denormalize_output(sae.decode_codes(codes))
        xd, xh = x.double(), x_hat.double()
        sse += float((xd - xh).pow(2).sum())
        s1 += xd.sum(0)
        s2 += (xd * xd).sum(0)
        cos_sum += float(torch.nn.functional.cosine_similarity(xd, xh, dim=1, eps=1e-12).sum())
        active = codes.vals != 0
        l0_sum += int(active.sum())
        counts += torch.bincount(codes.cols[active], minlength=m).double()
    sae.train(was_training)
    mean = s1 / n
    tot = float((s2 - n * mean * mean).sum())
    freq = (counts / n).cpu().numpy()
    live = freq[freq > 0]
    edges = np.linspace(-8.0, 0.0, 33)
    hist, _ = np.histogram(np.log10(live), bins=edges) if live.size else (np.zeros(32), None)
    return {
        "fvu": sse / tot if tot > 0 else float("nan"),
        "mse": sse / (n * d),
        "cosine": cos_sum / n,
        "l0": l0_sum / n,
        "dead_frac": float((freq == 0).mean()),
        "dense_frac": float((freq > dense_threshold).mean()),
        "n_samples": int(n),
        "freq_hist": {"bin_edges": edges.tolist(), "counts": np.asarray(hist, int).tolist()},
    }


@torch.no_grad()
def feature_recovery(
    sae: SparseAutoencoder, features: np.ndarray, threshold: float = 0.9
) -> dict[str, float]:
    """How well decoder directions match known true features.

    Parameters
    ----------
    sae
        A trained SAE.
    features
        ``n_features × d_in`` true feature directions (raw input space).
    threshold
        Cosine above which a feature counts as recovered.

    Returns
    -------
    dict
        ``mean_max_cos`` (mean over true features of the best cosine with any decoder
        row) and ``frac_recovered`` (fraction of features with best cosine > threshold).
    """
    F = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    if F.ndim != 2 or F.shape[1] != sae.d_in:
        raise SparsecellError(
            f"features must be n × {sae.d_in}, got {tuple(F.shape)}", "pass true directions"
        )
    D = sae.W_dec.detach().double().cpu() * sae.norm_scale.double().cpu()
    D = D / D.norm(dim=1, keepdim=True).clamp_min(1e-12)
    F = F / F.norm(dim=1, keepdim=True).clamp_min(1e-12)
    best = (F @ D.T).max(dim=1).values
    return {
        "mean_max_cos": float(best.mean()),
        "frac_recovered": float((best > threshold).double().mean()),
    }
