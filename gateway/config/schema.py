"""The machinery of configuration: declared settings, conversion, key paths in errors.

A setting is a dataclass field declared with :func:`setting` (default, help,
constraints). :func:`convert` turns a parsed TOML table into the dataclass,
refusing unknown keys and wrong types, and raising :class:`KeyProblem` with the
key path so the caller can name the file. Sections live in the module that owns
them (``gateway/config/loader.py`` wires them into one ``Config``).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import field
from datetime import timedelta

_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    """``"15m"``, ``"4h"``, ``"2d"``, ``"1h30m"``, ``"90s"``, ``"1w"`` -> timedelta."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise ValueError(f'bad duration {text!r}: use a number and a unit, e.g. "90s", "15m", "4h", "2d"')
    w, d, h, m, s = (int(g or 0) for g in match.groups())
    return timedelta(weeks=w, days=d, hours=h, minutes=m, seconds=s)


def format_duration(delta: timedelta) -> str:
    """The inverse of :func:`parse_duration` (``timedelta(hours=4)`` -> ``"4h"``)."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out


def setting(default=dataclasses.MISSING, *, help: str, choices=None, minimum=None, factory=None):
    """Declare a setting: its default (none = required), help text and constraints."""
    meta = {"help": help, "choices": choices, "minimum": minimum}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class KeyProblem(Exception):
    def __init__(self, trail: tuple[str, ...], problem: str):
        self.trail, self.problem = trail, problem

    def where(self) -> str:
        return " → ".join(self.trail) if self.trail else "top level"


def _label(trail: tuple[str, ...], key: str, item: dict | None, index: int | None) -> tuple[str, ...]:
    if index is None:
        return (*trail, f"[{key}]" if not trail else key)
    name = item.get("name") if isinstance(item, dict) else None
    ident = repr(name) if isinstance(name, str) else f"#{index + 1}"
    return (*trail, f"[[{key}]] {ident}")


def convert(cls, data, trail: tuple[str, ...]):
    if not isinstance(data, dict):
        raise KeyProblem(trail, f"expected a table, got {_type_name(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        close = {k: _closest(k, fields) for k in unknown}
        hint = "; ".join(f"'{k}'" + (f" (did you mean '{c}'?)" if c else "") for k, c in close.items())
        raise KeyProblem(trail, f"unknown key {hint}")
    values = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise KeyProblem((*trail, name), "required key is missing")
            continue
        values[name] = _value(hints[name], data[name], trail, name, f.metadata)
    return cls(**values)


def _value(tp, value, trail, key, meta):
    origin = typing.get_origin(tp)
    here = (*trail, key)
    if dataclasses.is_dataclass(tp):
        return convert(tp, value, _label(trail, key, value, None))
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise KeyProblem(here, f"expected a list, got {_type_name(value)}")
        if dataclasses.is_dataclass(item_tp):
            items = [convert(item_tp, v, _label(trail, key, v, i)) for i, v in enumerate(value)]
            names = [getattr(it, "name", None) for it in items]
            seen = set()
            for n in names:
                if n is not None and n in seen:
                    raise KeyProblem(_label(trail, key, {"name": n}, 0), "duplicate name")
                seen.add(n)
            return items
        return [_value(item_tp, v, trail, f"{key}[{i}]", meta) for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise KeyProblem(here, f"expected a table, got {_type_name(value)}")
        return {k: _value(val_tp, v, here, k, meta) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):  # the first type the value fits
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        for arg in args[:-1]:
            try:
                return _value(arg, value, trail, key, meta)
            except KeyProblem:
                pass
        try:
            return _value(args[-1], value, trail, key, meta)
        except KeyProblem:
            if len(args) == 1:
                raise
            kinds = " or ".join(_type_name(typing.get_origin(a) or a, kind=True) for a in args)
            raise KeyProblem(here, f"expected {kinds}, got {_type_name(value)}") from None
    if tp is timedelta:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise KeyProblem(here, str(exc)) from None
    if tp is bool:
        if not isinstance(value, bool):
            raise KeyProblem(here, f"expected true or false, got {_type_name(value)}")
        return value
    if tp is int or tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (tp is int and isinstance(value, float)):
            raise KeyProblem(here, f"expected {'an integer' if tp is int else 'a number'}, got {_type_name(value)}")
        if meta.get("minimum") is not None and value < meta["minimum"]:
            raise KeyProblem(here, f"must be at least {meta['minimum']}, got {value}")
        return tp(value)
    if tp is str:
        if not isinstance(value, str):
            raise KeyProblem(here, f"expected a string, got {_type_name(value)}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise KeyProblem(here, f"must be one of {', '.join(choices)}; got {value!r}")
        return value
    raise TypeError(f"unsupported setting type {tp!r}")  # a programming error, not a user one


def _type_name(value, kind: bool = False) -> str:
    """What ``value`` is (or, with ``kind``, what the type ``value`` is), in the words of a TOML user."""
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list", dict: "a table"}
    tp = value if kind else type(value)
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _closest(key: str, fields) -> str | None:
    match = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.75)
    return match[0] if match else None


def iter_settings(cls, prefix: tuple[str, ...] = ()):
    """Yield (section path, key, field) for every setting: the documented surface of the config."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp
        if dataclasses.is_dataclass(inner):
            section = (*prefix, f.name)
            yield prefix, f.name, f
            yield from iter_settings(inner, section)
        else:
            yield prefix, f.name, f
