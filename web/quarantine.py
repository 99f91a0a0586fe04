"""Quarantine (admin): failed and ignored Inbound with the reason, the raw input as text, reprocess, discard."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from gateway.intake.inbound_view import masked_body
from gateway.pipeline.mail_steps import MAIL_SOURCES
from store import wakeup
from store.db import db
from store.models import FAILED, IGNORED, PENDING, Inbound
from web import queue
from web.auth import role_required

bp = Blueprint("quarantine", __name__)
PAGE_SIZE = 50
RAW_LIMIT = 200_000  # characters of raw input shown; the rest is cut off visibly


@bp.get("/quarantine")
@role_required("admin")
def index():
    status = request.args.get("status", "failed")
    statuses = {"failed": (FAILED,), "ignored": (IGNORED,), "all": (FAILED, IGNORED)}.get(status)
    if statuses is None:
        abort(400)
    query = Inbound.select(
        Inbound.id, Inbound.source, Inbound.integration, Inbound.received_at, Inbound.status, Inbound.reason,
        Inbound.envelope_from, Inbound.attempts,
    ).where(Inbound.status.in_(statuses))  # fmt: skip
    before = request.args.get("before", "")
    if queue.whole_number(before):
        query = query.where(Inbound.id < int(before))
    rows = list(query.order_by(Inbound.id.desc()).limit(PAGE_SIZE + 1))
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return render_template("quarantine.html", rows=rows, status=status, before=rows[-1].id if more and rows else None)


@bp.get("/quarantine/<int:inbound_id>")
@role_required("admin")
def show(inbound_id: int):
    inbound = Inbound.get_or_none(Inbound.id == inbound_id)
    if inbound is None:
        abort(404)
    raw = bytes(inbound.raw or b"").decode("utf-8", errors="replace")
    if inbound.source not in MAIL_SOURCES:  # a webhook body: its credentials are not for the screen
        raw = masked_body(raw)
    return render_template("inbound.html", inbound=inbound, raw=raw[:RAW_LIMIT], cut=max(len(raw) - RAW_LIMIT, 0))


@bp.post("/quarantine/<int:inbound_id>/reprocess")
@role_required("admin")
def reprocess(inbound_id: int):
    """Back to pending (after a fix of the parser or the rules); the pipeline worker is woken to take it."""
    with db.atomic():
        changed = (
            Inbound.update(status=PENDING, reason=f"reprocess requested by {current_user.name}", attempts=0)
            .where((Inbound.id == inbound_id) & Inbound.status.in_((FAILED, IGNORED)))
            .execute()
        )
        if changed:
            wakeup.announce(wakeup.INBOUND)  # the pipeline workers, whichever process they run in
    if not changed:
        abort(404)
    services = current_app.config["SERVICES"]
    worker = getattr(services, "pipeline_worker", None)
    if worker is not None:
        worker.wake()
    flash(f"Inbound {inbound_id} queued for processing again.", "ok")
    return redirect(url_for("quarantine.index"), 303)


@bp.post("/quarantine/<int:inbound_id>/discard")
@role_required("admin")
def discard(inbound_id: int):
    """Delete a quarantined input for good (its attachments go with it)."""
    with db.atomic():
        deleted = Inbound.delete().where((Inbound.id == inbound_id) & Inbound.status.in_((FAILED, IGNORED))).execute()
    if not deleted:
        abort(404)
    flash(f"Inbound {inbound_id} discarded.", "ok")
    return redirect(url_for("quarantine.index"), 303)
