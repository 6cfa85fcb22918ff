"""Benchmark: GW-map's quantized large-scale path at 100k × 100k cells, vs the dense solver.

Run by hand (``python benchmarks/gwmap_large.py [--n 100000] [--quick]``); not a test.

Data (ground truth known): ``phantom_factors(n)`` draws per-cell causes (genotype, line,
progression, death, organelle states, ...). The **RNA side** is
``simulate_scrna(factors=...)`` (negative-binomial counts from gene programs driven by
those factors) → ``normalize_total`` (1e4) → ``log1p`` → PCA 30. The **image side** is a
fixed random two-layer tanh network of the same factors (numeric ``gt_`` columns,
``log1p`` for counts, z-scored, plus the genotype one-hot) to 64 features, plus Gaussian
noise (10 % of the feature sd), → PCA 30: a stand-in for image-embedding PCA that shares
the causes but not the features. Cell ``i`` of one side and cell ``i`` of the other share
their factors (the truth for FOSCTTM); labels are the genotype.

In one run:

* at ``--dense-n`` (default 2,000 and 5,000; the first cells of the same data) the dense
  torch solver (``solve(method="dense")``, the reference) and the quantized path
  (``solve(method="quantized")``), both on the same geometries and ε;
* at ``--n`` (default 100,000) the quantized path alone, in a fresh process (peak
  memory = that process's ``VmHWM``; ``ru_maxrss`` where ``/proc`` is missing), with
  its per-phase timings; plus, from the same coarse coupling, the cluster-level
  coupling (cells spread uniformly over their cluster pair, Chowdhury et al.'s quantised
  GW without refinement) as a baseline.

Accuracy: FOSCTTM of the barycentric co-embedding (image cells projected into the RNA
PCA space through the coupling; at 100k on 5,000 sampled pairs, exact per pair),
and genotype transfer accuracy (coupling-weighted vote). Figures are printed and
appended to ``--out`` (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

MACHINE = "2-core AMD EPYC CPU, AVX512-BF16, 24 GiB, no GPU"
DATE = "2026-11-24"


# --------------------------------------------------------------------------- data


def make_data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Image PCA-30, RNA PCA-30 and genotype codes for ``n`` cells sharing their factors."""
    import pandas as pd
    from sklearn.decomposition import PCA

    from sparsecell.datasets.phantom import phantom_factors
    from sparsecell.datasets.scrna import simulate_scrna

    t0 = time.perf_counter()
    f = phantom_factors(n, seed=seed)
    rna = simulate_scrna(factors=f, n_genes=2000, seed=seed)
    Xc = rna.X.tocsr().astype(np.float32)
    tot = np.asarray(Xc.sum(1)).ravel()
    Xc = sp.diags((1e4 / np.maximum(tot, 1.0)).astype(np.float32)) @ Xc
    Xc.data = np.log1p(Xc.data)
    dense = Xc.toarray()
    del Xc, rna
    R = PCA(30, svd_solver="randomized", random_state=seed).fit_transform(dense)
    del dense
    num = [c for c in f.columns if c.startswith("gt_")]
    F = f[num].to_numpy(dtype=np.float64)
    counts = np.array([pd.api.types.is_integer_dtype(f[c]) for c in num])
    F[:, counts] = np.log1p(np.maximum(F[:, counts], 0))
    F = (F - F.mean(0)) / np.maximum(F.std(0), 1e-9)
    geno = f["genotype"].astype("category")
    onehot = np.eye(len(geno.cat.categories))[geno.cat.codes.to_numpy()]
    Z = np.hstack([F, 2.0 * onehot])
    rng = np.random.default_rng(seed + 1)
    W1 = rng.normal(0.0, 1.0 / np.sqrt(Z.shape[1]), (Z.shape[1], 128))
    W2 = rng.normal(0.0, 1.0 / np.sqrt(128), (128, 64))
    V = np.tanh(Z @ W1) @ W2
    V += rng.normal(0.0, 0.1 * V.std(), V.shape)
    Im = PCA(30, svd_solver="randomized", random_state=seed).fit_transform(V)
    print(f"data: {n} cells per side in {time.perf_counter() - t0:.1f} s", flush=True)
    return {
        "img": Im.astype(np.float64),
        "rna": R.astype(np.float64),
        "labels": geno.cat.codes.to_numpy().astype(np.int64),
    }


# --------------------------------------------------------------------------- metrics


def accuracy(T, Y: np.ndarray, labels: np.ndarray, n_pairs: int | None, seed: int) -> dict:
    """Co-embedding FOSCTTM (on ``n_pairs`` sampled pairs, or all) and label transfer."""
    from sparsecell.gwmap.metrics import foscttm, label_transfer_accuracy

    T = sp.csr_matrix(T)
    n = T.shape[0]
    rs = np.asarray(T.sum(1)).ravel()
    Xh = np.asarray(T @ Y) / rs[:, None]
    truth = np.arange(n)
    if n_pairs is not None and n_pairs < n:
        keep = np.random.default_rng(seed).choice(n, n_pairs, replace=False)
        truth = np.full(n, -1)
        truth[keep] = keep
    f = foscttm(Xh, Y, truth=truth)
    k = int(labels.max()) + 1
    votes = np.asarray(T @ np.eye(k)[labels])
    acc = label_transfer_accuracy(votes.argmax(1), labels)
    return {"foscttm": float(f), "label_acc": float(acc)}


def block_coupling(coarse: dict, n: int, m: int) -> tuple:
    """Factors (Ax, Pn, Ay) of T = Ax Pn Ayᵀ, T_ij = P_pq / (|p| |q|): cells spread uniformly."""
    P, lx, ly = coarse["coupling"], coarse["labels_x"], coarse["labels_y"]
    Kx, Ky = P.shape
    Ax = sp.csr_matrix((np.ones(n), (np.arange(n), lx)), shape=(n, Kx))
    Ay = sp.csr_matrix((np.ones(m), (np.arange(m), ly)), shape=(m, Ky))
    cx = np.bincount(lx, minlength=Kx).astype(float)
    cy = np.bincount(ly, minlength=Ky).astype(float)
    Pn = P / np.outer(cx, cy)
    # returned factored: rows of T @ Y = Ax Pn Ay^T Y, never n × m
    return Ax, sp.csr_matrix(Pn), Ay


def block_accuracy(coarse: dict, Y: np.ndarray, labels: np.ndarray, n_pairs, seed) -> dict:
    from sparsecell.gwmap.metrics import foscttm, label_transfer_accuracy

    n = labels.size
    Ax, Pn, Ay = block_coupling(coarse, n, Y.shape[0])
    TY = Ax @ (Pn @ (Ay.T @ Y))
    rs = np.asarray(Ax @ (Pn @ np.asarray(Ay.sum(0)).ravel())).ravel()
    Xh = TY / rs[:, None]
    keep = np.random.default_rng(seed).choice(n, min(n_pairs or n, n), replace=False)
    truth = np.full(n, -1)
    truth[keep] = keep
    f = foscttm(Xh, Y, truth=truth)
    k = int(labels.max()) + 1
    votes = Ax @ (Pn @ (Ay.T @ np.eye(k)[labels]))
    return {
        "foscttm": float(f),
        "label_acc": float(label_transfer_accuracy(np.asarray(votes).argmax(1), labels)),
    }


# --------------------------------------------------------------------------- solving


def geometries(d: dict, n: int, cost: str):
    from sparsecell.gwmap.geometry import Geometry, geometry

    if cost == "sqeuclidean":
        return geometry(d["img"][:n]), geometry(d["rna"][:n])
    if n <= 6000:
        return geometry(d["img"][:n], cost=cost), geometry(d["rna"][:n], cost=cost)
    # large: points only (the quantized path never materialises n × n)
    return (
        Geometry(cost, d["img"][:n], None, 1.0, k=15),
        Geometry(cost, d["rna"][:n], None, 1.0, k=15),
    )


def peak_rss_gib() -> float:
    """This process's peak resident memory in GiB.

    ``VmHWM`` (reset at exec) where ``/proc`` exists: ``ru_maxrss`` of a child started
    with ``subprocess`` inherits the parent's high-water mark on Linux, so it would report
    the data generator's peak, not the solver's.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _quantized_kw(a: dict) -> dict:
    """The quantized path's refinement options from the command line (or the worker's JSON)."""
    return {
        "max_partners": a["max_partners"] or None,
        "refine": not a["no_refine"],
        "refine_epsilon": a["refine_epsilon"],
    }


def worker(path: str, args_json: str) -> None:
    """Fresh process: load the data, run the quantized solve, report timings and RSS."""
    import torch

    from sparsecell.gwmap.solve import solve

    a = json.loads(args_json)
    torch.set_num_threads(a["threads"])
    z = np.load(path)
    d = {"img": z["img"], "rna": z["rna"]}
    rss0 = peak_rss_gib()
    gx, gy = geometries(d, a["n"], a["cost"])
    t0 = time.perf_counter()
    sol = solve(
        gx,
        gy,
        epsilon=a["epsilon"],
        method="quantized",
        n_clusters=a["K"],
        k=a["k"],
        seed=0,
        return_coarse=True,
        **_quantized_kw(a),
    )
    wall = time.perf_counter() - t0
    rss = peak_rss_gib()
    out = Path(a["out"])
    sp.save_npz(out / "T.npz", sol.coupling)
    c = sol.params.pop("coarse")
    np.savez(
        out / "coarse.npz", coupling=c["coupling"], labels_x=c["labels_x"], labels_y=c["labels_y"]
    )
    sol.params.pop("coarse_params", None)
    rec = {
        "wall_s": wall,
        "peak_rss_gib": rss,
        "rss_after_load_gib": rss0,
        "params": sol.params,
        "objective": sol.objective,
        "converged": sol.converged,
        "n_iter": sol.n_iter,
        "warnings": sol.warnings,
        "nnz": int(sol.coupling.nnz),
    }
    (out / "rec.json").write_text(json.dumps(rec, default=float))


def run_worker(d: dict, n: int, a: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="gwmap_large-") as tmp:
        p = Path(tmp) / "data.npz"
        np.savez(p, img=d["img"][:n], rna=d["rna"][:n])
        aa = dict(a, n=n, out=tmp)
        subprocess.run([sys.executable, __file__, "--worker", str(p), json.dumps(aa)], check=True)
        rec = json.loads((Path(tmp) / "rec.json").read_text())
        T = sp.load_npz(Path(tmp) / "T.npz")
        z = np.load(Path(tmp) / "coarse.npz")
        coarse = {k: z[k] for k in z.files}
    return rec, T, coarse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dense-n", type=str, default="2000,5000")
    ap.add_argument("--quick", action="store_true", help="n=10,000, dense at 2,000 only")
    ap.add_argument("--cost", default="sqeuclidean")
    ap.add_argument("--epsilon", type=float, default=5e-3)
    ap.add_argument("--K", type=int, default=None, help="anchors (default: auto)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-partners", type=int, default=32, help="quantized: 0 = uncapped")
    ap.add_argument("--no-refine", action="store_true", help="quantized: cluster-level only")
    ap.add_argument("--refine-epsilon", type=float, default=0.05)
    ap.add_argument("--pairs", type=int, default=5000, help="FOSCTTM pairs at large n")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    import torch

    torch.set_num_threads(args.threads)
    from sparsecell.gwmap.solve import solve

    if args.quick:
        args.n, args.dense_n = 10_000, "2000"
    dense_ns = [int(v) for v in args.dense_n.split(",") if v]
    t_start = time.perf_counter()
    d = make_data(max([args.n, *dense_ns]), seed=0)
    rows = []
    for n in dense_ns:
        gx, gy = geometries(d, n, args.cost)
        lab = d["labels"][:n]
        Y = d["rna"][:n]
        t0 = time.perf_counter()
        ds = solve(gx, gy, epsilon=args.epsilon, method="dense", seed=0)
        td = time.perf_counter() - t0
        acc_d = accuracy(ds.coupling, Y, lab, None, 0)
        rows.append(
            (
                "dense (torch, reference)",
                n,
                td,
                None,
                acc_d,
                ds.objective,
                f"{n}×{n} dense; converged={ds.converged}, {ds.n_iter} it",
            )
        )
        print(rows[-1], flush=True)
        t0 = time.perf_counter()
        qs = solve(
            gx,
            gy,
            epsilon=args.epsilon,
            method="quantized",
            n_clusters=args.K,
            k=args.k,
            seed=0,
            **_quantized_kw(vars(args)),
        )
        tq = time.perf_counter() - t0
        acc_q = accuracy(qs.coupling, Y, lab, None, 0)
        K = qs.params["n_clusters"]
        rows.append(
            (
                "quantized",
                n,
                tq,
                None,
                acc_q,
                qs.objective,
                f"K={K[0]}/{K[1]}, k={args.k}, nnz={qs.coupling.nnz:,}",
            )
        )
        print(rows[-1], flush=True)

    wa = {
        "threads": args.threads,
        "cost": args.cost,
        "epsilon": args.epsilon,
        "K": args.K,
        "k": args.k,
        "max_partners": args.max_partners,
        "no_refine": args.no_refine,
        "refine_epsilon": args.refine_epsilon,
    }
    rec, T, coarse = run_worker(d, args.n, wa)
    Y = d["rna"][: args.n]
    lab = d["labels"][: args.n]
    acc_big = accuracy(T, Y, lab, args.pairs, 0)
    acc_blk = block_accuracy(coarse, Y, lab, args.pairs, 0)
    K = rec["params"]["n_clusters"]
    tm = rec["params"]["timings"]
    rows.append(
        (
            "quantized",
            args.n,
            rec["wall_s"],
            rec["peak_rss_gib"],
            acc_big,
            rec["objective"],
            f"K={K[0]}/{K[1]}, k={args.k}, nnz={rec['nnz']:,}",
        )
    )
    rows.append(
        (
            "cluster-level coupling (same coarse P, no refinement)",
            args.n,
            None,
            None,
            acc_blk,
            None,
            "baseline: Chowdhury et al. 2021 without the refinement",
        )
    )
    print(json.dumps(rec, indent=1, default=float), flush=True)
    for r in rows:
        print(r, flush=True)
    load = os.getloadavg()[0]
    total = time.perf_counter() - t_start

    lines = [
        "",
        f"## GW-map large-scale path (`benchmarks/gwmap_large.py`), {DATE}",
        "",
        f"- Machine: {MACHINE} ({platform.processor() or platform.machine()}); "
        f"torch threads {args.threads}; load average at end {load:.2f} (above 2 means the "
        "cores were shared with other jobs during the run)",
        f"- Command: `python benchmarks/gwmap_large.py --n {args.n} --dense-n {args.dense_n}"
        f" --cost {args.cost} --epsilon {args.epsilon} --k {args.k}"
        f"{f' --K {args.K}' if args.K else ''} --max-partners "
        f"{args.max_partners} --refine-epsilon {args.refine_epsilon}"
        f"{' --no-refine' if args.no_refine else ''}`; whole run {total:.0f} s",
        "- Data: `phantom_factors` → RNA: `simulate_scrna` counts → normalise, log1p, PCA 30; "
        "image: random tanh network of the same factors (+10 % noise) → PCA 30; truth = same "
        "factor row; labels = genotype. FOSCTTM of the barycentric co-embedding in RNA PCA "
        f"space (all pairs at dense sizes, {args.pairs:,} sampled pairs at {args.n:,}); "
        "label = genotype transfer accuracy (coupling-weighted vote).",
        "",
        "| method | cells per side | seconds | peak RSS GiB | FOSCTTM ↓ | label acc ↑ "
        "| GW objective | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, n, t, rss, acc, obj, note in rows:
        lines.append(
            f"| {name} | {n:,} | {'–' if t is None else f'{t:.1f}'} | "
            f"{'–' if rss is None else f'{rss:.2f}'} | {acc['foscttm']:.4f} | "
            f"{acc['label_acc']:.3f} | {'–' if obj is None else f'{obj:.4g}'} | {note} |"
        )
    lines += [
        "",
        f"- {args.n:,}-cell phases (s): "
        + ", ".join(f"{k.removesuffix('_s')} {v:.1f}" for k, v in tm.items()),
        f"- peak RSS of the fresh solve process {rec['peak_rss_gib']:.2f} GiB (after loading "
        f"the data {rec['rss_after_load_gib']:.2f} GiB); the dense coupling alone would be "
        f"{args.n**2 * 4 / 2**30:.0f} GiB in float32",
        f"- objective at {args.n:,}: {rec['params']['objective_kind']}; coarse converged="
        f"{rec['converged']} after {rec['n_iter']} outer iterations; warnings: "
        f"{'; '.join(rec['warnings']) or 'none'}",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_append:
        with open(args.out, "a") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
