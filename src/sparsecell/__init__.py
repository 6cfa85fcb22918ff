"""sparsecell: resolve superposition in image embeddings and map image cells to scRNA-seq.

>>> import sparsecell as spc
>>> X = spc.datasets.sparse_features(512, 64, active=5).X
>>> sae = spc.sae.train(X, arch="topk", k=8)
"""

__version__ = "0.1.0"

from . import datasets, encode, gwmap, images, lab, sae  # noqa: E402
from ._errors import SparsecellError  # noqa: E402

__all__ = ["SparsecellError", "__version__", "datasets", "encode", "gwmap", "images", "lab", "sae"]
