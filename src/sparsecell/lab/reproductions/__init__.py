"""Reproductions of the papers' claims, each writing a table, a figure and a manifest.

=========  ==============================================================  ==============
name       claim                                                           module
=========  ==============================================================  ==============
toy        SAE latents raise semi-/soft-matching between two toy models    ``toy``
           (arXiv 2510.03186, 64 features into 8/16/32 neurons)
digits     the same between two small networks on scikit-learn's digits    ``digits``
phantom    SAE latents improve the geometric fidelity of CNN embeddings     ``phantom``
           to cell death within one genotype (arXiv 2606.31394)
=========  ==============================================================  ==============

Each ``reproduce_<name>(out=None, *, seed=0, quick=False, progress=False, **options)``
returns a :class:`pandas.DataFrame` (the table) and, when ``out`` is given, writes
``out/table.csv``, ``out/figure.png`` and ``out/manifest.json`` atomically
(:func:`write_reproduction`). ``quick=True`` runs a reduced configuration that keeps the
direction of the result (used by the tests).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ._report import write_reproduction

REPRODUCTIONS: dict[str, str] = {
    "toy": "toy:reproduce_toy",
    "digits": "digits:reproduce_digits",
    "phantom": "phantom:reproduce_phantom",
}


def get(name: str) -> Callable[..., Any]:
    """The ``reproduce_<name>`` function of a reproduction (imported on demand)."""
    from ..._errors import SparsecellError

    if name not in REPRODUCTIONS:
        raise SparsecellError(
            f"unknown reproduction '{name}'", f"choose one of {', '.join(REPRODUCTIONS)}"
        )
    module, func = REPRODUCTIONS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), func)


__all__ = ["REPRODUCTIONS", "get", "write_reproduction"]
