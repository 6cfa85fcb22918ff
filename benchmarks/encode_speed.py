"""Benchmark: images/s of encoder training and embedding (``sparsecell.encode``).

Run by hand (``python benchmarks/encode_speed.py [--device cuda] [--size 128]``); not a
test. Random units ``N × C × S × S`` (3 channels of 128×128 by default, the seed paper's
patches), the default encoder (``EncoderConfig()``) unless ``--width/--stages/--blocks``
say otherwise.

* Training: ``sparsecell.encode.train`` in ``supcon`` mode with ``holdout_frac=0`` (no
  probe at the end); a ``callback`` stamps each step, the first ``--warmup`` steps are
  dropped (on CUDA the stamps are synchronised), and images/s = batch × steps / time.
  One step = two augmentations, query forward + backward, key forward, SGD, queue.
* Embedding: ``sparsecell.encode.embed`` over all units after one warm-up batch.

Prints one line per measurement (device, threads, settings, images/s).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import sparsecell.encode as enc
from sparsecell.encode.augment import Augment


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

    stamps: list[float] = []

    def cb(step, model, logs):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    model = enc.train(
        X[: args.batch * (args.steps + 1)],
        y[: args.batch * (args.steps + 1)],
        steps=args.steps,
        batch_size=args.batch,
        holdout_frac=0.0,
        device=str(dev),
        precision=args.precision,
        progress=False,
        callback=cb,
        **model_kw,
    )
    w = args.warmup
    train_ips = args.batch * (len(stamps) - 1 - w) / (stamps[-1] - stamps[w])
    n_par = sum(p.numel() for p in model.parameters())
    info = (
        f"device={dev} threads={torch.get_num_threads()} units={args.channels}x{args.size}x"
        f"{args.size} model={model!r} params={n_par}"
    )
    print(f"{info}\ntrain: batch {args.batch}, {args.precision}, {train_ips:.1f} images/s")

    Xe = X[: args.n_embed]
    enc.embed(
        model, Xe[: args.embed_batch], batch_size=args.embed_batch, device=str(dev), progress=False
    )
    t = time.perf_counter()
    enc.embed(
        model,
        Xe,
        batch_size=args.embed_batch,
        device=str(dev),
        progress=False,
        precision=args.embed_precision,
    )
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    print(f"embed: batch {args.embed_batch}, {args.embed_precision}, {len(Xe) / dt:.1f} images/s")

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
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(5):
        aug(xb, gen)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    print(f"augment: {5 * args.batch / (time.perf_counter() - t):.1f} images/s (one view)")


if __name__ == "__main__":
    main()
