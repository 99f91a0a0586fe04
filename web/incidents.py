"""Incident pages: the queue, registering by hand, the incident with its timeline and actions, attachments."""

from __future__ import annotations

import csv
import io
from urllib.parse import parse_qsl, urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user, login_required
from werkzeug.datastructures import MultiDict

from gateway.core.errors import Forbidden, InletError, NoSuchIncident, NotAssignable
from gateway.incidents.escalation import last_outcome
from gateway.incidents.lifecycle import FIX_TYPES, LINK_KINDS, normalise_ref
from gateway.pipeline import alert_members
from notifiers.render import visible
from store import search
from store.db import db
from store.documents import incident_document
from store.models import LEVELS, OPEN_STATUSES, STATUSES, Attachment, Event, Incident, Notification, User
from web import actions, bulk
from web import queue as queue_query
from web.actions import DECLARABLE
from web.auth import RESTRICTED, hidden_refs, role_required

bp = Blueprint("incidents", __name__)


def lifecycle():
    """The service's lifecycle (create_app's services: gateway/service.py build_services)."""
    return current_app.config["SERVICES"].lifecycle


def visible_incident(ref: str) -> Incident:
    """The incident if the current user may see it; 404 otherwise (its existence is not revealed)."""
    incident = Incident.get_or_none(Incident.ref == normalise_ref(ref)) if actions.plausible_ref(ref) else None
    if incident is None or not current_user.can_see(incident):
        abort(404)
    return incident


@bp.get("/")
@login_required
def queue_page():
    return redirect(url_for("incidents.queue"))


@bp.get("/incidents")
@login_required
def queue():
    return _queue_page(request.args)


def _queue_page(args, status: int = 200):
    """The queue for these arguments: the whole page, or (htmx) the rows only; ``seen`` (the highest
    id the agent's page started with) makes the rows say how many matching incidents are new."""
    now = lifecycle().clock.now()
    try:
        filters = queue_query.read_filters(args)
        page = queue_query.fetch(current_user, filters, cursor=args.get("after", ""), now=now)
    except queue_query.BadQuery as exc:
        flash(str(exc), "error")
        return redirect(url_for("incidents.queue"))
    config = current_app.config["INLET"]
    seen_arg = args.get("seen", "")
    if queue_query.whole_number(seen_arg):
        seen, fresh = int(seen_arg), queue_query.newer(current_user, filters, int(seen_arg), now)
    else:
        seen, fresh = queue_query.newest_id(current_user, filters, now), 0
    # htmx swaps the rows only; a history restore asks for the whole page again
    partial = request.headers.get("HX-Request") and not request.headers.get("HX-History-Restore-Request")
    here = {k: v for k, v in filters.items() if v}
    if args.get("after"):
        here["after"] = args["after"]
    can_bulk = current_user.can_create()
    response = make_response(
        render_template(
            "queue_rows.html" if partial else "queue.html",
            page=page,
            f=filters,
            counts=queue_query.counts(current_user, filters, now),
            outside=queue_query.outside(current_user, filters),
            statuses=queue_query.STATUS_CHOICES,
            sorts=queue_query.SORT_LABELS,
            groups=[g.name for g in config.group],
            priorities=sorted(config.sla.targets),
            next_args=_next_args(filters, page.next_cursor),
            export_args={k: v for k, v in filters.items() if v},
            seen=seen,
            fresh=fresh,
            here=here,
            refresh=int(config.web.queue_refresh.total_seconds()),
            can_bulk=can_bulk,
            users=_active_users() if can_bulk and not partial else [],
            majors=_open_majors() if can_bulk and not partial else [],
        ),
        status,
    )
    response.vary.add("HX-Request")
    return response


def _active_users() -> list[str]:
    return [u.name for u in User.select(User.name).where(User.active == True).order_by(User.name)]  # noqa: E712


def _open_majors() -> list[Incident]:
    """Open major incidents the user may see: the parents the bulk "link as children" offers first."""
    query = Incident.select(Incident.ref, Incident.title, Incident.security).where(
        (Incident.major == True) & Incident.status.in_(OPEN_STATUSES)  # noqa: E712
    )
    return [i for i in query.order_by(Incident.id.desc()).limit(50) if current_user.can_see(i)]


@bp.post("/incidents/bulk")
@login_required
def bulk_action():
    """A bulk action on the selected rows (web/bulk.py): permission is all or none, state per incident."""
    back = _queue_path(request.form.get("back", ""))
    args = MultiDict(parse_qsl(urlsplit(back).query))
    try:
        refs = bulk.selected_refs(request.form.getlist("ref"))
        outcome = bulk.run(
            lifecycle(), current_user._get_current_object(), request.form.get("action", ""), refs, request.form
        )
    except bulk.Refused as exc:
        flash(str(exc), "error")
        return _queue_page(args, 403)
    except InletError as exc:
        flash(str(exc), "error")
        return _queue_page(args, 400)
    title = actions.ACTIONS[outcome.action].title
    if outcome.done:
        flash(f"{title}: done for {', '.join(outcome.done)}.", "ok")
    if outcome.skipped:
        flash(f"{title}: not done for " + "; ".join(f"{ref} ({why})" for ref, why in outcome.skipped), "error")
    return redirect(back, 303)


def _queue_path(path: str) -> str:
    """A queue address to go back to (only the queue of this site), else the queue."""
    parts = urlsplit(path or "")
    if parts.scheme or parts.netloc or parts.path != url_for("incidents.queue"):
        return url_for("incidents.queue")
    return parts.path + (f"?{parts.query}" if parts.query else "")


EXPORT_LIMIT = 100_000
EXPORT_COLUMNS = (
    "ref", "title", "status", "priority", "impact", "urgency", "category", "service", "group",
    "assignee", "reporter", "source", "opened_at", "acknowledged_at", "resolved_at", "closed_at",
)  # fmt: skip


@bp.get("/incidents/export.csv")
@login_required
def export():
    """The queue's incidents under the same filters as CSV (at most EXPORT_LIMIT rows), visible ones only."""
    try:
        filters = queue_query.read_filters(request.args)
    except queue_query.BadQuery as exc:
        abort(400, str(exc))
    if filters["sort"] == "relevance":  # one page of best matches; the export takes every match
        filters["sort"] = "priority"
    user = current_user._get_current_object()

    def lines():  # runs after the request has ended: it opens (and closes) its own connection
        opened = db.connect(reuse_if_open=True)
        try:
            yield from _csv_lines(user, filters)
        finally:
            if opened and not db.is_closed():
                db.close()

    response = Response(lines(), mimetype="text/csv")
    response.headers["Content-Disposition"] = "attachment; filename=incidents.csv"
    return response


def _csv_lines(user, filters: dict):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    cursor, sent = "", 0
    while sent < EXPORT_LIMIT:
        page = queue_query.fetch(user, filters, cursor=cursor, limit=queue_query.MAX_PAGE)
        for incident in page.rows:
            doc = incident_document(incident)
            writer.writerow([_cell(doc[name]) for name in EXPORT_COLUMNS])
        sent += len(page.rows)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if page.next_cursor is None:
            break
        cursor = page.next_cursor


def _cell(value) -> str:
    """A CSV cell without bidi controls or zero-width characters; a formula-like one is prefixed with a quote."""
    text = "" if value is None else visible(str(value))
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _next_args(filters: dict, cursor: str | None) -> dict | None:
    if cursor is None:
        return None
    args = {k: v for k, v in filters.items() if v}
    args["after"] = cursor
    return args


NEW_FIELDS = ("title", "reporter_email", "reporter_name", "category", "service", "group")


@bp.route("/incidents/new", methods=["GET", "POST"])
@role_required("admin", "agent")
def new():
    config = current_app.config["INLET"]
    form = request.form
    if request.method == "POST":
        try:
            text = {name: actions.text_field(form, name, limit=500) for name in NEW_FIELDS}
            incident = lifecycle().create(
                title=text["title"],
                description=actions.text_field(form, "description"),
                actor=current_user.name,
                reporter_email=text["reporter_email"] or None,
                reporter_name=text["reporter_name"],
                category=text["category"][:100],
                service=text["service"][:100],
                impact=actions.choice_field(form, "impact", LEVELS, "medium"),
                urgency=actions.choice_field(form, "urgency", LEVELS, "medium"),
                group=_known_group(text["group"]) or config.fallback_group,
                source=form.get("channel", "manual") if form.get("channel") in ("phone", "walk-in") else "manual",
            )
        except InletError as exc:
            flash(str(exc), "error")
            return render_template("new.html", form=form, levels=LEVELS, groups=config.group), 400
        flash(f"Registered {incident.ref}.", "ok")
        return redirect(url_for("incidents.show", ref=incident.ref), 303)
    return render_template("new.html", form={}, levels=LEVELS, groups=config.group)


def _known_group(name: str) -> str:
    config = current_app.config["INLET"]
    name = name.strip()
    if name and config.group_named(name) is None:
        raise InletError(f"no group {name!r}")
    return name


@bp.get("/incidents/<ref>")
@login_required
def show(ref: str, typed: dict | None = None):
    """The incident page; ``typed`` is a refused form (action and fields), shown again as it was typed."""
    incident = visible_incident(ref)
    events = list(incident.events.order_by(Event.at, Event.id))
    attachments = {}
    for a in Attachment.select(
        Attachment.id, Attachment.event, Attachment.filename, Attachment.size, Attachment.content_type
    ).where(Attachment.incident == incident):
        attachments.setdefault(a.event_id, []).append(a)
    emails = {e.id: _email_view(e) for e in events if e.inbound_id}
    notifications = list(incident.notifications.order_by(Notification.created_at, Notification.id))
    by_event = {}
    for n in notifications:
        by_event.setdefault(n.event_id, []).append(n)
    config = current_app.config["INLET"]
    alerts, alert_total = alert_members.members(incident)
    return render_template(
        "incident.html",
        incident=incident,
        events=events,
        alerts=alerts,
        alert_total=alert_total,
        alert_links=alert_members.shown_links,
        hidden_refs=hidden_refs(events, current_user),
        restricted=RESTRICTED,
        attachments=attachments,
        emails={k: v for k, v in emails.items() if v},
        unlinked_attachments=attachments.get(None, []),
        notifications=notifications,
        notifications_by_event=by_event,
        can_act=current_user.can_act(incident),
        actions=actions.available(lifecycle()),
        groups=[g.name for g in config.group],
        users=[u.name for u in User.select(User.name).where(User.active == True).order_by(User.name)],  # noqa: E712
        levels=LEVELS,
        fix_types=FIX_TYPES,
        link_kinds=LINK_KINDS,
        statuses=STATUSES,
        typed=typed or {},
        declarable=[p for p in DECLARABLE if not getattr(incident, p)],
        may_close=incident.review or not (incident.major or incident.security),
        needs_commander=incident.major and not incident.assignee_id,
        # the other ends of links, only those the user may see (a hidden parent or child is not named)
        parent=incident.parent if incident.parent_id and current_user.can_see(incident.parent) else None,
        children=[
            c
            for c in incident.children.select(Incident.ref, Incident.title, Incident.status, Incident.security)
            if current_user.can_see(c)
        ],
        similar=search.similar(incident, include_security=current_user.sees_security),
    )


def _email_view(event: Event) -> dict | None:
    """Sender, subject and HTML body of an email, as stored when it was processed (never re-parsed here)."""
    view = (event.data or {}).get("email") if isinstance(event.data, dict) else None
    return view if isinstance(view, dict) else None


@bp.post("/incidents/<ref>/<action>")
@login_required
def act(ref: str, action: str):
    incident = visible_incident(ref)
    if not current_user.can_act(incident):
        abort(403)
    try:
        actions.run(lifecycle(), action, incident.ref, current_user.name, request.form, current_user)
    except (NoSuchIncident, Forbidden) as exc:  # the other end of a link: the page again, with 404 / 403
        flash(str(exc), "error")
        return show(incident.ref, _typed(action)), 403 if isinstance(exc, Forbidden) else 404
    except NotAssignable as exc:  # e.g. a viewer as assignee: the page again, saying why
        flash(str(exc), "error")
        return show(incident.ref, _typed(action)), 422
    except InletError as exc:  # the page again with the form as it was typed, never an empty form
        flash(str(exc), "error")
        return show(incident.ref, _typed(action)), 422
    else:
        outcome = last_outcome(incident) if action == "escalate" else "done"
        flash(
            f"{incident.ref}: {actions.ACTIONS[action].title.lower()} {outcome}.",
            "ok" if outcome == "done" else "error",
        )
    return redirect(url_for("incidents.show", ref=incident.ref), 303)


def _typed(action: str) -> dict:
    return {"action": action, **{k: v for k, v in request.form.items() if k != "csrf_token"}}


@bp.get("/attachments/<int:attachment_id>")
@login_required
def attachment(attachment_id: int):
    """An attachment, always as a download (never rendered inline), only to those who see its incident."""
    row = Attachment.get_or_none(Attachment.id == attachment_id)
    if row is None or row.data is None:
        abort(404)
    incident = row.incident if row.incident_id else (row.inbound.incident if row.inbound_id else None)
    if incident is None or not current_user.can_see(incident):
        abort(404)
    response = send_file(
        io.BytesIO(row.data),
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=_download_name(row.filename),
    )
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "no-store"  # evidence: never left in a shared or browser cache
    return response


def _download_name(filename: str) -> str:
    """The stored name, reduced to a safe base name (never a path)."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable() and c not in '"<>:|?*').strip(" .")
    return name[:150] or "attachment.bin"
