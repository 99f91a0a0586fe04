"""The member alerts of an alert incident: each fingerprint as its source last reported it.

An alert group (Alertmanager ``groupKey``, or an integration's ``group_by``) is one
incident of many alerts. The pipeline step :func:`record` keeps one ``Alert`` row per
(incident, fingerprint): status, starts/ends, labels, annotations and the source's
links (only http(s) URLs). The incident page lists them (:func:`members`). A repeat
that changes nothing writes nothing: a storm of repeats costs one indexed read each.
"""

from __future__ import annotations

from datetime import datetime

from parsers.payload import http_links
from parsers.signal import ACKNOWLEDGED, RESOLVED, Signal
from store.models import Alert, Incident

FIRING, RESOLVED_STATE = "firing", "resolved"
SHOWN = 500  # the incident page lists at most this many (firing first); it says how many more there are

# The names of the source links an alert may carry (Signal.details key, or annotation for runbook_url).
LINKS = (
    ("source", "generatorURL"),
    ("panel", "panelURL"),
    ("dashboard", "dashboardURL"),
    ("runbook", "runbook_url"),
    ("silence", "silenceURL"),
)


def record(ctx) -> None:
    """An ``after`` step of the alert steps: keep the applied signal as a member alert of its incident.

    Signals with a fingerprint; an acknowledgement keeps the alert's status.
    """
    s = ctx.signal
    if ctx.incident is None or not s.fingerprint:
        return
    now = ctx.clock.now()
    values = alert_values(s)
    row = Alert.first_where(incident=ctx.incident.id, fingerprint=s.fingerprint[:512])
    if row is None:
        if s.status == ACKNOWLEDGED:
            values["status"] = FIRING
        Alert.insert(incident=ctx.incident.id, first_seen_at=now, updated_at=now, **values).on_conflict(
            conflict_target=[Alert.incident, Alert.fingerprint],
            update={getattr(Alert, name): values[name] for name in values if name != "fingerprint"}
            | {Alert.updated_at: now},
        ).execute()
        return
    if s.status == ACKNOWLEDGED:
        values["status"] = row.status
    changed = {name: value for name, value in values.items() if getattr(row, name) != value}
    if changed:
        Alert.update_by_id(row.id, updated_at=now, **changed)


def alert_values(s: Signal) -> dict:
    """The columns of an Alert row for a signal (pure)."""
    details = s.details or {}
    annotations = details.get("annotations")
    annotations = annotations if isinstance(annotations, dict) else {}
    return {
        "fingerprint": s.fingerprint[:512],
        "status": RESOLVED_STATE if s.status == RESOLVED else FIRING,
        "title": (s.title or "")[:500],
        "starts_at": s.occurred_at,
        "ends_at": _time(details.get("endsAt")),
        "labels": dict(s.labels or {}),
        "annotations": {str(k): str(v) for k, v in annotations.items()},
        "links": source_links({**details, "runbook_url": annotations.get("runbook_url", "")}),
    }


def source_links(values: dict) -> list[list[str]]:
    """[[name, url], ...] of the named links among ``values``, http(s) URLs only (anything else is dropped)."""
    links = []
    for name, key in LINKS:
        value = values.get(key)
        url = http_links(value)[0] if isinstance(value, str) and http_links(value) else None
        if url:
            links.append([name, url])
    return links


def shown_links(pairs) -> list[tuple[str, str]]:
    """Stored [[name, url], ...] checked again before they become links: known names, http(s) URLs only."""
    names = {name for name, _ in LINKS}
    return [
        (name, url)
        for name, url in (p for p in pairs or () if isinstance(p, list | tuple) and len(p) == 2)
        if name in names and isinstance(url, str) and http_links(url) == (url.strip(),) and url == url.strip()
    ]


def members(incident: Incident) -> tuple[list[Alert], int]:
    """The incident's member alerts, firing first then newest first (at most SHOWN), and how many in all."""
    query = Alert.select().where(Alert.incident == incident)
    total = query.count()
    if not total:
        return [], 0
    # firing before resolved: 'firing' < 'resolved' alphabetically on both databases
    rows = list(query.order_by(Alert.status, Alert.starts_at.desc(), Alert.id).limit(SHOWN))
    return rows, total


def _time(text) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
