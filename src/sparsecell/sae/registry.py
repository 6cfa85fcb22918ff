"""Architecture registry: a name in ``SAEConfig.arch`` → the class that implements it."""

from __future__ import annotations

from collections.abc import Callable

from .._errors import SparsecellError
from ._base import SparseAutoencoder

ARCHITECTURES: dict[str, type[SparseAutoencoder]] = {}


def register(name: str) -> Callable[[type[SparseAutoencoder]], type[SparseAutoencoder]]:
    """Class decorator adding an architecture to :data:`ARCHITECTURES`."""

    def deco(cls: type[SparseAutoencoder]) -> type[SparseAutoencoder]:
        cls.arch = name
        ARCHITECTURES[name] = cls
        return cls

    return deco


def get(name: str) -> type[SparseAutoencoder]:
    """The class registered as ``name``."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise SparsecellError(
            f"unknown SAE architecture '{name}'", f"choose one of: {known}"
        ) from None
