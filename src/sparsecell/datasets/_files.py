"""Read user embeddings from ``.npy`` (memory-mapped) or ``.h5ad`` (``X`` or an ``obsm`` key)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._errors import SparsecellError


def read_embeddings(
    path: str | os.PathLike, obsm: str | None = None, *, mmap: bool = True
) -> np.ndarray:
    """Open a matrix of embeddings (samples × dimensions) without copying it.

    Parameters
    ----------
    path
        A ``.npy`` file (opened memory-mapped when ``mmap``), a ``.npz`` sparse matrix
        (``scipy.sparse.save_npz``, e.g. SAE latents from ``sparsecell sae encode``) or an
        ``.h5ad`` file.
    obsm
        For ``.h5ad``: the ``obsm`` key to read (``None`` reads ``X``).
    mmap
        Memory-map ``.npy`` files so that data larger than RAM can be streamed.

    Returns
    -------
    numpy.ndarray
        A 2-D array; for ``.npy`` with ``mmap`` a read-only ``numpy.memmap``.
    """
    p = Path(path)
    if not p.exists():
        raise SparsecellError(f"input file not found: {p}", "check the path")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        if obsm is not None:
            raise SparsecellError(
                "--obsm applies to .h5ad files only", "drop --obsm for .npy input"
            )
        try:
            arr = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
        except ValueError as e:
            raise SparsecellError(
                f"cannot read {p.name}: {e}", "save a numeric array with np.save"
            ) from e
    elif suffix == ".npz":
        import scipy.sparse as sp

        try:
            arr = sp.load_npz(p).tocsr()
        except (ValueError, OSError) as e:
            raise SparsecellError(
                f"cannot read {p.name} as a sparse matrix: {e}",
                "save it with scipy.sparse.save_npz",
            ) from e
    elif suffix == ".h5ad":
        arr = _read_h5ad(p, obsm, lazy=mmap)
    else:
        raise SparsecellError(
            f"unsupported input format '{p.suffix}' for {p.name}",
            "use a .npy, .npz (sparse) or .h5ad file",
        )
    if arr.ndim != 2:
        raise SparsecellError(
            f"{p.name} holds a {arr.ndim}-D array, expected samples × dimensions",
            "reshape to 2-D before saving",
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise SparsecellError(f"{p.name} is not numeric (dtype {arr.dtype})", "save floats")
    return arr


def _read_h5ad(p: Path, obsm: str | None, lazy: bool):
    """Dense matrices come back as a lazy ``h5py.Dataset`` (streamed by row slices)."""
    import h5py

    try:
        fh = h5py.File(p, "r")
    except OSError as e:
        raise SparsecellError(f"cannot read {p.name} as AnnData: {e}", "check the file") from e
    if obsm is None:
        node = fh.get("X")
        where = "X"
    else:
        group = fh.get("obsm")
        if group is None or obsm not in group:
            keys = ", ".join(group.keys()) if group is not None else ""
            fh.close()
            raise SparsecellError(
                f"obsm key '{obsm}' not in {p.name}", f"available keys: {keys or 'none'}"
            )
        node = group[obsm]
        where = f"obsm['{obsm}']"
    if isinstance(node, h5py.Dataset):
        return node if lazy else node[...]
    fh.close()
    # Sparse X (a CSR/CSC group): read through anndata and densify.
    import anndata as ad

    adata = ad.read_h5ad(p)
    X = adata.X if obsm is None else adata.obsm[obsm]
    if hasattr(X, "toarray"):
        X = X.toarray()
    X = np.asarray(X)
    if X.ndim != 2:
        raise SparsecellError(f"{where} of {p.name} is not a matrix", "store a 2-D array")
    return X
