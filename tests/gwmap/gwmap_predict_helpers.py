"""Small synthetic image ↔ RNA data with a known pairing, for the predict/modules tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

N_SIGNAL = 4  # genes linearly encoded by the image features
N_NOISE = 12  # pure-noise genes
SHIFT_GENE = "shift"  # a gene whose only signal is a between-group shift


def linear_case(n: int = 240, d: int = 8, n_groups: int = 3, seed: int = 0):
    """Image features, RNA expression (shuffled rows), the true coupling and group labels.

    Genes ``sig0..`` = features · w + noise; ``noise0..`` pure noise; ``shift`` = a group
    offset + noise, and the last feature carries the same group offset (so, ignoring groups,
    the features "predict" it through the group difference alone).
    """
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), n // n_groups)
    groups = np.r_[groups, np.zeros(n - groups.size, dtype=int)]
    X = rng.normal(size=(n, d))
    X[:, -1] += 3.0 * groups
    cols = {}
    for i in range(N_SIGNAL):
        w = rng.normal(size=d - 1)
        cols[f"sig{i}"] = X[:, :-1] @ w / np.sqrt(d - 1) + 0.7 * rng.normal(size=n)
    for i in range(N_NOISE):
        cols[f"noise{i}"] = rng.normal(size=n)
    cols[SHIFT_GENE] = 2.0 * groups + rng.normal(size=n)
    expr_img_order = pd.DataFrame(cols)
    # the RNA cells come in another order; the coupling holds the true pairing
    q = rng.permutation(n)
    expr = expr_img_order.iloc[q].reset_index(drop=True)
    T = np.zeros((n, n))
    T[q, np.arange(n)] = 1.0 / n
    return X, T, expr, groups


def nested_programs(n_cells: int = 400, genes_per_sub: int = 12, seed: int = 0):
    """Cells × genes driven by 2 super-programs, each split into 2 sub-programs.

    Gene ``P{a}{b}_{i}`` loads on super-program ``a`` (shared by both of its sub-programs) and
    on sub-program ``(a, b)``; returns the matrix and the gene names.
    """
    rng = np.random.default_rng(seed)
    sup = rng.normal(size=(n_cells, 2))
    sub = rng.normal(size=(n_cells, 4))
    cols, names = [], []
    for a in range(2):
        for b in range(2):
            for i in range(genes_per_sub):
                cols.append(
                    1.0 * sup[:, a] + 1.0 * sub[:, 2 * a + b] + 0.6 * rng.normal(size=n_cells)
                )
                names.append(f"P{a}{b}_{i:02d}")
    return np.column_stack(cols), names


def smooth_coupling_case(
    n: int = 300, m: int = 300, n_struct: int = 4, n_noise: int = 40, bw: float = 0.01, seed=0
):
    """Image and RNA cells on one 1-D trajectory, coupled by a smooth (entropic-like) plan.

    Image features are ``[sin 2πt, cos 2πt, 2 noise dims]`` (a cyclic trajectory); RNA genes
    ``struct{i}`` follow the RNA cell's position ``s`` (a phase-shifted sine of it plus
    noise), ``noise{i}`` are pure noise across RNA cells. The coupling is a Gaussian kernel
    in ``|t − s|`` (bandwidth ``bw``): like an entropic GW plan, it maps neighbouring image
    cells to overlapping sets of RNA cells, so even a noise gene's coupled target varies
    smoothly with ``t``.
    """
    rng = np.random.default_rng(seed)
    t, s = rng.random(n), rng.random(m)
    X = np.c_[np.sin(2 * np.pi * t), np.cos(2 * np.pi * t), rng.normal(size=(n, 2))]
    cols = {}
    for i in range(n_struct):
        cols[f"struct{i}"] = np.sin(2 * np.pi * (s + i / n_struct)) + 0.5 * rng.normal(size=m)
    for i in range(n_noise):
        cols[f"noise{i}"] = rng.normal(size=m)
    T = np.exp(-((t[:, None] - s[None, :]) ** 2) / (2 * bw**2))
    T /= T.sum()
    return X, T, pd.DataFrame(cols)
