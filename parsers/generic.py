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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.core.errors import ConfigError, ParseError
from parsers.payload import describe, http_links, invalid, require_body, shown
from parsers.signal import FIRING, RESOLVED, Signal

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

_MISSING = object()


@dataclass(frozen=True)
class GenericOptions:
    """Per-integration options: ``mapping`` from a schema field to a dotted path in the payload."""

    mapping: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, path in self.mapping.items():
            if name not in FIELDS:
                raise ConfigError(f"generic mapping: unknown field '{name}'; expected one of {', '.join(FIELDS)}")
            if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
                raise ConfigError(f"generic mapping: '{name}' must be a dotted path like 'alert.name', got {path!r}")

    def path(self, name: str) -> str:
        """The dotted path field ``name`` is read from."""
        return self.mapping.get(name, name)


def parse(payload: dict, options: GenericOptions | None = None) -> list[Signal]:
    """The one Signal of a generic JSON webhook, read through ``options.mapping``.

    Raises ParseError naming the path when a required field is missing or a
    field has the wrong type.
    """
    options = options or GenericOptions()
    require_body(payload)

    title = _string(payload, options, "title", required=True)
    message = _string(payload, options, "message")
    severity = _string(payload, options, "severity")
    dedup_key = _dedup_key(payload, options)
    status = _status(payload, options)
    labels = _labels(payload, options)
    link = _string(payload, options, "link")

    return [
        Signal(
            source=SOURCE,
            title=title.strip(),
            text=message or "",
            fingerprint=dedup_key,
            status=status,
            severity=severity,
            labels=labels,
            links=http_links(link),
            details={"mapping": dict(options.mapping)} if options.mapping else {},
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


def _read(payload: dict, options: GenericOptions, name: str, required: bool = False) -> tuple[str, Any]:
    path = options.path(name)
    value = resolve(payload, path)
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
    if not isinstance(value, str):
        raise _typed(path, "status", "a string", value)
    status = STATUS_WORDS.get(value.strip().lower())
    if status is None:
        words = ", ".join(repr(word) for word in STATUS_WORDS)
        raise invalid(path, f"expected one of {words}, got {shown(value)}")
    return status


def _labels(payload: dict, options: GenericOptions) -> dict[str, str]:
    path, value = _read(payload, options, "labels")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _typed(path, "labels", "an object", value)
    labels: dict[str, str] = {}
    for key, entry in value.items():
        if isinstance(entry, str):
            labels[key] = entry
        elif isinstance(entry, bool):
            labels[key] = "true" if entry else "false"
        elif isinstance(entry, int | float):
            labels[key] = str(entry)
        elif entry is not None:
            raise invalid(f"{path}.{key}", f"expected a string, number or boolean, got {describe(entry)}")
    return labels
