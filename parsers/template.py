"""Title templates for webhook mappings: ``"{labels.host}: {check.name}"``, read from the payload only.

A template is text with fields in braces; a field is a dotted path into the JSON payload
(keys, and element numbers of lists: ``items.0.name``), read with the same rules as a
mapping path. ``{{`` and ``}}`` stand for a brace. Nothing else is allowed between braces:
no attribute access, no indexing syntax, no conversion or format spec (``{0.__class__}``
reads the key ``__class__`` of the key ``0`` of the payload — a dict lookup that finds
nothing —, and ``{x!r}`` or ``{x:>99999}`` are refused when the configuration loads).
Unlike ``str.format`` it never touches a Python object's attributes, and its cost is one
pass over the template plus the length of the values it inserts.

A field whose value is absent, null, an object or a list makes the whole template
*unresolved* (``None``): a mapping then tries its next alternative.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import ConfigError

# One token at a time: an escaped brace, a field, a stray brace, or a run of plain text.
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*)\}|[{}]|[^{}]+")


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and field paths, in order (``parts`` of ``(is_field, text)``)."""

    source: str
    parts: tuple[tuple[bool, str], ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(text for is_field, text in self.parts if is_field)

    def render(self, read: Callable[[str], Any]) -> str | None:
        """The text with each field's value from ``read(path)``; None when a field has no plain value."""
        out: list[str] = []
        for is_field, text in self.parts:
            if not is_field:
                out.append(text)
                continue
            value = read(text)
            if isinstance(value, bool):
                out.append("true" if value else "false")
            elif isinstance(value, str | int | float):
                out.append(str(value))
            else:
                return None
        return "".join(out)


def is_template(text: str) -> bool:
    """Whether a mapping entry is a template (it has a brace) rather than a dotted path."""
    return "{" in text or "}" in text


def parse_template(text: str) -> Template:
    """``text`` parsed; ConfigError naming the first brace that is not a field or an escape."""
    parts: list[tuple[bool, str]] = []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if match.group(1) is not None:
            parts.append((True, match.group(1)))
        elif token in ("{{", "}}"):
            parts.append((False, token[0]))
        elif token in ("{", "}"):
            raise ConfigError(
                f"template {text!r}: the brace at character {match.start() + 1} does not open or close a field;"
                " a field is a dotted path in braces ({labels.host}), a literal brace is written {{ or }}"
            )
        else:
            parts.append((False, token))
    return Template(text, tuple(parts))
