"""A real image shipped by a PyPI package: ``ndev-sampledata``'s 4-channel cultured neuron."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .._errors import SparsecellError

__all__ = ["sample_neuron_path"]

_INSTALL = "pip install --no-deps ndev-sampledata"


def sample_neuron_path() -> Path:
    """Path of ``samples/neuron-4Ch.tiff`` from the ``ndev-sampledata`` package.

    A real OME-TIFF of one cultured neuron, ``4 × 623 × 502`` uint16 (channels AF647,
    AF568, AF488 and DAPI; 0.124 µm pixels). The package is located without importing it
    (its import pulls imaging libraries that are not needed here).

    Returns
    -------
    pathlib.Path
        The TIFF file.

    Raises
    ------
    SparsecellError
        When ``ndev-sampledata`` is not installed.
    """
    spec = importlib.util.find_spec("ndev_sampledata")
    if spec is None or spec.origin is None:
        raise SparsecellError("the sample image needs the ndev-sampledata package", _INSTALL)
    path = Path(spec.origin).parent / "samples" / "neuron-4Ch.tiff"
    if not path.is_file():
        raise SparsecellError(
            f"ndev-sampledata is installed but {path.name} is missing from it",
            f"reinstall it: {_INSTALL} --force-reinstall",
        )
    return path
