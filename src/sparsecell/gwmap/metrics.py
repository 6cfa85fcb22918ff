"""Quality of a cross-modal alignment: FOSCTTM, label transfer, silhouette, kNN transfer.

All functions take plain arrays (numpy, SciPy sparse, or anything ``np.asarray`` reads)
and return floats. None of them builds an ``n × m`` matrix for co-embeddings: distances
are computed in row blocks, so 100k × 100k cells fit in a few hundred megabytes.

Definitions
-----------
**FOSCTTM** (fraction of samples closer than the true match; Liu et al. 2019, used by
SCOT and Pamona): for every matched pair ``(i, j = truth[i])`` count, in ``i``'s row, the
fraction of the other ``m - 1`` candidates that are closer to ``i`` than ``j`` is, and in
``j``'s column the fraction of the other ``n - 1`` image cells closer to ``j`` than ``i``
is; average the two directions, then over pairs. "Closer" means a smaller distance for a
co-embedding and a *larger* coupling weight for a coupling. Ties count one half, so a
constant (uninformative) coupling scores 0.5 like a random one, not 0. 0 is perfect,
0.5 is chance, lower is better.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .._errors import SparsecellError
from .._sparse import canonical_csr

_BLOCK_ELEMS = 2**24  # entries of one distance / coupling block (128 MiB in float64)


# --------------------------------------------------------------------------- helpers


def _as_coupling(T: Any) -> np.ndarray | sp.csr_matrix:
    if sp.issparse(T):
        T = canonical_csr(T)
        data = T.data
    else:
        if hasattr(T, "detach"):  # torch tensor
            T = T.detach().cpu().numpy()
        T = np.asarray(T)
        data = T
    if T.ndim != 2 or T.shape[0] < 1 or T.shape[1] < 1:
        raise SparsecellError(
            f"a coupling must be a non-empty 2-D matrix, got shape {T.shape}",
            "pass the n × m transport plan",
        )
    if not np.issubdtype(np.asarray(data).dtype, np.number):
        raise SparsecellError("the coupling is not numeric", "pass a float matrix")
    if not np.all(np.isfinite(data)):
        raise SparsecellError("the coupling holds NaN or inf", "check the solver's result")
    return T


def _as_points(X: Any, name: str, keep_float32: bool = False) -> np.ndarray:
    if sp.issparse(X):
        X = X.toarray()
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    keep = keep_float32 and X.dtype == np.float32
    X = X if keep else np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] < 1:
        raise SparsecellError(
            f"{name} must be a non-empty 2-D array, got shape {X.shape}", "pass cells × dims"
        )
    if not np.all(np.isfinite(X)):
        raise SparsecellError(f"{name} holds NaN or inf", "remove or impute those cells")
    return X


def _truth(truth: Any, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Matched pairs ``(rows, cols)``; ``truth[i] < 0`` marks an unmatched image cell."""
    if truth is None:
        if n != m:
            raise SparsecellError(
                f"no truth given and the two sides differ in size ({n} vs {m})",
                "pass truth= (for each image cell the index of its true match, -1 for none)",
            )
        idx = np.arange(n)
        return idx, idx
    t = np.asarray(truth)
    if t.ndim != 1 or t.shape[0] != n or not np.issubdtype(t.dtype, np.integer):
        raise SparsecellError(
            f"truth must be an integer index array of length {n}",
            "for each image cell the index of its true match (-1 for none)",
        )
    if np.any(t >= m):
        raise SparsecellError(f"truth holds indices >= {m}", "indices refer to the other side")
    rows = np.flatnonzero(t >= 0)
    if rows.size == 0:
        raise SparsecellError("truth marks no matched pair", "give at least one index >= 0")
    return rows, t[rows].astype(np.int64)


def _rank_dense(T: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """For each pair, the fraction of other entries of row ``rows[p]`` above T[rows, cols]."""
    m = T.shape[1]
    out = np.empty(rows.size)
    if m == 1:
        out[:] = 0.0
        return out
    step = max(1, _BLOCK_ELEMS // m)
    for s in range(0, rows.size, step):
        r, c = rows[s : s + step], cols[s : s + step]
        block = T[r]
        t = block[np.arange(r.size), c][:, None]
        greater = (block > t).sum(axis=1)
        ties = (block == t).sum(axis=1) - 1  # not the true match itself
        out[s : s + step] = (greater + 0.5 * ties) / (m - 1)
    return out


def _rank_sparse(T: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """As :func:`_rank_dense` for a CSR matrix; implicit zeros take part as zeros."""
    m = T.shape[1]
    if m == 1:
        return np.zeros(rows.size)
    sub = T[rows]  # one row per pair (rows may repeat)
    sub.sort_indices()
    t = np.asarray(sub[np.arange(rows.size), cols]).ravel()
    counts = np.diff(sub.indptr)
    tr = np.repeat(t, counts)
    pair = np.repeat(np.arange(rows.size), counts)
    greater = np.bincount(pair, weights=(sub.data > tr), minlength=rows.size)
    ties = np.bincount(pair, weights=(sub.data == tr), minlength=rows.size)
    # implicit zeros: greater than t if t < 0, ties if t == 0
    zeros = m - counts
    greater += np.where(t < 0, zeros, 0)
    ties += np.where(t == 0, zeros, 0)
    ties -= 1  # the true match itself (stored or implicit)
    return (greater + 0.5 * ties) / (m - 1)


def _rank_points(A: np.ndarray, B: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """For each pair, the fraction of other rows of B closer to A[ia] than B[ib] is."""
    m = B.shape[0]
    out = np.empty(ia.size)
    if m == 1:
        out[:] = 0.0
        return out
    b2 = np.einsum("ij,ij->i", B, B)
    step = max(1, _BLOCK_ELEMS // m)
    for s in range(0, ia.size, step):
        a, b = ia[s : s + step], ib[s : s + step]
        Xa = A[a]
        D = b2[None, :] - 2.0 * (Xa @ B.T)  # + |a|², constant per row: irrelevant for ranks
        t = D[np.arange(a.size), b][:, None]
        closer = (D < t).sum(axis=1)
        ties = (D == t).sum(axis=1) - 1
        out[s : s + step] = (closer + 0.5 * ties) / (m - 1)
    return out


# --------------------------------------------------------------------------- public


def foscttm(
    coupling_or_X: Any,
    Y: Any = None,
    truth: Any = None,
    *,
    per_sample: bool = False,
) -> float | np.ndarray:
    """Fraction of samples closer than the true match (lower is better, 0.5 is chance).

    Parameters
    ----------
    coupling_or_X
        Either an ``n × m`` coupling (dense array, torch tensor or SciPy sparse; a larger
        weight means closer), when ``Y`` is None, or the image side ``X`` (``n × d``) of a
        co-embedding whose other side is ``Y``.
    Y
        The RNA side of a co-embedding (``m × d``, the same ``d`` as ``X``); Euclidean
        distances. Computed in row blocks: no ``n × m`` matrix is built. When both sides
        are float32 the distances are computed in float32 (about twice as fast),
        otherwise in float64.
    truth
        For each image cell ``i`` the index of its true partner on the other side
        (``-1``: none, left out). Default: the identity (requires ``n == m``).
    per_sample
        Return the per-pair values (mean of both directions) instead of their mean.

    Returns
    -------
    float or numpy.ndarray
        The mean over matched pairs of the average of the row and column fractions.
    """
    if Y is None:
        T = _as_coupling(coupling_or_X)
        n, m = T.shape
        rows, cols = _truth(truth, n, m)
        if sp.issparse(T):
            f_row = _rank_sparse(T, rows, cols)
            f_col = _rank_sparse(sp.csr_matrix(T.T), cols, rows)
        else:
            f_row = _rank_dense(T, rows, cols)
            f_col = _rank_dense(np.ascontiguousarray(T.T), cols, rows)
    else:
        X = _as_points(coupling_or_X, "X", keep_float32=True)
        Yp = _as_points(Y, "Y", keep_float32=True)
        if X.dtype != Yp.dtype:  # rank in float32 only when both sides are float32
            X, Yp = X.astype(np.float64), Yp.astype(np.float64)
        if X.shape[1] != Yp.shape[1]:
            raise SparsecellError(
                f"X and Y have different dimensions ({X.shape[1]} vs {Yp.shape[1]})",
                "a co-embedding puts both sides in one space",
            )
        rows, cols = _truth(truth, X.shape[0], Yp.shape[0])
        f_row = _rank_points(X, Yp, rows, cols)
        f_col = _rank_points(Yp, X, cols, rows)
    per = 0.5 * (f_row + f_col)
    return per if per_sample else float(per.mean())


def _labels(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "to_numpy"):
        a = a.to_numpy(dtype=object)
    a = np.asarray(a, dtype=object)
    if a.ndim != 1:
        raise SparsecellError(f"{name} must be 1-D labels, got shape {a.shape}", "pass a column")
    return a


def _missing(a: np.ndarray) -> np.ndarray:
    import pandas as pd

    return np.asarray(pd.isna(a), dtype=bool)


def label_transfer_accuracy(predicted: Any, true: Any) -> float:
    """Fraction of cells whose predicted label equals the true one.

    Labels are compared as strings (a categorical and a string column with the same
    values agree); a missing prediction counts as wrong, a missing true label is left
    out.

    Parameters
    ----------
    predicted, true
        Labels per cell, the same length.

    Returns
    -------
    float
        Accuracy in [0, 1].
    """
    p, t = _labels(predicted, "predicted"), _labels(true, "true")
    if p.shape[0] != t.shape[0]:
        raise SparsecellError(
            f"predicted and true labels differ in length ({p.shape[0]} vs {t.shape[0]})",
            "pass one label per image cell on both sides",
        )
    keep = ~_missing(t)
    if not keep.any():
        raise SparsecellError("no true labels to compare with", "pass a non-empty label column")
    p, t = p[keep], t[keep]
    pm = _missing(p)
    ok = ~pm & (p.astype(str) == t.astype(str))
    return float(ok.mean())


def silhouette(
    X: Any,
    labels: Any,
    *,
    max_samples: int = 5000,
    seed: int = 0,
) -> float:
    """Mean silhouette width of ``labels`` on an embedding (e.g. a co-embedding).

    Parameters
    ----------
    X
        Cells × dims (stack both sides of a co-embedding to score them together).
    labels
        One label per cell; at least two distinct labels.
    max_samples
        Above this many cells a random subset of this size is scored (the full
        silhouette is quadratic).
    seed
        Random seed of the subset.

    Returns
    -------
    float
        In [-1, 1]; higher means labels form tighter, better separated groups.
    """
    from sklearn.metrics import silhouette_score

    Xp = _as_points(X, "X")
    lab = _labels(labels, "labels")
    if lab.shape[0] != Xp.shape[0]:
        raise SparsecellError("labels and X differ in length", "pass one label per row of X")
    keep = ~_missing(lab)
    Xp, lab = Xp[keep], lab[keep].astype(str)
    k = np.unique(lab).size
    if k < 2 or k >= Xp.shape[0]:
        raise SparsecellError(
            f"silhouette needs 2 to n-1 distinct labels, got {k}", "check the label column"
        )
    size = min(int(max_samples), Xp.shape[0]) if max_samples else None
    return float(silhouette_score(Xp, lab, sample_size=size, random_state=seed))


def knn_transfer_accuracy(
    X_query: Any,
    labels_query: Any,
    X_ref: Any,
    labels_ref: Any,
    *,
    k: int = 15,
) -> float:
    """Accuracy of a k-nearest-neighbour vote from reference cells onto query cells.

    On a co-embedding: query = image cells (their true labels), reference = RNA cells
    (their labels). Each query cell takes the majority label of its ``k`` nearest
    reference cells (Euclidean; ties go to the label seen first among the nearest).

    Parameters
    ----------
    X_query, X_ref
        Query and reference points in one space (cells × dims).
    labels_query, labels_ref
        True labels of the query cells and labels of the reference cells.
    k
        Neighbours (clipped to the number of reference cells).

    Returns
    -------
    float
        Accuracy in [0, 1].
    """
    from sklearn.neighbors import NearestNeighbors

    Q, R = _as_points(X_query, "X_query"), _as_points(X_ref, "X_ref")
    if Q.shape[1] != R.shape[1]:
        raise SparsecellError("query and reference differ in dimensions", "co-embed them first")
    lq, lr = _labels(labels_query, "labels_query"), _labels(labels_ref, "labels_ref")
    if lq.shape[0] != Q.shape[0] or lr.shape[0] != R.shape[0]:
        raise SparsecellError("labels and points differ in length", "one label per cell")
    if not isinstance(k, int | np.integer) or k < 1:
        raise SparsecellError(f"k={k!r} is not a positive integer", "pass k >= 1")
    cats, codes = np.unique(lr.astype(str), return_inverse=True)
    k = min(int(k), R.shape[0])
    nn = NearestNeighbors(n_neighbors=k).fit(R)
    _, idx = nn.kneighbors(Q)
    votes = codes[idx]  # nq × k
    counts = np.zeros((Q.shape[0], cats.size))
    np.add.at(counts, (np.repeat(np.arange(Q.shape[0]), k), votes.ravel()), 1.0)
    # break ties toward the nearest neighbour's label: a tiny bonus decreasing with rank
    bonus = np.zeros_like(counts)
    np.maximum.at(
        bonus,
        (np.repeat(np.arange(Q.shape[0]), k), votes.ravel()),
        np.tile(1e-3 * (k - np.arange(k)) / k, Q.shape[0]),
    )
    pred = cats[np.argmax(counts + bonus, axis=1)]
    return label_transfer_accuracy(pred, lq)


__all__ = ["foscttm", "knn_transfer_accuracy", "label_transfer_accuracy", "silhouette"]
