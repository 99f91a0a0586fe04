"""Severity hints -> (impact, urgency), the two axes of the priority matrix.

Webhooks say how bad a problem is in their own words (``critical``, ``warning``,
PagerDuty's ``error``, Opsgenie-style ``major`` / ``minor``). Classification turns
that hint into impact and urgency; this is the pure part of that step.
"""

from __future__ import annotations

from gateway.core.errors import ConfigError

LEVELS = ("high", "medium", "low")

DEFAULT_SEVERITY_MAP: dict[str, tuple[str, str]] = {
    "critical": ("high", "high"),
    "error": ("high", "medium"),
    "major": ("high", "medium"),
    "warning": ("medium", "medium"),
    "warn": ("medium", "medium"),
    "minor": ("medium", "medium"),
    "info": ("low", "low"),
}

# The states of the Nagios family (Nagios, Icinga, Checkmk; the last two also abbreviate them), in their
# webhooks (parsers/presets.py) and their alert mails (parsers/email/monitoring.py).
NAGIOS_SEVERITY: dict[str, tuple[str, str]] = {
    "crit": ("high", "high"),
    "critical": ("high", "high"),
    "down": ("high", "high"),
    "unreach": ("high", "medium"),
    "unreachable": ("high", "medium"),
    "warn": ("medium", "medium"),
    "warning": ("medium", "medium"),
    "unknown": ("medium", "low"),
    "ok": ("low", "low"),
    "up": ("low", "low"),
}


def severity_to_impact_urgency(
    severity: str | None, mapping: dict[str, tuple[str, str]] | None = None
) -> tuple[str, str] | None:
    """The (impact, urgency) for ``severity``, or None when it is absent or not mapped.

    Severity names are compared without case or surrounding blanks. ``mapping``
    (from the integration's configuration) is laid over :data:`DEFAULT_SEVERITY_MAP`:
    its entries win, the defaults fill the rest. Impact and urgency must be
    ``high``, ``medium`` or ``low``; anything else raises ConfigError naming the entry.
    """
    if not severity or not severity.strip():
        return None
    table = dict(DEFAULT_SEVERITY_MAP)
    for name, pair in (mapping or {}).items():
        if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(level in LEVELS for level in pair)):
            raise ConfigError(
                f"severity map: '{name}' must be [impact, urgency], each high, medium or low; got {pair!r}"
            )
        table[name.strip().lower()] = (pair[0], pair[1])
    return table.get(severity.strip().lower())
