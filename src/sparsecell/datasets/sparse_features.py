"""Ground-truth harness: known sparse features superposed in fewer dimensions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._errors import SparsecellError


@dataclass(frozen=True)
class SparseFeatures:
    """Samples built from known feature directions.

    Attributes
    ----------
    X
        ``(n_samples, d)`` float32 data, ``X = codes @ features + noise``.
    features
        ``(n_features, d)`` unit-norm true feature directions.
    codes
        ``(n_samples, n_features)`` CSR matrix of true non-negative coefficients.
    """

    X: np.ndarray
    features: np.ndarray
    codes: sp.csr_matrix


def sparse_features(
    n_features: int = 512,
    d: int = 64,
    active: float = 5.0,
    n_samples: int = 50_000,
    *,
    magnitude: tuple[float, float] = (0.5, 1.5),
    zipf: float = 0.0,
    noise: float = 0.0,
    offset: float = 0.0,
    seed: int = 0,
) -> SparseFeatures:
    """Superpose ``n_features`` known unit directions in ``d`` dimensions.

    Each sample switches on on average ``active`` features (independently, each
    feature ``i`` with probability ``p_i``), with magnitudes drawn uniformly from
    ``magnitude``. With ``zipf > 0`` feature frequencies follow ``p_i ∝ (i+1)^-zipf``
    (rescaled to the same mean number of active features), as real features do.

    Parameters
    ----------
    n_features
        Number of true features (``n_features > d`` forces superposition).
    d
        Ambient dimension.
    active
        Expected number of active features per sample.
    n_samples
        Number of samples.
    magnitude
        Range of the uniform coefficient of an active feature.
    zipf
        Exponent of the feature-frequency power law; 0 gives equal frequencies.
    noise
        Standard deviation of isotropic Gaussian noise added to every sample.
    offset
        Norm of a constant vector added to every sample (large activation means
        are common in real embeddings; SAEs must be robust to them).
    seed
        Random seed; the same seed gives the same data.

    Returns
    -------
    SparseFeatures
        ``X``, the true ``features`` and the true ``codes``.
    """
    if n_features < 1 or d < 1 or n_samples < 1:
        raise SparsecellError(
            "n_features, d and n_samples must be positive", "pass sizes of at least 1"
        )
    if not 0 < active <= n_features:
        raise SparsecellError(
            f"active={active} is out of range", f"choose 0 < active <= n_features={n_features}"
        )
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n_features, d))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    p = (np.arange(n_features) + 1.0) ** (-zipf)
    p = np.clip(p * active / p.sum(), 0.0, 1.0)
    # Draw the active set feature by feature in sparse form: never an n x n_features dense mask.
    rows, cols = [], []
    for j in range(n_features):
        r = np.flatnonzero(rng.random(n_samples) < p[j]) if p[j] < 1 else np.arange(n_samples)
        rows.append(r)
        cols.append(np.full(r.size, j))
    rows_a = np.concatenate(rows)
    cols_a = np.concatenate(cols)
    vals = rng.uniform(magnitude[0], magnitude[1], size=rows_a.size)
    codes = sp.csr_matrix((vals, (rows_a, cols_a)), shape=(n_samples, n_features))
    codes.sort_indices()
    X = np.asarray(codes @ feats)
    if noise > 0:
        X += noise * rng.standard_normal(X.shape)
    if offset > 0:
        u = rng.standard_normal(d)
        X += offset * u / np.linalg.norm(u)
    return SparseFeatures(
        X=X.astype(np.float32),
        features=feats.astype(np.float32),
        codes=codes.astype(np.float32),
    )
