"""The public status page: ongoing major incidents per service with their public updates. No internal data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Blueprint, render_template

from store.models import ACKNOWLEDGED, CLOSED, IN_PROGRESS, NEW, ON_HOLD, RESOLVED, Event, Incident

bp = Blueprint("status", __name__)

RECENT = timedelta(hours=24)  # how long a closed major incident stays on the page


def ongoing(now: datetime | None = None) -> dict[str, list[dict]]:
    """Major, non-security, non-drill incidents that are open, resolved or closed recently, per service."""
    now = now or datetime.now(UTC)
    query = (
        Incident.select(
            Incident.id, Incident.ref, Incident.title, Incident.service, Incident.status, Incident.opened_at,
            Incident.closed_at, Incident.status_page,
        )
        .where(
            (Incident.major == True)  # noqa: E712
            & (Incident.security == False)  # noqa: E712
            & (Incident.drill == False)  # noqa: E712
            & (
                Incident.status.in_((NEW, ACKNOWLEDGED, IN_PROGRESS, ON_HOLD, RESOLVED))
                | ((Incident.status == CLOSED) & (Incident.closed_at >= now - RECENT))
            )
        )
        .order_by(Incident.opened_at.desc())
        .limit(100)
    )  # fmt: skip
    services: dict[str, list[dict]] = {}
    for incident in query:
        updates = (
            Event.select(Event.at, Event.body)
            # only what an agent published as a status update: never a reply, a resolution note or an email
            .where(
                (Event.incident == incident.id)
                & (Event.type == "update")
                & (Event.visibility == "public")
                & (Event.body != "")
            )
            .order_by(Event.at.desc(), Event.id.desc())
            .limit(20)
        )
        services.setdefault(incident.service or "General", []).append(
            {
                "ref": incident.ref,
                "title": incident.title,
                "state": incident.status_page or "investigating",  # kept by gateway/incidents/procedures.py
                "since": incident.opened_at,
                "updates": [{"at": u.at, "body": u.body} for u in updates],
            }
        )
    return services


@bp.get("/status")
def page():
    return render_template("status.html", services=ongoing())
