"""Notifications (admin): failed deliveries with their errors; retry puts one back in the outbox."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from peewee import fn

from store.db import db
from store.models import FAILED, PENDING, Incident, Notification
from web import queue
from web.auth import role_required

bp = Blueprint("notifications", __name__)
PAGE_SIZE = 50


@bp.get("/notifications")
@role_required("admin")
def index():
    query = Notification.select().where(Notification.status == FAILED)
    before = request.args.get("before", "")
    if queue.whole_number(before):
        query = query.where(Notification.id < int(before))
    rows = list(query.order_by(Notification.id.desc()).limit(PAGE_SIZE + 1))
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    ids = {n.incident_id for n in rows if n.incident_id}
    refs = dict(Incident.select(Incident.id, Incident.ref).where(Incident.id.in_(ids)).tuples()) if ids else {}
    counts = status_counts()
    return render_template(
        "notifications.html", rows=rows, refs=refs, counts=counts, before=rows[-1].id if more and rows else None
    )


def status_counts() -> dict[str, int]:
    query = Notification.select(Notification.status, fn.COUNT(Notification.id).alias("n")).group_by(Notification.status)
    return {row.status: row.n for row in query}


@bp.post("/notifications/<int:notification_id>/retry")
@role_required("admin")
def retry(notification_id: int):
    """Pending again, due now: the outbox worker delivers it on its next round."""
    with db.atomic():
        changed = (
            Notification.update(status=PENDING, next_attempt_at=datetime.now(UTC), claimed_by=None, claimed_until=None)
            .where((Notification.id == notification_id) & (Notification.status == FAILED))
            .execute()
        )
    if not changed:
        abort(404)
    flash(f"Notification {notification_id} queued again.", "ok")
    return redirect(url_for("notifications.index"), 303)
