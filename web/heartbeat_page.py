"""Heartbeats (gateway/incidents/heartbeats.py): each one's state, last beat, next due, and the incidents its
silences opened. For agents and admins; read-only (a heartbeat is configured in the file)."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from gateway.incidents.heartbeats import history, statuses
from gateway.intake import mailbox_status
from web.auth import role_required
from web.incidents import lifecycle

bp = Blueprint("heartbeats", __name__)


@bp.get("/heartbeats")
@role_required("agent", "admin")
def index():
    config, now = current_app.config["INLET"], lifecycle().clock.now()
    rows = [(s, history(s.name)) for s in statuses(config, now)]
    return render_template(
        "heartbeats.html",
        rows=rows,
        fallback_group=config.fallback_group,
        mailboxes=mailbox_status.states(config),  # what stops users' mail from being read, beside the heartbeats
    )
