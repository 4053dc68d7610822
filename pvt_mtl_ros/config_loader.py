"""The one config reader: YAML files with ``_base_`` inheritance, ``a.b.0=value`` overrides and
typed conversion into dataclasses, every error one line that names the key.

Used by the training configs and experiments (training/config.py) and the SIL scenarios
(pvt_mtl_ros/sil/scenario.py). A small module of our own rather than OmegaConf or pydantic:
the configs are plain dataclasses that the model and the node also build in code, and what we
need beyond ``dataclasses`` is the four functions here (no new dependency, no second schema).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config that cannot be used: the message names the file or key and what is wrong."""


def suggest(key: str, known: typing.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else ''."""
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- files --------------------------------------------------------------------------------


def _named(items: Any) -> bool:
    return isinstance(items, list) and all(isinstance(i, dict) and "name" in i for i in items)


def merge(into: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` merged into ``into``: mappings key by key; lists of named mappings (datasets)
    item by item, by name, new names appended; anything else (other lists too) replaced."""
    for key, value in update.items():
        old = into.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            merge(old, value)
        elif _named(value) and _named(old) and old:
            index = {item["name"]: item for item in old}
            for item in value:
                if item["name"] in index:
                    merge(index[item["name"]], item)
                else:
                    old.append(copy.deepcopy(item))
        else:
            into[key] = copy.deepcopy(value)
    return into


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping; ``_base_: other.yaml`` (relative to this file) is read first and this
    file merged over it (see merge: datasets by name), so a variant states only what differs."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = raw.pop("_base_", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: _base_ must be a file name, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in _seen or base_path == path.resolve():
        raise ConfigError(f"{path}: _base_ {base} includes itself")
    return merge(read_yaml(base_path, (*_seen, path.resolve())), raw)


# --- command-line overrides ---------------------------------------------------------------


def parse_assignment(assignment: str) -> tuple[str, Any]:
    """``a.b.0=value`` -> ("a.b.0", value parsed as YAML; an empty value is null)."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    try:
        return key, yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML: {e}") from None


def set_key(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``raw[a][b][0] = value`` for the key ``a.b.0``: list items by index, missing or null
    mappings on the way created."""
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: {where} is not an index of the list")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i]) or key} is not a mapping")
        if i == len(parts) - 1:
            node[part] = value
        else:
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = {}
            node = node[part]
    return raw


def apply_set(raw: dict[str, Any], assignment: str) -> dict[str, Any]:
    """One ``--set a.b.0=value`` applied to a raw mapping."""
    return set_key(raw, *parse_assignment(assignment))


# --- typed conversion -----------------------------------------------------------------------


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked and converted to the annotation ``hint``; errors name ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is list:
            return [convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)}")
        return tuple(convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {
            convert(k, args[0], where): convert(v, args[1], f"{where}.{k}")
            for k, v in value.items()
        }
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        # YAML reads "1e-4" (no dot) as a string; accept it as the number it spells.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(hint)}")  # a bug here


def from_dict(cls: type, data: Any, where: str, skip: tuple[str, ...] = ()) -> Any:
    """Build dataclass ``cls`` from a mapping: unknown keys and missing required keys raise.
    ``skip``: fields that are not config keys (set in code)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or 'config'}: unknown key(s) {', '.join(map(str, unknown))}"
            f"{suggest(unknown[0], fields)} (known: {', '.join(fields)})"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = convert(data[name], hints[name], f"{where}.{name}" if where else name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where or 'config'}: missing required key {name!r}")
    return cls(**kwargs)
