"""Simulated scRNA-seq counts driven by the phantom's ground-truth factors.

``simulate_scrna`` gives the RNA side of GW-map a partner whose truth is known: the same
causes that shape the phantom images (genotype, patient line, disease progression, cell
death, mitochondrial and lysosomal states, neurite integrity) drive gene programs here.
Image cells and RNA cells share no features, only those causes.

Generative model
----------------
For cell ``c`` and gene ``g`` of program ``p(g)``::

    a_pc   = clip(driver_p(factors_c), -4, 4)         # program activity (fixed transforms)
    log μ_gc = β_g + w_g · a_{p(g) c} + λ_{line(c), g} + log s_c
    X_gc   ~ NegativeBinomial(mean μ_gc, dispersion φ_g)   # Gamma-Poisson mixture

* ``β_g``: log baseline expression, ``N(log 0.35, 1.1)`` (housekeeping genes
  ``N(log 4, 0.6)``), so most genes are lowly expressed and counts are sparse.
* ``w_g``: loading of the gene on its program, ``|N(0.9, 0.3)|`` with a random sign
  (about 25 % of the genes of a program go down when it goes up; death genes all go up).
* Drivers are *fixed* transforms of the factors, centred and scaled to the phantom's
  typical ranges (not re-standardised per data set, so a cell's expected profile does
  not depend on which other cells are simulated):

  ============  ===================================================================
  program       driver
  ============  ===================================================================
  ``<GENO>``    1 for cells of that genotype (one program per non-reference
                genotype: ``SNCA_01``, ``GBA_01``, ``LRRK2_01``, ...)
  ``PROG``      ``(gt_progression - 0.35) / 0.2`` (disease progression)
  ``STRESS``    ``(logit gt_death_hazard + 2.3) / 0.8`` (integrated stress response)
  ``DEATH``     ``gt_death_stage / 0.3`` (apoptosis; the cell is dying)
  ``MITO``      ``(gt_mito_potential - 0.9) / 0.15`` (OXPHOS / membrane potential)
  ``MITODYN``   ``(logit gt_mito_fragmentation + 1.0) / 1.0`` (fission over fusion)
  ``LYSO``      mean of ``(log1p gt_lyso_count - 2.7) / 0.35`` and
                ``log gt_lyso_size / 0.15`` (lysosomal biogenesis, CLEAR network)
  ``AUTO``      ``log1p(gt_autophagosomes + gt_lipofuscin) - 0.4`` (autophagy)
  ``CA_AIS``    mean of ``(logit gt_neurite_integrity - 1.6) / 1.3`` and
                ``log(gt_neurite_length / 70) / 0.3`` (calcium signalling and
                axon-initial-segment scaffold: neuronal maturity)
  ``INCL``      ``gt_inclusion / 2`` (proteostasis / aggregation)
  ``HK``        none (housekeeping: high, stable expression)
  ``GENE``      none (background genes: noise only)
  ============  ===================================================================

  A missing factor column leaves its program inactive (activity 0), with a warning.
* ``λ_{line, g}``: patient-line effects, ``N(0, 0.25)`` on ``LINE_`` genes and
  ``N(0, 0.05)`` on all other genes, drawn from (seed, line name) so a line has the same
  effect in every simulation with that seed.
* ``s_c``: library size, log-normal (sd 0.35) around ``depth / Σ_g exp(β_g)``, shrunk by
  ``1 - 0.5 · gt_death_stage`` in dying cells.
* ``φ_g``: gene-wise dispersion (variance ``μ + φ μ²``), log-normal (sd 0.5) around
  0.3 for program and background genes and 0.05 for housekeeping genes.

``obs`` holds the factors (all columns of ``factors``) and ``source``
(see below); ``obsm["X_programs"]`` holds the program activities ``a`` (the true
low-dimensional state of each cell). ``source`` is
the factors' index: RNA cell ``i`` and row ``i`` of ``factors`` share their causes,
which is the ground truth for alignment.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import SparsecellError

log = logging.getLogger(__name__)

_CHUNK = 4096  # cells per generated block; fixed, so results never depend on memory

# relative share of the genes, per program (genotype programs share _GENO_SHARE)
_SHARES = {
    "PROG": 0.04,
    "STRESS": 0.03,
    "DEATH": 0.03,
    "MITO": 0.04,
    "MITODYN": 0.02,
    "LYSO": 0.04,
    "AUTO": 0.02,
    "CA_AIS": 0.03,
    "INCL": 0.015,
    "LINE": 0.03,
    "HK": 0.10,
}
_GENO_SHARE = 0.02
_MIN_GENES = 3  # genes per program at least


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def _col(factors: pd.DataFrame, key: str) -> np.ndarray | None:
    if key not in factors.columns:
        return None
    v = pd.to_numeric(factors[key], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise SparsecellError(
            f"factor column '{key}' holds NaN, inf or non-numbers", "fill or drop those cells"
        )
    return v


def _drivers(factors: pd.DataFrame) -> tuple[dict[str, np.ndarray], list[str]]:
    """Program activities from the factor columns (fixed transforms) and missing columns."""
    n = len(factors)
    missing: list[str] = []

    def get(key):
        v = _col(factors, key)
        if v is None:
            missing.append(key)
        return v

    def mean_of(*parts):
        parts = [p for p in parts if p is not None]
        return np.mean(parts, axis=0) if parts else np.zeros(n)

    prog = get("gt_progression")
    hazard = get("gt_death_hazard")
    stage = get("gt_death_stage")
    pot = get("gt_mito_potential")
    frag = get("gt_mito_fragmentation")
    lcount = get("gt_lyso_count")
    lsize = get("gt_lyso_size")
    auto = get("gt_autophagosomes")
    lipo = get("gt_lipofuscin")
    integ = get("gt_neurite_integrity")
    length = get("gt_neurite_length")
    incl = get("gt_inclusion")
    zero = np.zeros(n)
    a = {
        "PROG": (prog - 0.35) / 0.2 if prog is not None else zero,
        "STRESS": (_logit(hazard) + 2.3) / 0.8 if hazard is not None else zero,
        "DEATH": stage / 0.3 if stage is not None else zero,
        "MITO": (pot - 0.9) / 0.15 if pot is not None else zero,
        "MITODYN": (_logit(frag) + 1.0) if frag is not None else zero,
        "LYSO": mean_of(
            (np.log1p(lcount) - 2.7) / 0.35 if lcount is not None else None,
            np.log(np.maximum(lsize, 1e-3)) / 0.15 if lsize is not None else None,
        ),
        "AUTO": (
            np.log1p((auto if auto is not None else 0) + (lipo if lipo is not None else 0)) - 0.4
            if auto is not None or lipo is not None
            else zero
        ),
        "CA_AIS": mean_of(
            (_logit(integ) - 1.6) / 1.3 if integ is not None else None,
            np.log(np.maximum(length, 1e-3) / 70.0) / 0.3 if length is not None else None,
        ),
        "INCL": incl / 2.0 if incl is not None else zero,
    }
    return {k: np.clip(v, -4.0, 4.0) for k, v in a.items()}, missing


def _gene_name(prefix: str, i: int, n: int) -> str:
    width = max(2, len(str(n)))
    return f"{prefix}_{i + 1:0{width}d}"


def _program_prefix(label: str) -> str:
    s = "".join(ch if ch.isalnum() else "_" for ch in str(label).upper()).strip("_")
    return s or "GENO"


def simulate_scrna(
    n_cells: int | None = None,
    *,
    factors: pd.DataFrame | None = None,
    n_genes: int = 2000,
    depth: float = 3000.0,
    reference: str | None = None,
    seed: int = 0,
    **phantom_kw: Any,
) -> Any:
    """Simulate scRNA-seq counts whose gene programs follow the phantom's ground truth.

    See the module docstring for the generative model (negative-binomial counts from
    gene programs driven by genotype, line, progression, death and organelle states,
    plus housekeeping and background genes).

    Parameters
    ----------
    n_cells
        Number of cells. With ``factors`` it defaults to (and must equal) its length.
    factors
        Per-cell ground-truth factors, e.g. ``phantom(...).obs`` or
        :func:`sparsecell.datasets.phantom_factors`. Needs a ``genotype`` column;
        ``line`` and the ``gt_`` columns listed in the module docstring drive their
        programs when present. Default: ``phantom_factors(n_cells, seed=seed)``.
    n_genes
        Number of genes (at least enough for three genes per program, about 40).
    depth
        Mean total counts (UMIs) per cell.
    reference
        The genotype without a program of its own (default ``"Control"`` when present,
        else the first category).
    seed
        Random seed; the same seed and factors give identical counts.
    **phantom_kw
        Passed to :func:`phantom_factors` when ``factors`` is None (``genotypes``,
        ``lines_per_genotype``, ``plates``).

    Returns
    -------
    anndata.AnnData
        ``X``: CSR float32 counts (integer values), cells × genes. ``obs``: ``source``
        (the factors' index) and every factor column (``genotype`` categorical,
        ``line``, ``gt_...``). ``var``: ``program``, ``loading``, ``base_mean``,
        ``dispersion``. ``obsm["X_programs"]``: program activities (cells × programs,
        names in ``uns["simulate_scrna"]["programs"]``). ``uns["simulate_scrna"]``:
        ``params``, ``programs``, ``missing_factors``.
    """
    import anndata as ad

    from .phantom import phantom_factors

    if not isinstance(seed, int | np.integer) or seed < 0:
        raise SparsecellError(f"seed={seed!r} is not a non-negative integer", "pass seed >= 0")
    given = factors is not None
    if factors is None:
        if n_cells is None:
            n_cells = 2000
        if not isinstance(n_cells, int | np.integer) or n_cells < 1:
            raise SparsecellError(f"n_cells={n_cells!r} is not a positive integer", "pass >= 1")
        factors = phantom_factors(int(n_cells), seed=int(seed), **phantom_kw)
    else:
        if phantom_kw:
            raise SparsecellError(
                f"unexpected arguments {sorted(phantom_kw)} with factors=",
                "they only apply when simulate_scrna draws the factors itself",
            )
        if not isinstance(factors, pd.DataFrame) or len(factors) == 0:
            raise SparsecellError("factors must be a non-empty pandas DataFrame", "pass obs")
        if n_cells is not None and n_cells != len(factors):
            raise SparsecellError(
                f"n_cells={n_cells} but factors has {len(factors)} rows",
                "leave n_cells out or subset the factors",
            )
    if "genotype" not in factors.columns:
        raise SparsecellError("factors has no 'genotype' column", "pass the phantom's obs")
    n = len(factors)
    if not isinstance(n_genes, int | np.integer):
        raise SparsecellError(f"n_genes={n_genes!r} is not an integer", "pass an integer")
    if not (isinstance(depth, int | float) and np.isfinite(depth) and depth > 0):
        raise SparsecellError(f"depth={depth!r} is not a positive number", "e.g. depth=3000")

    geno = factors["genotype"]
    cats = list(geno.cat.categories) if hasattr(geno, "cat") else sorted(pd.unique(geno))
    cats = [str(c) for c in cats]
    if geno.isna().any():
        raise SparsecellError("factors['genotype'] has missing values", "label every cell")
    if reference is None:
        reference = "Control" if "Control" in cats else cats[0]
    elif reference not in cats:
        raise SparsecellError(f"reference={reference!r} is not a genotype", f"choose from {cats}")
    geno_progs = [c for c in cats if c != reference]

    # ---- genes per program
    shares = {**_SHARES, **{f"@{g}": _GENO_SHARE for g in geno_progs}}
    n_min = _MIN_GENES * len(shares) + 1
    if n_genes < n_min:
        raise SparsecellError(f"n_genes={n_genes} is too small", f"pass n_genes >= {n_min}")
    sizes = {k: max(_MIN_GENES, round(v * n_genes)) for k, v in shares.items()}
    n_background = n_genes - sum(sizes.values())
    if n_background < 1:
        raise SparsecellError(f"n_genes={n_genes} is too small", f"pass n_genes >= {2 * n_min}")
    sizes["GENE"] = n_background

    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(7,)))
    names, program, pnames = [], [], []
    for key, cnt in sizes.items():
        prefix = _program_prefix(key[1:]) if key.startswith("@") else key
        pname = key[1:] if key.startswith("@") else key
        pnames.append(pname)
        names += [_gene_name(prefix, i, cnt) for i in range(cnt)]
        program += [pname] * cnt
    program = np.asarray(program, dtype=object)
    if len(set(names)) != len(names):
        raise SparsecellError("genotype names collide with program names", "rename genotypes")

    # ---- gene parameters
    G = n_genes
    hk = program == "HK"
    beta = np.where(hk, rng.normal(np.log(4.0), 0.6, G), rng.normal(np.log(0.35), 1.1, G))
    w = np.abs(rng.normal(0.9, 0.3, G)) * np.where(rng.random(G) < 0.25, -1.0, 1.0)
    w[np.isin(program, ["HK", "GENE", "LINE"])] = 0.0
    w[program == "DEATH"] = np.abs(w[program == "DEATH"])
    for g in geno_progs:  # a genotype's own programme goes up
        w[program == g] = np.abs(w[program == g]) * 1.2
    phi = np.where(hk, 0.05, 0.3) * np.exp(rng.normal(0, 0.5, G))

    # ---- program activities per cell
    act, missing = _drivers(factors)
    gvals = geno.astype(str).to_numpy()
    for g in geno_progs:
        act[g] = (gvals == g).astype(np.float64)
    prog_names = [p for p in pnames if p in act]
    A = np.column_stack([act[p] for p in prog_names])  # n × P
    pidx = {p: i for i, p in enumerate(prog_names)}
    gene_prog = np.array([pidx.get(p, -1) for p in program])
    W = np.zeros((len(prog_names), G))
    on = gene_prog >= 0
    W[gene_prog[on], np.flatnonzero(on)] = w[on]
    if missing:
        msg = f"simulate_scrna: factor columns missing, their programs are inactive: {missing}"
        log.warning(msg)

    # ---- line effects (from seed and line name: the same line, the same effect)
    if "line" in factors.columns:
        lines = factors["line"].astype(str).to_numpy()
    else:
        lines = np.full(n, "")
    uniq, line_code = np.unique(lines, return_inverse=True)
    line_sd = np.where(program == "LINE", 0.25, 0.05)
    Lam = np.zeros((uniq.size, G))
    for i, name in enumerate(uniq):
        if name == "":
            continue
        lr = np.random.default_rng(
            np.random.SeedSequence(int(seed), spawn_key=(8, zlib.crc32(name.encode())))
        )
        Lam[i] = lr.normal(0.0, 1.0, G) * line_sd

    # ---- library sizes
    stage = _col(factors, "gt_death_stage")
    stage = np.zeros(n) if stage is None else np.clip(stage, 0.0, 1.0)
    base_total = float(np.exp(beta).sum())
    s = (depth / base_total) * np.exp(rng.normal(-0.5 * 0.35**2, 0.35, n)) * (1 - 0.5 * stage)

    # ---- counts, in chunks of cells (each chunk has its own stream)
    blocks = []
    for ci, start in enumerate(range(0, n, _CHUNK)):
        sl = slice(start, min(start + _CHUNK, n))
        crng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(9, ci)))
        logmu = beta[None, :] + A[sl] @ W + Lam[line_code[sl]] + np.log(s[sl])[:, None]
        mu = np.exp(np.minimum(logmu, 20.0))
        shape = 1.0 / phi
        lam = crng.gamma(shape[None, :], (mu * phi[None, :]))
        counts = crng.poisson(lam).astype(np.float32)
        blocks.append(sp.csr_matrix(counts))
    X = sp.vstack(blocks, format="csr")

    obs = factors.copy()
    obs.insert(0, "source", factors.index.astype(str))
    obs.index = pd.Index([f"r{i}" for i in range(n)])
    if not hasattr(obs["genotype"], "cat"):
        obs["genotype"] = pd.Categorical(obs["genotype"].astype(str), categories=cats)
    var = pd.DataFrame(
        {
            "program": pd.Categorical(program, categories=pnames),
            "loading": w,
            "base_mean": np.exp(beta) * depth / base_total,
            "dispersion": phi,
        },
        index=pd.Index(names),
    )
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm["X_programs"] = A.astype(np.float32)
    adata.uns["simulate_scrna"] = {
        "params": {
            "n_cells": int(n),
            "n_genes": int(G),
            "depth": float(depth),
            "reference": reference,
            "seed": int(seed),
            "factors_given": given,
        },
        "programs": list(prog_names),
        "missing_factors": list(missing),
    }
    return adata


__all__ = ["simulate_scrna"]
