"""The one "cells × features" input check: dense, SciPy sparse, torch, or AnnData + use_rep."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .._errors import SparsecellError
from ..lab._stats import as_matrix, as_vector  # implementation moves here (issue 12)

Matrix = np.ndarray | sp.csr_matrix


def get_rep(adata: Any, use_rep: str | None = None) -> Any:
    """The matrix an AnnData holds under ``use_rep`` (``None``/``"X"``: ``adata.X``).

    Raises a one-line :class:`SparsecellError` naming the available representations when
    ``use_rep`` is neither ``"X"`` nor a key of ``adata.obsm``.
    """
    if use_rep is None or use_rep == "X":
        return adata.X
    if use_rep in adata.obsm:
        return adata.obsm[use_rep]
    have = ", ".join(["X", *adata.obsm.keys()])
    raise SparsecellError(f"the AnnData has no representation {use_rep!r}", f"use one of: {have}")


__all__ = ["Matrix", "as_matrix", "as_vector", "get_rep"]
