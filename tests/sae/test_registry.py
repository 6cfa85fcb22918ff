"""The architecture registry refuses to overwrite a name silently."""

import pytest

from sparsecell import SparsecellError
from sparsecell.sae import registry


def test_register_refuses_taken_name_unless_replace():
    original = registry.ARCHITECTURES["topk"]

    class Impostor(original):
        pass

    with pytest.raises(SparsecellError, match="'topk' is already registered"):
        registry.register("topk")(Impostor)
    assert registry.ARCHITECTURES["topk"] is original
    try:
        registry.register("topk", replace=True)(Impostor)
        assert registry.get("topk") is Impostor
    finally:
        registry.register("topk", replace=True)(original)
    assert registry.get("topk") is original
