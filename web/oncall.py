"""On call (gateway/schedules.py): per group or schedule, who is on call now and next, and the overrides;
admins and the group's agents add and remove overrides here (forms with CSRF, like every form)."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from gateway import schedules as oncall
from gateway.core.errors import InletError, NotFound
from web.incidents import lifecycle

bp = Blueprint("oncall", __name__)


def _local(value, zone) -> str:
    """An aware datetime or an ISO 8601 'Z' string, in the schedule's zone, as the page shows it."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return f"{value.astimezone(zone):%a %Y-%m-%d %H:%M %Z}"


def _rows(config, schedules, now) -> list:
    rows = []
    for s in schedules:
        summary = oncall.summary(config, s.name, now)
        upcoming = summary["next"]
        rows.append((s, summary, _local(upcoming["from"], s.zone) if upcoming else ""))
    return rows


def _schedule(name: str) -> oncall.Schedule:
    try:
        return oncall.schedule_for(current_app.config["INLET"], name)
    except NotFound:
        abort(404)


@bp.get("/oncall")
@login_required
def index():
    config, now = current_app.config["INLET"], lifecycle().clock.now()
    return render_template("oncall.html", rows=_rows(config, config.schedule, now), schedule=None)


@bp.get("/oncall/<name>")
@login_required
def show(name: str):
    config, now = current_app.config["INLET"], lifecycle().clock.now()
    schedule = _schedule(name)
    return render_template(
        "oncall.html",
        rows=_rows(config, [schedule], now),
        schedule=schedule,
        overrides=[
            (o, _local(o.starts_at, schedule.zone), _local(o.ends_at, schedule.zone))
            for o in oncall.overrides(schedule.name, now)
        ],
        may_override=oncall.may_override(config, current_user.row, schedule),
    )


@bp.post("/oncall/<name>/overrides")
@login_required
def add(name: str):
    config, form = current_app.config["INLET"], request.form
    schedule = _schedule(name)
    try:
        oncall.add_override(
            config,
            schedule.name,
            current_user.row,
            form.get("user", "").strip(),
            oncall.parse_time(form.get("starts", ""), schedule.zone),
            oncall.parse_time(form.get("ends", ""), schedule.zone),
            lifecycle().clock.now(),
            form.get("reason", "").strip(),
        )
    except InletError as exc:
        flash(str(exc), "error")
    else:
        flash(f"{form.get('user', '').strip()} covers {schedule.name} from {form.get('starts')}.", "ok")
    return redirect(url_for("oncall.show", name=name), 303)


@bp.post("/oncall/<name>/overrides/<int:override_id>/remove")
@login_required
def remove(name: str, override_id: int):
    try:
        oncall.remove_override(current_app.config["INLET"], override_id, current_user.row, name)
    except InletError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Override #{override_id} removed.", "ok")
    return redirect(url_for("oncall.show", name=name), 303)
