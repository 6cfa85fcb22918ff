"""Sparse autoencoders that resolve superposition in embeddings.

>>> import sparsecell as spc
>>> data = spc.datasets.sparse_features(512, 64, active=5, n_samples=20_000)
>>> sae = spc.sae.train(data.X, arch="topk", k=8, expansion=8, epochs=2, progress=False)
>>> Z = sae.encode(data.X)            # scipy CSR, n × d_sae
>>> spc.sae.evaluate(sae, data.X)["fvu"] < 1
True
"""

from . import batchtopk, gated, jumprelu, matryoshka, relu, topk  # noqa: F401  (register)
from ._base import SparseAutoencoder
from .checkpoint import load, save
from .config import SAEConfig, TrainConfig
from .metrics import evaluate, feature_recovery
from .registry import ARCHITECTURES, register
from .sweep import sweep
from .trainer import train

__all__ = [
    "ARCHITECTURES",
    "SAEConfig",
    "SparseAutoencoder",
    "TrainConfig",
    "evaluate",
    "feature_recovery",
    "load",
    "register",
    "save",
    "sweep",
    "train",
]
