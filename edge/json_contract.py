"""Frozen dataclasses read from JSON that another process wrote: one reader for every typed contract.

status.json (edge.daemon_status) and the answers of `crackd models --json` (edge.releases.answers) are read
through `from_json`, so a key read under a wrong name is an AttributeError and a value of the wrong type a
ValueError naming the key, never a silent None. Lenient in one direction only: a key a newer writer added is
ignored, a key an older writer lacked takes the field's default.

Types understood: str, int, float, bool, Literal (checked as the type of its values), `X | None`, list[X], dict
(taken as it is), Any, nested dataclasses, and dataclasses with a reader of their own (StatusReading).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union

_EXPECTED = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}


C = TypeVar("C", bound="JsonContract")


class JsonContract:
    """Base of a frozen dataclass that is a contract: `to_json` and `from_json` through this module."""

    def to_json(self) -> dict:
        return to_json(self)

    @classmethod
    def from_json(cls: type[C], data: Any) -> C:
        """Raises ValueError naming the key that is missing or of the wrong type."""
        return from_json(cls, data)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def from_json(cls: type, data: Any, where: str = "", what: str | None = None):
    """An instance of dataclass `cls` from `data` (a parsed JSON object); `where` prefixes key names in errors,
    `what` names the whole document (default: the class name)."""
    if not isinstance(data, dict):
        name = where.rstrip(".") or what or cls.__name__
        raise ValueError(f"{name}: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            values[f.name] = _value(hints[f.name], data[f.name], f"{where}{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where}{f.name}: missing")
        # else an older writer: the default stands
    return cls(**values)


def to_json(obj: Any, omit_none: tuple[str, ...] = ()) -> dict:
    """The JSON object of dataclass `obj`, its fields in order; nested contracts through their own `to_json`.
    The fields named in `omit_none` are left out while None (optional keys written only when set)."""
    return {
        f.name: _encode(value)
        for f in dataclasses.fields(obj)
        if (value := getattr(obj, f.name)) is not None or f.name not in omit_none
    }


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        own = getattr(value, "to_json", None)
        return own() if own is not None else to_json(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _value(hint: Any, value: Any, key: str):
    if hint is Any:
        return value
    if typing.get_origin(hint) in (Union, types.UnionType):
        if value is None:
            return None
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is Literal:
        # Checked as the type of its values, not against them: a newer writer may report a value (a camera state)
        # this reader does not know yet, and the reader shows it rather than refusing the whole document.
        (hint,) = {type(v) for v in typing.get_args(hint)}
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_value(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a JSON object, got {value!r}")
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        own = getattr(hint, "from_json", None)
        if own is None or issubclass(hint, JsonContract):
            return from_json(hint, value, f"{key}.")
        try:  # a contract with a reader of its own (StatusReading)
            return own(value)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    ok = (
        is_number(value)
        if hint is float
        else (isinstance(value, int) and not isinstance(value, bool) if hint is int else isinstance(value, hint))
    )
    if not ok:
        raise ValueError(f"{key}: expected {_EXPECTED.get(hint, hint.__name__)}, got {value!r}")
    return value
