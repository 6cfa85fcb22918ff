"""Benchmark: samples/s of TopK SAE training, sparsecell vs a dense reference and sparsify.

Run by hand (``make bench`` or ``python benchmarks/sae_train.py [--device cuda]``); not a
test. In one run, on the same data and batch size, it times the steady-state steps of

* ``sparsecell.sae.train(arch="topk")`` in its default precision (bf16 encoder matmul
  where the hardware has it) and in ``precision="fp32"`` (separates the bf16 lever from
  the sparse encoder-backward / ``embedding_bag`` decoder lever);
* a plain dense PyTorch TopK SAE written below (fp32, dense decoder, no tricks);
* the fastest known peer, EleutherAI's sparsify (PyPI ``eai-sparsify`` 1.3.3, import name
  ``sparsify``): its ``SparseCoder`` stepped the way its ``Trainer.fit`` steps one SAE
  with its defaults (``loss_fn="fvu"``, ``optimizer="signum"``, ``auxk_alpha=0``), see
  ``SparsifyStep``. It is not a project dependency; install it into the venv for
  benchmarking only, without letting pip touch torch, with::

      .venv/bin/pip install --no-deps eai-sparsify==1.3.3 accelerate==1.15.0 \
          schedulefree==1.4.1 transformers==5.23.0 huggingface-hub==2.4.0
      .venv/bin/pip install einops==0.8.2 simple-parsing==0.1.9 regex==2026.11.15 \
          httpx2==2.16.2

  (the modules an SAE step imports: ``sparse_coder``, ``config``, ``fused_encoder``,
  ``utils``, ``sign_sgd``, and ``schedulefree``; ``sparsify/__init__`` also imports its
  language-model trainer and so ``datasets``, which is left out: the benchmark then
  loads those modules without running the package ``__init__``). Where sparsify is not
  importable (e.g. on the GPU machine) its row is skipped with a printed note;
  ``--no-sparsify`` skips it too;

and the machine's ``(B × d) @ (d × m)`` matmul FLOP/s in fp32 and bf16. A dense step
costs about ``12·B·d·m`` FLOPs (forward encoder and decoder, backward of both: weight
and input gradients), so every trainer's "dense-equivalent FLOP/s" is
``12·B·d·m / step time``, reported as a fraction of the measured fp32 matmul peak.

Step times come from a ``callback`` stamped after each optimisation step (on CPU every
step, reported as the median; on CUDA, synchronised, at the two ends of the timed window
only); the first ``--warmup`` steps are dropped, so initialisation, the normalisation fit
and ``train``'s final evaluation are not counted. ``--dead-window`` (default 8 batches)
lets AuxK engage during warm-up if latents die, as in a long run once the real dead
window has passed; the table's notes say whether it was on in the timed steps.

Results are printed and appended to ``--out`` (``benchmarks/RESULTS.md``).
``--profile`` also prints a per-phase breakdown of a few of sparsecell's steps (and of
sparsify's, when it is importable).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib
import importlib.metadata
import importlib.util
import math
import os
import platform
import statistics
import sys
import time
import types
import warnings
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

import sparsecell as spc
from sparsecell.sae.config import TrainConfig
from sparsecell.sae.trainer import compute_dtype, cpu_has_fast_bf16, default_lr

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        txt = Path("/proc/cpuinfo").read_text()
        have = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in txt]
        flags = f" ({', '.join(have)})" if have else ""
    except OSError:
        pass
    parts = [
        f"CPU: {cpu}{flags}, {torch.get_num_threads()} torch threads "
        f"({_cpu_count()} cores visible)",
        f"torch {torch.__version__}, Python {platform.python_version()}",
        f"CPU native bf16: {cpu_has_fast_bf16()}",
    ]
    if torch.cuda.is_available():
        parts.append(f"GPU: {torch.cuda.get_device_name(0)}")
    parts.append(f"benchmark device: {device}")
    try:
        parts.append(f"load average at start {os.getloadavg()[0]:.2f}")
    except OSError:
        pass
    return "; ".join(parts)


def _code_version() -> str:
    """Commit of the sparsecell checkout (``+local changes`` when src/ differs), read-only."""
    import subprocess

    try:
        run = {"cwd": HERE.parent, "capture_output": True, "text": True, "timeout": 10}
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **run)
        if rev.returncode != 0:
            return "(no git checkout)"
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], **run).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "(no git checkout)"
    return rev.stdout.strip() + (" +local changes in src/" if dirty else "")


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def matmul_flops(B: int, d: int, m: int, dtype: torch.dtype, device: torch.device) -> float:
    """Best-of-N FLOP/s of a (B × d) @ (d × m) matmul (on CUDA, 20 back to back per sync)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(B, d, generator=g).to(device=device, dtype=dtype)
    w = torch.randn(d, m, generator=g).to(device=device, dtype=dtype)
    inner, reps = (20, 10) if device.type == "cuda" else (1, 5)
    for _ in range(2 * inner):
        a @ w
    sync(device)
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            a @ w
        sync(device)
        best = min(best, (time.perf_counter() - t) / inner)
    return 2 * B * d * m / best


def fmt_ms(sec: float) -> str:
    ms = sec * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def fmt_flops(x: float) -> str:
    return f"{x / 1e12:,.1f} TFLOP/s" if x >= 1e12 else f"{x / 1e9:,.1f} GFLOP/s"


class StepTimer:
    """Time stamps after optimisation steps ``1, 2, ...`` (the callback's ``step``).

    On CPU every step is stamped, so per-step times (and their median) are available.
    On CUDA only the first and last timed steps are synchronised and stamped: a sync
    after every step would stop the CPU from queueing ahead and slow the loop down.
    """

    def __init__(self, device: torch.device, first: int, last: int) -> None:
        self.device, self.first, self.last = device, first, last
        self.stamps: dict[int, float] = {}

    def __call__(self, step: int, *_args) -> None:
        if self.device.type == "cpu" or step in (self.first, self.last):
            sync(self.device)
            self.stamps[step] = time.perf_counter()

    def step_times(self) -> list[float]:
        """Per-step seconds of steps first+1 .. last (on CUDA, their mean repeated)."""
        a, b = self.first, self.last
        if self.device.type == "cpu":
            return [self.stamps[i + 1] - self.stamps[i] for i in range(a, b)]
        return [(self.stamps[b] - self.stamps[a]) / (b - a)] * (b - a)


# -------------------------------------------------------------- dense reference
class DenseTopKSAE(nn.Module):
    """Plain TopK SAE: fp32, dense B × m code, dense decoder matmul, no tricks."""

    def __init__(self, d: int, m: int, k: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(m, d, generator=g)
        W /= W.norm(dim=1, keepdim=True)
        self.k = k
        self.W_enc = nn.Parameter(W.t().clone())  # d × m
        self.b_enc = nn.Parameter(torch.zeros(m))
        self.W_dec = nn.Parameter(W.clone())  # m × d
        self.b_dec = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        vals, idx = pre.topk(self.k, dim=1)
        z = torch.zeros_like(pre).scatter(1, idx, torch.relu(vals))
        return z @ self.W_dec + self.b_dec


def train_reference(
    X: torch.Tensor, args, device: torch.device, steps: int
) -> tuple[list[float], float]:
    """Time ``steps`` plain dense steps on the same data; returns (step times, last loss)."""
    torch.manual_seed(0)
    d, m, B = X.shape[1], args.m, args.batch_size
    Xd = X.to(device)
    # same input normalisation as sparsecell's default (centre, one global scale)
    Xd = (Xd - Xd.mean(0)) / Xd.var(0).mean().sqrt()
    sae = DenseTopKSAE(d, m, args.k).to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=default_lr(m))
    timer = StepTimer(device, args.warmup, args.warmup + steps)
    perm = torch.randperm(Xd.shape[0], device=device)
    per_epoch = Xd.shape[0] // B
    loss = torch.zeros(())
    for step in range(steps + args.warmup):
        j = step % per_epoch
        x = Xd[perm[j * B : (j + 1) * B]]
        x_hat = sae(x)
        loss = (x_hat - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))
        if device.type == "cpu":  # as sparsecell's loop does on CPU (loss check)
            float(loss.detach())
        timer(step + 1)
    return timer.step_times(), float(loss.detach())


# ------------------------------------------------------------------- sparsecell
def train_ours(
    X: torch.Tensor, args, device: torch.device, precision: str, steps: int
) -> tuple[list[float], dict[str, float]]:
    timer = StepTimer(device, args.warmup, args.warmup + steps)
    last: dict[str, float] = {}

    def cb(step, sae, logs):
        timer(step)
        if logs:
            last.update(logs)
            last["auxk_on"] = float("auxk" in logs)

    spc.sae.train(
        X,
        arch="topk",
        k=args.k,
        d_sae=args.m,
        seed=0,
        steps=steps + args.warmup,
        batch_size=args.batch_size,
        progress=False,
        device=str(device),
        precision=precision,
        resident=True,
        dead_window=args.dead_window,
        callback=cb,
    )
    return timer.step_times(), last


# ------------------------------------------------------------------ sparsify (peer)
SPARSIFY_INSTALL = (
    ".venv/bin/pip install --no-deps eai-sparsify==1.3.3 accelerate==1.15.0 "
    "schedulefree==1.4.1 transformers==5.23.0 huggingface-hub==2.4.0 && "
    ".venv/bin/pip install einops==0.8.2 simple-parsing==0.1.9 regex==2026.11.15 "
    "httpx2==2.16.2"
)


def load_sparsify() -> tuple[SimpleNamespace | None, str]:
    """sparsify's SAE pieces (``SparseCoder``, its configs, ``SignSGD``, schedulefree's
    wrapper), or ``(None, why not)``."""
    try:
        version = importlib.metadata.version("eai-sparsify")
    except importlib.metadata.PackageNotFoundError:
        return None, f"eai-sparsify is not installed (`{SPARSIFY_INSTALL}`)"
    shim = None
    try:
        try:
            import sparsify  # noqa: F401  (a full install, datasets and all)
        except ImportError:
            # sparsify/__init__ also imports its language-model trainer (datasets, ...),
            # which an SAE step does not use: load the SAE modules without that __init__
            spec = importlib.util.find_spec("sparsify")
            if spec is None or not spec.submodule_search_locations:
                raise
            shim = types.ModuleType("sparsify")
            shim.__path__ = list(spec.submodule_search_locations)
            sys.modules["sparsify"] = shim
        sc = importlib.import_module("sparsify.sparse_coder")
        cfg = importlib.import_module("sparsify.config")
        sgd = importlib.import_module("sparsify.sign_sgd")
        from schedulefree import ScheduleFreeWrapper
    except ImportError as e:
        if shim is not None and sys.modules.get("sparsify") is shim:
            del sys.modules["sparsify"]
        return None, f"sparsify {version} is not importable ({e}; `{SPARSIFY_INSTALL}`)"
    return SimpleNamespace(
        version=version,
        SparseCoder=sc.SparseCoder,
        SparseCoderConfig=cfg.SparseCoderConfig,
        TrainConfig=cfg.TrainConfig,
        SignSGD=sgd.SignSGD,
        ScheduleFreeWrapper=ScheduleFreeWrapper,
        decoder=importlib.import_module("sparsify.utils").decoder_impl.__name__,
    ), ""


def _no_range(_name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


class SparsifyStep:
    """One optimisation step of sparsify's ``Trainer.fit`` (sparsify/trainer.py) for one
    SAE with its ``TrainConfig`` defaults: ``loss_fn="fvu"``, no gradient accumulation or
    micro-batches, ``optimizer="signum"``, ``auxk_alpha=0`` (so no AuxK pass), W&B off.

    As ``fit`` does: the SAE is built in fp32 after ``torch.manual_seed(seed)``; ``b_dec``
    is set to the first batch's mean; every step renormalises ``W_dec`` (in the forward
    hook, before the SAE forward), runs ``SparseCoder.forward(x, y, dead_mask,
    total_variance)`` (bf16 autocast on CUDA; on CPU fp32, the autocast being CUDA-only),
    marks fired latents, reads the FVU to the host (``float(out.fvu)``), back-propagates
    ``fvu + auxk_alpha · auxk_loss + multi_topk_fvu / 8``, removes the gradient component
    parallel to the decoder rows, steps ``ScheduleFreeWrapper(SignSGD, momentum=0.95)`` at
    lr ``5e-3 / sqrt(m / 2^14)``, zeroes the gradients and updates the dead-latent
    counters. ``fit`` also sets ``torch.set_float32_matmul_precision("high")``
    (``run_sparsify`` does, for its run only).
    """

    def __init__(self, sp: SimpleNamespace, d: int, m: int, k: int, device: torch.device):
        self.tc = sp.TrainConfig(sae=sp.SparseCoderConfig(k=k, num_latents=m))
        torch.manual_seed(self.tc.init_seeds[0])
        self.sae = sp.SparseCoder(d, self.tc.sae, device, dtype=torch.float32)
        if self.tc.optimizer != "signum":
            print(
                f"note: sparsify's default optimizer is now {self.tc.optimizer!r}; "
                "stepping its 'signum' branch"
            )
        self.lr = self.tc.lr or 5e-3 / (self.sae.num_latents / (2**14)) ** 0.5
        pgs = [dict(params=self.sae.parameters(), lr=self.lr)]
        self.opt = sp.ScheduleFreeWrapper(sp.SignSGD(pgs), momentum=0.95)
        self.opt.train()
        self.since_fired = torch.zeros(m, device=device, dtype=torch.long)
        self.did_fire = torch.zeros(m, device=device, dtype=torch.bool)
        self.global_step = 0
        self.fvu = float("nan")

    def __call__(self, x: torch.Tensor, rng=_no_range) -> None:
        sae, tc = self.sae, self.tc
        with rng("sparsify: b_dec init + renorm W_dec"):
            if self.global_step == 0:
                sae.b_dec.data = x.mean(0).to(sae.dtype)
            sae.set_decoder_norm_to_unit_norm()
            dead_mask = self.since_fired > tc.dead_feature_threshold if tc.auxk_alpha > 0 else None
        with rng("sparsify: forward"):
            total_variance = (x - x.mean(0)).pow(2).sum()
            out = sae(x=x, y=x, dead_mask=dead_mask, total_variance=total_variance)
        with rng("sparsify: fired mask + FVU to host + loss"):
            self.did_fire[out.latent_indices.flatten()] = True
            self.fvu = float(out.fvu.detach())
            loss = out.fvu + tc.auxk_alpha * out.auxk_loss + out.multi_topk_fvu / 8
        loss.div(tc.grad_acc_steps * tc.micro_acc_steps).backward()
        with rng("sparsify: grad projection (parallel to decoder rows)"):
            sae.remove_gradient_parallel_to_decoder_directions()
        with rng("sparsify: optimizer step (schedule-free SignSGD)"):
            self.opt.step()
        with rng("sparsify: zero_grad + dead-latent counters"):
            self.opt.zero_grad()
            with torch.no_grad():
                self.since_fired += x.shape[0]
                self.since_fired[self.did_fire] = 0
                self.did_fire.zero_()
        self.global_step += 1


def run_sparsify(
    sp: SimpleNamespace,
    X: torch.Tensor,
    args,
    device: torch.device,
    steps: int,
    after_step,
    rng=_no_range,
) -> SparsifyStep:
    """``steps`` sparsify steps on batches drawn as the reference's are; ``after_step(i)``
    after step ``i`` (1-based)."""
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # as sparsify's Trainer.fit does
    try:
        Xd = X.to(device)
        Xd = (Xd - Xd.mean(0)) / Xd.var(0).mean().sqrt()  # same data as the reference
        step = SparsifyStep(sp, Xd.shape[1], args.m, args.k, device)
        torch.manual_seed(0)
        B = args.batch_size
        perm = torch.randperm(Xd.shape[0], device=device)
        per_epoch = Xd.shape[0] // B
        for i in range(steps):
            j = i % per_epoch
            with rng("sparsify: batch gather"):
                x = Xd[perm[j * B : (j + 1) * B]]
            step(x, rng)
            after_step(i + 1)
    finally:
        torch.set_float32_matmul_precision(prev)
    return step


def train_sparsify(
    sp: SimpleNamespace, X: torch.Tensor, args, device: torch.device, steps: int
) -> tuple[list[float], SparsifyStep]:
    timer = StepTimer(device, args.warmup, args.warmup + steps)
    step = run_sparsify(sp, X, args, device, steps + args.warmup, timer)
    return timer.step_times(), step


# ---------------------------------------------------------------------- profile
_BWD = "autograd::engine::evaluate_function: "


def _shape(e, i: int) -> list[int]:
    s = e.input_shapes
    return list(s[i]) if s is not None and len(s) > i and s[i] else []


def _phases(events, B: int, d: int, m: int) -> list[str]:
    """Label top-level profiler events (chronological) with the phase of the step they
    belong to, from their order around landmark ops: the encoder addmm, the B×m topk, the
    first embedding_bag, the dead-latent mask (``since_fired > window``, an [m] compare),
    zero_grad, the backward nodes and the Adam step."""
    labels, state = [], "batch gather + normalise + centre"
    for e in events:
        n = e.name
        if n.startswith(_BWD):
            node = n[len(_BWD) :]
            state = "grad projection (parallel component)"
            if node.startswith("SparseEncodeBackward"):
                labels.append("bwd: sparse encoder (sparse.mm, index_add, gb@W_enc)")
            elif node.startswith("EmbeddingBagBackward"):
                labels.append("bwd: embedding_bag decoder")
            elif node.startswith(("MmBackward", "IndexPutBackward", "ToCopyBackward")):
                labels.append("bwd: dense decoder (scatter + matmul, GPU path)")
            else:
                labels.append("bwd: other nodes (FVU, relu, AuxK glue, accumulate)")
            continue
        if n.startswith("Optimizer.step"):
            labels.append("Adam step")
            state = "renorm W_dec + dead-latent bookkeeping + loss check"
            continue
        if n.startswith("Optimizer.zero_grad"):
            labels.append("zero_grad")
            continue
        if n in ("aten::to", "aten::_to_copy") and state.startswith("batch"):
            labels.append("fwd: encoder matmul (incl. bf16 casts)")
            continue
        if n == "aten::addmm" and _shape(e, 1) == [B, d] and m in _shape(e, 2) + _shape(e, 0):
            labels.append("fwd: encoder matmul (incl. bf16 casts)")
            state = "fwd: codes + sparse_encode"
            continue
        if n == "aten::topk" and _shape(e, 0) == [B, m]:
            labels.append("fwd: topk over B×m")
            continue
        if n in ("aten::embedding_bag", "aten::_embedding_bag") and state.startswith("fwd: codes"):
            labels.append("fwd: embedding_bag decoder")
            state = "fwd: FVU loss + fired/L0"
            continue
        if n in ("aten::mm", "aten::matmul") and _shape(e, 0) == [B, m]:
            if state.startswith("fwd: codes"):
                labels.append("fwd: dense decoder matmul (GPU path)")
                state = "fwd: FVU loss + fired/L0"
                continue
        if n == "aten::gt" and _shape(e, 0) == [m] and state.startswith("fwd: FVU"):
            state = "AuxK fwd (dead mask, gather, topk, decode, loss)"
        labels.append(state)
    return labels


def profile_step(X: torch.Tensor, args, device: torch.device) -> str:
    """Profile steady-state steps of sparsecell's trainer, per step, grouped by phase."""
    from torch.profiler import ProfilerActivity, profile, schedule

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    wait = args.warmup
    # interval i of the schedule ends at the callback of step i+1: the active intervals
    # are steps wait+2 ... wait+1+active, neither initialisation nor the final evaluation
    active = max(1, args.profile_steps)
    extra = {}
    if device.type == "cuda" and "cuda_graph" in {f.name for f in fields(TrainConfig)}:
        extra["cuda_graph"] = False  # a graph replay hides the ops; profile the eager step
    warnings.filterwarnings("ignore", message=".*Profiler clears events.*")
    with profile(
        activities=acts,
        record_shapes=True,
        schedule=schedule(wait=wait, warmup=1, active=active, repeat=1),
    ) as prof:

        def cb(step, sae, logs):
            sync(device)
            prof.step()

        spc.sae.train(
            X,
            arch="topk",
            k=args.k,
            d_sae=args.m,
            seed=0,
            steps=wait + active + 3,
            batch_size=args.batch_size,
            progress=False,
            device=str(device),
            resident=True,
            dead_window=args.dead_window,
            callback=cb,
            **extra,
        )
    B, d, m = args.batch_size, args.d, args.m
    ev = _top_level_events(prof)
    use_cuda = device.type == "cuda"
    phases: dict[str, float] = {}
    for e, p in zip(ev, _phases(ev, B, d, m), strict=True):
        t = (e.device_time_total if use_cuda else e.cpu_time_total) / 1e3 / active
        phases[p] = phases.get(p, 0.0) + t
    return _phase_and_op_tables(prof, phases, device, active)


def _top_level_events(prof) -> list:
    """Children of the ProfilerStep records (plus, on CUDA, the backward nodes, which run
    on the autograd engine's device thread), chronological."""
    return sorted(
        (
            e
            for e in prof.events()
            if not e.name.startswith("ProfilerStep")
            and (e.cpu_parent is None or e.cpu_parent.name.startswith("ProfilerStep"))
        ),
        key=lambda e: e.time_range.start,
    )


def _phase_and_op_tables(prof, phases: dict[str, float], device, active: int) -> str:
    """Markdown: the per-step phase times, then the top ops by self time."""
    use_cuda = device.type == "cuda"
    total = sum(phases.values())
    unit = "GPU ms" if use_cuda else "CPU ms"
    head = f"| phase (mean of {active} steps, {device}, profiler on) | {unit}/step | share |"
    lines = [head, "|---|---:|---:|"]
    for p, t in sorted(phases.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {p} | {t:.2f} | {t / max(total, 1e-9):.0%} |")
    lines.append(f"| **total** | {total:.2f} | |")
    ka = prof.key_averages(group_by_input_shape=True)
    key = "self_device_time_total" if use_cuda else "self_cpu_time_total"
    lines += ["", f"| op (self time) | input shapes | {unit}/step |", "|---|---|---:|"]
    ka = [a for a in ka if not a.key.startswith(("ProfilerStep", "sparsify: "))]
    for a in sorted(ka, key=lambda a: -getattr(a, key))[:15]:
        shp = ", ".join(str(s) for s in a.input_shapes if s)[:60]
        name = a.key if len(a.key) <= 60 else a.key[:57] + "..."
        lines.append(f"| {name} | {shp} | {getattr(a, key) / 1e3 / active:.2f} |")
    return "\n".join(lines)


_SPARSIFY_FWD = {
    "aten::linear": "fwd: encoder matmul (F.linear)",
    "aten::addmm": "fwd: encoder matmul (F.linear)",
    "aten::relu": "fwd: relu over B×m",
    "aten::topk": "fwd: topk over B×m",
    "aten::embedding_bag": "fwd: embedding_bag decoder",
    "aten::_embedding_bag": "fwd: embedding_bag decoder",
}


def profile_sparsify(sp: SimpleNamespace, X: torch.Tensor, args, device: torch.device) -> str:
    """Profile steady-state sparsify steps (``SparsifyStep``), per step, grouped by phase:
    the step's own parts (``record_function`` ranges), the forward split by op, the
    backward by autograd node."""
    from torch.profiler import ProfilerActivity, profile, record_function, schedule

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    wait, active = args.warmup, max(1, args.profile_steps)
    warnings.filterwarnings("ignore", message=".*Profiler clears events.*")
    with profile(
        activities=acts,
        record_shapes=True,
        schedule=schedule(wait=wait, warmup=1, active=active, repeat=1),
    ) as prof:

        def after(_i):
            sync(device)
            prof.step()

        run_sparsify(sp, X, args, device, wait + active + 2, after, rng=record_function)
    use_cuda = device.type == "cuda"

    def t_of(e) -> float:
        return (e.device_time_total if use_cuda else e.cpu_time_total) / 1e3 / active

    phases: dict[str, float] = {}

    def add(p: str, t: float) -> None:
        phases[p] = phases.get(p, 0.0) + t

    def add_fwd(e) -> None:
        label = _SPARSIFY_FWD.get(e.name)
        if label is not None or not e.cpu_children:
            add(label or "fwd: other (x - b_dec, FVU, casts)", t_of(e))
            return
        rest = t_of(e)
        for c in e.cpu_children:
            add_fwd(c)
            rest -= t_of(c)
        add("fwd: other (x - b_dec, FVU, casts)", max(rest, 0.0))

    for e in _top_level_events(prof):
        n = e.name
        if n.startswith(_BWD):
            node = n[len(_BWD) :]
            if node.startswith("FusedEncoderBackward"):
                add("bwd: fused encoder (embedding_bag dx, index_add dW_enc, db_enc)", t_of(e))
            elif node.startswith("EmbeddingBagBackward"):
                add("bwd: embedding_bag decoder", t_of(e))
            else:
                add("bwd: other nodes (FVU, b_dec, accumulate)", t_of(e))
        elif n == "sparsify: forward":
            add_fwd(e)
        elif n.startswith("sparsify: "):
            add(n[len("sparsify: ") :], t_of(e))
        else:
            add("other (backward launch, Python)", t_of(e))
    return _phase_and_op_tables(prof, phases, device, active)


# -------------------------------------------------------------------------- main
def make_data(args) -> torch.Tensor:
    if args.data == "gaussian":
        g = torch.Generator().manual_seed(0)
        return torch.randn(args.n, args.d, generator=g)
    sf = spc.datasets.sparse_features(
        n_features=4 * args.d,
        d=args.d,
        active=16.0,
        n_samples=args.n,
        zipf=1.0,
        noise=0.05,
        seed=0,
    )
    return torch.from_numpy(sf.X)


def summarise(times: list[float], B: int) -> tuple[float, float]:
    """(median step seconds, samples/s) of steady-state step times.

    The median, not the mean: on a shared machine another process can steal a step.
    """
    med = statistics.median(times)
    return med, B / med


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--steps", type=int, default=None, help="timed sparsecell steps")
    p.add_argument("--ref-steps", type=int, default=None, help="timed reference steps")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--m", type=int, default=8192)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--n", type=int, default=None, help="rows of resident data")
    p.add_argument("--data", default="features", choices=["features", "gaussian"])
    p.add_argument("--dead-window", type=int, default=None, help="samples; default 8 batches")
    p.add_argument("--no-fp32", action="store_true", help="skip sparsecell precision=fp32")
    p.add_argument("--no-ref", action="store_true", help="skip the dense reference")
    p.add_argument("--no-sparsify", action="store_true", help="skip the sparsify peer row")
    p.add_argument(
        "--sparsify-steps", type=int, default=None, help="timed sparsify steps (default --steps)"
    )
    p.add_argument("--profile", action="store_true", help="print a per-phase step profile")
    p.add_argument("--profile-steps", type=int, default=3, help="steps averaged by --profile")
    p.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = p.parse_args(argv)

    device = torch.device(
        "cuda"
        if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    gpu = device.type == "cuda"
    args.steps = args.steps or (300 if gpu else 30)
    args.ref_steps = args.ref_steps or (100 if gpu else 12)
    args.sparsify_steps = args.sparsify_steps or args.steps
    # on CUDA the warm-up also covers graph capture (eager steps, then one capture per
    # AuxK on/off state, the dead check coming every 16 steps)
    args.warmup = args.warmup if args.warmup is not None else (40 if gpu else 10)
    args.n = args.n or (1 << 18 if gpu else 65_536)
    args.dead_window = args.dead_window or 8 * args.batch_size
    B, d, m, k = args.batch_size, args.d, args.m, args.k
    if args.warmup * B <= args.dead_window:
        print("note: warm-up ends before the dead window; AuxK may switch on mid-timing")

    date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_description(device)
    print(f"{date}\n{machine}")
    print(f"B={B} d={d} m={m} k={k} n={args.n} data={args.data} warmup={args.warmup}")

    t0 = time.perf_counter()
    X = make_data(args)
    if gpu:
        X = X.to(device)
    print(f"data ready in {time.perf_counter() - t0:.1f}s")

    peer, sp_why = (None, "skipped (--no-sparsify)") if args.no_sparsify else load_sparsify()
    if peer is None:
        print(f"note: no sparsify row: {sp_why}")

    peak32 = matmul_flops(B, d, m, torch.float32, device)
    bf16_ok = gpu or cpu_has_fast_bf16()
    peak16 = matmul_flops(B, d, m, torch.bfloat16, device) if bf16_ok else float("nan")
    print(f"matmul (B×d)@(d×m): fp32 {fmt_flops(peak32)}, bf16 {fmt_flops(peak16)}")
    dense_flops = 12 * B * d * m

    rows: list[tuple[str, float, float, int, str]] = []
    auto_dt = compute_dtype("auto", device)
    auto_name = "bf16" if auto_dt == torch.bfloat16 else "fp32"
    runs = [("auto", f"sparsecell topk (auto = {auto_name})")]
    if not args.no_fp32 and auto_name != "fp32":
        runs.append(("fp32", "sparsecell topk (precision=fp32)"))
    for prec, label in runs:
        t = time.perf_counter()
        times, logs = train_ours(X, args, device, prec, args.steps)
        dt, sps = summarise(times, B)
        note = (
            f"fvu {logs.get('fvu', float('nan')):.3f}, dead {logs.get('dead', 0):.1%}, "
            f"AuxK {'on' if logs.get('auxk_on') else 'off'}"
        )
        rows.append((label, dt, sps, len(times), note))
        print(
            f"{label}: {fmt_ms(dt)} ms/step, {sps:,.0f} samples/s "
            f"(mean {fmt_ms(statistics.mean(times))} ms; {note}; "
            f"run {time.perf_counter() - t:.0f}s)",
            flush=True,
        )
    sp_sps = float("nan")
    sp_note = ""
    if peer is not None:
        t = time.perf_counter()
        times, st = train_sparsify(peer, X, args, device, args.sparsify_steps)
        dt, sp_sps = summarise(times, B)
        prec = "bf16 autocast fwd + TF32" if gpu else "fp32: its autocast is CUDA-only"
        sp_note = (
            f"fvu {st.fvu:.3f}; {prec}; schedule-free SignSGD lr {st.lr:.2e}; "
            f"AuxK off (auxk_alpha={st.tc.auxk_alpha:g}, its default); "
            f"decoder {peer.decoder}"
        )
        rows.append((f"sparsify {peer.version} SparseCoder", dt, sp_sps, len(times), sp_note))
        print(
            f"sparsify: {fmt_ms(dt)} ms/step, {sp_sps:,.0f} samples/s "
            f"(mean {fmt_ms(statistics.mean(times))} ms; {sp_note}; "
            f"run {time.perf_counter() - t:.0f}s)",
            flush=True,
        )
    ref_sps = float("nan")
    if not args.no_ref:
        t = time.perf_counter()
        times, loss = train_reference(X, args, device, args.ref_steps)
        dt, ref_sps = summarise(times, B)
        sps = ref_sps
        rows.append(
            ("dense reference (fp32, dense decoder)", dt, sps, len(times), f"mse {loss:.3f}")
        )
        print(
            f"reference: {fmt_ms(dt)} ms/step, {sps:,.0f} samples/s "
            f"(mean {fmt_ms(statistics.mean(times))} ms; run {time.perf_counter() - t:.0f}s)",
            flush=True,
        )

    # peak again at the end (best of both): a busy machine only ever lowers it
    peak32 = max(peak32, matmul_flops(B, d, m, torch.float32, device))
    if bf16_ok:
        peak16 = max(peak16, matmul_flops(B, d, m, torch.bfloat16, device))
    print(f"matmul peak (best of start/end): fp32 {fmt_flops(peak32)}, bf16 {fmt_flops(peak16)}")
    vs_sp = peer is not None
    table = [
        "| trainer | ms/step | samples/s | vs reference | "
        + ("vs sparsify | " if vs_sp else "")
        + "dense-equiv. FLOP/s | of fp32 matmul peak | timed steps | notes |",
        "|---|---:|---:|---:|" + ("---:|" if vs_sp else "") + "---:|---:|---:|---|",
    ]
    for label, dt, sps, n_steps, note in rows:
        eq = dense_flops / dt
        table.append(
            f"| {label} | {fmt_ms(dt)} | {sps:,.0f} | {sps / ref_sps:.2f}x | "
            + (f"{sps / sp_sps:.2f}x | " if vs_sp else "")
            + f"{fmt_flops(eq)} | {eq / peak32:.0%} | {n_steps} | {note} |"
        )
    table_txt = "\n".join(table)
    print()
    print(table_txt)

    verdict = []
    if not args.no_ref:
        sp = rows[0][2] / ref_sps
        verdict.append(
            f"Speed-up of sparsecell ({auto_name}) over the dense reference: **{sp:.2f}x** "
            + (f"(goal >= 1.5x on CPU: {'met' if sp >= 1.5 else 'NOT met'})." if not gpu else ".")
        )
    if peer is not None:
        ours = [(label, sps) for label, _, sps, _, _ in rows if label.startswith("sparsecell")]
        fast = ", ".join(f"{label} **{sps / sp_sps:.2f}x**" for label, sps in ours)
        verdict.append(
            f"Samples/s relative to sparsify {peer.version} at the same setting: {fast}"
            + ("" if args.no_ref else f", dense reference {ref_sps / sp_sps:.2f}x")
            + "."
        )
    if gpu:
        verdict.append(
            f"GPU samples/s: **{rows[0][2] / 1e6:.2f} M** (goal >= 3 M samples/s: "
            f"{'met' if rows[0][2] >= 3e6 else 'NOT met'})."
        )
    for v in verdict:
        print(v)

    prof_txt = ""
    if args.profile:
        prof_txt = profile_step(X, args, device)
        print()
        print(prof_txt)
    sp_prof_txt = ""
    if args.profile and peer is not None:
        sp_prof_txt = profile_sparsify(peer, X, args, device)
        print()
        print(f"sparsify {peer.version} steps by phase:")
        print(sp_prof_txt)

    out = Path(args.out)
    if not out.exists():
        out.write_text(
            "# Benchmark results\n\n"
            "Appended by hand-run benchmarks (`benchmarks/*.py`); each section names its date,\n"
            "machine and the reference it was measured against in the same run.\n"
        )
    section = [
        "",
        f"## sae_train: TopK SAE training throughput ({date}, {device.type})",
        "",
        f"- Machine: {machine}",
        f"- Setting: B={B}, d={d}, m={m}, k={k}, {args.n:,} resident rows ({args.data}), "
        f"dead window {args.dead_window:,} samples, {args.warmup} untimed warm-up steps; "
        f"command `python benchmarks/sae_train.py "
        f"{' '.join(argv) if argv is not None else ' '.join(sys.argv[1:])}`",
        f"- Code: sparsecell {_code_version()}; step time = "
        + ("median of per-step times" if not gpu else "mean over the timed window")
        + f"; load average at end {os.getloadavg()[0]:.2f} (above the thread count means the "
        "machine was shared during the run)",
        f"- Measured matmul (B×d)@(d×m): fp32 {fmt_flops(peak32)}, "
        f"bf16 {fmt_flops(peak16)}. Dense step = 12·B·d·m = "
        f"{dense_flops / 1e9:,.1f} GFLOP.",
        (
            f"- Peer: EleutherAI sparsify {peer.version} (PyPI `eai-sparsify`), installed "
            "into the venv for benchmarking only (not a project dependency; pip never "
            f"touches torch) with `{SPARSIFY_INSTALL}`. Its step is driven as its "
            "`Trainer.fit` steps one SAE with its defaults (`SparsifyStep`): "
            "`set_decoder_norm_to_unit_norm`, `SparseCoder.forward` (fused encoder + "
            "topk, embedding_bag decoder), loss `fvu + auxk_alpha·auxk_loss` "
            "(auxk_alpha = 0), backward, `remove_gradient_parallel_to_decoder_directions`, "
            "`ScheduleFreeWrapper(SignSGD, momentum=0.95)` at lr 5e-3/sqrt(m/2^14) = "
            f"{st.lr:.2e}; same data and batch draw as the dense reference, "
            f"{args.sparsify_steps} timed steps after the same {args.warmup} warm-up steps."
            if peer is not None
            else f"- Peer sparsify: no row ({sp_why})."
        ),
        "",
        table_txt,
        "",
        *[f"{v}" for v in verdict],
    ]
    if prof_txt:
        section += ["", "sparsecell steps by phase (torch.profiler, per step):", "", prof_txt]
    if sp_prof_txt:
        section += [
            "",
            f"sparsify {peer.version} steps by phase (torch.profiler, per step):",
            "",
            sp_prof_txt,
        ]
    with out.open("a") as f:
        f.write("\n".join(section).rstrip() + "\n")
    print(f"\nappended to {out}")


if __name__ == "__main__":
    main()
