"""Superposition lab: alignment, geometric-fidelity and dictionary metrics.

Functional API, arrays in and numbers out. Inputs may be dense numpy arrays,
``scipy.sparse`` matrices (SAE latents; kept sparse) or torch tensors; rows are samples.

>>> import numpy as np, sparsecell as spc
>>> A = np.random.default_rng(0).standard_normal((300, 16))
>>> res = spc.lab.alignment(A, A @ np.linalg.qr(A[:16])[0], metric="cka")
>>> round(float(res), 6)
1.0
"""

from . import reproductions  # noqa: E402  (registry only; each reproduction loads on demand)
from .alignment import (
    METRICS as ALIGNMENT_METRICS,
)
from .alignment import (
    AlignmentResult,
    alignment,
    cka,
    mutual_knn,
    procrustes,
    procrustes_distance,
    ridge,
    rsa,
    semi_matching,
    soft_matching,
    unit_correlations,
)
from .dictionary import (
    InterferenceResult,
    feature_dimensionality,
    features_per_dimension,
    interference,
    welch_bound,
)
from .fidelity import METRICS as FIDELITY_METRICS
from .fidelity import (
    FidelityResult,
    effective_rank,
    fidelity,
    knn_overlap,
    knn_ratio,
    morans_i,
    ridge_r2,
    trustworthiness,
)
from .toy import (
    ToyConfig,
    ToyModel,
    plot_toy,
    sae_recovery,
    sample_features,
    toy_sae,
    train_toy,
    train_toys,
)
from .toy import summary as toy_summary

__all__ = [
    "ALIGNMENT_METRICS",
    "FIDELITY_METRICS",
    "AlignmentResult",
    "FidelityResult",
    "InterferenceResult",
    "ToyConfig",
    "ToyModel",
    "alignment",
    "cka",
    "effective_rank",
    "feature_dimensionality",
    "features_per_dimension",
    "fidelity",
    "interference",
    "knn_overlap",
    "knn_ratio",
    "morans_i",
    "mutual_knn",
    "plot_toy",
    "procrustes",
    "procrustes_distance",
    "ridge",
    "ridge_r2",
    "rsa",
    "sae_recovery",
    "sample_features",
    "semi_matching",
    "soft_matching",
    "toy_sae",
    "toy_summary",
    "train_toy",
    "train_toys",
    "trustworthiness",
    "unit_correlations",
    "welch_bound",
    "reproductions",
]
