"""Prometheus Alertmanager webhook (``webhook_config``, payload version 4) -> Signals.

One request carries one alert group; each alert in ``alerts`` becomes one Signal:

- ``fingerprint``: the alert's ``fingerprint``; when absent, a stable hash of its
  sorted labels (the same labels give the same key);
- ``group_key``: the request's ``groupKey``;
- ``status``: the alert's ``status``, ``firing`` or ``resolved`` (required);
- ``title``: annotation ``summary``, else ``description``, else
  ``<alertname> on <instance>`` (or ``<alertname>`` alone);
- ``text``: annotation ``description`` (else ``summary``), then the other
  annotations as ``name: value`` lines;
- ``labels``: the alert's ``labels`` (required, an object of strings);
  ``severity``: label ``severity``;
- ``links``: ``generatorURL``, annotation ``runbook_url``, ``externalURL``;
- ``occurred_at``: ``startsAt``;
- ``details``: annotations, ``endsAt``, ``generatorURL``, ``receiver``,
  ``truncatedAlerts``, ``externalURL``, ``groupKey``, ``groupLabels``.

``alerts`` is required; every other top-level key is optional, and unknown keys
are ignored. An empty ``alerts`` list gives no Signals. Grafana's unified
alerting webhook is a superset of this shape (see :mod:`parsers.grafana`).
"""

from __future__ import annotations

from collections.abc import Callable

from parsers.payload import (
    child,
    get_int,
    get_list,
    get_object,
    get_str,
    get_time,
    http_links,
    invalid,
    item,
    labels_fingerprint,
    one_of,
    require_body,
    string_map,
    wrong_type,
)
from parsers.signal import FIRING, RESOLVED, Signal

SOURCE = "alertmanager"

# What a caller adds for one alert: more link candidates and more details.
AlertExtras = Callable[[dict, str], tuple[tuple[str | None, ...], dict]]

_TEXT_ANNOTATIONS = ("summary", "description", "runbook_url")


def parse(payload: dict, options: object | None = None) -> list[Signal]:
    """One Signal per alert of an Alertmanager webhook request.

    Raises ParseError naming the field when a required field is missing or a
    field has the wrong type. ``options`` is accepted for a uniform interface and unused.
    """
    return alert_signals(payload, SOURCE)


def alert_signals(
    payload: dict, source: str, *, group_details: dict | None = None, extras: AlertExtras | None = None
) -> list[Signal]:
    """Signals for an Alertmanager-shaped payload (also used by the Grafana parser).

    ``group_details`` are merged into every Signal's details; ``extras(alert, path)``
    returns more link candidates and details for one alert.
    """
    require_body(payload)
    group_key = get_str(payload, "groupKey", "")
    receiver = get_str(payload, "receiver", "")
    external_url = get_str(payload, "externalURL", "")
    truncated = get_int(payload, "truncatedAlerts", "")
    group_labels = get_object(payload, "groupLabels", "")
    get_str(payload, "version", "")  # type-checked only: every version is read as v4
    alerts = get_list(payload, "alerts", "", required=True) or []

    common = {
        "receiver": receiver,
        "groupKey": group_key,
        "externalURL": external_url,
        "truncatedAlerts": truncated or 0,
        "groupLabels": string_map(group_labels, "groupLabels") if group_labels else {},
    }
    if group_details:
        common.update(group_details)

    signals = []
    for index, alert in enumerate(alerts):
        path = item("alerts", index)
        if not isinstance(alert, dict):
            raise wrong_type(path, "an object", alert)
        signals.append(_alert_signal(alert, path, source, group_key, external_url, common, extras))
    return signals


def _alert_signal(
    alert: dict,
    path: str,
    source: str,
    group_key: str | None,
    external_url: str | None,
    common: dict,
    extras: AlertExtras | None,
) -> Signal:
    status = alert.get("status")
    if status is None:
        raise invalid(child(path, "status"), "required")
    if not isinstance(status, str):
        raise wrong_type(child(path, "status"), "'firing' or 'resolved'", status)
    status = one_of(status, (FIRING, RESOLVED), child(path, "status"))

    labels = string_map(get_object(alert, "labels", path, required=True), child(path, "labels"))
    raw_annotations = get_object(alert, "annotations", path)
    annotations = string_map(raw_annotations, child(path, "annotations")) if raw_annotations else {}
    occurred_at = get_time(alert, "startsAt", path)
    ends_at = get_time(alert, "endsAt", path)
    fingerprint = get_str(alert, "fingerprint", path) or labels_fingerprint(labels)
    generator_url = get_str(alert, "generatorURL", path)

    extra_links: tuple[str | None, ...] = ()
    details = dict(common)
    if extras is not None:
        extra_links, extra_details = extras(alert, path)
        details.update(extra_details)
    details["annotations"] = annotations
    details["endsAt"] = ends_at.isoformat() if ends_at else None
    details["generatorURL"] = generator_url or ""  # the alert's own source link (named on the incident page)

    return Signal(
        source=source,
        title=_title(annotations, labels, fingerprint),
        text=_text(annotations),
        fingerprint=fingerprint,
        group_key=group_key,
        status=status,
        severity=labels.get("severity") or None,
        labels=labels,
        links=http_links(generator_url, *extra_links, annotations.get("runbook_url"), external_url),
        occurred_at=occurred_at,
        details=details,
    )


def _title(annotations: dict[str, str], labels: dict[str, str], fingerprint: str) -> str:
    for name in ("summary", "description"):
        value = annotations.get(name, "").strip()
        if value:
            return value
    alertname = labels.get("alertname", "").strip()
    instance = labels.get("instance", "").strip()
    if alertname and instance:
        return f"{alertname} on {instance}"
    return alertname or f"Alert {fingerprint}"


def _text(annotations: dict[str, str]) -> str:
    lead = annotations.get("description", "").strip() or annotations.get("summary", "").strip()
    rest = [f"{name}: {value}" for name, value in annotations.items() if name not in _TEXT_ANNOTATIONS and value]
    return "\n\n".join(part for part in (lead, "\n".join(rest)) if part)
