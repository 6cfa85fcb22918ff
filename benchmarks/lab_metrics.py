"""Benchmark: time and peak memory of every ``sparsecell.lab`` alignment and fidelity metric.

Run by hand (``python benchmarks/lab_metrics.py [--quick] [--sizes 10000x512,100000x8192]``);
not a test. Every cell (metric × n samples × units) runs in its own subprocess, so its
peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own; the
subprocess first loads its inputs from ``.npy``/``.npz`` files (the "inputs" RSS) and then
runs the metric once (``time.perf_counter``). A cell is killed after ``--timeout`` seconds
and recorded as ``skipped: ...``; cells known to exceed the time or memory limits are
skipped up front, with the reason.

Inputs (seeded, built once per size):

* **512 units: dense CNN-like embeddings.** ``n × 8192`` sparse "concept" activations
  (32 draws per sample from Zipf-like concept frequencies, exponential magnitudes,
  duplicates merged: ~31 active) superposed into 512 dimensions by a random dictionary,
  plus 5% Gaussian noise; ``B`` uses another dictionary and a perturbed copy of the
  concepts (25% of each sample's actives re-drawn, magnitudes jittered).
* **8192 units: SAE-like sparse CSR latents** (float32): the concept activations
  themselves (``A``) and the perturbed copy with its columns permuted (``B``).
* Semantic variable (``knn_ratio``, ``morans_i``, ``ridge_r2``): the summed activation
  of the 64 most frequent concepts plus noise. Reference space (``knn_overlap``,
  ``trustworthiness``): a 16-d random projection of the concepts.

Peers / references, run in the same way where they fit: ``sklearn.linear_model.RidgeCV``
(ridge), POT ``ot.emd`` (soft-matching plan), a dense numpy Gram-matrix CKA (``n × n``
kernels), a dense numpy correlation argmax (semi-matching), ``scipy.linalg.
orthogonal_procrustes`` (Procrustes), ``scipy.spatial.distance.pdist`` + ``spearmanr``
(RSA), ``scanpy.metrics.morans_i`` on the same kNN graph (Moran's I),
``sklearn.neighbors.NearestNeighbors`` (the kNN of ``knn_ratio``, ``knn_overlap`` and
``mutual_knn``, then the same formula),
``sklearn.manifold.trustworthiness`` (trustworthiness) and ``numpy.linalg.svd``
(effective rank). The result table lists both and the absolute difference of the values.
``ridge`` runs with ``inner_cv="auto"``: exact LOO (RidgeCV's estimator) at 512 units, GCV at
8192 (peak per fold at 100k × 8192 CSR ≈ 3–4 GiB: a few ``p × q`` float64 arrays of 0.5 GiB
and the eigendecomposition's workspace; sparse targets are never densified). At 8192 units
a fold takes 65–90 s on 2 cores, mostly one ~8000-square eigendecomposition, so the cell
needs ``--timeout 450`` or more (the default 300 CPU-s per thread kills it).

``--device cuda`` runs sparsecell's metrics with ``device="cuda"`` (the peers stay on the
CPU; ``ridge_r2`` always runs on the CPU); the cells then have no address-space cap (CUDA
reserves far more virtual memory than it uses) and the CPU seconds count only the host's
share.

Appends a dated section to ``benchmarks/RESULTS.md`` (``--no-append`` to skip).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ALIGN = (
    "semi_matching",
    "soft_matching",
    "ridge",
    "cka",
    "cka_debiased",
    "rsa",
    "procrustes",
    "mutual_knn",
)
FID = (
    "knn_ratio",
    "morans_i",
    "ridge_r2",
    "knn_overlap",
    "trustworthiness",
    "effective_rank",
)
METRICS = ALIGN + FID
REFERENCES = {
    "semi_matching": "numpy dense corr argmax",
    "soft_matching": "POT ot.emd plan",
    "ridge": "sklearn RidgeCV",
    "cka": "numpy n×n Gram CKA",
    "cka_debiased": "numpy n×n Gram CKA (U-stat.)",
    "rsa": "scipy pdist + spearmanr",
    "procrustes": "scipy orthogonal_procrustes",
    "morans_i": "scanpy morans_i (same graph)",
    "knn_ratio": "sklearn NearestNeighbors kNN",
    "knn_overlap": "sklearn NearestNeighbors kNN",
    "mutual_knn": "sklearn NearestNeighbors kNN",
    "trustworthiness": "sklearn trustworthiness",
    "effective_rank": "numpy svd (dense)",
}
N_CONCEPTS = 8192
DRAWS = 32
MACHINE = "2-core AMD EPYC CPU, AVX512-BF16, 24 GiB, no GPU"
GIB = 1024**3


# --------------------------------------------------------------------------- inputs


def make_inputs(n: int, p: int, folder: Path, seed: int = 0) -> dict[str, str]:
    """Write A, B, semantic and reference of size ``n × p`` into ``folder``."""
    rng = np.random.default_rng(seed)
    freq = 1.0 / (np.arange(N_CONCEPTS) + 20.0) ** 0.8
    cdf = np.cumsum(freq / freq.sum())

    def concepts(cols: np.ndarray, vals: np.ndarray) -> sp.csr_matrix:
        rows = np.repeat(np.arange(n), DRAWS)
        M = sp.csr_matrix((vals.ravel(), (rows, cols.ravel())), shape=(n, N_CONCEPTS))
        M.sum_duplicates()
        return M.astype(np.float32)

    cols = np.minimum(np.searchsorted(cdf, rng.random((n, DRAWS))), N_CONCEPTS - 1)
    vals = rng.exponential(1.0, (n, DRAWS))
    Fa = concepts(cols, vals)
    redraw = rng.random((n, DRAWS)) < 0.25
    cols_b = np.where(
        redraw, np.minimum(np.searchsorted(cdf, rng.random((n, DRAWS))), N_CONCEPTS - 1), cols
    )
    Fb = concepts(cols_b, vals * rng.lognormal(0.0, 0.2, (n, DRAWS)))
    s = np.asarray(Fa[:, :64].sum(axis=1)).ravel()
    s = s + 0.1 * s.std() * rng.standard_normal(n)
    R = np.asarray(Fa @ (rng.standard_normal((N_CONCEPTS, 16)) / 4.0), dtype=np.float32)
    out = {"semantic": str(folder / "semantic.npy"), "reference": str(folder / "reference.npy")}
    np.save(out["semantic"], s)
    np.save(out["reference"], R)
    if p == N_CONCEPTS:
        perm = rng.permutation(N_CONCEPTS)
        out["A"], out["B"] = str(folder / "A.npz"), str(folder / "B.npz")
        sp.save_npz(out["A"], Fa)
        sp.save_npz(out["B"], Fb[:, perm].tocsr())
    else:
        for key, F in (("A", Fa), ("B", Fb)):
            D = rng.standard_normal((N_CONCEPTS, p)).astype(np.float32) / np.sqrt(p)
            X = np.asarray(F @ D, dtype=np.float32)
            X += 0.05 * X.std() * rng.standard_normal(X.shape).astype(np.float32)
            out[key] = str(folder / f"{key}.npy")
            np.save(out[key], X)
    return out


def _load(path: str) -> Any:
    return sp.load_npz(path).tocsr() if path.endswith(".npz") else np.load(path)


# --------------------------------------------------------------------------- references


def _dense(X: Any) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)


def _std_cols(X: np.ndarray) -> np.ndarray:
    Xc = X - X.mean(axis=0)
    sd = Xc.std(axis=0)
    return Xc / np.where(sd > 0, sd, 1.0)


def _corr(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return _std_cols(A).T @ _std_cols(B) / A.shape[0]


def _live(X: Any) -> Any:
    from sparsecell.lab import _stats as st

    return st.drop_dead(st.as_matrix(X, "X"))[0]


def _folds(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold

    return list(KFold(5, shuffle=True, random_state=0).split(np.zeros(n)))


def reference(metric: str, A: Any, B: Any, s: np.ndarray, R: np.ndarray) -> float:
    """The named peer's value of ``metric`` (same inputs, folds and settings)."""
    if metric in ("semi_matching", "soft_matching", "ridge"):
        A, B = _dense(_live(A)), _dense(_live(B))
        per = []
        for tr, te in _folds(A.shape[0]):
            if metric == "semi_matching":
                best = np.argmax(_corr(A[tr], B[tr]), axis=0)
                per.append(np.mean(_corr(A[te], B[te])[best, np.arange(B.shape[1])]))
            elif metric == "soft_matching":
                import ot

                C = _corr(A[tr], B[tr])
                a = np.full(C.shape[0], 1.0 / C.shape[0])
                b = np.full(C.shape[1], 1.0 / C.shape[1])
                plan = ot.emd(a, b, 1.0 - C, numItermax=10_000_000)
                per.append(float(np.sum(plan * _corr(A[te], B[te]))))
            else:
                from sklearn.linear_model import RidgeCV

                from sparsecell.lab.alignment import RIDGE_ALPHAS

                sa, sb = A[tr].std(axis=0), B[tr].std(axis=0)
                m = RidgeCV(alphas=RIDGE_ALPHAS).fit(A[tr] / sa, B[tr] / sb)
                P, Y = m.predict(A[te] / sa), B[te] / sb
                Pc, Yc = P - P.mean(0), Y - Y.mean(0)
                den = np.sqrt((Pc**2).sum(0) * (Yc**2).sum(0))
                per.append(float(np.mean(np.where(den > 0, (Pc * Yc).sum(0) / den, 0.0))))
        return float(np.mean(per))
    if metric in ("cka", "cka_debiased"):
        A, B = _dense(_live(A)), _dense(_live(B))
        K = (A - A.mean(0)) @ (A - A.mean(0)).T
        L = (B - B.mean(0)) @ (B - B.mean(0)).T
        if metric == "cka":
            return float(np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L)))
        n = K.shape[0]

        def hsic(K: np.ndarray, L: np.ndarray) -> float:
            K, L = K.copy(), L.copy()
            np.fill_diagonal(K, 0.0)
            np.fill_diagonal(L, 0.0)
            one = np.ones(n)
            return float(
                np.sum(K * L)
                + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
                - 2.0 / (n - 2) * (one @ K @ (L @ one))
            ) / (n * (n - 3))

        return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))
    if metric == "rsa":
        from scipy.spatial.distance import pdist
        from scipy.stats import spearmanr

        A, B = _live(A), _live(B)
        n = A.shape[0]
        idx = np.arange(n)
        if n > 3000:
            idx = np.sort(np.random.default_rng(0).choice(n, 3000, replace=False))
        return float(
            spearmanr(pdist(_dense(A[idx]), "correlation"), pdist(_dense(B[idx]), "correlation"))[0]
        )
    if metric == "procrustes":
        from scipy.linalg import orthogonal_procrustes

        A, B = _dense(_live(A)), _dense(_live(B))
        A, B = A - A.mean(0), B - B.mean(0)
        w = max(A.shape[1], B.shape[1])
        A = np.pad(A, ((0, 0), (0, w - A.shape[1])))
        B = np.pad(B, ((0, 0), (0, w - B.shape[1])))
        _, scale = orthogonal_procrustes(A, B)
        return float(scale / (np.linalg.norm(A) * np.linalg.norm(B)))
    if metric == "morans_i":
        import scanpy as sc

        from sparsecell.lab import _stats as st

        idx = st.knn_indices(st.as_matrix(A, "E"), 10)
        n = idx.shape[0]
        W = sp.csr_matrix(
            (np.full(idx.size, 0.1), (np.repeat(np.arange(n), 10), idx.ravel())), shape=(n, n)
        )
        return float(sc.metrics.morans_i(W, s))
    if metric in ("knn_ratio", "knn_overlap", "mutual_knn"):
        from sklearn.neighbors import NearestNeighbors

        def knn(X: Any) -> np.ndarray:  # float64, as ours (float32 input would stay float32)
            X = X.astype(np.float64)
            return NearestNeighbors(n_neighbors=10).fit(X).kneighbors(return_distance=False)

        def overlap(i1: np.ndarray, i2: np.ndarray) -> float:
            return float(np.mean((i1[:, :, None] == i2[:, None, :]).sum(axis=(1, 2))) / 10)

        if metric == "knn_ratio":
            return float(np.mean(np.std(s[knn(A)], axis=1, ddof=1)) / np.std(s, ddof=1))
        return overlap(knn(A), knn(R if metric == "knn_overlap" else B))
    if metric == "trustworthiness":
        from sklearn.manifold import trustworthiness

        # float64 like ours: on float32 input sklearn rounds distances to float32 (ties)
        return float(trustworthiness(R.astype(np.float64), A.astype(np.float64), n_neighbors=10))
    if metric == "effective_rank":
        X = _dense(A)
        sig = np.linalg.svd(X - X.mean(0), compute_uv=False)
        p = sig[sig > 0] / sig.sum()
        return float(np.exp(-np.sum(p * np.log(p))))
    raise ValueError(f"no reference for {metric}")


# --------------------------------------------------------------------------- one cell


def ours(metric: str, A: Any, B: Any, s: np.ndarray, R: np.ndarray, device: str = "cpu") -> float:
    from sparsecell import lab

    if metric in ALIGN:
        return float(lab.alignment(A, B, metric=metric, folds=5, seed=0, device=device))
    if metric in ("knn_overlap", "trustworthiness"):
        return float(lab.fidelity(A, R, metric=metric, k=10, device=device))
    return float(lab.fidelity(A, s, metric=metric, k=10, seed=0, device=device))


def _rss_bytes() -> int:
    # Linux reports ru_maxrss in KiB
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def worker(metric: str, impl: str, files: dict[str, str]) -> dict[str, Any]:
    A, B = _load(files["A"]), _load(files["B"])
    s, R = np.load(files["semantic"]), np.load(files["reference"])
    import sparsecell.lab  # noqa: F401  (same libraries loaded for both, so RSS compares)

    device = files.get("device", "cpu")

    def fn(*a: Any) -> float:
        return ours(*a, device=device) if impl == "sparsecell" else reference(*a)

    # warm-up on 400 rows: lazy imports and first-call costs are not the metric's
    w = slice(0, 400)
    try:
        fn(metric, A[w], B[w], s[w], R[w])
    except Exception:  # noqa: BLE001 - e.g. 400 rows leave unequal live units: not timed
        pass
    rss0 = _rss_bytes()
    c = _cpu_seconds()
    t = time.perf_counter()
    value = fn(metric, A, B, s, R)
    sec = time.perf_counter() - t
    return {
        "value": value,
        "seconds": sec,
        "cpu": _cpu_seconds() - c,
        "rss_inputs": rss0,
        "rss_peak": _rss_bytes(),
    }


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run_cell(
    metric: str,
    impl: str,
    files: dict[str, str],
    cpu_limit: float,
    wall_limit: float,
    mem_gib: float,
    threads: int | None,
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", metric, impl, json.dumps(files)]
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)

    def limits() -> None:
        if files.get("device", "cpu") == "cpu":  # CUDA reserves huge virtual memory
            mem = int((mem_gib + 2) * GIB)
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        cpu = max(1, int(cpu_limit))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))

    t = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=wall_limit,
            env=env,
            preexec_fn=limits,
        )
    except subprocess.TimeoutExpired:
        return {"skipped": f"skipped: over {wall_limit:.0f} s wall (killed)"}
    if proc.returncode in (-24, -9) and "Traceback" not in proc.stderr:
        return {"skipped": f"skipped: over {cpu_limit:.0f} CPU-s (killed)"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:160]
        if "MemoryError" in proc.stderr or "Unable to allocate" in proc.stderr:
            return {"skipped": f"skipped: out of memory ({tail})"}
        return {"skipped": f"failed: {tail}"}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall"] = time.perf_counter() - t
    return res


# --------------------------------------------------------------------------- limits


def pre_skip(metric: str, impl: str, n: int, p: int, done: dict) -> str | None:
    """Reason to skip a cell known to exceed ~10 min or ~20 GiB (None: run it)."""
    dense_bytes = n * p * 8
    if impl == "sparsecell":
        return None
    if metric not in REFERENCES:
        return "—"
    if metric in ("cka", "cka_debiased", "trustworthiness") and n * n * 8 * 3 > 20 * GIB:
        return f"skipped: n × n kernels/distances ({n * n * 8 / GIB:.0f} GiB each)"
    if metric in ("semi_matching", "soft_matching", "ridge", "procrustes", "effective_rank"):
        if dense_bytes * 4 > 20 * GIB:
            return f"skipped: dense copies of {n:,} × {p} ({dense_bytes / GIB:.1f} GiB each)"
    if metric == "ridge" and p == N_CONCEPTS:
        return (
            "skipped: RidgeCV's exact LOO on 8192 dense targets costs ~n·p·q·17 per fold "
            "(ours picks GCV here); see 512 units for the comparison"
        )
    return None


# --------------------------------------------------------------------------- report


def _fmt_cell(r: dict[str, Any] | None) -> tuple[str, str]:
    if r is None:
        return "—", "—"
    if "skipped" in r:
        return r["skipped"], ""
    return (
        f"{r['seconds']:.2f} / {r['cpu']:.2f}",
        f"{r['rss_peak'] / GIB:.2f} ({r['rss_inputs'] / GIB:.2f})",
    )


def report(results: dict, sizes: list[tuple[int, int]], args: argparse.Namespace, t0: float) -> str:
    import sparsecell

    now = dt.datetime.now(dt.UTC)
    machine = MACHINE
    if args.device != "cpu":
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU visible"
        machine = f"{os.cpu_count()} CPUs + {gpu}; sparsecell's metrics on {args.device}"
    lines = [
        f"## lab_metrics: time and peak memory of the lab metrics ({now:%Y-%m-%d %H:%M} UTC)",
        "",
        f"- Machine: {machine} (`lscpu`: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs); Python {platform.python_version()}, sparsecell "
        f"{getattr(sparsecell, '__version__', '?')}; load average at start {args.load0}",
        f"- Command: `python benchmarks/lab_metrics.py {' '.join(sys.argv[1:])}`; whole run "
        f"{(time.time() - t0) / 60:.1f} min; every cell in its own subprocess, killed after "
        f"{args.timeout:.0f} CPU-s per thread (references: {args.ref_timeout:.0f}); address "
        "space capped "
        f"at {args.mem_gib + 2:.0f} GiB; load average at end {os.getloadavg()[0]:.2f} "
        "(above 2 means other work shared the 2 cores)",
        "- Inputs: **512 units = dense CNN-like float32 embeddings** (sparse concepts superposed "
        "by a random 8192 → 512 dictionary, plus noise); **8192 units = SAE-like sparse CSR "
        "latents** (~31 of 8192 active per sample, Zipf-like concept frequencies). A and B are "
        "two such representations of the same samples (B: 25% of actives re-drawn, magnitudes "
        "jittered, units permuted). 5 folds, k = 10, `ridge_r2` PCA 250.",
        "- Columns: wall / CPU seconds (user + system, all threads) of the metric call; "
        f"BLAS/OpenMP threads per cell: {args.threads or 'default (2)'}; peak RSS of its "
        "process in GiB (in brackets: "
        "RSS after loading the inputs and a 400-row warm-up call, before the timed call); "
        "the reference is the named peer on the same inputs, `|Δ|` the absolute difference "
        "of the two values.",
        "",
        "| metric | n × units | sparsecell wall / CPU s | peak GiB (inputs) | value | reference "
        "| ref wall / CPU s "
        "| ref peak GiB | \\|Δ\\| |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for metric in METRICS:
        for n, p in sizes:
            r = results.get((metric, "sparsecell", n, p))
            q = results.get((metric, "reference", n, p))
            t, m = _fmt_cell(r)
            val = f"{r['value']:.4f}" if r and "value" in r else ""
            if metric in REFERENCES:
                rt, rm = _fmt_cell(q)
                ref = REFERENCES[metric]
            else:
                rt, rm, ref = "—", "—", "— (no separate peer)"
            if q and r and "value" in q and "value" in r:
                diff = f"{abs(q['value'] - r['value']):.1e}"
            else:
                diff = ""
            kind = "dense" if p != N_CONCEPTS else "CSR"
            lines.append(
                f"| {metric} | {n:,} × {p} ({kind}) | {t} | {m} | {val} | {ref} | {rt} | {rm} "
                f"| {diff} |"
            )
    lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument(
        "--sizes",
        default="10000x512,10000x8192,100000x512,100000x8192",
        help="comma-separated NxUNITS cells (units 512: dense; 8192: sparse CSR)",
    )
    ap.add_argument("--quick", action="store_true", help="sizes 2000x512,2000x8192, 120 s limit")
    ap.add_argument("--metrics", default=",".join(METRICS), help="comma-separated subset")
    ap.add_argument(
        "--timeout", type=float, default=300.0, help="CPU seconds per thread per sparsecell cell"
    )
    ap.add_argument(
        "--ref-timeout", type=float, default=120.0, help="CPU seconds per thread per reference cell"
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="BLAS/OpenMP threads per cell (default: all)"
    )
    ap.add_argument(
        "--budget-min", type=float, default=25.0, help="minutes for the whole run; later cells skip"
    )
    ap.add_argument("--mem-gib", type=float, default=20.0, help="memory limit per cell (GiB)")
    ap.add_argument("--no-reference", action="store_true", help="skip the peers")
    ap.add_argument(
        "--device", default="cpu", help="device of sparsecell's metrics: cpu, cuda (peers: CPU)"
    )
    ap.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    if args.worker:
        metric, impl, files = args.worker
        print(json.dumps(worker(metric, impl, json.loads(files))))
        return
    t0 = time.time()
    args.load0 = f"{os.getloadavg()[0]:.2f}"
    if args.quick:
        args.sizes = "2000x512,2000x8192"
        args.timeout = min(args.timeout, 120.0)
        args.ref_timeout = min(args.ref_timeout, 60.0)
    sizes = [tuple(int(v) for v in c.lower().split("x")) for c in args.sizes.split(",")]
    metrics = [m for m in args.metrics.split(",") if m]
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        sys.exit(f"unknown metric(s) {bad}; choose among {METRICS}")
    results: dict[tuple[str, str, int, int], dict[str, Any]] = {}
    impls = ["sparsecell"] + ([] if args.no_reference else ["reference"])
    with tempfile.TemporaryDirectory(prefix="lab_metrics-") as tmp:
        for n, p in sorted(sizes):
            folder = Path(tmp) / f"{n}x{p}"
            folder.mkdir()
            files = {**make_inputs(n, p, folder), "device": args.device}
            for metric in metrics:
                for impl in impls:
                    why = pre_skip(metric, impl, n, p, results)
                    if why == "—":
                        continue
                    left = args.budget_min * 60 - (time.time() - t0)
                    cpu = args.timeout if impl == "sparsecell" else args.ref_timeout
                    cpu *= args.threads or 2
                    if not why and left < 5:
                        why = f"skipped: run budget of {args.budget_min:g} min spent"
                    r = (
                        {"skipped": why}
                        if why
                        else run_cell(
                            metric, impl, files, cpu, min(4 * cpu, left), args.mem_gib, args.threads
                        )
                    )
                    results[(metric, impl, n, p)] = r
                    t, m = _fmt_cell(r)
                    print(f"{metric:16s} {impl:10s} {n:>7,}x{p:<5} {t:>8} s  {m}", flush=True)
    text = report(results, [s for s in sizes], args, t0)
    print(text)
    if not args.no_append:
        with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
