"""Grafana unified alerting webhook (contact point "Webhook", payload version "1") -> Signals.

Grafana's payload is Alertmanager's (see :mod:`parsers.alertmanager`) plus a few
fields, so the same rules apply per alert (one Signal each, ``status`` and
``labels`` required, title from ``summary`` / ``description`` / ``alertname``),
with these additions:

- ``links`` also hold ``dashboardURL``, ``panelURL``, ``silenceURL`` and
  ``imageURL`` (empty strings, as Grafana sends for alerts without a dashboard,
  are skipped);
- ``details`` also keep the alert's ``values`` (query results by refId),
  ``valueString``, ``dashboardURL``, ``panelURL`` and ``silenceURL``, and the
  request's ``orgId``, ``title``, ``state`` and ``message``.

The legacy (pre-8) Grafana alerting webhook has no ``alerts`` list and is
rejected with ``field 'alerts': required``.
"""

from __future__ import annotations

from parsers.alertmanager import alert_signals
from parsers.payload import child, get_int, get_object, get_str, require_body, wrong_type
from parsers.signal import Signal

SOURCE = "grafana"


def parse(payload: dict, options: object | None = None) -> list[Signal]:
    """One Signal per alert of a Grafana webhook request.

    Raises ParseError naming the field when a required field is missing or a
    field has the wrong type. ``options`` is accepted for a uniform interface and unused.
    """
    require_body(payload)
    group_details = {
        "orgId": get_int(payload, "orgId", ""),
        "title": get_str(payload, "title", ""),
        "state": get_str(payload, "state", ""),
        "message": get_str(payload, "message", ""),
    }
    return alert_signals(payload, SOURCE, group_details=group_details, extras=_alert_extras)


def _alert_extras(alert: dict, path: str) -> tuple[tuple[str | None, ...], dict]:
    urls = {key: get_str(alert, key, path) or "" for key in ("dashboardURL", "panelURL", "silenceURL", "imageURL")}
    links = tuple(urls.values())
    values = get_object(alert, "values", path)
    if values:
        for ref, value in values.items():
            # Grafana sends a number per query/expression refId; null when there was no data.
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise wrong_type(child(child(path, "values"), ref), "a number", value)
    details = {"values": values or {}, "valueString": get_str(alert, "valueString", path)}
    details.update((key, urls[key]) for key in ("dashboardURL", "panelURL", "silenceURL"))
    return links, details
