"""The one exact kNN of the project (implementation: ``sparsecell.lab._knn``, moving here)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import SparsecellError


def knn(
    X: Any,
    k: int,
    metric: str = "euclidean",
    *,
    device: Any = None,
    return_distance: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest other samples of every sample (self excluded), nearest first.

    Parameters
    ----------
    X
        ``(n, p)`` samples: dense, SciPy sparse or torch (checked by
        :func:`sparsecell.core.inputs.as_matrix`).
    k
        Neighbours per sample, ``1 ≤ k < n``.
    metric
        ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"`` (exact fast path); other
        scikit-learn metrics through :class:`~sklearn.neighbors.NearestNeighbors`.
    device
        ``None``/``"cpu"``: this CPU; a torch device name runs the search there.
    return_distance
        Also return the ``(n, k)`` float64 distances in ``metric``.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        ``int64`` indices ``(n, k)``; with ``return_distance``, ``(distances, indices)``
        like scikit-learn's ``kneighbors``.
    """
    from ..lab import _knn
    from ..lab._stats import as_matrix, check_k

    Xm = as_matrix(X, "X")
    check_k(Xm.shape[0], k)
    dev = None
    if device is not None and str(device) != "cpu":
        from .._device import resolve_device

        dev = resolve_device(device)
        if dev.type == "cpu":
            dev = None
    idx = _knn.knn_indices(Xm, int(k), metric, dev=dev)
    if not return_distance:
        return idx
    return _distances(Xm, idx, metric), idx


def _distances(X: Any, idx: np.ndarray, metric: str) -> np.ndarray:
    import scipy.sparse as sp

    n, k = idx.shape
    rows = np.repeat(np.arange(n), k)
    cols = idx.ravel()
    if metric not in ("euclidean", "sqeuclidean", "cosine"):
        raise SparsecellError(
            f"return_distance is not supported for metric {metric!r}",
            "use euclidean, sqeuclidean or cosine",
        )
    out = np.empty(rows.size)
    step = 1 << 16
    for s in range(0, rows.size, step):
        r, c = rows[s : s + step], cols[s : s + step]
        A, B = X[r], X[c]
        if sp.issparse(A):
            A, B = A.toarray(), B.toarray()
        if metric == "cosine":
            na = np.linalg.norm(A, axis=1)
            nb = np.linalg.norm(B, axis=1)
            out[s : s + step] = 1.0 - np.einsum("ij,ij->i", A, B) / np.maximum(na * nb, 1e-300)
        else:
            d2 = np.einsum("ij,ij->i", A - B, A - B)
            out[s : s + step] = d2 if metric == "sqeuclidean" else np.sqrt(d2)
    return out.reshape(n, k)


__all__ = ["knn"]
