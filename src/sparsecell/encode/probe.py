"""How much of a label embeddings carry: linear-probe and kNN accuracy on held-out units."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import SparsecellError


def probe(
    embeddings: Any,
    labels: Any,
    seed: int = 0,
    test_frac: float = 0.25,
    *,
    test: Any = None,
    k: int = 10,
    max_iter: int = 1000,
) -> dict[str, Any]:
    """Linear-probe and kNN accuracy of ``labels`` from ``embeddings``.

    Parameters
    ----------
    embeddings
        ``n × d`` array.
    labels
        ``n`` labels (any hashable values).
    seed
        Seeds the split.
    test_frac
        Fraction of units held out for testing (stratified by label where possible).
    test
        Optional boolean mask or index array of the test units; overrides ``test_frac``.
    k
        Neighbours of the kNN classifier.
    max_iter
        Iterations of the logistic regression.

    Returns
    -------
    dict
        ``linear_acc`` (multinomial logistic regression on standardised embeddings),
        ``knn_acc`` (``k``-nearest neighbours, cosine distance), ``chance`` (accuracy of
        always predicting the most frequent training label), ``n_train``, ``n_test``,
        ``n_classes``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    E = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    if E.ndim != 2:
        raise SparsecellError(
            f"embeddings must be 2-D (units × dimensions), got {E.ndim}-D", "reshape them"
        )
    if len(y) != len(E):
        raise SparsecellError(
            f"{len(y)} labels for {len(E)} embeddings", "pass one label per embedding row"
        )
    if not np.isfinite(E).all():
        raise SparsecellError("embeddings contain NaN or inf", "drop or repair those rows")
    n = len(E)
    if test is not None:
        t = np.asarray(test)
        mask = t.astype(bool) if t.dtype == bool else np.isin(np.arange(n), t)
        tr, te = np.flatnonzero(~mask), np.flatnonzero(mask)
    else:
        if not 0 < test_frac < 1:
            raise SparsecellError(f"test_frac={test_frac} must be in (0, 1)", "pass e.g. 0.25")
        idx = np.arange(n)
        _, counts = np.unique(y, return_counts=True)
        n_test = int(round(test_frac * n))
        strat = y if counts.min() >= 2 and len(counts) <= n_test <= n - len(counts) else None
        tr, te = train_test_split(idx, test_size=test_frac, random_state=seed, stratify=strat)
    if len(tr) == 0 or len(te) == 0:
        raise SparsecellError(
            f"a probe needs training and test units (got {len(tr)} and {len(te)})",
            "pass more units or another test_frac",
        )
    vals, counts = np.unique(y[tr], return_counts=True)
    majority = vals[np.argmax(counts)]
    chance = float(np.mean(y[te] == majority))
    out: dict[str, Any] = {
        "n_train": int(len(tr)),
        "n_test": int(len(te)),
        "n_classes": int(len(np.unique(y))),
        "chance": chance,
    }
    if len(vals) < 2:
        out["linear_acc"] = out["knn_acc"] = chance
        return out
    lin = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    lin.fit(E[tr], y[tr])
    out["linear_acc"] = float(np.mean(lin.predict(E[te]) == y[te]))
    knn = KNeighborsClassifier(n_neighbors=min(k, len(tr)), metric="cosine", algorithm="brute")
    knn.fit(E[tr], y[tr])
    out["knn_acc"] = float(np.mean(knn.predict(E[te]) == y[te]))
    return out


__all__ = ["probe"]
