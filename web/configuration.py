"""Configuration view (admin): what this instance runs with — groups, members, SLA, rules. Never secrets.

Channels and escalation targets are Apprise URLs, which may carry tokens: only scheme and host are shown.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from gateway import membership
from gateway.intake import mailbox_status
from notifiers.apprise_adapter import masked
from store.db import db, describe, redact
from web.auth import role_required

bp = Blueprint("configuration", __name__)


def scheme(url: str) -> str:
    """An Apprise URL as ``scheme://host`` (the one way URLs are shown); a tag (no scheme) as it is."""
    return masked(url)


@bp.get("/configuration")
@role_required("admin")
def show():
    config = current_app.config["INLET"]
    return render_template(
        "configuration.html",
        config=config,
        database=describe(db.obj) if db.obj is not None else redact(config.database.url),
        scheme=scheme,
        sla=config.sla,
        members={group: [r.user for r in rows] for group, rows in membership.table().items()},
        mailboxes=mailbox_status.states(config),  # each poller's state, as the imap role last wrote it
        boxes={box.name: box for box in config.mailbox},
    )
