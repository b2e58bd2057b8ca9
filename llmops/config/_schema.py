"""Build frozen dataclasses from parsed YAML, reporting every problem with its YAML path.

A config class is a frozen dataclass whose field types are drawn from: ``str``, ``int``,
``float``, ``bool``, ``None``, ``Literal[...]``, ``tuple[X, ...]``, ``dict[str, X]``, unions
of those and nested config classes. Field metadata may hold ``check``: a function of the
built value returning an error message or None, and ``alias``: another key accepted for it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class _Invalid(Exception):
    """Raised inside the builder when a value cannot be built; its problem is recorded."""


def build(cls: type[T], data: Any, problems: list[str], path: str = "") -> T | None:
    """Build ``cls`` from ``data``; append ``path: message`` to ``problems`` for each error."""
    try:
        return typing.cast(T, _build_value(cls, data, path, problems))
    except _Invalid:
        return None


def join_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _build_value(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build_dataclass(tp, value, path, problems)
    if origin is Literal:
        allowed = get_args(tp)
        if value in allowed and type(value) is type(allowed[allowed.index(value)]):
            return value
        choices = ", ".join(repr(a) if not isinstance(a, str) else a for a in allowed)
        _fail(problems, path, f"must be one of {choices} (got {value!r})")
    if origin in (Union, types.UnionType):
        return _build_union(tp, value, path, problems)
    if origin is tuple:
        (item_type, _ellipsis) = get_args(tp)
        if not isinstance(value, list):
            _fail(problems, path, f"must be a list (got {_kind(value)})")
        return tuple(_build_items(item_type, value, path, problems))
    if origin is dict:
        _key_type, item_type = get_args(tp)
        if not isinstance(value, dict):
            _fail(problems, path, f"must be a mapping (got {_kind(value)})")
        built: dict[str, Any] = {}
        failed = False
        for key, item in value.items():
            try:
                built[str(key)] = _build_value(item_type, item, join_path(path, str(key)), problems)
            except _Invalid:
                failed = True
        if failed:
            raise _Invalid
        return built
    return _build_scalar(tp, value, path, problems)


def _build_items(item_type: Any, values: list[Any], path: str, problems: list[str]) -> list[Any]:
    built = []
    failed = False
    for index, item in enumerate(values):
        try:
            built.append(_build_value(item_type, item, join_path(path, index), problems))
        except _Invalid:
            failed = True
    if failed:
        raise _Invalid
    return built


def _build_union(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    options = get_args(tp)
    if value is None:
        if type(None) in options:
            return None
        _fail(problems, path, "must not be empty")
    messages: list[str] = []
    for option in options:
        if option is type(None):
            continue
        trial: list[str] = []
        try:
            return _build_value(option, value, path, trial)
        except _Invalid:
            messages.extend(trial)
    if len(messages) == 1:
        problems.append(messages[0])
        raise _Invalid
    described = " or ".join(_describe(o) for o in options if o is not type(None))
    _fail(problems, path, f"must be {described} (got {value!r})")


def _build_scalar(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    if tp is type(None):
        if value is None:
            return None
        _fail(problems, path, f"must be empty (got {value!r})")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    else:  # pragma: no cover - a programming error in a config class
        raise TypeError(f"unsupported config type {tp!r}")
    _fail(problems, path, f"must be {_describe(tp)} (got {_kind(value)} {value!r})")


def _build_dataclass(cls: type[Any], value: Any, path: str, problems: list[str]) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        _fail(problems, path, f"must be a mapping (got {_kind(value)})")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    aliases = {f.metadata["alias"]: f.name for f in fields.values() if "alias" in f.metadata}
    kwargs: dict[str, Any] = {}
    failed = False
    for key in value:
        name = aliases.get(key, key)
        if not isinstance(key, str) or name not in fields:
            problems.append(f"{join_path(path, str(key))}: unknown key")
            failed = True
    for name, field in fields.items():
        alias: str | None = field.metadata.get("alias")
        key = alias if alias is not None and alias in value and name not in value else name
        item_path = join_path(path, key)
        if key not in value:
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                problems.append(f"{item_path}: required")
                failed = True
            continue
        try:
            built = _build_value(hints[name], value[key], item_path, problems)
        except _Invalid:
            failed = True
            continue
        check: Callable[[Any], str | None] | None = field.metadata.get("check")
        message = check(built) if check is not None else None
        if message:
            problems.append(f"{item_path}: {message}")
            failed = True
            continue
        kwargs[name] = built
    if failed:
        raise _Invalid
    return cls(**kwargs)


def _fail(problems: list[str], path: str, message: str) -> typing.NoReturn:
    problems.append(f"{path or '<top>'}: {message}")
    raise _Invalid


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__ if value is not None else "nothing"
    )


def _describe(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if get_origin(tp) is tuple:
        return "a list"
    if get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def positive(value: float | None) -> str | None:
    return "must be > 0" if value is not None and value <= 0 else None


def non_negative(value: float | None) -> str | None:
    return "must be >= 0" if value is not None and value < 0 else None


def port_number(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a port number (0-65535)"
