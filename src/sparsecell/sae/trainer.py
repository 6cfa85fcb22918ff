"""Training loop shared by all architectures.

Standard practice of the best SAE libraries, in one place: decoder initialised as the
encoder's transpose, decoder bias at the geometric median, unit-norm decoder rows with
the parallel gradient component removed, AuxK loss on dead latents (dead window counted
in samples), LR warm-up and linear decay, λ warm-up, input normalisation stored with the
weights, bf16 encoder matmuls where the hardware has them, data resident on the device
when it fits, data-parallel training under ``torchrun``, and resumable checkpoints.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .._device import resolve_device
from .._errors import SparsecellError
from ..config import split_kwargs as _split
from ._base import SparseAutoencoder, batch_fvu
from ._data import BatchStream, check_matrix, fit_normalization, geometric_median
from ._kernels import Codes, normalize_rows_, project_out_parallel_grad, sparse_decode
from .config import SAEConfig, TrainConfig
from .registry import get

K_ARCHS = {"topk", "batchtopk", "matryoshka"}
RESIDENT_BYTES_CPU = 4 << 30


def cpu_has_fast_bf16() -> bool:
    """True when this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The encoder matmul dtype that ``precision`` means on ``device``."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def _adam_flags(device: torch.device, graphed: bool) -> dict[str, bool]:
    """Fused Adam on CUDA, and on CPU where torch has it (>= 2.4; 5x faster than foreach)."""
    if device.type == "cuda":
        return {"fused": True, "capturable": graphed}
    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    return {"fused": True} if (major, minor) >= (2, 4) else {"foreach": True}


def default_lr(d_sae: int) -> float:
    """4e-3 · sqrt(16384 / d_sae), capped at 1e-2.

    The shape of Gao et al.'s (2024) scaling law, with a constant 20× theirs: their runs
    see billions of tokens, ours tens of epochs over ≤ 10⁶ cells. Measured on the
    ground-truth harness (``benchmarks/RESULTS.md``, "learning rate"), 1e-2 beat 3e-3,
    1e-3 and Gao's 4e-4 in FVU and feature recovery for every architecture.
    """
    return min(1e-2, 4e-3 * math.sqrt(16384 / d_sae))


def lr_factor(step: int, total: int, warmup: int, decay_frac: float) -> float:
    """Linear warm-up to 1, constant, then linear decay to 0 over the last ``decay_frac``."""
    f = 1.0
    if warmup > 0 and step < warmup:
        f = (step + 1) / warmup
    decay_start = int(total * (1 - decay_frac))
    if decay_frac > 0 and step >= decay_start:
        f = min(f, max(0.0, (total - step) / max(1, total - decay_start)))
    return f


def split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route keyword arguments to SAEConfig or TrainConfig fields (or fail clearly)."""
    return _split(kwargs, SAEConfig, TrainConfig, what="training option")


class _Dist:
    """Process-group helper; a no-op in a single process."""

    def __init__(self, device: torch.device) -> None:
        self.on = False
        self.rank, self.world = 0, 1
        if dist.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.on = True
            self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def mean_(self, t: torch.Tensor) -> None:
        if self.on:
            dist.all_reduce(t)
            t.div_(self.world)

    def sum_(self, t: torch.Tensor) -> None:
        if self.on:
            dist.all_reduce(t)

    def barrier(self) -> None:
        if self.on:
            dist.barrier()


def check_sae_config(cfg: SAEConfig) -> None:
    """Settings errors caught before any work."""
    if cfg.d_sae < 1:
        raise SparsecellError(f"d_sae={cfg.d_sae} must be positive", "raise expansion or d_sae")
    if cfg.arch in K_ARCHS:
        if cfg.k < 1:
            raise SparsecellError(f"k={cfg.k} must be at least 1", "pass --k 1 or more")
        if cfg.k >= cfg.d_sae:
            raise SparsecellError(
                f"k={cfg.k} must be smaller than the number of latents d_sae={cfg.d_sae}",
                "lower k or raise the expansion",
            )
    if cfg.arch == "matryoshka":
        p = list(cfg.matryoshka_prefixes)
        if p != sorted(set(p)) or p[-1] != cfg.d_sae or p[0] < 1:
            raise SparsecellError(
                f"matryoshka_prefixes {p} must ascend strictly and end at d_sae={cfg.d_sae}",
                "pass increasing sizes whose last is d_sae",
            )


def train(
    X: Any,
    arch: str = "topk",
    k: int = 32,
    expansion: int = 16,
    seed: int = 0,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    callback: Callable[[int, SparseAutoencoder, dict[str, float]], None] | None = None,
    **kwargs: Any,
) -> SparseAutoencoder:
    """Train a sparse autoencoder on embeddings ``X``.

    Parameters
    ----------
    X
        ``n × d`` embeddings: numpy array, ``np.memmap`` (streamed when larger than
        memory), ``h5py`` dataset (e.g. from :func:`sparsecell.datasets.read_embeddings`)
        or torch tensor.
    arch
        Architecture: ``topk``, ``batchtopk``, ``relu``, ``jumprelu``, ``gated`` or
        ``matryoshka``.
    k
        Active latents per sample (topk, batchtopk, matryoshka).
    expansion
        Latents per input dimension (``d_sae = expansion * d``) unless ``d_sae`` is given.
    seed
        Seeds initialisation and data order.
    out
        Folder to write the model into (``model.safetensors`` + ``cfg.json``), with
        resumable training state; written atomically.
    resume
        Continue from the training state in ``out`` if there is one.
    callback
        Called as ``callback(step, sae, logs)`` after every optimisation step.
    **kwargs
        Any field of :class:`~sparsecell.sae.SAEConfig` (``d_sae``, ``normalize``, …) or
        :class:`~sparsecell.sae.TrainConfig` (``epochs``, ``steps``, ``batch_size``,
        ``lr``, ``sparsity_coeff``, ``device``, ``checkpoint_every``, …).

    Returns
    -------
    SparseAutoencoder
        The trained model (on CPU), with ``sae.metrics`` holding :func:`evaluate`
        figures on (up to 100k rows of) the training data.
    """
    from .checkpoint import load_train_state, save
    from .metrics import evaluate

    sae_kw, tr_kw = split_kwargs(kwargs)
    n, d = check_matrix(X)
    tc = TrainConfig(seed=seed, **tr_kw)
    cfg = SAEConfig(arch=arch, d_in=d, k=k, expansion=expansion, **sae_kw).resolved()
    cls = get(arch)
    check_sae_config(cfg)
    if tc.batch_size < 1:
        raise SparsecellError(f"batch_size={tc.batch_size} must be positive", "pass 1 or more")
    device = resolve_device(tc.device)
    ddp = _Dist(device)
    if ddp.on and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    cdt = compute_dtype(tc.precision, device)

    resident = tc.resident
    if resident is None:
        nbytes = n * d * 4
        if device.type == "cuda":
            resident = nbytes < 0.5 * torch.cuda.mem_get_info(device)[0]
        else:
            resident = (
                isinstance(X, torch.Tensor)
                or type(X).__name__ == "ndarray"
                or (nbytes < RESIDENT_BYTES_CPU)
            )
    if tc.batch_size % ddp.world:
        raise SparsecellError(
            f"batch_size={tc.batch_size} does not split over {ddp.world} processes",
            "use a multiple of the process count",
        )

    mean, scale = fit_normalization(X, cfg.normalize, tc.chunk_size)
    stream = BatchStream(X, tc.batch_size, seed, device, resident, tc.chunk_size)
    B = stream.B
    total = tc.steps if tc.steps is not None else max(1, int(tc.epochs * stream.steps_per_epoch))
    lr = tc.lr if tc.lr is not None else default_lr(cfg.d_sae)
    lam = tc.sparsity_coeff if tc.sparsity_coeff is not None else cls.default_sparsity_coeff
    warmup = min(tc.warmup_steps, max(1, total // 10))
    dead_window = tc.dead_window or min(10_000_000, n)
    auxk = tc.auxk or max(1, d // 2)

    sae = cls(cfg)
    sae.reset_parameters(seed)
    sae.norm_mean.copy_(mean)
    sae.norm_scale.copy_(scale)
    sae.to(device)
    with torch.no_grad():
        xs = sae.normalize_input(stream.sample(32_768, seed))
        sae.b_dec.copy_(geometric_median(xs) if tc.geometric_median_init else xs.mean(0))

    graphed = tc.cuda_graph and device.type == "cuda" and not ddp.on and cls.capturable_train_step
    opt = torch.optim.Adam(
        sae.parameters(),
        lr=torch.tensor(lr, device=device) if graphed else lr,
        betas=tc.betas,
        **_adam_flags(device, graphed),
    )
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)
    step = 0
    if resume and out is not None and (Path(out) / "train_state.json").exists():
        step = load_train_state(out, sae, opt, since_fired, cfg, tc)

    lo, hi = ddp.rank * (B // ddp.world), (ddp.rank + 1) * (B // ddp.world)
    ramp = max(1.0, tc.sparsity_warmup_frac * total)
    lam_t = torch.zeros((), device=device)

    def body(x: torch.Tensor, aux_on: bool) -> dict[str, torch.Tensor]:
        """One optimisation step; free of host synchronisation on CUDA for capturable archs.

        ``aux_on`` (CUDA only) says whether any latent is dead, checked every few steps, so
        that the AuxK work is skipped (and left out of the graph) while none is.
        """
        xn = sae.normalize_input(x)
        o = sae._train_forward(xn, cdt)
        loss = o.recon_loss
        if o.sparsity_loss is not None and lam:
            loss = loss + lam_t * o.sparsity_loss
        if o.extra_loss is not None:
            loss = loss + o.extra_loss
        aux = None
        if tc.auxk_coeff > 0 and (device.type != "cuda" or aux_on):
            dead = since_fired > dead_window
            aux = _auxk_loss(sae, o, xn, dead, auxk, cdt, sync_free=device.type == "cuda")
            if aux is not None:
                loss = loss + tc.auxk_coeff * aux
        loss.backward()
        if ddp.on:
            for p in sae.parameters():
                if p.grad is not None:
                    ddp.mean_(p.grad)
        project_out_parallel_grad(sae.W_dec)
        opt.step()
        normalize_rows_(sae.W_dec)
        fired = o.fire_counts
        ddp.sum_(fired)
        since_fired.add_(B).masked_fill_(fired > 0, 0)
        if hasattr(sae, "threshold"):
            ddp.mean_(sae.threshold)
        res = {"loss": loss.detach(), "fvu": o.recon_loss.detach(), "l0": o.l0.detach()}
        if aux is not None:
            res["auxk"] = aux.detach()
        return res

    def set_schedules(step: int) -> None:
        f = lr_factor(step, total, warmup, tc.decay_frac)
        for g in opt.param_groups:
            if isinstance(g["lr"], torch.Tensor):
                g["lr"].fill_(lr * f)
            else:
                g["lr"] = lr * f
        lam_t.fill_(lam * min(1.0, (step + 1) / ramp) if lam else 0.0)

    graphs: dict[bool, tuple] = {}
    eager_runs = {False: 0, True: 0}
    aux_on = False
    show = tc.progress and ddp.rank == 0
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=step, disable=not show, desc=f"sae {arch}", unit="step")
    logs: dict[str, float] = {}
    sae.train()
    try:
        while step < total:
            x = stream.batch(step)[lo:hi]
            set_schedules(step)
            if device.type == "cuda" and tc.auxk_coeff > 0 and step % _AUX_CHECK_EVERY == 0:
                aux_on = bool((since_fired > dead_window).any())
            if graphed and aux_on not in graphs and eager_runs[aux_on] >= _GRAPH_WARMUP_STEPS:
                graphs[aux_on] = _capture(functools.partial(body, aux_on=aux_on), opt, x)
            if aux_on in graphs:
                graph, static_x, static_out = graphs[aux_on]
                static_x.copy_(x)
                graph.replay()
                res = static_out
            elif graphed:  # eager warm-up steps on a side stream, as graph capture requires
                side = torch.cuda.Stream(device)
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side):
                    opt.zero_grad(set_to_none=True)
                    res = body(x, aux_on)
                torch.cuda.current_stream(device).wait_stream(side)
                eager_runs[aux_on] += 1
            else:
                opt.zero_grad(set_to_none=True)
                res = body(x, aux_on)
            step += 1
            if device.type == "cpu" or step % tc.log_every == 0 or step == total:
                logs = {key: float(v) for key, v in res.items()}
                if not math.isfinite(logs["loss"]) or logs["fvu"] > _DIVERGED_FVU:
                    what = "non-finite" if not math.isfinite(logs["loss"]) else "diverged"
                    raise SparsecellError(
                        f"training loss became {what} at step {step} (batch FVU {logs['fvu']:.3g})",
                        "lower the learning rate (--lr) or check the input scale",
                    )
                logs["dead"] = float((since_fired > dead_window).float().mean())
                if step % tc.log_every == 0 or step == total:
                    bar.set_postfix(
                        fvu=f"{logs['fvu']:.3f}",
                        l0=f"{logs['l0']:.1f}",
                        dead=f"{logs['dead']:.1%}",
                        refresh=False,
                    )
            bar.update(1)
            if callback is not None:
                callback(step, sae, logs)
            if (
                out is not None
                and tc.checkpoint_every
                and step % tc.checkpoint_every == 0
                and step < total
                and ddp.rank == 0
            ):
                save(sae, out, train_cfg=tc, train_state=(opt, step, since_fired))
    finally:
        bar.close()

    sae.eval()
    if ddp.rank == 0:
        sae.metrics = evaluate(sae, X, max_samples=100_000, seed=seed)
    sae.cpu()
    if ddp.rank == 0:
        if out is not None:
            save(
                sae,
                out,
                metrics=sae.metrics,
                train_cfg=tc,
                train_state=(opt, step, since_fired.cpu()),
            )
    ddp.barrier()
    sae.train_config = tc
    return sae


_GRAPH_WARMUP_STEPS = 3
_AUX_CHECK_EVERY = 16
# A batch FVU this large is no fit at all (an untrained SAE starts near 1): training diverged.
_DIVERGED_FVU = 1e4
_AUX_DENSE_MAX = 4  # dense sub-SAE for AuxK while n_dead <= this × auxk (faster on CPU)


def _capture(body, opt: torch.optim.Optimizer, x: torch.Tensor):
    """Record one whole training step (forward, backward, Adam) as a CUDA graph."""
    static_x = x.clone()
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_out = body(static_x)
    return graph, static_x, static_out


def _auxk_loss(
    sae: SparseAutoencoder,
    o,
    xn: torch.Tensor,
    dead: torch.Tensor,
    auxk: int,
    compute_dtype: torch.dtype = torch.float32,
    sync_free: bool = False,
) -> torch.Tensor | None:
    """AuxK (Gao et al. 2024): dead latents learn to reconstruct the residual.

    With ``sync_free`` the dead latents are chosen by masking (no host synchronisation,
    so the step can be a CUDA graph); otherwise only the dead columns are ranked, and
    while they are few (the usual case) as a small dense sub-SAE of their own.
    """
    B = xn.shape[0]
    if sync_free:
        kk = min(auxk, sae.d_sae)
        with torch.no_grad():
            masked = o.pre.detach().masked_fill(~dead, float("-inf"))
            vals, j = masked.topk(kk, dim=1, sorted=False)
            cols = j.reshape(-1)
            vals = vals.reshape(-1)
    else:
        dead_idx = dead.nonzero(as_tuple=True)[0]
        if dead_idx.numel() == 0:
            return None
        kk = min(auxk, dead_idx.numel())
        if not o.pre.requires_grad and dead_idx.numel() <= _AUX_DENSE_MAX * auxk:
            return _auxk_dense(sae, o.xc, (xn - o.x_hat).detach(), dead_idx, kk)
        with torch.no_grad():
            _, j = o.pre[:, dead_idx].topk(kk, dim=1, sorted=False)
            cols = dead_idx[j].reshape(-1)
            vals = None
    with torch.no_grad():
        rows = torch.arange(B, device=xn.device).repeat_interleave(kk)
        offsets = torch.arange(0, B * kk, kk, device=xn.device)
    v = torch.relu(sae._aux_values(o, rows, cols, vals))
    codes = Codes(rows, cols, v, offsets, B)
    e_hat = sparse_decode(codes, sae.W_dec, v, compute_dtype)
    loss = _fvu_of((xn - o.x_hat).detach(), e_hat)
    return loss * dead.any() if sync_free else loss


def _fvu_of(e: torch.Tensor, e_hat: torch.Tensor) -> torch.Tensor:
    """Batch FVU of the residual's reconstruction; 0 instead of NaN for a zero residual."""
    return torch.nan_to_num(batch_fvu(e, e_hat), nan=0.0)


def _auxk_dense(
    sae: SparseAutoencoder, xc: torch.Tensor, e: torch.Tensor, dead_idx: torch.Tensor, kk: int
) -> torch.Tensor:
    """AuxK on the dead columns only: gather their weights and run a dense TopK sub-SAE.

    O(B·d·n_dead) instead of O(B·d_sae) work and memory; gradients reach ``W_enc``,
    ``b_enc`` and ``W_dec`` through the gathers.
    """
    pre = torch.addmm(sae.b_enc[dead_idx], xc, sae.W_enc[dead_idx].t())
    vals, j = pre.topk(kk, dim=1, sorted=False)
    z = torch.zeros_like(pre).scatter(1, j, torch.relu(vals))
    return _fvu_of(e, z @ sae.W_dec[dead_idx])
