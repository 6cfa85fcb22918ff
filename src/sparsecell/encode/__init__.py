"""Image units → embeddings: a residual CNN trained by supervised contrastive learning.

>>> import numpy as np, sparsecell.encode as enc
>>> units = np.random.default_rng(0).random((64, 2, 32, 32), dtype=np.float32)
>>> labels = np.repeat([0, 1], 32)
>>> model = enc.train(units, labels, width=8, stages=2, embed_dim=16, steps=2,
...                   batch_size=16, progress=False)
>>> enc.embed(model, units, progress=False).shape
(64, 16)
"""

from .checkpoint import load, save
from .config import EncoderConfig, EncoderTrainConfig
from .embed import embed, to_anndata, write_embeddings
from .models import Encoder
from .probe import probe
from .trainer import train

__all__ = [
    "Encoder",
    "EncoderConfig",
    "EncoderTrainConfig",
    "embed",
    "load",
    "probe",
    "save",
    "to_anndata",
    "train",
    "write_embeddings",
]
