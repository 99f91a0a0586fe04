"""Configuration view (admin): what this instance runs with — groups, members, SLA, rules. Never secrets.

Channels and escalation targets are Apprise URLs, which may carry tokens: only their scheme is shown.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, render_template

from store.db import describe, redact
from web.auth import role_required

bp = Blueprint("configuration", __name__)


def scheme(url: str) -> str:
    """'slack://…' for an Apprise URL; a tag (no scheme) as it is."""
    parts = urlsplit(url)
    return f"{parts.scheme}://…" if parts.scheme else url


@bp.get("/configuration")
@role_required("admin")
def show():
    config = current_app.config["INLET"]
    from store.db import db

    return render_template(
        "configuration.html",
        config=config,
        database=describe(db.obj) if db.obj is not None else redact(config.database.url),
        scheme=scheme,
        sla=config.sla,
    )
