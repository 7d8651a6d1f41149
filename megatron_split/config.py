"""Dataclass configs from YAML files and dotted command-line overrides.

Every component has a ``@dataclass ...Config``; a run's config is a tree of them. This module
turns ``{yaml file} + ["optim.lr=3e-4", ...]`` into that tree, checking every key and type so
that a typo fails before any process group starts, with the file and the dotted path.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config that cannot run; the message names where and what to do."""


def _origin_args(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    return typing.get_origin(tp), typing.get_args(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, or raise naming the field."""
    origin, args = _origin_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arm, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{where}: {value!r} fits no type in {tp}"
        )
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args or (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads "3e-4" as a string
        except ValueError:
            pass
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)  # "1e6" tokens
    if tp in (int, float, str, bool) and not (
        isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown or mistyped keys raise ConfigError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]}; {cls.__name__} has: {', '.join(sorted(fields))}"
        )
    kwargs = {
        name: _coerce(value, hints[name], f"{where}.{name}" if where else name)
        for name, value in data.items()
    }
    missing = [name for name, f in fields.items() if name not in data
               and f.default is f.default_factory is dataclasses.MISSING]  # fmt: skip
    if missing:
        prefix = f"{where}." if where else ""
        keys = ", ".join(prefix + name for name in missing)
        raise ConfigError(f"missing key {keys}: {cls.__name__} has no default for it")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested mapping, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); "
                              "quote it for the shell, e.g. 'a.b=[1, 2]'") from None  # fmt: skip
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping: YAML itself keeps
    the last silently, losing what the first block set. Merge keys (``<<: *site``) are
    YAML's own: a key written beside one overrides what it merges."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # expanded by the base class, below the keys written here
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"line {line}: key {key!r} is already set on line {seen[key]}")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _blame(error: ConfigError, source: str, overrides: list[str]) -> ConfigError:
    """``error`` named after the override that set the field it names, else the file: an
    override's mistake is not the file's."""
    for item in overrides:
        key = item.partition("=")[0]
        if key and re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", str(error)):
            said = str(error).startswith(item)  # "key=value: ..." names it already
            return ConfigError(f"override {error}" if said else f"override {item}: {error}")
    return ConfigError(f"{source}: {error}")


def load_config(
    cls: type[T], path: str | Path | None, overrides: list[str] = (), **validate_args: Any
) -> T:
    """Read ``path`` (YAML) into ``cls``, apply dotted overrides, and validate (passing
    ``validate_args`` to the config's ``validate``)."""
    data: dict[str, Any] = {}
    source = "<overrides>"
    if path is not None:
        source = str(path)
        try:
            data = yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    apply_overrides(data, list(overrides))
    try:
        cfg = from_dict(cls, data)
        validate = getattr(cfg, "validate", None)
        if validate is not None:
            validate(**validate_args)
    except ConfigError as e:
        raise _blame(e, source, list(overrides)) from None
    return cfg


def dump_yaml(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
