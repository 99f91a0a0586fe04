"""The stable JSON shape of incidents and events, for the CLI, the REST API and exports.

Users script against these documents: add keys, never rename or remove them.
Times are ISO 8601 UTC strings ending in ``Z``; unset values are ``null``.
"""

from __future__ import annotations

from gateway.core.clock import iso
from store.models import Event, Incident

INCIDENT_KEYS = (
    "ref", "title", "status", "priority", "impact", "urgency", "category", "service", "group", "assignee",
    "reporter", "source", "opened_at", "acknowledged_at", "resolved_at", "closed_at", "signal_count",
)  # fmt: skip


def incident_document(incident: Incident, *, events: list[Event] | None = None) -> dict:
    """One incident as a JSON-ready dict; with ``events``, its timeline too."""
    doc = {
        "ref": incident.ref,
        "title": incident.title,
        "status": incident.status,
        "priority": incident.priority,
        "impact": incident.impact,
        "urgency": incident.urgency,
        "category": incident.category or None,
        "service": incident.service or None,
        "group": incident.group or None,
        "assignee": incident.assignee.name if incident.assignee_id else None,
        "reporter": incident.reporter.email if incident.reporter_id else None,
        "source": incident.source,
        "opened_at": iso(incident.opened_at),
        "acknowledged_at": iso(incident.acknowledged_at),
        "resolved_at": iso(incident.resolved_at),
        "closed_at": iso(incident.closed_at),
        "signal_count": incident.signal_count,
        "description": incident.description,
        "procedure": incident.procedure,
        "major": incident.major,
        "security": incident.security,
        "escalated": incident.escalated,
        "status_page": incident.status_page or None,
        "drill": incident.drill,
        "tags": incident.tags or [],
        "respond_by": iso(incident.respond_by),
        "resolve_by": iso(incident.resolve_by),
        "cancelled_at": iso(incident.cancelled_at),
        "reopen_count": incident.reopen_count,
        "reassignment_count": incident.reassignment_count,
        "parent": incident.parent.ref if incident.parent_id else None,
        "resolution": {
            "code": incident.resolution_code or None,
            "notes": incident.resolution_notes or None,
            "fix": incident.fix_type or None,
            "cause": incident.cause_code or None,
            "cause_text": incident.cause_text or None,
        },
        "review": incident.review or None,  # the post-incident review: cause, actions (what, owner, due), by, at
    }
    if events is not None:
        doc["events"] = [event_document(e) for e in events]
    return doc


def event_document(event: Event) -> dict:
    doc = {
        "at": iso(event.at),
        "type": event.type,
        "actor": event.actor,
        "visibility": event.visibility,
        "body": event.body,
    }
    if event.field:
        doc.update(field=event.field, old=event.old, new=event.new)
    return doc
