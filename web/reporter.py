"""The reporter's page: ``/r/<token>``, the link in every mail Inlet sends a reporter (no account).

The token (notifiers/reporter_links.py) opens the reporter view of one incident and nothing else: its status,
the public updates and the replies between the reporter and the desk, the resolution, a reply box, and
while resolved "this fixed it" (close) and "still broken" (reopen within ``[mail] reopen_window``).
Internal notes, other incidents and agents' names never appear: agents are ``[web] reporter_agent_name``
(else the desk's name). Forms are CSRF-protected; what the reporter does is recorded as the reporter (their
address), like their email. Every answer is ``no-store`` and ``Referrer-Policy: no-referrer`` (the token is
in the address: it must leave no copy in caches or in another site's logs). A refused link gets a page
saying why: 403 altered or foreign, 410 expired.
"""

from __future__ import annotations

from flask import Blueprint, current_app, flash, make_response, redirect, render_template, request, url_for

from gateway import reporter_access
from gateway.core.errors import InletError
from gateway.incidents.lifecycle import FINAL, PUBLIC, REPORTER
from notifiers.render import RESTRICTED_TITLE
from notifiers.reporter_links import LinkRefused, ReporterLinks
from store.models import RESOLVED, Event, Incident
from web import actions
from web.incidents import lifecycle

bp = Blueprint("reporter", __name__)

# status Events the reporter sees as a status line (without the agents' reasons, which are internal)
STATUS_EVENTS = {
    "created": "Registered",
    "acknowledged": "Acknowledged",
    "started": "Work started",
    "held": "On hold",
    "resumed": "Work resumed",
    "resolved": "Resolved",
    "closed": "Closed",
    "reopened": "Reopened",
    "cancelled": "Cancelled",
}


def links() -> ReporterLinks:
    if "inlet_reporter_links" not in current_app.extensions:
        current_app.extensions["inlet_reporter_links"] = ReporterLinks.for_config(current_app.config["INLET"])
    return current_app.extensions["inlet_reporter_links"]


def _private(response):
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _opened(token: str) -> Incident:
    return links().open(token, lifecycle().clock.now())


def _refused(exc: LinkRefused):
    page = render_template("reporter_refused.html", message=str(exc), desk=_desk())
    return _private(make_response(page, exc.status))


def _desk() -> str:
    return current_app.config["INLET"].inlet.name


def timeline(incident: Incident, agent_name: str) -> list[dict]:
    """What the reporter sees of the timeline: status lines, public updates, the replies both ways."""
    reporter = incident.reporter.email.lower() if incident.reporter_id else ""
    shown = []
    for e in incident.events.order_by(Event.at, Event.id):
        mine = (e.actor or "").strip().lower() == reporter
        who = "You" if mine else agent_name
        if e.type in STATUS_EVENTS and e.field == "status":
            body = e.body if e.visibility == PUBLIC or (mine and e.type == "reopened") else ""
            shown.append({"at": e.at, "who": who, "what": STATUS_EVENTS[e.type], "body": body, "kind": "status"})
        elif e.visibility in (PUBLIC, REPORTER) and e.body:
            what = "Your message" if mine else ("Update" if e.visibility == PUBLIC else "Reply")
            shown.append({"at": e.at, "who": who, "what": what, "body": e.body, "kind": e.visibility})
    return shown


def _page(token: str, incident: Incident, *, typed: dict | None = None, status: int = 200):
    config = current_app.config["INLET"]
    now = lifecycle().clock.now()
    agent_name = config.web.reporter_agent_name or config.inlet.name
    takes_reply = incident.status not in FINAL and (
        incident.status != RESOLVED or reporter_access.may_reopen(incident, config.mail.reopen_window, now)
    )
    page = render_template(
        "reporter.html",
        token=token,
        incident=incident,
        title=RESTRICTED_TITLE if incident.security else incident.title,
        events=timeline(incident, agent_name),
        desk=config.inlet.name,
        agent_name=agent_name,
        takes_reply=takes_reply,
        # a major or security incident closes after its review, by the team
        may_close=incident.status == RESOLVED and (incident.review or not (incident.major or incident.security)),
        may_reopen=reporter_access.may_reopen(incident, config.mail.reopen_window, now),
        write_to=config.notifications.from_address,
        typed=typed or {},
    )
    return _private(make_response(page, status))


@bp.get("/r/<token>")
def show(token: str):
    try:
        incident = _opened(token)
    except LinkRefused as exc:
        return _refused(exc)
    return _page(token, incident)


@bp.post("/r/<token>/<action>")
def act(token: str, action: str):
    """``reply`` (body), ``close`` ("this fixed it"), ``reopen`` (reason: "still broken")."""
    try:
        incident = _opened(token)
    except LinkRefused as exc:
        return _refused(exc)
    if action not in ("reply", "close", "reopen"):
        return _refused(LinkRefused(404, "Not found."))
    config, lc = current_app.config["INLET"], lifecycle()
    actor, now = incident.reporter.email, lc.clock.now()
    try:
        if action == "reply":
            words = actions.text_field(request.form, "body", required=True)
            if incident.status in FINAL or (
                incident.status == RESOLVED and not reporter_access.may_reopen(incident, config.mail.reopen_window, now)
            ):
                raise InletError(f"{incident.ref} is closed: to report a problem again, write to us")
            reporter_access.reply(lc, incident, actor, words, context={"via": "reporter page"})
            done = "Your message has been added. We will answer by email."
        elif action == "close":
            reporter_access.close(lc, incident, actor)
            done = "Thank you: the incident is closed."
        else:
            reason = actions.text_field(request.form, "reason", required=True)
            reporter_access.reopen(lc, incident, actor, reason, config.mail.reopen_window, now)
            done = "The incident has been reopened; the team has been told."
    except InletError as exc:
        flash(_plain(str(exc)), "error")
        return _page(token, Incident.get_by_id(incident.id), typed=request.form, status=400)
    flash(done, "ok")
    return _private(redirect(url_for("reporter.show", token=token), 303))


def _plain(message: str) -> str:
    """A lifecycle refusal in the reporter's words (no state-machine names)."""
    if "is required" in message:
        return "Please write something first."
    if "review" in message:
        return "This incident can only be closed by the team."
    return message.replace("_", " ")
