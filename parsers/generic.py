"""Generic JSON webhook -> one Signal.

Any tool that can POST JSON can open incidents in Inlet. The body is a JSON
object with these fields:

============  ========  ==========================================================
Field         Required  Meaning
============  ========  ==========================================================
``title``     yes       One-line summary; becomes the incident title.
``message``   no        Longer text.
``severity``  no        Free text, e.g. ``critical``, ``warning``, ``info``; the
                        severity map of the integration turns it into impact and
                        urgency.
``dedup_key`` no        String or whole number. Signals with the same key belong
                        to the same incident while it is open; without one, every
                        request is a new signal.
``status``    no        ``firing`` (default) or ``resolved``. Also accepted, in
                        any case: ``alerting``, ``problem``, ``trigger`` (firing);
                        ``ok``, ``recovered`` (resolved).
``labels``    no        Object of strings (numbers and booleans are turned into
                        strings), used by classification rules.
``link``      no        An ``http(s)`` URL back to the sending tool; other
                        schemes are dropped.
============  ========  ==========================================================

Example::

    {"title": "Disk almost full on db-1", "message": "/var is at 93%",
     "severity": "warning", "dedup_key": "db-1:/var", "status": "firing",
     "labels": {"service": "billing", "host": "db-1"},
     "link": "https://monitor.example.com/checks/42"}

**Field mapping.** When a tool cannot be told what to send, the integration maps
each field to a dotted path into the tool's own JSON (``GenericOptions``)::

    mapping = {"title": "alert.name", "dedup_key": "alert.id", "status": "state", "labels": "tags"}

A path is keys separated by dots; a number selects an element of a list
(``items.0.name`` is the ``name`` of the first of ``items``). Keys that contain a
dot cannot be addressed. A field that is not mapped is read from its own name at
the top level. Errors name the path: ``field 'alert.name': required (title)``.

An entry may also be a **template** (``"{labels.host}: {check.name}"``, see
:mod:`parsers.template`: braces hold paths, nothing else) or a **list** of paths and
templates, the first one present wins (``["data.event.issue_id", "data.issue.id"]``).
The built-in tool kinds of :mod:`parsers.presets` are such mappings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.core.errors import ConfigError, ParseError
from parsers.payload import describe, http_links, invalid, require_body, shown
from parsers.signal import ACKNOWLEDGED, FIRING, RESOLVED, Signal
from parsers.template import is_template, parse_template

SOURCE = "generic"
FIELDS = ("title", "message", "severity", "dedup_key", "status", "labels", "link")

STATUS_WORDS = {
    "firing": FIRING,
    "alerting": FIRING,
    "problem": FIRING,
    "trigger": FIRING,
    "resolved": RESOLVED,
    "ok": RESOLVED,
    "recovered": RESOLVED,
}

# What a tool's status word may mean: the Signal states, or "ignore" (a notification that is not
# about an alert's state, e.g. Sentry's "assigned": stored, then ignored with that reason).
IGNORE = "ignore"
STATES = (FIRING, RESOLVED, ACKNOWLEDGED, IGNORE)

Alternatives = tuple[str, ...]


def _alternatives(name: str, entry: Any) -> Alternatives:
    """A mapping entry as its alternatives: one path or template, or a list of them tried in order."""
    entries = [entry] if isinstance(entry, str) else entry
    if not isinstance(entries, list | tuple) or not entries:
        raise ConfigError(f"generic mapping: '{name}' must be a path, a template or a list of them, got {entry!r}")
    for text in entries:
        if not isinstance(text, str):
            raise ConfigError(f"generic mapping: '{name}' must be a path, a template or a list of them, got {text!r}")
        if is_template(text):
            parse_template(text)  # ConfigError naming the stray brace
        elif not text or any(not part for part in text.split(".")):
            raise ConfigError(f"generic mapping: '{name}' must be a dotted path like 'alert.name', got {text!r}")
    return tuple(entries)


@dataclass(frozen=True)
class GenericOptions:
    """Per-integration options of the generic parser (also the presets of parsers.presets).

    ``mapping``: schema field -> where it is in the payload: a dotted path, a template
    (``"{host}: {check}"``, see parsers.template) or a list of those, the first one present
    wins. ``labels_from``: label name -> the same, for tools without a labels object.
    ``status_words``: the tool's own words (or numbers) for firing, resolved, acknowledged or
    ignore (no Signal: the request is stored and ignored), laid over the built-in ones.
    ``source``: the Signal source (the preset's name).
    """

    mapping: dict[str, Any] = field(default_factory=dict)
    labels_from: dict[str, Any] = field(default_factory=dict)
    status_words: dict[str, str] = field(default_factory=dict)
    source: str = SOURCE

    def __post_init__(self) -> None:
        for name, entry in self.mapping.items():
            if name not in FIELDS:
                raise ConfigError(f"generic mapping: unknown field '{name}'; expected one of {', '.join(FIELDS)}")
            _alternatives(name, entry)
        for name, entry in self.labels_from.items():
            _alternatives(f"labels_from.{name}", entry)
        for word, status in self.status_words.items():
            if status not in STATES:
                raise ConfigError(f"status word {word!r}: must mean one of {', '.join(STATES)}, got {status!r}")

    def alternatives(self, name: str) -> Alternatives:
        """Where field ``name`` is read from, in order (its own name at the top level when not mapped)."""
        return _alternatives(name, self.mapping.get(name, name))

    def words(self) -> dict[str, str]:
        return {**STATUS_WORDS, **{str(k).strip().lower(): v for k, v in self.status_words.items()}}


def parse(payload: dict, options: GenericOptions | None = None) -> list[Signal]:
    """The one Signal of a generic JSON webhook, read through ``options.mapping``.

    Raises ParseError naming the path when a required field is missing or a
    field has the wrong type.
    """
    options = options or GenericOptions()
    require_body(payload)

    status = _status(payload, options)
    if status == IGNORE:
        return []
    title = _string(payload, options, "title", required=True)
    message = _string(payload, options, "message")
    severity = _string(payload, options, "severity")
    dedup_key = _dedup_key(payload, options)
    labels = _labels(payload, options)
    link = _string(payload, options, "link")

    details = {"mapping": dict(options.mapping)} if options.mapping and options.source == SOURCE else {}
    return [
        Signal(
            source=options.source,
            title=title.strip(),
            text=message or "",
            fingerprint=dedup_key,
            status=status,
            severity=severity,
            labels=labels,
            links=http_links(link),
            details=details,
        )
    ]


def resolve(payload: Any, path: str) -> Any:
    """The value at dotted ``path`` in ``payload``; ``None`` when any step is absent.

    A numeric step indexes a list; a step into a scalar raises ParseError naming
    the part of the path that is not an object or list.
    """
    current = payload
    walked: list[str] = []
    for step in path.split("."):
        if current is None:
            return None
        if isinstance(current, dict):
            current = current.get(step)
        elif isinstance(current, list):
            if not step.isdecimal():
                raise invalid(".".join(walked), f"a list, so {shown(step)} in '{path}' must be an element number")
            index = int(step)
            current = current[index] if index < len(current) else None
        else:
            raise invalid(".".join(walked), f"expected an object or list to read '{path}', got {describe(current)}")
        walked.append(step)
    return current


def _lookup(payload: Any, path: str) -> Any:
    """The value at ``path`` for a template field: absent (None) where a strict read would be an error."""
    try:
        return resolve(payload, path)
    except ParseError:
        return None


def _first(payload: dict, alternatives: Alternatives) -> tuple[str, Any]:
    """The first alternative with a value: (where it was read, the value); else (the first, None)."""
    for where in alternatives:
        if is_template(where):
            value = parse_template(where).render(lambda path: _lookup(payload, path))
        else:
            value = resolve(payload, where)
        if value is not None:
            return where, value
    return alternatives[0], None


def _read(payload: dict, options: GenericOptions, name: str, required: bool = False) -> tuple[str, Any]:
    path, value = _first(payload, options.alternatives(name))
    if value is None and required:
        raise invalid(path, f"required ({name})" if path != name else "required")
    return path, value


def _string(payload: dict, options: GenericOptions, name: str, required: bool = False) -> str | None:
    path, value = _read(payload, options, name, required)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _typed(path, name, "a string", value)
    if not value.strip():
        if required:
            raise invalid(path, f"must not be empty ({name})" if path != name else "must not be empty")
        return None
    return value


def _typed(path: str, name: str, expected: str, value: Any) -> ParseError:
    suffix = f" ({name})" if path != name else ""
    return invalid(path, f"expected {expected}, got {describe(value)}{suffix}")


def _dedup_key(payload: dict, options: GenericOptions) -> str | None:
    path, value = _read(payload, options, "dedup_key")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise _typed(path, "dedup_key", "a string or whole number", value)
    return value.strip() or None


def _status(payload: dict, options: GenericOptions) -> str:
    path, value = _read(payload, options, "status")
    if value is None:
        return FIRING
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # tools that send a state number (Uptime Kuma: 0 down, 1 up)
    if not isinstance(value, str):
        raise _typed(path, "status", "a string", value)
    words = options.words()
    status = words.get(value.strip().lower())
    if status is None:
        listed = ", ".join(repr(word) for word in words)
        raise invalid(path, f"expected one of {listed}, got {shown(value)}")
    return status


def _labels(payload: dict, options: GenericOptions) -> dict[str, str]:
    path, value = _read(payload, options, "labels")
    if value is not None and not isinstance(value, dict):
        raise _typed(path, "labels", "an object", value)
    labels: dict[str, str] = {}
    value = value or {}
    for key, entry in value.items():
        if isinstance(entry, str):
            labels[key] = entry
        elif isinstance(entry, bool):
            labels[key] = "true" if entry else "false"
        elif isinstance(entry, int | float):
            labels[key] = str(entry)
        elif entry is not None:
            raise invalid(f"{path}.{key}", f"expected a string, number or boolean, got {describe(entry)}")
    for name, entry in options.labels_from.items():
        where, value = _first(payload, _alternatives(name, entry))
        if isinstance(value, bool):
            labels[name] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            labels[name] = str(value)
        elif value is not None:
            raise invalid(where, f"expected a string, number or boolean (label '{name}'), got {describe(value)}")
    return labels
