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
    from ..lab._accel import lab_device
    from ..lab._stats import as_matrix, knn_indices

    Xm = as_matrix(X, "X")
    idx = knn_indices(Xm, int(k), metric, dev=lab_device(device))
    if not return_distance:
        return idx
    return _distances(Xm, idx, metric), idx


def _distances(X: Any, idx: np.ndarray, metric: str) -> np.ndarray:
    """Distances in ``metric`` from every sample to its neighbours ``idx``: dense rows by
    the kNN's own exact float64 differences (``lab._knn._exact_rows``), CSR rows by
    row-wise sparse products in blocks (never densified)."""
    import scipy.sparse as sp
    import torch

    from ..lab._knn import _exact_rows, _unit_rows

    if metric not in ("euclidean", "sqeuclidean", "cosine"):
        raise SparsecellError(
            f"return_distance is not supported for metric {metric!r}",
            "use euclidean, sqeuclidean or cosine",
        )
    if metric == "cosine":  # cosine distance = ‖u − v‖² / 2 on unit rows
        X = _unit_rows(X)
        if X is None:
            raise SparsecellError(
                "cosine distances are undefined for all-zero rows", "drop those samples"
            )
    n = idx.shape[0]
    if not sp.issparse(X):
        d2 = _exact_rows(torch.from_numpy(np.ascontiguousarray(X)), np.arange(n), idx)
    else:
        sq = np.asarray(X.multiply(X).sum(1)).ravel()
        rows, cols = np.repeat(np.arange(n), idx.shape[1]), idx.ravel()
        d2 = np.empty(rows.size)
        step = 1 << 16
        for s in range(0, rows.size, step):
            r, c = rows[s : s + step], cols[s : s + step]
            dot = np.asarray(X[r].multiply(X[c]).sum(1)).ravel()
            d2[s : s + step] = np.maximum(sq[r] + sq[c] - 2 * dot, 0.0)
        d2 = d2.reshape(idx.shape)
    if metric == "cosine":
        return d2 / 2
    return d2 if metric == "sqeuclidean" else np.sqrt(d2)


__all__ = ["knn"]
