"""Embeddings of units with a trained encoder, and their hand-off as AnnData or files."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._device import cuda_tf32, resolve_device
from .._errors import SparsecellError
from .._io import atomic_dir, dump_json, manifest
from ._data import Units, memory_format, prefetch, read_workers
from .models import Encoder

_CPU_BATCH = 32


def match_channels(model: Encoder, units: Units) -> None:
    """Make ``units`` deliver the model's input channels, by name where both have names."""
    want = list(model.cfg.channels)
    have = units.channels
    if want and have is not None:
        missing = [c for c in want if c not in have]
        if missing:
            raise SparsecellError(
                f"units lack the encoder's channel(s) {missing} (they have {have})",
                f"pass units with channels {want}",
            )
        units.keep_channels([have.index(c) for c in want])
        return
    if units.shape[0] != model.in_channels:
        raise SparsecellError(
            f"units have {units.shape[0]} channels, the encoder expects {model.in_channels}"
            + (f" ({want})" if want else ""),
            "pass units with the channels the encoder was trained on, in the same order",
        )


@torch.no_grad()
def embed(
    model: Encoder,
    units: Any,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    progress: bool = True,
    *,
    tokens: bool = False,
    channels: Sequence[str] | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Embed units with ``model`` in eval mode (deterministic, independent of batch size).

    Parameters
    ----------
    model
        A trained :class:`Encoder`.
    units
        ``N × C × H × W`` array (numpy, memmap, h5py, torch) or shards
        (``sparsecell.images.open_shards``); read batch by batch.
    batch_size
        Units per forward pass.
    device
        ``auto`` (CUDA when present), ``cpu``, ``cuda``, …; the model is moved back to
        where it was afterwards.
    progress
        Show a progress bar.
    tokens
        Return the per-position tokens ``N × (h·w) × embed_dim`` of the last stage instead
        of their mean.
    channels
        Names of the units' channels (arrays have none; shards carry them). When both the
        units and the model have names, the model's channels are picked by name, so a
        label channel such as the dead-cell stain may stay in the units.
    precision
        ``fp32`` (strict float32: results agree across batch sizes and devices to about
        1e-6), ``tf32`` (TF32 convolutions on CUDA) or ``bf16`` (autocast on CUDA);
        the last two are faster on a GPU and agree to about 1e-3.

    Returns
    -------
    numpy.ndarray
        ``N × embed_dim`` float32 (or ``N × (h·w) × embed_dim`` with ``tokens``).
    """
    if precision not in ("fp32", "tf32", "bf16"):
        raise SparsecellError(f"unknown precision={precision!r}", "choose fp32, tf32 or bf16")
    src = Units(units, channels)
    match_channels(model, src)
    return embed_units(
        model, src, None, batch_size, device, progress, tokens=tokens, precision=precision
    )


@torch.no_grad()
def embed_units(
    model: Encoder,
    src: Units,
    idx: np.ndarray | None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    progress: bool = True,
    *,
    tokens: bool = False,
    precision: str = "fp32",
    workers: int = 0,
) -> np.ndarray:
    """:func:`embed` of units ``idx`` (all when ``None``) of a prepared :class:`Units`."""
    if batch_size < 1:
        raise SparsecellError(f"batch_size={batch_size} must be positive", "pass 1 or more")
    dev = resolve_device(device)
    was_training = model.training
    home = model.device
    model.to(device=dev, memory_format=memory_format(dev)).eval()
    use_bf16 = precision == "bf16" and dev.type == "cuda"
    n = src.n if idx is None else len(idx)
    if dev.type == "cpu":
        # batches of a few units keep activations in cache: 1.6x faster than 256 at once
        # on 2 cores; eval mode makes the result independent of the batch size
        batch_size = min(batch_size, _CPU_BATCH)
    starts = list(range(0, n, batch_size))

    def read(s: int) -> torch.Tensor:
        e = min(s + batch_size, n)
        x = src.read(slice(s, e) if idx is None else idx[s:e])
        t = torch.from_numpy(x)
        return t.pin_memory() if dev.type == "cuda" else t

    from tqdm.auto import tqdm

    out: list[np.ndarray] = []
    tf32 = cuda_tf32(precision != "fp32")
    tf32.__enter__()
    bar = tqdm(total=n, disable=not progress, desc="embed", unit="unit")
    try:
        for xb in prefetch(read, starts, workers=read_workers(workers, dev)):
            x = xb.to(dev, non_blocking=True)
            x = x.contiguous(memory_format=memory_format(dev))
            ctx = (
                torch.autocast("cuda", dtype=torch.bfloat16)
                if use_bf16
                else contextlib.nullcontext()
            )
            with ctx:
                y = model.forward_tokens(x) if tokens else model(x)
            out.append(y.float().cpu().numpy())
            bar.update(x.shape[0])
    finally:
        tf32.__exit__(None, None, None)
        bar.close()
        model.to(device=home, memory_format=torch.contiguous_format)
        model.train(was_training)
    if not out:
        shape = (0, model.embed_dim) if not tokens else (0, 0, model.embed_dim)
        return np.zeros(shape, dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def default_obs(n: int) -> pd.DataFrame:
    """An obs table of ``n`` rows indexed ``u0``, ``u1``, … (the units contract)."""
    return pd.DataFrame(index=pd.Index([f"u{i}" for i in range(n)], dtype=object))


def to_anndata(
    emb: Any,
    obs: pd.DataFrame | None = None,
    key: str = "X_cnn",
    *,
    x: bool = False,
    model: Encoder | None = None,
):
    """An AnnData with the embeddings in ``obsm[key]`` (scanpy's ``use_rep=key``).

    Parameters
    ----------
    emb
        ``N × d`` embeddings.
    obs
        Per-unit table (e.g. ``shards.obs``); ``None`` gives ids ``u0``, ``u1``, ….
        The index is made of strings.
    key
        ``obsm`` key.
    x
        Also put the embeddings in ``X`` (variables ``cnn_0``, …); by default ``X`` is an
        empty ``N × 0`` matrix, so that gene-style steps do not treat the embedding as
        features by accident.
    model
        The encoder; its config and metrics are recorded under ``uns[key]["params"]``.

    Returns
    -------
    anndata.AnnData
    """
    import anndata as ad

    E = np.asarray(emb, dtype=np.float32)
    if E.ndim != 2:
        raise SparsecellError(f"embeddings must be 2-D, got {E.ndim}-D", "pass units × dims")
    obs = default_obs(len(E)) if obs is None else obs.copy()
    if len(obs) != len(E):
        raise SparsecellError(
            f"obs has {len(obs)} rows for {len(E)} embeddings", "pass the obs of these units"
        )
    obs.index = obs.index.astype(str)
    if x:
        var = pd.DataFrame(index=[f"{key.removeprefix('X_')}_{i}" for i in range(E.shape[1])])
        adata = ad.AnnData(X=E.copy(), obs=obs, var=var)
    else:
        adata = ad.AnnData(X=np.zeros((len(E), 0), dtype=np.float32), obs=obs)
    adata.obsm[key] = E
    params: dict[str, Any] = {"embed_dim": int(E.shape[1])}
    if model is not None:
        params["encoder"] = model.cfg.to_dict()
        if model.metrics:
            params["metrics"] = {
                k: v for k, v in model.metrics.items() if isinstance(v, int | float | str)
            }
    adata.uns[key] = {"params": _h5_safe(params)}
    return adata


def _h5_safe(d: Any) -> Any:
    """Nested dicts with h5ad-writable leaves (lists → arrays, None → '')."""
    if isinstance(d, dict):
        return {str(k): _h5_safe(v) for k, v in d.items()}
    if isinstance(d, list | tuple):
        return np.asarray(d) if len(d) else np.zeros(0)
    if d is None:
        return ""
    return d


def write_embeddings(
    path: str | os.PathLike,
    emb: Any,
    obs: pd.DataFrame | None = None,
    *,
    key: str = "X_cnn",
    model: Encoder | None = None,
) -> Path:
    """Write embeddings atomically: an ``.h5ad`` file, or a folder with ``embeddings.npy``,
    ``obs.csv`` and ``manifest.json``.

    Parameters
    ----------
    path
        ``*.h5ad`` for AnnData (embeddings in ``obsm[key]``); anything else is a folder.
    emb, obs, key, model
        As for :func:`to_anndata`.

    Returns
    -------
    pathlib.Path
        What was written.
    """
    path = Path(path)
    E = np.asarray(emb, dtype=np.float32)
    if path.suffix.lower() == ".h5ad":
        adata = to_anndata(E, obs, key, model=model)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        try:
            adata.write_h5ad(tmp)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return path
    obs = default_obs(len(E)) if obs is None else obs
    if len(obs) != len(E):
        raise SparsecellError(
            f"obs has {len(obs)} rows for {len(E)} embeddings", "pass the obs of these units"
        )
    cfg = model.cfg.to_dict() if model is not None else {}
    with atomic_dir(path) as tmp:
        np.save(tmp / "embeddings.npy", E)
        obs.to_csv(tmp / "obs.csv")
        (tmp / "manifest.json").write_text(
            dump_json(
                manifest(
                    "sparsecell.encode.embeddings",
                    cfg,
                    n=int(E.shape[0]),
                    dim=int(E.shape[1]) if E.ndim > 1 else 0,
                    key=key,
                    metrics=getattr(model, "metrics", None),
                )
            )
        )
    return path


__all__ = ["default_obs", "embed", "to_anndata", "write_embeddings"]
