"""Configuration: one TOML file -> frozen dataclasses, validated at load.

Each setting is declared once, here, with its type, default and help; the
loader refuses unknown keys, wrong types, bad durations, duplicate names and
dangling references, and every error names the file and the key path
(``[[group]] 'network' → escalation``). Secrets are never in the file: keys
ending in ``_env`` name the environment variable that holds them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from gateway.errors import ConfigError

_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    """``"15m"``, ``"4h"``, ``"2d"``, ``"1h30m"``, ``"90s"``, ``"1w"`` -> timedelta."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise ValueError(f"bad duration {text!r}: use a number and a unit, e.g. \"90s\", \"15m\", \"4h\", \"2d\"")
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


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class InletSection:
    name: str = setting("Inlet", help="Name of this service desk, shown in the UI and in messages.")
    base_url: str = setting("http://127.0.0.1:8025", help="URL of the web UI as users reach it; links in messages point here.")
    ref_prefix: str = setting("INC", help="Prefix of incident references (INC-42).")
    timezone: str = setting("UTC", help="Time zone for display and business-hours calendars.")
    data_dir: str = setting("var", help="Folder for the SQLite database and other local state.")
    log_level: str = setting("info", help="Log level.", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class DatabaseSection:
    url: str = setting(
        "sqlite:///var/inlet.db",
        help="sqlite:///path (embedded default) or postgresql://user@host:5432/db (to scale out).",
    )
    password_env: str = setting("", help="Environment variable holding the database password, if any.")
    pool_size: int = setting(10, help="PostgreSQL connection pool size per process.", minimum=1)
    busy_timeout: timedelta = setting(timedelta(seconds=10), help="How long SQLite waits for its write lock.")


@dataclass(frozen=True)
class WebSection:
    host: str = setting("127.0.0.1", help="Address the web UI and webhooks listen on (loopback unless you mean it).")
    port: int = setting(8025, help="Port of the web UI and webhooks.", minimum=0)
    threads: int = setting(8, help="WSGI worker threads.", minimum=1)
    secret_key_env: str = setting(
        "INLET_SECRET_KEY",
        help="Environment variable holding the session signing key; when unset, a key is generated and kept in data_dir.",
    )
    secure_cookies: bool = setting(False, help="Mark cookies Secure (set true when served behind TLS).")
    max_body_size: int = setting(1_048_576, help="Largest accepted request body in bytes.", minimum=1)


@dataclass(frozen=True)
class EscalationStep:
    after: timedelta = setting(help="Delay from the trigger (opened for 'unacknowledged', SLA start for the others).")
    when: str = setting(
        "unacknowledged",
        help="Condition that must still hold when the step fires.",
        choices=("unacknowledged", "unresolved", "resolve_sla_warning", "resolve_sla_breach"),
    )
    notify: list[str] = setting(factory=list, help="Apprise URLs or tags (contacts, group channels) to page.")
    flag: bool = setting(False, help="Raise the escalated flag on the incident.")


@dataclass(frozen=True)
class EscalationPolicy:
    name: str = setting(help="Name that groups refer to.")
    steps: list[EscalationStep] = setting(factory=list, help="Steps, each fired at most once per incident.")


@dataclass(frozen=True)
class Group:
    name: str = setting(help="Resolver group name (unique).")
    description: str = setting("", help="What this group handles.")
    email: str = setting("", help="Address of the group, for people.")
    channels: list[str] = setting(factory=list, help="Apprise URLs the group is notified on.")
    members: list[str] = setting(factory=list, help="User names of the group's agents.")
    escalation: str = setting("", help="Name of the [[escalation]] policy for this group's incidents.")


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``path`` is the file it came from."""

    inlet: InletSection = setting(factory=InletSection, help="General settings.")
    database: DatabaseSection = setting(factory=DatabaseSection, help="Where incidents are stored.")
    web: WebSection = setting(factory=WebSection, help="Web UI, REST API and webhooks.")
    fallback_group: str = setting("service-desk", help="Group that gets what no rule allocates.")
    group: list[Group] = setting(factory=list, help="Resolver groups.")
    escalation: list[EscalationPolicy] = setting(factory=list, help="Escalation policies.")
    path: str = field(default="", metadata={"internal": True})

    def group_named(self, name: str) -> Group | None:
        return next((g for g in self.group if g.name == name), None)


# ---------------------------------------------------------------- loading


def default_config_path(explicit: str | None = None) -> Path:
    """``-c`` if given, else ``$INLET_CONFIG``, else ``./config.toml``, else ``config.example.toml``."""
    if explicit:
        return Path(explicit)
    if os.environ.get("INLET_CONFIG"):
        return Path(os.environ["INLET_CONFIG"])
    if Path("config.toml").exists():
        return Path("config.toml")
    return Path("config.example.toml")


def load_config(path: str | os.PathLike) -> Config:
    """Read, convert and validate a configuration file; raise ConfigError naming file and key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    return config_from_dict(data, str(path))


def config_from_dict(data: dict, path: str = "<config>") -> Config:
    """Convert a parsed TOML document into a validated :class:`Config`."""
    try:
        config = _convert(Config, data, ())
        config = dataclasses.replace(config, path=path)
        _check_references(config)
    except _KeyError as exc:
        raise ConfigError(f"{path}: {exc.where()}: {exc.problem}") from None
    return config


def secret(env_name: str) -> str | None:
    """The value of the environment variable a ``*_env`` key names (None if unset or empty)."""
    return os.environ.get(env_name) or None if env_name else None


class _KeyError(Exception):
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


def _convert(cls, data, trail: tuple[str, ...]):
    if not isinstance(data, dict):
        raise _KeyError(trail, f"expected a table, got {_type_name(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        close = {k: _closest(k, fields) for k in unknown}
        hint = "; ".join(f"'{k}'" + (f" (did you mean '{c}'?)" if c else "") for k, c in close.items())
        raise _KeyError(trail, f"unknown key {hint}")
    values = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _KeyError((*trail, name), "required key is missing")
            continue
        values[name] = _value(hints[name], data[name], trail, name, f.metadata)
    return cls(**values)


def _value(tp, value, trail, key, meta):
    origin = typing.get_origin(tp)
    here = (*trail, key)
    if dataclasses.is_dataclass(tp):
        return _convert(tp, value, _label(trail, key, value, None))
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise _KeyError(here, f"expected a list, got {_type_name(value)}")
        if dataclasses.is_dataclass(item_tp):
            items = [_convert(item_tp, v, _label(trail, key, v, i)) for i, v in enumerate(value)]
            names = [getattr(it, "name", None) for it in items]
            seen = set()
            for n in names:
                if n is not None and n in seen:
                    raise _KeyError(_label(trail, key, {"name": n}, 0), "duplicate name")
                seen.add(n)
            return items
        return [_value(item_tp, v, trail, f"{key}[{i}]", meta) for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise _KeyError(here, f"expected a table, got {_type_name(value)}")
        return {k: _value(val_tp, v, here, k, meta) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _value(args[0], value, trail, key, meta)
    if tp is timedelta:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise _KeyError(here, str(exc)) from None
    if tp is bool:
        if not isinstance(value, bool):
            raise _KeyError(here, f"expected true or false, got {_type_name(value)}")
        return value
    if tp is int or tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (tp is int and isinstance(value, float)):
            raise _KeyError(here, f"expected {'an integer' if tp is int else 'a number'}, got {_type_name(value)}")
        if meta.get("minimum") is not None and value < meta["minimum"]:
            raise _KeyError(here, f"must be at least {meta['minimum']}, got {value}")
        return tp(value)
    if tp is str:
        if not isinstance(value, str):
            raise _KeyError(here, f"expected a string, got {_type_name(value)}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise _KeyError(here, f"must be one of {', '.join(choices)}; got {value!r}")
        return value
    raise TypeError(f"unsupported setting type {tp!r}")  # a programming error, not a user one


def _type_name(value) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list", dict: "a table"}.get(
        type(value), type(value).__name__
    )


def _closest(key: str, fields) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.75)
    return match[0] if match else None


def _check_references(config: Config) -> None:
    groups = {g.name for g in config.group}
    policies = {p.name for p in config.escalation}
    if config.fallback_group not in groups:
        raise _KeyError(("fallback_group",), f"no [[group]] named {config.fallback_group!r}")
    for g in config.group:
        if g.escalation and g.escalation not in policies:
            raise _KeyError((f"[[group]] {g.name!r}", "escalation"), f"no [[escalation]] named {g.escalation!r}")
    for p in config.escalation:
        for i, step in enumerate(p.steps):
            if not step.notify and not step.flag:
                raise _KeyError(
                    (f"[[escalation]] {p.name!r}", f"steps[{i}]"), "a step needs a target in 'notify' (or flag = true)"
                )


def iter_settings(cls=Config, prefix: tuple[str, ...] = ()):
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
