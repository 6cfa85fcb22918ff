"""One config tree: dataclass configs with field docstrings, TOML in and out.

Every stage's settings are a dataclass whose fields carry docstrings (the string literal
under each field, as in EleutherAI's sparsify) and whose ``__post_init__`` checks values.
This module holds the machinery shared by all of them:

- :func:`from_dict` builds a (nested) config from plain data; an unknown key or a wrong
  type is a one-line :class:`SparsecellError` naming the key path and the closest valid key.
- :func:`to_dict` is its inverse (tuples become lists, nested configs dicts).
- :func:`load_toml` / :func:`save_toml` read and write TOML (``tomllib`` / ``tomli-w``);
  :func:`to_toml` can write every field's docstring as a comment (``sparsecell init``).
- :func:`split_kwargs` splits flat keyword arguments between two config classes.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import functools
import inspect
import os
import textwrap
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from ._errors import SparsecellError

C = TypeVar("C")


def closest(name: str, valid: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """The valid name closest to ``name`` (None when nothing is close)."""
    m = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return m[0] if m else None


def _hint(name: str, valid: list[str] | set[str], otherwise: str) -> str:
    """``did you mean 'x'?`` for the closest valid name, else ``otherwise``."""
    near = closest(name, valid)
    return f"did you mean {near!r}?" if near else otherwise


def unknown_key_error(key: str, valid: list[str], where: str = "") -> SparsecellError:
    """The one-line error for an unknown config key, with the closest valid one."""
    path = f"{where}.{key}" if where else key
    fix = _hint(key, valid, "valid keys: " + ", ".join(sorted(valid)))
    return SparsecellError(f"unknown config key {path!r}", fix)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Docstrings of a dataclass's fields (the string literal after each field)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(src).body[0].body  # type: ignore[attr-defined]
        for a, b in zip(body, body[1:], strict=False):
            if (
                isinstance(a, ast.AnnAssign)
                and isinstance(a.target, ast.Name)
                and isinstance(b, ast.Expr)
                and isinstance(b.value, ast.Constant)
                and isinstance(b.value.value, str)
            ):
                docs[a.target.id] = inspect.cleandoc(b.value.value)
    return docs


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """``value`` checked against type ``tp`` (ints accepted for floats, lists for tuples)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise SparsecellError(
                f"config key {path!r} must be a table, got {type(value).__name__}",
                f"write it as [{path}]",
            )
        return from_dict(tp, value, where=path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            with contextlib.suppress(SparsecellError):
                return _coerce(value, a, path)
        raise SparsecellError(
            f"config key {path!r} must be {_type_name(tp)}, got {value!r}",
            "fix its value",
        )
    if origin is typing.Literal:
        if value not in args:
            names = [str(a) for a in args]
            hint = _hint(str(value), names, "choose one of: " + ", ".join(names))
            raise SparsecellError(f"config key {path!r} cannot be {value!r}", hint)
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise SparsecellError(
                f"config key {path!r} must be a list, got {type(value).__name__}",
                "write it as [a, b, ...]",
            )
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise SparsecellError(
                    f"config key {path!r} needs {len(args)} values, got {len(value)}",
                    "fix its length",
                )
            pairs = enumerate(zip(value, args, strict=True))
            items = [_coerce(v, a, f"{path}[{i}]") for i, (v, a) in pairs]
        else:
            a = args[0] if args else Any
            items = [_coerce(v, a, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise SparsecellError(f"config key {path!r} must be a table", "fix its value")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SparsecellError(
                f"config key {path!r} must be a number, got {value!r}", "fix its value"
            )
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise SparsecellError(
                f"config key {path!r} must be an integer, got {value!r}", "fix its value"
            )
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise SparsecellError(
                f"config key {path!r} must be true or false, got {value!r}", "fix its value"
            )
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SparsecellError(
                f"config key {path!r} must be a string, got {value!r}", "quote its value"
            )
        return value
    if tp in (Path, os.PathLike):
        if not isinstance(value, (str, os.PathLike)):
            raise SparsecellError(f"config key {path!r} must be a path", "quote its value")
        return str(value)
    return value


def from_dict(cls: type[C], data: Mapping[str, Any], *, where: str = "") -> C:
    """Build config ``cls`` (a dataclass, possibly nesting others) from plain data.

    Unknown keys and wrong types raise a one-line :class:`SparsecellError` naming the key
    path (``sae.k``) and, for unknown keys, the closest valid key. Missing keys take
    their defaults. The class's own ``__post_init__`` checks then run.
    """
    if not isinstance(data, Mapping):
        raise SparsecellError(
            f"config {where or 'root'} must be a table, got {type(data).__name__}", "fix it"
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kw: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise unknown_key_error(key, list(fields), where)
        path = f"{where}.{key}" if where else key
        kw[key] = _coerce(value, hints[key], path)
    try:
        return cls(**kw)
    except SparsecellError:
        raise
    except (TypeError, ValueError) as e:
        raise SparsecellError(f"config {where or 'root'}: {e}", "fix that value") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain data of a (nested) config: tuples as lists, ``None`` fields kept."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)


def _drop_none(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    if isinstance(d, list):
        return [_drop_none(v) for v in d]
    return d


def to_toml(cfg: Any, *, comments: bool = False) -> str:
    """TOML text of a config; ``None`` fields are left out (TOML has no null), so reading
    it back gives their defaults. With ``comments`` every field's docstring precedes it."""
    import tomli_w

    if not comments:
        return tomli_w.dumps(_drop_none(to_dict(cfg)))
    return _commented(cfg, "")


def _commented(cfg: Any, prefix: str) -> str:
    import tomli_w

    docs = field_docs(type(cfg))
    scalars, tables = [], []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            tables.append((f.name, v))
            continue
        doc = docs.get(f.name, "")
        lines = [f"# {ln}".rstrip() for ln in doc.splitlines()] if doc else []
        plain = _drop_none({f.name: to_dict(v)})
        if v is None:
            lines.append(f"# {f.name} = (unset)")
        else:
            lines.append(tomli_w.dumps(plain).rstrip())
        scalars.append("\n".join(lines))
    out = []
    if prefix:
        out.append(f"[{prefix}]")
    out.extend(scalars)
    text = "\n".join(out)
    for name, sub in tables:
        text += "\n\n" + _commented(sub, f"{prefix}.{name}" if prefix else name)
    return text.strip() + "\n"


def load_toml(cls: type[C], path: str | os.PathLike) -> C:
    """Read config ``cls`` from a TOML file; one-line errors for a missing or bad file."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise SparsecellError(f"config file {p} does not exist", "check the path") from None
    except IsADirectoryError:
        raise SparsecellError(f"config {p} is a folder", "pass a .toml file") from None
    except UnicodeDecodeError:
        raise SparsecellError(f"config {p} is not a text file", "pass a .toml file") from None
    except tomllib.TOMLDecodeError as e:
        raise SparsecellError(f"config {p} is not valid TOML: {e}", "fix the syntax") from None
    return from_dict(cls, data)


def save_toml(cfg: Any, path: str | os.PathLike, *, comments: bool = False) -> Path:
    """Write a config as TOML atomically."""
    from ._io import atomic_write_text

    atomic_write_text(path, to_toml(cfg, comments=comments))
    return Path(path)


def split_kwargs(
    kwargs: Mapping[str, Any],
    first: type,
    second: type,
    *,
    exclude: tuple[str, ...] = (),
    what: str = "option",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route flat keyword arguments to the fields of two config classes.

    Parameters
    ----------
    kwargs
        The keyword arguments.
    first, second
        Config dataclasses; a key goes to the first whose field it names.
    exclude
        Field names that may not be passed this way (set from the data, say).
    what
        How the error names an unknown key (``"unknown <what> 'key'"``).

    Raises
    ------
    SparsecellError
        For a key of neither class, naming the closest field when one is close.
    """
    a = {f.name for f in dataclasses.fields(first)} - set(exclude)
    b = {f.name for f in dataclasses.fields(second)} - set(exclude)
    ka: dict[str, Any] = {}
    kb: dict[str, Any] = {}
    for k, v in kwargs.items():
        if k in a:
            ka[k] = v
        elif k in b:
            kb[k] = v
        else:
            fix = _hint(k, a | b, f"see {first.__name__} and {second.__name__} for the fields")
            raise SparsecellError(f"unknown {what} '{k}'", fix)
    return ka, kb


__all__ = [
    "closest",
    "field_docs",
    "from_dict",
    "load_toml",
    "save_toml",
    "split_kwargs",
    "to_dict",
    "to_toml",
    "unknown_key_error",
]
