"""Drill reports (``inlet drill``): a marked synthetic incident sent to an integration of kind ``drill``.

Payload: ``{"drill_id": "…", "title": "…", "text": "…", "procedure": "major|security|standard",
"group": "…"}``. The signal carries the drill id and the requested procedure and group as
labels (``inlet_drill``, ``inlet_drill_procedure``, ``inlet_drill_group``).
"""

from __future__ import annotations

from typing import Any

from gateway.core.errors import ParseError
from parsers.signal import Signal

PROCEDURES = ("major", "security", "standard")
PROCEDURE_FLAGS = {"major": {"major": True}, "security": {"security": True}, "standard": {}}


def parse(payload: dict, options: Any = None) -> list[Signal]:
    drill_id, title = payload.get("drill_id"), payload.get("title")
    if not isinstance(drill_id, str) or not drill_id.isalnum() or len(drill_id) > 64:
        raise ParseError("field 'drill_id': required, letters and digits")
    if not isinstance(title, str) or not title.strip():
        raise ParseError("field 'title': required")
    procedure = payload.get("procedure") or "standard"
    if procedure not in PROCEDURES:
        raise ParseError(f"field 'procedure': expected one of {', '.join(PROCEDURES)}")
    group = payload.get("group") or ""
    if not isinstance(group, str):
        raise ParseError("field 'group': expected a string")
    labels = {"inlet_drill": drill_id, "inlet_drill_procedure": procedure, "inlet_drill_group": group}
    text = payload.get("text")
    return [
        Signal(
            source="drill",
            title=title.strip()[:500],
            text=text if isinstance(text, str) else "",
            fingerprint=f"drill:{drill_id}",
            labels=labels,
        )
    ]


def drill_defaults(signals) -> dict:
    """Source defaults for allocate from a drill report: the procedure's flag and the group asked for."""
    labels = signals[0].labels if signals else {}
    defaults = dict(PROCEDURE_FLAGS.get(labels.get("inlet_drill_procedure"), {}))
    if labels.get("inlet_drill_group"):
        defaults["group"] = labels["inlet_drill_group"]
    return defaults
