"""GW-map solvers: sparsecell's torch solver vs POT's entropic_gromov_wasserstein.

Same inputs for both: two views of one latent trajectory (6 clusters along a curve in 4-D;
view X = tanh of a random 30-D map + noise, view Y = a random linear 20-D map + noise; cell
i of X is cell i of Y), the same mean-scaled costs, the same ε, uniform marginals.
Reported: wall time, outer iterations, FOSCTTM (``sparsecell.gwmap.metrics.foscttm``,
0 = perfect, 0.5 = chance) and label-transfer accuracy (label of each image cell's
argmax partner). POT is run on the dense squared-euclidean matrices (float64, its defaults:
non-log Sinkhorn, max_iter 1000, tol 1e-9); sparsecell in float32 with the factored
squared-euclidean cost, and on dense kNN-geodesic costs (k = 15).

    python benchmarks/gwmap.py --sizes 2000,5000 --pot-sizes 2000 [--device cuda] [--append]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sparsecell.gwmap.geometry import geometry
from sparsecell.gwmap.metrics import foscttm, label_transfer_accuracy
from sparsecell.gwmap.solve import solve

RESULTS = Path(__file__).with_name("RESULTS.md")


def shared_latent(n: int, seed: int = 0, dx: int = 30, dy: int = 20, noise: float = 0.1):
    """Two views of one latent trajectory; returns X, Y, cluster labels (truth: identity)."""
    rng = np.random.default_rng(seed)
    # unequal cluster sizes: a trajectory with equal sizes has a mirror-image GW optimum
    # (t -> 1 - t) as good as the true one; real cell populations are not that symmetric
    lab = rng.choice(6, size=n, p=[0.3, 0.22, 0.16, 0.13, 0.11, 0.08])
    t = (lab + rng.random(n)) / 6
    z = np.stack([np.cos(3 * t), np.sin(3 * t), 2 * t, 0.5 * np.sin(7 * t)], 1)
    z = z + noise * rng.normal(size=z.shape)
    X = np.tanh(z @ rng.normal(size=(4, dx)) / 2) + 0.05 * rng.normal(size=(n, dx))
    Y = z @ rng.normal(size=(4, dy)) + 0.05 * rng.normal(size=(n, dy))
    return X, Y, lab


def _row(name, n, eps, seconds, iters, T, lab, note=""):
    if T is None:
        return dict(name=name, n=n, eps=eps, s=seconds, it=iters, fos=None, lta=None, note=note)
    T = np.asarray(T, dtype=np.float64)
    return dict(
        name=name,
        n=n,
        eps=eps,
        s=seconds,
        it=iters,
        fos=foscttm(T),
        lta=label_transfer_accuracy(lab[T.argmax(1)], lab),
        note=note,
    )


def run_pot(Cx, Cy, eps):
    import ot

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as rec, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        T, lg = ot.gromov.entropic_gromov_wasserstein(Cx, Cy, epsilon=eps, log=True)
    dt = time.perf_counter() - t0
    msgs = sorted({str(w.message)[:60] for w in rec})
    ok = np.all(np.isfinite(T)) and abs(T.sum() - 1.0) < 1e-3
    return dt, len(lg["err"]) * 10, (T if ok else None), ("; ".join(msgs) if not ok else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000,5000")
    ap.add_argument("--pot-sizes", default=None, help="sizes at which POT runs (default all)")
    ap.add_argument("--epsilon", type=float, default=1e-2)
    ap.add_argument("--paper-epsilon", type=float, default=1.5e-3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--append", action="store_true", help="append a section to RESULTS.md")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.device.startswith("cuda"):
        sizes += [s for s in (12_000, 20_000) if s not in sizes]
    pot_sizes = sizes if args.pot_sizes is None else [int(s) for s in args.pot_sizes.split(",")]
    eps, peps = args.epsilon, args.paper_epsilon
    rows = []
    for n in sizes:
        X, Y, lab = shared_latent(n)
        gx, gy = geometry(X), geometry(Y)
        kw = dict(device=args.device, max_iter=200, anneal=True)
        t0 = time.perf_counter()
        s = solve(gx, gy, epsilon=eps, **kw)
        rows.append(
            _row(
                "sparsecell torch f32, sqeuclidean (factored), anneal",
                n,
                eps,
                time.perf_counter() - t0,
                s.n_iter,
                s.coupling,
                lab,
                "" if s.converged else "not converged",
            )
        )
        print(rows[-1], flush=True)
        t0 = time.perf_counter()
        kx = geometry(X, cost="knn_geodesic", k=15)
        ky = geometry(Y, cost="knn_geodesic", k=15)
        t_geo = time.perf_counter() - t0
        for e in (eps, peps):
            t0 = time.perf_counter()
            s = solve(kx, ky, epsilon=e, **kw)
            rows.append(
                _row(
                    "sparsecell torch f32, kNN-geodesic (dense), anneal",
                    n,
                    e,
                    time.perf_counter() - t0,
                    s.n_iter,
                    s.coupling,
                    lab,
                    f"+{t_geo:.1f} s for the two geodesic costs"
                    + ("" if s.converged else "; not converged"),
                )
            )
            print(rows[-1], flush=True)
        if n in pot_sizes:
            Cx, Cy = gx.dense(), gy.dense()
            for e in (eps, 2 * eps, 4 * eps):  # POT's non-log Sinkhorn may underflow
                dt, it, T, note = run_pot(Cx, Cy, e)
                name = "POT entropic_gromov_wasserstein f64, sqeuclidean"
                rows.append(_row(name, n, e, dt, it, T, lab, note))
                print(rows[-1], flush=True)
                if T is not None:
                    break
            if e != eps:  # ours at the ε where POT works too
                t0 = time.perf_counter()
                s = solve(gx, gy, epsilon=e, **kw)
                name = "sparsecell torch f32, sqeuclidean (factored), anneal"
                note = "" if s.converged else "not converged"
                dt = time.perf_counter() - t0
                rows.append(_row(name, n, e, dt, s.n_iter, s.coupling, lab, note))
                print(rows[-1], flush=True)
            dt, it, T, note = run_pot(kx.dense(), ky.dense(), peps)
            rows.append(
                _row(
                    "POT entropic_gromov_wasserstein f64, kNN-geodesic",
                    n,
                    peps,
                    dt,
                    it,
                    T,
                    lab,
                    note or "",
                )
            )
            print(rows[-1], flush=True)
    table = _table(rows)
    print(table)
    if args.append:
        with open(RESULTS, "a") as fh:
            fh.write(_section(table, args))


def _table(rows) -> str:
    out = [
        "| solver | n | ε | seconds | outer it. | FOSCTTM ↓ | label transfer ↑ | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        fos = "failed" if r["fos"] is None else f"{r['fos']:.4f}"
        lta = "–" if r["lta"] is None else f"{r['lta']:.3f}"
        out.append(
            f"| {r['name']} | {r['n']:,} | {r['eps']:g} | {r['s']:.1f} | {r['it']} | {fos} | "
            f"{lta} | {r['note']} |"
        )
    return "\n".join(out)


def _section(table: str, args) -> str:
    dev = (
        torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else ("2-core AMD EPYC CPU, AVX512-BF16, 24 GiB, no GPU")
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"\n## GW-map solvers vs POT ({datetime.date(2026, 11, 24).isoformat()}, {dev})\n\n"
        f"`python benchmarks/gwmap.py --sizes {args.sizes} --pot-sizes {args.pot_sizes} "
        f"--device {args.device}`; torch {torch.__version__}, Python {platform.python_version()}"
        f"; machine load average at the end {load:.1f} (other jobs were running: absolute "
        "times are inflated, both solvers ran under the same load in the same run).\n"
        "Data: two views (30-D tanh map, 20-D linear map, noise) of one 4-D latent "
        "trajectory with 6 clusters of unequal sizes, truth = identity; mean-scaled costs; "
        "uniform marginals. "
        "FOSCTTM from `sparsecell.gwmap.metrics.foscttm`; label transfer = cluster of each "
        "row's argmax partner.\n\n" + table + "\n"
    )


if __name__ == "__main__":
    main()
