"""Benchmark: images/s of encoder training and embedding (``sparsecell.encode``).

Run by hand (``python benchmarks/encode_speed.py [--device cuda] [--size 128]``); not a
test. Random units ``N × C × S × S`` (3 channels of 128×128 by default, the seed paper's
patches), the default encoder (``EncoderConfig()``) unless ``--width/--stages/--blocks``
say otherwise.

* Training: ``sparsecell.encode.train`` in ``supcon`` mode with ``holdout_frac=0`` (no
  probe at the end); a ``callback`` stamps each step, the first ``--warmup`` steps are
  dropped, and images/s = batch / step time (on CPU the median per-step time; on CUDA the
  mean over the timed window, synchronised at its two ends only, so the host can queue
  ahead as in a real run). One step = two augmentations, query forward + backward, key
  forward, SGD, queue.
* Embedding: ``sparsecell.encode.embed`` over all units after one warm-up batch.

Prints one line per measurement (device, threads, settings, images/s).
``time_train`` and ``time_embed`` are also used by ``benchmarks/images_encode.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch

import sparsecell.encode as enc
from sparsecell.encode.augment import Augment


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_train(
    X: np.ndarray,
    y: np.ndarray,
    dev: torch.device,
    *,
    batch: int,
    steps: int,
    warmup: int,
    precision: str = "auto",
    **kwargs: Any,
) -> tuple[float, float, enc.Encoder]:
    """Images/s of ``enc.train(X, y)`` (supcon) over ``steps`` timed steps after ``warmup``.

    Returns ``(images/s, seconds per step, trained model)``; ``kwargs`` go to ``train``
    (``width``, ``stages``, ...).
    """
    stamps: dict[int, float] = {}
    first, last = warmup, warmup + steps

    def cb(step, model, logs):
        if dev.type == "cpu" or step in (first, last):
            _sync(dev)
            stamps[step] = time.perf_counter()

    model = enc.train(
        X,
        y,
        steps=last,
        batch_size=batch,
        holdout_frac=0.0,
        device=str(dev),
        precision=precision,
        progress=False,
        callback=cb,
        **kwargs,
    )
    if dev.type == "cpu":
        dt = statistics.median(stamps[i + 1] - stamps[i] for i in range(first, last))
    else:
        dt = (stamps[last] - stamps[first]) / steps
    return batch / dt, dt, model


def time_embed(
    model: enc.Encoder, X: np.ndarray, dev: torch.device, *, batch: int, precision: str = "fp32"
) -> float:
    """Images/s of ``enc.embed(model, X)`` after one untimed warm-up batch."""
    enc.embed(
        model, X[:batch], batch_size=batch, device=str(dev), progress=False, precision=precision
    )
    _sync(dev)
    t = time.perf_counter()
    enc.embed(model, X, batch_size=batch, device=str(dev), progress=False, precision=precision)
    _sync(dev)
    return len(X) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--embed-batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--n-embed", type=int, default=1024)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--stages", type=int, default=None)
    ap.add_argument("--blocks", type=int, default=None)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--embed-precision", default="fp32")
    args = ap.parse_args()

    model_kw = {
        k: v
        for k, v in {"width": args.width, "stages": args.stages, "blocks": args.blocks}.items()
        if v is not None
    }
    n = max(args.batch * (args.steps + 1), args.n_embed)
    rng = np.random.default_rng(0)
    X = rng.random((n, args.channels, args.size, args.size), dtype=np.float32)
    y = np.arange(n) % 4
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu")
    if args.device != "auto":
        dev = torch.device(args.device)

    n_train = args.batch * (args.steps + 1)
    train_ips, _, model = time_train(
        X[:n_train],
        y[:n_train],
        dev,
        batch=args.batch,
        steps=args.steps - args.warmup,
        warmup=args.warmup,
        precision=args.precision,
        **model_kw,
    )
    n_par = sum(p.numel() for p in model.parameters())
    info = (
        f"device={dev} threads={torch.get_num_threads()} units={args.channels}x{args.size}x"
        f"{args.size} model={model!r} params={n_par}"
    )
    print(f"{info}\ntrain: batch {args.batch}, {args.precision}, {train_ips:.1f} images/s")

    ips = time_embed(
        model, X[: args.n_embed], dev, batch=args.embed_batch, precision=args.embed_precision
    )
    print(f"embed: batch {args.embed_batch}, {args.embed_precision}, {ips:.1f} images/s")

    # the parts of a training step: reading a random batch, and one augmentation
    from sparsecell.encode._data import Units, prefetch, read_workers

    src = Units(X)
    idx = [np.sort(rng.choice(n, args.batch, replace=False)) for _ in range(10)]
    nw = read_workers(0, dev)
    t = time.perf_counter()
    for _ in prefetch(src.read, idx, workers=nw):
        pass
    ips = 10 * args.batch / (time.perf_counter() - t)
    print(f"read: {ips:.1f} images/s (random batches, {nw} reader threads)")
    xb = torch.from_numpy(X[: args.batch]).to(dev)
    aug, gen = Augment(), torch.Generator().manual_seed(0)
    aug(xb, gen)
    _sync(dev)
    t = time.perf_counter()
    for _ in range(5):
        aug(xb, gen)
    _sync(dev)
    print(f"augment: {5 * args.batch / (time.perf_counter() - t):.1f} images/s (one view)")


if __name__ == "__main__":
    main()
