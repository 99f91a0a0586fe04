"""Problem pages: the list with recurring causes, one problem with its incidents, reviews, candidates and
timeline, and the forms that create, change and link problems (gateway/problem_records.py does every change).

Everyone signed in reads the problems they may see; admins and agents change them. Linking, unlinking and
"create problem from this incident" also need the right to change that incident (checked by the Problems
service with the signed-in user's rights, so a security incident stays hidden from who may not see it).
"""

from __future__ import annotations

import peewee
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from gateway.core.errors import Forbidden, InletError, NotFound
from gateway.problem_records import (
    EDITABLE,
    TRANSITIONS,
    Problems,
    hidden_incident_refs,
    review_of,
)
from store.models import CLOSED, PROBLEM_STATUSES, Incident, Problem, ProblemEvent, ProblemIncident, User
from web import actions
from web.auth import RESTRICTED
from web.incidents import lifecycle

bp = Blueprint("problems", __name__)


def problems() -> Problems:
    """The Problems service over the app's lifecycle (it holds no state of its own)."""
    return Problems(lifecycle())


def problem_rows(user, *, status: str = "", limit: int = 200) -> list[tuple[Problem, int]]:
    """The problems ``user`` may see, most recently changed first, each with its count of incidents
    ``user`` may see (one grouped query)."""
    query = problems().visible(Problem.select(), user)
    if status:
        query = query.where(Problem.status == status)
    rows = list(query.order_by(Problem.updated_at.desc(), Problem.id.desc()).limit(limit))
    if not rows:
        return []
    counted = (
        ProblemIncident.select(ProblemIncident.problem, peewee.fn.COUNT(ProblemIncident.id).alias("n"))
        .join(Incident, on=ProblemIncident.incident == Incident.id)
        .where(ProblemIncident.problem.in_([p.id for p in rows]))
    )
    if not user.sees_security:
        counted = counted.where(Incident.security == False)  # noqa: E712
    counts = {r.problem_id: r.n for r in counted.group_by(ProblemIncident.problem)}
    return [(p, counts.get(p.id, 0)) for p in rows]


@bp.app_template_global()
def problems_of(incident: Incident) -> list[Problem]:
    """The problems ``incident`` is linked to that the signed-in user may see (for the incident page)."""
    return problems().problems_of(incident, current_user)


@bp.app_template_global()
def linkable_problems() -> list[Problem]:
    """Problems not closed that the signed-in user may see, newest first (the incident page's choice)."""
    query = problems().visible(Problem.select(Problem.ref, Problem.title), current_user)
    return list(query.where(Problem.status != CLOSED).order_by(Problem.id.desc()).limit(200))


@bp.get("/problems")
@login_required
def index():
    status = request.args.get("status", "")
    if status and status not in PROBLEM_STATUSES:
        status = ""
    return render_template(
        "problems.html",
        rows=problem_rows(current_user, status=status),
        status=status,
        statuses=PROBLEM_STATUSES,
        recurring=problems().recurring_causes(current_user),
    )


@bp.get("/problems/<ref>")
@login_required
def show(ref: str):
    service = problems()
    try:
        problem = service.get(ref, current_user)
    except NotFound:
        abort(404)
    linked = service.incidents(problem)
    shown = [i for i in linked if current_user.can_see(i)]
    events = list(problem.events.order_by(ProblemEvent.at, ProblemEvent.id))
    changing = current_user.can_create() and problem.status != CLOSED
    return render_template(
        "problem.html",
        problem=problem,
        incidents=shown,
        restricted_count=len(linked) - len(shown),
        reviews={i.id: review_of(i) for i in shown},
        events=events,
        hidden_refs=hidden_incident_refs(events, current_user),
        restricted=RESTRICTED,
        candidates=service.candidates(problem, current_user) if changing else [],
        changing=changing,
        next_statuses=[s for s, (sources, _needs) in TRANSITIONS.items() if problem.status in sources],
        users=[u.name for u in User.select(User.name).where(User.active == True).order_by(User.name)],  # noqa: E712
    )


@bp.post("/problems")
@login_required
def create():
    """A new problem; with ``incident``, made from that incident (the incident page's button)."""
    form = request.form
    incident_ref = actions.text_field(form, "incident", limit=32)
    back = url_for("incidents.show", ref=incident_ref) if incident_ref else url_for("problems.index")
    try:
        problem = problems().create(
            title=actions.text_field(form, "title", limit=500),
            actor=current_user.name,
            access=current_user,
            incident_ref=incident_ref or None,
            description=actions.text_field(form, "description"),
            cause_code=actions.text_field(form, "cause_code", limit=64),
            service=actions.text_field(form, "service", limit=100),
        )
    except (NotFound, Forbidden) as exc:
        abort(404 if isinstance(exc, NotFound) else 403)
    except InletError as exc:
        flash(str(exc), "error")
        return redirect(back, 303)
    flash(f"Created {problem.ref}.", "ok")
    return redirect(url_for("problems.show", ref=problem.ref), 303)


@bp.post("/problems/<ref>/edit")
@login_required
def edit(ref: str):
    form = request.form
    changes = {name: actions.text_field(form, name) for name in (*EDITABLE, "owner") if name in form}
    return _change(ref, lambda service: service.update(ref, current_user.name, access=current_user, **changes))


@bp.post("/problems/<ref>/status")
@login_required
def set_status(ref: str):
    status = request.form.get("status", "")
    reason = actions.text_field(request.form, "reason")
    return _change(
        ref, lambda service: service.set_status(ref, current_user.name, status, reason=reason, access=current_user)
    )


@bp.post("/problems/<ref>/link")
@login_required
def link(ref: str):
    incident = actions.text_field(request.form, "incident", limit=32)
    return _change(ref, lambda service: service.link(ref, current_user.name, incident, access=current_user))


@bp.post("/problems/<ref>/unlink")
@login_required
def unlink(ref: str):
    incident = actions.text_field(request.form, "incident", limit=32)
    return _change(ref, lambda service: service.unlink(ref, current_user.name, incident, access=current_user))


@bp.post("/incidents/<ref>/problem")
@login_required
def link_incident(ref: str):
    """The incident page's "Link to problem": back to the incident afterwards."""
    problem = actions.text_field(request.form, "problem", limit=32)
    return _change(
        problem,
        lambda service: service.link(problem, current_user.name, ref, access=current_user),
        back=url_for("incidents.show", ref=ref),
    )


def _change(ref: str, run, back: str | None = None):
    """Run one change; a missing or hidden problem or incident is a 404, one the user may not change a 403,
    any other refusal a message on the page it came from."""
    try:
        problem = run(problems())
    except NotFound:
        abort(404)
    except Forbidden:
        abort(403)
    except InletError as exc:
        flash(str(exc), "error")
    else:
        flash(f"{problem.ref} saved.", "ok")
    return redirect(back or url_for("problems.show", ref=ref.strip().upper()), 303)
