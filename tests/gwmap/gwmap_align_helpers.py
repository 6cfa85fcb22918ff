"""Small alignment problems with known truth, shared by the align and CLI tests."""

from __future__ import annotations

import anndata as ad
import numpy as np

TOY_N = 40
TOY_EPS = 0.1  # converges in ~10 outer iterations on the toy (a few seconds on 2 cores)


def toy_pair(n: int = TOY_N, seed: int = 0):
    """Image cells in 3-D and the same cells rotated into 5-D, shuffled: an exact isometry.

    Returns ``(adata_img, adata_rna, truth)`` with ``truth[i]`` the RNA row of image cell i
    and a shared ``ct`` label (two categories).
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    Q, _ = np.linalg.qr(rng.normal(size=(5, 3)))
    perm = rng.permutation(n)
    lab = np.array(["a", "b"])[rng.integers(0, 2, n)]
    img = ad.AnnData(X=X.astype(np.float32), obs={"ct": lab})
    img.obs_names = [f"i{i}" for i in range(n)]
    rna = ad.AnnData(X=(X @ Q.T)[perm].astype(np.float32), obs={"ct": lab[perm]})
    rna.obs_names = [f"r{i}" for i in range(n)]
    rna.obsm["X_rep"] = np.asarray(rna.X, dtype=np.float64)
    return img, rna, np.argsort(perm)
