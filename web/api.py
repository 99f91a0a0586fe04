"""REST API ``/api/v1``: incidents, the lifecycle actions, timelines and notes, for automation.

Every request but the OpenAPI document carries a per-user token
(``Authorization: Bearer inl_…``, issued with ``inlet user`` or on the Users
page); the API never looks at session cookies, so it needs no CSRF token.
The same roles and visibility rules as the UI apply. Documents have the
stable shape of store/documents.py. Errors are ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request, url_for

from gateway import accounts
from gateway import schedules as oncall
from gateway.core.clock import iso
from gateway.core.errors import (
    ConfigError,
    Conflict,
    Forbidden,
    InletError,
    NotAssignable,
    NotFound,
    ParseError,
    TransitionError,
)
from gateway.incidents.heartbeats import history as heartbeat_history
from gateway.incidents.heartbeats import statuses as heartbeat_statuses
from gateway.incidents.lifecycle import normalise_ref
from gateway.problem_records import EDITABLE as PROBLEM_EDITABLE
from gateway.problem_records import TRANSITIONS as PROBLEM_TRANSITIONS
from gateway.problem_records import event_document as problem_event_document
from gateway.problem_records import hidden_incident_refs, problem_document
from notifiers.apprise_adapter import shown_urls
from parsers.payload import decode_json
from parsers.signal import plain_value
from store.documents import event_document, incident_document
from store.models import LEVELS, PROBLEM_STATUSES, Event, Incident, ProblemEvent, User
from web import actions, queue
from web.auth import RESTRICTED, SessionUser, hidden_refs
from web.incidents import lifecycle
from web.openapi import openapi_document
from web.problems import problem_rows, problems
from web.reports import for_viewer

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def error(status: int, code: str, message: str):
    return jsonify(error={"code": code, "message": message}), status


def token_user() -> User | None:
    """The active user whose API token is in the Authorization header, else None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return accounts.user_for_token(token.strip())


@bp.before_request
def _authenticate():
    if request.endpoint == "api.openapi":
        return None
    user = token_user()
    if user is None:
        response, status = error(401, "unauthorized", "a valid API token is required: Authorization: Bearer <token>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="inlet"'
        return response, status
    g.api_user = SessionUser(user, current_app.config["INLET"])
    return None


@bp.errorhandler(InletError)
def _inlet_error(exc: InletError):
    if isinstance(exc, NotFound):
        return error(404, "not_found", str(exc))
    if isinstance(exc, Forbidden):
        return error(403, "forbidden", str(exc))
    if isinstance(exc, TransitionError):
        return error(409, "invalid_transition", str(exc))
    if isinstance(exc, Conflict):
        return error(409, "conflict", str(exc))
    if isinstance(exc, NotAssignable):
        return error(422, "not_assignable", str(exc))
    return error(400, "invalid", str(exc))


@bp.errorhandler(400)
def _bad_request(exc):
    return error(400, "invalid", "the request body must be a JSON object")


@bp.errorhandler(413)
def _too_large(exc):
    return error(413, "too_large", "the request body is too large")


def _body() -> dict:
    raw = request.get_data()
    if not raw:
        return {}
    if not request.is_json:
        raise actions.BadInput("the request body must be a JSON object")
    try:  # guarded: not UTF-8, deep nesting or NaN are a 400, never a 500
        data = decode_json(raw, plain_text=False)
    except ParseError as exc:
        raise actions.BadInput(str(exc)) from None
    if not isinstance(data, dict):
        raise actions.BadInput("the request body must be a JSON object")
    return plain_value(data)  # valid JSON all the same: lone surrogates and NUL become U+FFFD, storable


def _incident(ref: str) -> Incident:
    incident = Incident.get_or_none(Incident.ref == normalise_ref(ref)) if actions.plausible_ref(ref) else None
    if incident is None or not g.api_user.can_see(incident):
        raise NotFound(f"no incident {ref!r}")
    return incident


def _document(incident: Incident) -> dict:
    """The incident's document; a parent the caller may not see is not named."""
    doc = incident_document(incident)
    if incident.parent_id and not g.api_user.can_see(incident.parent):
        doc["parent"] = RESTRICTED
    return doc


def _lifecycle():
    return lifecycle()


@bp.get("/openapi.json")
def openapi():
    groups = [group.name for group in current_app.config["INLET"].group]
    return jsonify(openapi_document(sorted(actions.available(_lifecycle())), groups))


@bp.get("/incidents")
def list_incidents():
    filters = queue.read_filters(request.args)
    limit = request.args.get("limit", str(queue.PAGE_SIZE))
    if not queue.whole_number(limit) or not 1 <= int(limit) <= queue.MAX_PAGE:
        raise actions.BadInput(f"limit must be a whole number from 1 to {queue.MAX_PAGE}")
    page = queue.fetch(g.api_user, filters, cursor=request.args.get("after", ""), limit=int(limit))
    return jsonify(incidents=[_document(i) for i in page.rows], next=page.next_cursor)


@bp.post("/incidents")
def create_incident():
    if not g.api_user.can_create():
        return error(403, "forbidden", "viewers cannot create incidents")
    data = _body()
    config = current_app.config["INLET"]
    text = {
        name: actions.text_field(data, name, limit=500) for name in ("category", "service", "group", "reporter_name")
    }
    if text["group"] and config.group_named(text["group"]) is None:
        raise actions.BadInput(f"no group {text['group']!r}")
    incident = _lifecycle().create(
        title=actions.text_field(data, "title", required=True, limit=500),
        description=actions.text_field(data, "description"),
        actor=g.api_user.name,
        source="api",
        reporter_email=actions.text_field(data, "reporter_email", limit=320) or None,
        reporter_name=text["reporter_name"],
        category=text["category"][:100],
        service=text["service"][:100],
        impact=actions.choice_field(data, "impact", LEVELS, "medium"),
        urgency=actions.choice_field(data, "urgency", LEVELS, "medium"),
        group=text["group"] or config.fallback_group,
    )
    response = jsonify(incident_document(incident))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_incident", ref=incident.ref)
    return response


@bp.get("/incidents/<ref>")
def get_incident(ref: str):
    return jsonify(_document(_incident(ref)))


@bp.get("/incidents/<ref>/timeline")
def timeline(ref: str):
    incident = _incident(ref)
    events = list(incident.events.order_by(Event.at, Event.id))
    hidden = hidden_refs(events, g.api_user)
    documents = [event_document(e) for e in events]
    for doc in documents:
        if doc.get("new") in hidden:  # the other end of a link the caller may not see is not named
            doc["new"] = RESTRICTED
        if doc["type"] == "notification_failed":  # URLs as scheme://host, also in rows from before that rule
            doc["body"] = shown_urls(doc["body"])
    return jsonify(ref=incident.ref, events=documents)


@bp.post("/incidents/<ref>/notes")
def add_note(ref: str):
    incident = _incident(ref)
    if not g.api_user.can_act(incident):
        return error(403, "forbidden", f"you may not change {incident.ref}")
    data = _body()
    public = actions.flag_field(data, "public")
    event = actions.run(
        _lifecycle(), "update_public" if public else "note", incident.ref, g.api_user.name, data, g.api_user
    )
    response = jsonify(event_document(event))
    response.status_code = 201
    return response


@bp.post("/incidents/<ref>/actions/<action>")
def act(ref: str, action: str):
    incident = _incident(ref)
    if action not in actions.available(_lifecycle()):
        return error(404, "not_found", f"no action {action!r}")
    if not g.api_user.can_act(incident):
        return error(403, "forbidden", f"you may not change {incident.ref}")
    result = actions.run(_lifecycle(), action, incident.ref, g.api_user.name, _body(), g.api_user)
    if isinstance(result, Event):
        return jsonify(event_document(result)), 201
    return jsonify(_document(Incident.get_by_id(incident.id)))


# ------------------------------------------------------------ on call (gateway/schedules.py)


@bp.get("/oncall/<name>")
def oncall_now(name: str):
    """Now and next on call for a group or schedule; ``?at=ISO-8601`` for another time."""
    config = current_app.config["INLET"]
    schedule = oncall.schedule_for(config, name)
    at = request.args.get("at")
    when = oncall.parse_time(at, schedule.zone) if at else _lifecycle().clock.now()
    document = oncall.summary(config, name, when)
    document["overrides"] = [_override_document(o) for o in oncall.overrides(schedule.name, when)]
    return jsonify(document)


@bp.post("/oncall/<name>/overrides")
def add_override(name: str):
    """``{"user", "starts", "ends", "reason"}``: the user covers the schedule (admins, agents of its group)."""
    config = current_app.config["INLET"]
    schedule = oncall.schedule_for(config, name)
    data = _body()
    starts = oncall.parse_time(actions.text_field(data, "starts", required=True, limit=64), schedule.zone)
    ends = oncall.parse_time(actions.text_field(data, "ends", required=True, limit=64), schedule.zone)
    row = oncall.add_override(
        config,
        schedule.name,
        g.api_user.row,
        actions.text_field(data, "user", required=True, limit=100),
        starts,
        ends,
        _lifecycle().clock.now(),
        actions.text_field(data, "reason", limit=500),
    )
    return jsonify(_override_document(row)), 201


@bp.delete("/oncall/<name>/overrides/<override_id>")
def remove_override(name: str, override_id: str):
    if not (override_id.isascii() and override_id.isdigit() and len(override_id) <= 18):
        raise NotFound(f"no override #{override_id}")
    oncall.remove_override(current_app.config["INLET"], int(override_id), g.api_user.row, name)
    return "", 204


def _override_document(row) -> dict:
    return {
        "id": row.id,
        "schedule": row.schedule,
        "user": row.user,
        "starts": iso(row.starts_at),
        "ends": iso(row.ends_at),
        "reason": row.reason,
        "created_by": row.created_by,
        "created_at": iso(row.created_at),
    }


# ---------------------------------------------------------------- problems (gateway/problem_records.py)


@bp.get("/problems")
def listproblems():
    status = request.args.get("status", "")
    if status and status not in PROBLEM_STATUSES:
        raise actions.BadInput(f"status must be one of {', '.join(PROBLEM_STATUSES)}")
    limit = request.args.get("limit", "100")
    if not queue.whole_number(limit) or not 1 <= int(limit) <= 500:
        raise actions.BadInput("limit must be a whole number from 1 to 500")
    rows = problem_rows(g.api_user, status=status, limit=int(limit))
    return jsonify(problems=[dict(problem_document(p, g.api_user), incident_count=n) for p, n in rows])


@bp.post("/problems")
def create_problem():
    data = _body()
    problem = problems().create(
        title=actions.text_field(data, "title", limit=500),
        actor=g.api_user.name,
        access=g.api_user,
        incident_ref=actions.text_field(data, "incident", limit=32) or None,
        description=actions.text_field(data, "description"),
        owner=actions.text_field(data, "owner", limit=100) or None,
        workaround=actions.text_field(data, "workaround"),
        root_cause=actions.text_field(data, "root_cause"),
        cause_code=actions.text_field(data, "cause_code", limit=64),
        service=actions.text_field(data, "service", limit=100),
    )
    response = jsonify(_problem_document(problem))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_problem", ref=problem.ref)
    return response


def _problem_document(problem) -> dict:
    return problem_document(problem, g.api_user, incidents=problems().incidents(problem))


@bp.get("/problems/<ref>")
def get_problem(ref: str):
    return jsonify(_problem_document(problems().get(ref, g.api_user)))


@bp.patch("/problems/<ref>")
def update_problem(ref: str):
    data = _body()
    changes = {
        name: actions.text_field(data, name, limit=20000) for name in (*PROBLEM_EDITABLE, "owner") if name in data
    }
    if not changes:
        raise actions.BadInput(f"nothing to change: give {', '.join((*PROBLEM_EDITABLE, 'owner'))}")
    problem = problems().update(ref, g.api_user.name, access=g.api_user, **changes)
    return jsonify(_problem_document(problem))


@bp.post("/problems/<ref>/status")
def set_problem_status(ref: str):
    data = _body()
    status = actions.choice_field(data, "status", tuple(PROBLEM_TRANSITIONS))
    problem = problems().set_status(
        ref, g.api_user.name, status, reason=actions.text_field(data, "reason"), access=g.api_user
    )
    return jsonify(_problem_document(problem))


@bp.post("/problems/<ref>/incidents")
def link_problem_incident(ref: str):
    data = _body()
    other = actions.text_field(data, "incident", required=True, limit=32)
    problem = problems().link(ref, g.api_user.name, other, access=g.api_user)
    return jsonify(_problem_document(problem)), 201


@bp.delete("/problems/<ref>/incidents/<incident>")
def unlink_problem_incident(ref: str, incident: str):
    problem = problems().unlink(ref, g.api_user.name, incident, access=g.api_user)
    return jsonify(_problem_document(problem))


@bp.get("/problems/<ref>/timeline")
def problem_timeline(ref: str):
    problem = problems().get(ref, g.api_user)
    events = list(problem.events.order_by(ProblemEvent.at, ProblemEvent.id))
    hidden = hidden_incident_refs(events, g.api_user)
    return jsonify(ref=problem.ref, events=[problem_event_document(e, hidden) for e in events])


@bp.get("/heartbeats")
def heartbeats():
    """Every heartbeat: state, last beat, next due, and the incidents its silences opened (agents and admins)."""
    if g.api_user.role not in ("agent", "admin"):
        return error(403, "forbidden", "heartbeats are for agents and admins")
    found = heartbeat_statuses(current_app.config["INLET"], _lifecycle().clock.now())
    return jsonify(
        heartbeats=[
            dict(
                s.document(),
                history=[
                    {**h, "opened_at": iso(h["opened_at"]), "resolved_at": iso(h["resolved_at"])}
                    for h in heartbeat_history(s.name)
                ],
            )
            for s in found
        ]
    )


@bp.get("/reports")
def reports():
    """The metrics of a period (gateway/reports/figures.py) as the caller may see them: agents and admins."""
    if g.api_user.role not in ("agent", "admin"):
        return error(403, "forbidden", "reports are for agents and admins")
    try:
        return jsonify(for_viewer(request.args, current_app.config["INLET"], g.api_user))
    except ConfigError as exc:
        return error(400, "invalid", str(exc))
