"""Plain dataclass configs from YAML, with every value checked against its field's type.

* :func:`read_yaml` reads a mapping with YAML 1.2 numbers (``lr: 1e-3`` is a float, as users
  mean it; PyYAML's YAML 1.1 would make it a string), refuses duplicate keys and names the file.
* :func:`from_mapping` builds a (possibly nested) dataclass from a mapping; a wrong value is
  refused with the field's path, the expected type and the value:
  ``stages[1].iterations: expected an integer, got 2.5``.

Not pydantic: Ubuntu 24.04's python3-pydantic is 1.x, which a robot's ROS packages pin, and the
checks needed here are a few lines over ``typing.get_type_hints``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)
    |[-+]?(?:[0-9][0-9_]*)\.[0-9_]*
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (``1e-3``) and an error on duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """YAML text -> Python values (see module docstring); ValueError names ``source``."""
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ValueError(f"{source} is not valid YAML: {_yaml_message(error)}") from error


def read_yaml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """Reads a YAML file whose top level must be a mapping (an empty file is ``{}``)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, not a YAML file")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {what} {path}: {error}") from error
    data = parse_yaml(text, f"{what} {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must be a mapping of keys to values, not a {_kind(data)}")
    return data


def _yaml_message(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def _kind(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is bool:
        return "true or false"
    if annotation is str:
        return "a string"
    if annotation is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if origin is tuple:
        return "a list"
    if dataclasses.is_dataclass(annotation):
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def convert(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked (and, for lists and dataclasses, converted) to ``annotation``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return convert(value, option, where)
            except ValueError as error:
                errors.append(error)
        raise ValueError(f"{where}: expected {_describe(annotation)}, got {value!r}")
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif annotation is float:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"{where}: expected a finite number, got {value!r}")
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        if isinstance(value, list | tuple):
            args = typing.get_args(annotation)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
            if len(value) != len(args):
                raise ValueError(
                    f"{where}: expected a list of {len(args)} values, got {len(value)}: {value!r}"
                )
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(convert(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
    elif dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if isinstance(value, dict):
            return from_mapping(annotation, value, where)
    else:  # pragma: no cover - a field type this loader does not know
        raise TypeError(f"{where}: unsupported field type {annotation!r}")
    raise ValueError(f"{where}: expected {_describe(annotation)}, got {_kind(value)} {value!r}")


def from_mapping(cls: type, values: Any, where: str = "") -> Any:
    """Builds dataclass ``cls`` from ``values``; errors name the field path (prefix ``where``).

    Unknown keys are refused with the known ones; missing required fields are named. The
    dataclass's own ``__post_init__`` checks run afterwards (their ValueError gets the prefix).
    """
    prefix = f"{where}." if where else ""
    intro = f"{where}: " if where else ""
    if not isinstance(values, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {_kind(values)} {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in set(values) - set(fields))
    if unknown:
        raise ValueError(f"{intro}unknown keys {unknown}; known keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    missing = [
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{intro}missing required keys {missing}")
    converted = {
        name: convert(value, hints[name], f"{prefix}{name}") for name, value in values.items()
    }
    try:
        return cls(**converted)
    except ValueError as error:
        raise ValueError(f"{where}: {error}" if where else str(error)) from error
