"""Architecture registry: a name in ``SAEConfig.arch`` → the class that implements it."""

from __future__ import annotations

from collections.abc import Callable

from .._errors import SparsecellError
from ._base import SparseAutoencoder

ARCHITECTURES: dict[str, type[SparseAutoencoder]] = {}


def register(
    name: str, *, replace: bool = False
) -> Callable[[type[SparseAutoencoder]], type[SparseAutoencoder]]:
    """Class decorator adding an architecture to :data:`ARCHITECTURES`.

    Registering a name that is taken by another class is an error unless ``replace=True``
    (so a plug-in cannot silently shadow a built-in architecture).
    """

    def deco(cls: type[SparseAutoencoder]) -> type[SparseAutoencoder]:
        old = ARCHITECTURES.get(name)
        if old is not None and old is not cls and not replace:
            raise SparsecellError(
                f"SAE architecture '{name}' is already registered ({old.__qualname__})",
                "choose another name or pass replace=True",
            )
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
