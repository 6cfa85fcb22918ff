"""One rule for SciPy sparse inputs: make them canonical CSR without touching the caller's.

``scipy.sparse.csr_matrix(x)`` (with or without a new dtype) may share ``x``'s index
arrays, so sorting or summing duplicates in place would reorder the caller's matrix under
its data. :func:`canonical_csr` copies first whenever it has to change anything.
"""

from __future__ import annotations

from typing import Any

import scipy.sparse as sp


def canonical_csr(x: Any, dtype: Any = None) -> sp.csr_matrix:
    """``x`` as a CSR matrix with sorted column indices and no duplicate entries.

    Parameters
    ----------
    x
        A SciPy sparse matrix or array (or anything ``scipy.sparse.csr_matrix`` accepts).
    dtype
        Value dtype of the result; ``None`` keeps ``x``'s.

    Returns
    -------
    scipy.sparse.csr_matrix
        Shares no array that it had to reorder with ``x``; may be ``x`` itself when ``x``
        is already a canonical CSR matrix of that dtype.
    """
    out = sp.csr_matrix(x, dtype=dtype)
    if not out.has_canonical_format:
        out = out.copy()
        out.sum_duplicates()  # sorts the indices, too
    return out
