"""Config machinery: nested from_dict, one-line errors with the closest key, TOML round trip."""

import tomllib
from dataclasses import dataclass, field
from typing import Literal

import pytest

from sparsecell import SparsecellError
from sparsecell.config import from_dict, load_toml, save_toml, split_kwargs, to_dict, to_toml


@dataclass
class Inner:
    k: int = 32
    """Active latents per sample."""
    eps: float | None = None
    """Entropic regularisation; unset means automatic."""
    mode: Literal["fast", "exact"] = "fast"
    """Solver mode."""
    sizes: tuple[int, ...] = (1, 2)
    """Prefix sizes."""

    def __post_init__(self):
        if self.k < 1:
            raise SparsecellError(f"k must be >= 1, got {self.k}", "set k to a positive integer")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    """The nested stage."""
    name: str = "run"
    """Run name."""


def test_nested_from_dict_and_back():
    cfg = from_dict(Outer, {"inner": {"k": 4, "eps": 1, "sizes": [3, 4]}, "name": "x"})
    assert cfg == Outer(Inner(k=4, eps=1.0, sizes=(3, 4)), "x")
    assert isinstance(cfg.inner.eps, float)
    assert from_dict(Outer, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "data, match",
    [
        ({"inner": {"kk": 1}}, r"unknown config key 'inner\.kk' \(did you mean 'k'\?\)"),
        ({"nmae": "x"}, r"'nmae' \(did you mean 'name'\?\)"),
        ({"inner": {"k": "abc"}}, r"'inner\.k' must be an integer"),
        ({"inner": {"k": True}}, r"'inner\.k' must be an integer"),
        (
            {"inner": {"mode": "exakt"}},
            r"'inner\.mode' cannot be 'exakt' \(did you mean 'exact'\?\)",
        ),
        ({"inner": 3}, r"'inner' must be a table"),
        ({"inner": {"k": 0}}, r"k must be >= 1"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(data, match):
    with pytest.raises(SparsecellError, match=match) as e:
        from_dict(Outer, data)
    assert "\n" not in str(e.value)


def test_toml_round_trip_with_comments(tmp_path):
    cfg = Outer(Inner(k=7), "demo")
    p = save_toml(cfg, tmp_path / "c.toml", comments=True)
    text = p.read_text()
    assert "# Active latents per sample." in text
    assert "# eps = (unset)" in text  # None cannot be written in TOML: shown, left out
    assert load_toml(Outer, p) == cfg
    assert tomllib.loads(to_toml(cfg)) == {
        "inner": {"k": 7, "mode": "fast", "sizes": [1, 2]},
        "name": "demo",
    }


def test_load_toml_errors(tmp_path):
    with pytest.raises(SparsecellError, match="does not exist"):
        load_toml(Outer, tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ")
    with pytest.raises(SparsecellError, match="not valid TOML"):
        load_toml(Outer, bad)


def test_split_kwargs_names_closest_field():
    a, b = split_kwargs({"k": 1, "name": "x"}, Inner, Outer)
    assert a == {"k": 1} and b == {"name": "x"}
    with pytest.raises(SparsecellError, match=r"unknown option .nam. \(did you mean .name.\?\)"):
        split_kwargs({"nam": 1}, Inner, Outer)
