"""Benchmark: the image stage (phantom units, TIFF → patches, encoder training / embedding).

Run by hand (``python benchmarks/images_encode.py [--device cuda] [--quick]``); not a
test. Every figure is measured against a named reference in the same run:

1. **Phantom generation** — units/s of ``spc.datasets.phantom(n, 128)`` (4 channels) at
   ``n_jobs=1``, ``n_jobs=2`` (the issue's bar: 20,000 units "in a few minutes" on 2
   cores; the projected time for 20,000 units is ``20,000 / units/s``, both the rendering
   and the cell-death measurement being linear in the number of units) and, where more
   cores are visible, ``n_jobs=-1``. *Floor*: filling the same ``n × 4 × 128 × 128``
   float32 array with numpy uniform noise and one ``scipy.ndimage.gaussian_filter`` per
   unit (sigma 2 px in y and x), in one process.
2. **Patches/s from TIFF** — ``spc.images.process(..., mode="patch", size=128)`` (float16
   shards, default ``QCConfig``) without and with a dead-cell channel, on copies of the
   real neuron (``sample_neuron_path()``, ``4 × 623 × 502`` uint16, 12 patches each; it
   has no dead-cell stain, so ``AF647`` stands in for one, ``DAPI`` being the nuclear
   channel) and on ``phantom_fields`` (``4 × 1024 × 1024``, 64 patches each; ``dead``).
   *Floor*: ``tifffile.imread`` + numpy slicing into the same 128×128 patches + cast to
   float16 + one ``np.save`` per field. The files were just written, so both read from
   the page cache. Median of ``--repeats`` runs (each to a fresh folder).
3. **Encoder** — images/s of ``sparsecell.encode.train`` (``supcon``, default
   ``EncoderConfig``, default precision; on CUDA also ``bf16``) and of
   ``sparsecell.encode.embed`` on 3-channel 128×128 phantom units (``mito, lyso,
   nuclei`` of the units of part 1; labels = genotype), timed by ``encode_speed``'s
   ``time_train`` / ``time_embed``. *Reference for training*: a plain PyTorch loop over
   the same ``Encoder`` with a linear head and cross-entropy (same batch, SGD lr 0.1,
   momentum 0.9, weight decay 1e-4 as ``train``; no augmentation, no momentum encoder,
   no queue; random batches gathered from the same host array; on CUDA the same TF32 /
   channels_last / cudnn.benchmark settings as ``train``'s default). *Reference for
   embedding*: the same model's plain ``eval()`` forward under ``inference_mode`` in
   batches of ``--embed-batch``, fp32.

Results are printed and appended to ``--out`` (``benchmarks/RESULTS.md``) with the date,
machine (CPU model, cores, torch, GPU) and load average at start and end. The phantom and
TIFF stages run on the CPU whatever ``--device`` says; ``--device`` picks where the
encoder runs. Needs numpy, scipy, pandas, tifffile, torch and ``sparsecell`` (e.g.
``PYTHONPATH=src``); not anndata. Without ``ndev-sampledata`` pass ``--neuron-tiff``
or the real-neuron rows are skipped.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import sparsecell as spc
from sparsecell.encode import Encoder, EncoderConfig

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from encode_speed import time_embed, time_train  # noqa: E402
from sae_train import _code_version, _cpu_count, machine_description  # noqa: E402

PATCH = 128


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def _fmt_s(sec: float) -> str:
    if sec >= 120:
        return f"{sec / 60:.1f} min"
    return f"{sec:.1f} s" if sec >= 1 else f"{sec * 1e3:.0f} ms"


# ------------------------------------------------------------------ 1. phantom units
def time_phantom(n: int, n_jobs: int) -> tuple[float, spc.datasets.Phantom]:
    t = time.perf_counter()
    ph = spc.datasets.phantom(n, PATCH, seed=0, n_jobs=n_jobs)
    return time.perf_counter() - t, ph


def time_noise_floor(n: int) -> float:
    """Fill ``n × 4 × 128 × 128`` float32 with uniform noise + one gaussian blur per unit."""
    from scipy import ndimage

    t = time.perf_counter()
    rng = np.random.default_rng(0)
    out = np.empty((n, 4, PATCH, PATCH), np.float32)
    for i in range(n):
        noise = rng.random((4, PATCH, PATCH), dtype=np.float32)
        ndimage.gaussian_filter(noise, sigma=(0, 2, 2), output=out[i])
    return time.perf_counter() - t


# ------------------------------------------------------------------ 2. TIFF -> patches
def patch_floor(files: list[Path], out: Path) -> int:
    """tifffile.imread + slicing into 128×128 patches + float16 + np.save; patches written."""
    import tifffile

    out.mkdir(parents=True)
    n = 0
    for i, f in enumerate(files):
        img = tifffile.imread(f)
        if img.ndim != 3:
            raise SystemExit(f"{f}: expected C × Y × X, got shape {img.shape}")
        c, h, w = img.shape
        ny, nx = h // PATCH, w // PATCH
        grid = img[:, : ny * PATCH, : nx * PATCH].reshape(c, ny, PATCH, nx, PATCH)
        units = grid.transpose(1, 3, 0, 2, 4).reshape(ny * nx, c, PATCH, PATCH)
        # as the shards: float16, clipped to its largest finite value (uint16 goes higher)
        np.save(out / f"field{i:04d}.npy", np.minimum(units, 65504).astype(np.float16))
        n += ny * nx
    return n


def time_runs(fn, repeats: int, scratch: Path) -> tuple[float, int]:
    """Median seconds of ``fn(out_dir) -> n_units`` over ``repeats`` fresh output folders."""
    times, n = [], 0
    for r in range(repeats):
        out = scratch / f"run{r}"
        t = time.perf_counter()
        n = fn(out)
        times.append(time.perf_counter() - t)
        shutil.rmtree(out, ignore_errors=True)
    return statistics.median(times), n


def bench_patches(args, work: Path) -> tuple[list[tuple], list[str]]:
    """Rows ``(input, pipeline, fields, patches, seconds)`` and notes."""
    rows: list[tuple] = []
    notes: list[str] = []
    datasets: list[tuple[str, object, Path, list[Path], str | None]] = []

    neuron = Path(args.neuron_tiff) if args.neuron_tiff else None
    if neuron is None:
        try:
            neuron = spc.images.sample_neuron_path()
        except spc.SparsecellError as e:
            notes.append(f"real-neuron rows skipped: {e} (or pass --neuron-tiff)")
    if neuron is not None:
        d = work / "neuron"
        d.mkdir()
        files = [d / f"neuron{i:03d}.tif" for i in range(args.neuron_copies)]
        for f in files:
            shutil.copyfile(neuron, f)
        label = f"real neuron 4×623×502 uint16, {len(files)} copies"
        datasets.append((label, None, d, files, "AF647"))

    t = time.perf_counter()
    pf = work / "phantom_fields"
    meta = spc.datasets.phantom_fields(
        pf, n_fields=args.fields, field_size=args.field_size, seed=0, n_jobs=args.jobs_max
    )
    gen_s = time.perf_counter() - t
    files = [pf / f for f in meta["file"]]
    label = f"phantom_fields 4×{args.field_size}×{args.field_size} uint16, {len(files)} fields"
    datasets.append((label, pf / "metadata.csv", pf, files, "dead"))
    notes.append(
        f"writing the {len(files)} phantom fields took {_fmt_s(gen_s)} "
        f"(n_jobs={args.jobs_max}; not timed below)"
    )

    def process(md, image_dir, dead):
        def run(out: Path) -> int:
            sh = spc.images.process(
                md, image_dir, out, mode="patch", size=PATCH, dead_channel=dead, progress=False
            )
            return int(sh.summary["n_units"])

        return run

    # warm-up: first calls import and compile what the pipeline needs
    label, md, image_dir, files, dead = datasets[0]
    process(md, image_dir, dead)(work / "warmup")
    shutil.rmtree(work / "warmup", ignore_errors=True)

    for label, md, image_dir, files, dead in datasets:
        n_fields = len(files)
        floor_s, n_floor = time_runs(lambda out, f=files: patch_floor(f, out), args.repeats, work)
        rows.append((label, "floor: imread + slice + np.save", n_fields, n_floor, floor_s))
        for dc in (None, dead):
            s, n = time_runs(process(md, image_dir, dc), args.repeats, work)
            what = "process, no dead channel" if dc is None else f"process, dead_channel={dc!r}"
            rows.append((label, what, n_fields, n, s))
            if n != n_floor:
                notes.append(f"{label}, {what}: {n} patches written vs {n_floor} cut (unit QC)")
        print(f"patches: {label} done", flush=True)
    return rows, notes


# ------------------------------------------------------------------ 3. encoder
def time_reference_train(
    X: np.ndarray, y: np.ndarray, dev: torch.device, *, batch: int, steps: int, warmup: int
) -> tuple[float, float, float]:
    """Plain supervised step: Encoder + linear head, cross-entropy, SGD; (img/s, s/step, loss)."""
    cuda = dev.type == "cuda"
    torch.manual_seed(0)
    cfg = EncoderConfig(in_channels=X.shape[1], unit_size=tuple(X.shape[2:]))
    model = Encoder(cfg)
    sub = X[:: max(1, len(X) // 500)]
    model.set_normalization(sub.mean(axis=(0, 2, 3)), sub.std(axis=(0, 2, 3)) + 1e-6)
    head = nn.Linear(cfg.embed_dim, int(y.max()) + 1)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model.to(device=dev, memory_format=fmt)
    head.to(dev)
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    yt = torch.from_numpy(y.astype(np.int64))
    rng = np.random.default_rng(0)
    old = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )
    if cuda:  # train's default precision on CUDA is tf32, with cudnn autotuning
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    first, last = warmup, warmup + steps
    stamps: dict[int, float] = {}
    loss = torch.zeros(())
    model.train()
    try:
        for step in range(1, last + 1):
            idx = np.sort(rng.choice(len(X), batch, replace=False))
            xb, yb = torch.from_numpy(X[idx]), yt[idx]
            if cuda:
                xb, yb = xb.pin_memory(), yb.pin_memory()
            x = xb.to(dev, non_blocking=True).contiguous(memory_format=fmt)
            loss = F.cross_entropy(head(model(x)), yb.to(dev, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not cuda:  # as train does on CPU (its loss check)
                float(loss.detach())
            if not cuda or step in (first, last):
                _sync(dev)
                stamps[step] = time.perf_counter()
    finally:
        (
            torch.backends.cudnn.benchmark,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32,
        ) = old
    if cuda:
        dt = (stamps[last] - stamps[first]) / steps
    else:
        dt = statistics.median(stamps[i + 1] - stamps[i] for i in range(first, last))
    return batch / dt, dt, float(loss.detach())


def time_reference_embed(model: Encoder, X: np.ndarray, dev: torch.device, batch: int) -> float:
    """Plain eval forward in batches of ``batch`` (fp32, TF32 off), outputs to the host."""
    cuda = dev.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(device=dev, memory_format=fmt).eval()
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def run(Xs: np.ndarray) -> None:
        out = []
        with torch.inference_mode():
            for s in range(0, len(Xs), batch):
                x = torch.from_numpy(Xs[s : s + batch]).to(dev).contiguous(memory_format=fmt)
                out.append(model(x).cpu())
        torch.cat(out)

    try:
        run(X[:batch])
        _sync(dev)
        t = time.perf_counter()
        run(X)
        _sync(dev)
        dt = time.perf_counter() - t
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
        model.to(memory_format=torch.contiguous_format).cpu()
    return len(X) / dt


def bench_encoder(args, ph, dev: torch.device) -> tuple[list[tuple], list[str]]:
    """Rows ``(what, batch, precision, s/step or None, images/s, group)``; group: train/embed."""
    X = np.ascontiguousarray(ph.units[:, :3])  # mito, lyso, nuclei (dead is a label channel)
    y = ph.obs["genotype"].cat.codes.to_numpy().astype(np.int64)
    gpu = dev.type == "cuda"
    rows: list[tuple] = []
    B, T, W = args.batch, args.train_steps, args.train_warmup
    precs = ["auto", "bf16"] if gpu else ["auto"]
    model = None
    for prec in precs:
        ips, dt, m = time_train(X, y, dev, batch=B, steps=T, warmup=W, precision=prec)
        if model is None:
            model = m
        shown = prec if prec != "auto" else f"auto = {'tf32' if gpu else 'fp32'}"
        rows.append(("train supcon (sparsecell.encode.train)", B, shown, dt, ips, "train"))
        print(f"encoder: train {prec}: {ips:,.1f} images/s ({dt * 1e3:.0f} ms/step)", flush=True)
    ips, dt, loss = time_reference_train(X, y, dev, batch=B, steps=T, warmup=W)
    rows.append(
        (
            "reference: plain Encoder + linear head, cross-entropy",
            B,
            "tf32" if gpu else "fp32",
            dt,
            ips,
            "train-ref",
        )
    )
    print(f"encoder: reference train: {ips:,.1f} images/s (loss {loss:.3f})", flush=True)

    assert model is not None
    reps = -(-args.n_embed // len(X))
    Xe = np.concatenate([X] * reps)[: args.n_embed] if reps > 1 else X[: args.n_embed]
    for prec in ["fp32", "tf32", "bf16"] if gpu else ["fp32"]:
        ips = time_embed(model, Xe, dev, batch=args.embed_batch, precision=prec)
        eff = args.embed_batch if gpu else min(args.embed_batch, 32)
        rows.append(("embed (sparsecell.encode.embed)", eff, prec, None, ips, "embed"))
        print(f"encoder: embed {prec}: {ips:,.1f} images/s", flush=True)
    ips = time_reference_embed(model, Xe, dev, args.embed_batch)
    rows.append(
        (
            "reference: plain eval forward, inference_mode",
            args.embed_batch,
            "fp32",
            None,
            ips,
            "ref",
        )
    )
    print(f"encoder: reference embed: {ips:,.1f} images/s", flush=True)
    notes = [
        f"{len(X)} phantom units 3×128×128 ({len(np.unique(y))} genotype labels); "
        f"training: {W} untimed warm-up + {T} timed steps, "
        + ("median per-step time" if not gpu else "mean over the timed window")
        + f"; embedding: {len(Xe)} units after one warm-up batch"
        + ("" if gpu else " (embed uses batches of at most 32 on CPU)"),
    ]
    return rows, notes


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run (~1 min)")
    p.add_argument("--out", default=str(HERE / "RESULTS.md"))
    p.add_argument("--units", type=int, default=None, help="phantom units (default 2000)")
    p.add_argument("--neuron-tiff", default=None, help="the neuron TIFF (default: sample)")
    p.add_argument("--repeats", type=int, default=None, help="runs per TIFF case (median)")
    p.add_argument("--batch", type=int, default=None, help="training batch (64 CPU, 256 GPU)")
    p.add_argument("--embed-batch", type=int, default=256)
    args = p.parse_args(argv)
    cmd = " ".join(argv if argv is not None else sys.argv[1:])

    dev = torch.device(
        "cuda"
        if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    gpu = dev.type == "cuda"
    q = args.quick
    args.units = args.units or (256 if q else 2000)
    args.repeats = args.repeats or (1 if q else 3)
    args.neuron_copies = 6 if q else 48
    args.fields, args.field_size = (4, 512) if q else (16, 1024)
    args.batch = args.batch or (32 if q else (256 if gpu else 64))
    args.train_steps = 3 if q else (60 if gpu else 12)
    args.train_warmup = 1 if q else (10 if gpu else 2)
    args.n_embed = 256 if q else (8192 if gpu else 2000)
    cores = _cpu_count()
    jobs = [1, 2] + ([-1] if cores > 2 else [])
    args.jobs_max = -1 if cores > 2 else 2

    date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_description(dev)
    print(f"{date}\n{machine}", flush=True)
    t_all = time.perf_counter()

    # 1. phantom units (first, before torch starts its threads: workers are forked)
    spc.datasets.phantom(64, PATCH, seed=1)  # warm-up
    ph_rows = []
    ph = None
    for nj in jobs:
        ph = None  # free the previous units first
        s, ph = time_phantom(args.units, nj)
        name = f"all {cores} cores" if nj == -1 else f"{nj} process" + ("es" if nj > 1 else "")
        ph_rows.append((f"phantom(n_jobs={nj}), {name}", args.units, s))
        print(f"phantom n_jobs={nj}: {args.units / s:,.1f} units/s", flush=True)
    floor_s = time_noise_floor(args.units)
    ph_rows.append(("floor: numpy noise + 1 gaussian_filter per unit", args.units, floor_s))
    print(f"noise floor: {args.units / floor_s:,.1f} units/s", flush=True)

    # 2. TIFF -> patches
    with tempfile.TemporaryDirectory(prefix="sparsecell-bench-") as tmp:
        patch_rows, patch_notes = bench_patches(args, Path(tmp))

    # 3. encoder
    enc_rows, enc_notes = bench_encoder(args, ph, dev)
    total = time.perf_counter() - t_all

    # ---------------------------------------------------------------- tables
    floor_ups = args.units / floor_s
    t1 = [
        "| generator | units | seconds | units/s | vs floor | projected 20,000 units |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, n, s in ph_rows:
        ups = n / s
        t1.append(
            f"| {label} | {n:,} | {s:.1f} | {ups:,.1f} | {ups / floor_ups:.2f}x | "
            f"{_fmt_s(20_000 / ups)} |"
        )
    t2 = [
        "| input | pipeline | fields | patches | seconds (median) | patches/s | vs floor |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    floors = {r[0]: r[3] / r[4] for r in patch_rows if r[1].startswith("floor")}
    for label, what, nf, n, s in patch_rows:
        t2.append(
            f"| {label} | {what} | {nf} | {n:,} | {s:.2f} | {n / s:,.0f} | "
            f"{n / s / floors[label]:.2f}x |"
        )
    refs = {g: ips for _, _, _, _, ips, g in enc_rows if g in ("train-ref", "ref")}
    t3 = [
        "| step | batch | precision | ms/step | images/s | vs reference |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for what, b, prec, dt, ips, g in enc_rows:
        ref = refs["train-ref"] if g.startswith("train") else refs["ref"]
        ms = f"{dt * 1e3:,.0f}" if dt is not None else "–"
        t3.append(f"| {what} | {b} | {prec} | {ms} | {ips:,.1f} | {ips / ref:.2f}x |")
    tables = "\n".join(t1), "\n".join(t2), "\n".join(t3)
    print()
    print("\n\n".join(tables))

    two = next(n / s for label, n, s in ph_rows if "n_jobs=2" in label)
    proj = 20_000 / two
    verdict = (
        f"Phantom at n_jobs=2: {two:,.0f} units/s, 20,000 units of 128×128 projected in "
        f"**{_fmt_s(proj)}** (issue bar: a few minutes on 2 cores, taken as <= 5 min: "
        f"{'met' if proj <= 300 else 'NOT met'}; the 20,000 units hold 5.2 GB of float32)."
    )
    print(verdict)
    print(f"total {total:.0f}s; load average at end {_load()}")

    out = Path(args.out)
    if not out.exists():
        out.write_text(
            "# Benchmark results\n\n"
            "Appended by hand-run benchmarks (`benchmarks/*.py`); each section names its date,\n"
            "machine and the reference it was measured against in the same run.\n"
        )
    section = [
        "",
        f"## images_encode: phantom, TIFF → patches, encoder ({date}, {dev.type}"
        + (", --quick" if q else "")
        + ")",
        "",
        f"- Machine: {machine}",
        f"- Command: `python benchmarks/images_encode.py{' ' + cmd if cmd else ''}`",
        f"- Code: sparsecell {_code_version()}; whole run {total:.0f} s; load average at end "
        f"{_load()} (above the core count means the machine was shared during the run)",
        "",
        f"Phantom units, 4×128×128 (`spc.datasets.phantom`), vs a floor of noise + one blur "
        f"per unit in the same array; {args.units:,} units per row:",
        "",
        tables[0],
        "",
        verdict,
        "",
        "TIFF → 128×128 patches (`spc.images.process`, mode='patch', float16 shards), "
        "vs a floor of `tifffile.imread` + numpy slicing + `np.save` on the same files "
        f"(median of {args.repeats}; the real neuron has no dead stain, AF647 stands in):",
        "",
        tables[1],
        "",
        *[f"- {n}" for n in patch_notes],
        "",
        f"Encoder, default `EncoderConfig` on 3×128×128 units, on {dev}: training vs a plain "
        "supervised step of the same `Encoder` (linear head, cross-entropy, no augmentation, "
        "momentum encoder or queue); embedding vs a plain eval forward:",
        "",
        tables[2],
        "",
        *[f"- {n}" for n in enc_notes],
    ]
    with out.open("a") as f:
        f.write("\n".join(section).rstrip() + "\n")
    print(f"\nappended to {out}")


if __name__ == "__main__":
    main()
