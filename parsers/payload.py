"""Reading a decoded JSON payload field by field, with errors that name the field.

Every webhook parser reads its payload through these functions, so a bad request
is answered with the exact field at fault, e.g.
``field 'alerts[0].status': expected 'firing' or 'resolved', got 'fired'``.

Conventions shared by all parsers:

- a JSON ``null`` in an optional field is the same as the field being absent;
- unknown keys are ignored;
- timestamps are ISO 8601 / RFC 3339; a timestamp without an offset is taken as
  UTC; every datetime returned is tz-aware and in UTC; Go's zero time
  (``0001-01-01T00:00:00Z``, sent by Alertmanager and Grafana for "not set")
  is ``None``;
- only ``http`` and ``https`` links are kept: links end up as ``href`` in the web
  UI, and a ``javascript:`` URL from outside must never get there.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from gateway.core.errors import ParseError
from parsers.signal import is_plain_text

_MAX_SHOWN = 40  # characters of a bad value quoted back in an error


def child(path: str, key: str) -> str:
    """The path of ``key`` inside the object at ``path`` (``""`` is the root)."""
    return f"{path}.{key}" if path else key


def item(path: str, index: int) -> str:
    """The path of element ``index`` of the list at ``path``."""
    return f"{path}[{index}]"


def describe(value: Any) -> str:
    """What a JSON value is, for an error message: ``null``, ``a string``, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def shown(value: str) -> str:
    """``value`` quoted for an error message, shortened when long."""
    if len(value) > _MAX_SHOWN:
        value = value[:_MAX_SHOWN] + "..."
    return repr(value)


def invalid(path: str, what: str) -> ParseError:
    """The ParseError for the field at ``path``: ``field 'path': what``."""
    return ParseError(f"field '{path}': {what}")


def wrong_type(path: str, expected: str, value: Any) -> ParseError:
    return invalid(path, f"expected {expected}, got {describe(value)}")


# ---------------------------------------------------------------- decoding a body

MAX_DEPTH = 64  # nesting of objects and lists; real monitoring payloads use fewer than ten levels
# Where a body may carry text no store can keep (parsers.signal.is_plain_text): a \u escape of a
# surrogate or of NUL (raw ones are not valid UTF-8, or not valid JSON).
_ESCAPE_NOT_PLAIN = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:_MAX_SHOWN]} is out of range")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def decode_json(body: bytes, *, max_depth: int = MAX_DEPTH, plain_text: bool = True) -> Any:
    """The JSON value of a request body, or ParseError saying what is wrong (and where, when a field is).

    Stricter than ``json.loads``: the bytes must be valid UTF-8 (or UTF-16/32) — ``json.loads``
    itself lets UTF-8-encoded surrogates through —; NaN, Infinity and numbers out of the float
    range are refused; nesting deeper than ``max_depth`` is refused (never a RecursionError);
    every string, keys included, must be plain text (:func:`is_plain_text`) — unless
    ``plain_text`` is False, for a caller that must look at a credential in the body first and
    then calls :func:`require_plain_text`. Never raises anything but ParseError.
    """
    try:
        data = bytes(body)
        text = data.decode(json.detect_encoding(data))  # strict: no surrogates from the bytes
        value = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        raise ParseError(f"request body: nested deeper than {max_depth} levels") from None
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ParseError(f"request body: not valid JSON: {exc}") from None
    depth_bound = data.count(b"[") + data.count(b"{")  # brackets inside strings count too: an upper bound
    if depth_bound > max_depth:
        _check_tree(value, max_depth, text=False)
    if plain_text:
        require_plain_text(data, value)
    return value


def require_plain_text(body: bytes, value: Any) -> None:
    """ParseError naming the field when a string of ``value`` (decoded from ``body``) is not plain text."""
    # UTF-8 without such an escape: no string can hold a surrogate or NUL, no walk needed
    if json.detect_encoding(body) != "utf-8" or _ESCAPE_NOT_PLAIN.search(body):
        _check_tree(value, 1 << 30, text=True)  # the depth is bounded already


def _check_tree(value: Any, max_depth: int, *, text: bool) -> None:
    # Iterative, so a tree that json.loads could build never costs a RecursionError here.
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, str):
            if text and not is_plain_text(node):
                raise invalid(path, "not plain text (a lone surrogate or NUL)")
        elif isinstance(node, dict | list):
            if depth >= max_depth:
                raise invalid(path, f"nested deeper than {max_depth} levels")
            if isinstance(node, dict):
                for key, entry in node.items():
                    if text and not is_plain_text(key):
                        raise invalid(path, "a key is not plain text (a lone surrogate or NUL)")
                    stack.append((entry, child(path, key), depth + 1))
            else:
                stack.extend((entry, item(path, index), depth + 1) for index, entry in enumerate(node))


def require_body(payload: Any) -> dict:
    """``payload`` when it is a JSON object: every webhook body must be one."""
    if not isinstance(payload, dict):
        raise ParseError(f"request body: expected a JSON object, got {describe(payload)}")
    return payload


def get_object(obj: dict, key: str, path: str, *, required: bool = False) -> dict | None:
    """``obj[key]`` when it is a JSON object; None when absent and optional."""
    value = obj.get(key)
    if value is None:
        if required:
            raise invalid(child(path, key), "required")
        return None
    if not isinstance(value, dict):
        raise wrong_type(child(path, key), "an object", value)
    return value


def get_list(obj: dict, key: str, path: str, *, required: bool = False) -> list | None:
    """``obj[key]`` when it is a JSON list; None when absent and optional."""
    value = obj.get(key)
    if value is None:
        if required:
            raise invalid(child(path, key), "required")
        return None
    if not isinstance(value, list):
        raise wrong_type(child(path, key), "a list", value)
    return value


def get_str(obj: dict, key: str, path: str, *, required: bool = False, max_length: int | None = None) -> str | None:
    """``obj[key]`` when it is a string; None when absent (or empty) and optional.

    A required string must not be empty or blank.
    """
    value = obj.get(key)
    if value is None:
        if required:
            raise invalid(child(path, key), "required")
        return None
    if not isinstance(value, str):
        raise wrong_type(child(path, key), "a string", value)
    if not value.strip():
        if required:
            raise invalid(child(path, key), "must not be empty")
        return None
    if max_length is not None and len(value) > max_length:
        raise invalid(child(path, key), f"longer than {max_length} characters ({len(value)})")
    return value


def get_int(obj: dict, key: str, path: str) -> int | None:
    """``obj[key]`` when it is a whole number; None when absent."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(child(path, key), "a whole number", value)
    return value


def string_map(value: dict, path: str) -> dict[str, str]:
    """A JSON object whose values must all be strings (labels, annotations)."""
    result: dict[str, str] = {}
    for key, entry in value.items():
        if not isinstance(entry, str):
            raise wrong_type(child(path, key), "a string", entry)
        result[key] = entry
    return result


def one_of(value: str, allowed: tuple[str, ...], path: str) -> str:
    """``value`` when it is one of ``allowed``, else a ParseError listing them."""
    if value in allowed:
        return value
    if len(allowed) <= 2:
        choices = " or ".join(repr(a) for a in allowed)
    else:
        choices = "one of " + ", ".join(repr(a) for a in allowed)
    raise invalid(path, f"expected {choices}, got {shown(value)}")


def get_time(obj: dict, key: str, path: str) -> datetime | None:
    """``obj[key]`` parsed as an ISO 8601 timestamp, in UTC; None when absent or Go's zero time."""
    text = get_str(obj, key, path)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise invalid(child(path, key), f"expected an ISO 8601 timestamp, got {shown(text)}") from None
    if moment.year == 1:
        # Go's zero time.Time: Alertmanager and Grafana send it for "not set".
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise invalid(child(path, key), f"timestamp out of range: {shown(text)}") from None


def http_links(*candidates: str | None) -> tuple[str, ...]:
    """The ``http(s)`` URLs among ``candidates``, in order, without repeats or blanks."""
    links: list[str] = []
    for candidate in candidates:
        url = (candidate or "").strip()
        if not url or url in links:
            continue
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        if parts.scheme.lower() in ("http", "https") and parts.netloc:
            links.append(url)
    return tuple(links)


def labels_fingerprint(labels: dict[str, str]) -> str:
    """A stable fingerprint of a label set: the same labels give the same key, in any order."""
    canonical = json.dumps(sorted(labels.items()), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]
