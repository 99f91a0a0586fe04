"""Problem records (ITIL problem management): the cause behind incidents, investigated so they do not recur.

A problem has a title, an owner, a known workaround, a root cause and a status::

    open ─► known_error ─► resolved ─► closed      (closed is final and read-only)
      │                       ▲   │
      └───────────────────────┘   └─► open         (reopen, with a reason)

``known_error`` needs a root cause and a workaround, ``resolved`` a root cause.
Incidents are linked to it (one incident may belong to several problems); every
change writes a ProblemEvent (the problem's timeline), and linking, unlinking and
the status changes are also recorded on the linked incidents' timelines through
:meth:`Lifecycle.record` (an internal Event; no incident field changes, nobody is
notified). Incidents that share a cause code, an alert fingerprint or the
service with the problem are offered as candidates (:meth:`Problems.candidates`).

``access`` is the acting person's rights (web/auth.py's SessionUser: ``can_see``,
``can_act``, ``can_create``, ``sees_security``); ``None`` is Inlet itself. Linking,
unlinking and creating from an incident need the right to change that incident
(checked in the same transaction, as the lifecycle does for links); a hidden
incident is NotFound, as a missing one. A problem made from a security incident
is itself restricted to those who see security incidents.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import peewee

from gateway.core.clock import iso
from gateway.core.errors import Forbidden, NotFound, TransitionError
from gateway.incidents.lifecycle import Access, Lifecycle, normalise_ref
from store.db import db, is_postgres
from store.models import (
    CANCELLED,
    CLOSED,
    KNOWN_ERROR,
    PROBLEM_OPEN,
    RESOLVED,
    CorrelationKey,
    Counter,
    Incident,
    Problem,
    ProblemEvent,
    ProblemIncident,
    User,
)

REF_PREFIX = "PRB"
# status -> (statuses it is reached from, fields that must not be blank)
TRANSITIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    KNOWN_ERROR: ((PROBLEM_OPEN,), ("root_cause", "workaround")),
    RESOLVED: ((PROBLEM_OPEN, KNOWN_ERROR), ("root_cause",)),
    CLOSED: ((RESOLVED,), ()),
    PROBLEM_OPEN: ((KNOWN_ERROR, RESOLVED), ()),
}
EDITABLE = ("title", "description", "workaround", "root_cause", "cause_code", "service")
LIMITS = {"title": 500, "cause_code": 64, "service": 100}
MAX_LINKS = 1000  # incidents per problem: the status fan-out to their timelines stays bounded
CANDIDATE_WINDOW = timedelta(days=90)  # candidates and recurring causes look this far back (opened_at index)
CANDIDATE_LIMIT = 50


class ProblemAccess(Access, Protocol):
    sees_security: bool

    def can_create(self) -> bool: ...


@dataclass(frozen=True)
class Candidate:
    incident: Incident
    shares: tuple[str, ...]  # cause, fingerprint, service


def plausible_ref(ref: str) -> bool:
    head, _, number = (ref or "").strip().upper().partition("-")
    return head == REF_PREFIX and number.isascii() and number.isdigit() and len(number) <= 12


def may_see(access: ProblemAccess | None, problem: Problem) -> bool:
    return access is None or access.sees_security or not problem.security


class Problems:
    """Create, change and link problems; every write goes through one transaction with its events."""

    def __init__(self, lifecycle: Lifecycle):
        self.lifecycle = lifecycle
        self.clock = lifecycle.clock

    # ------------------------------------------------------------ reading

    def get(self, ref: str, access: ProblemAccess | None = None) -> Problem:
        """The problem ``access`` may see; NotFound when it is missing or hidden (one answer for both)."""
        problem = Problem.get_or_none(Problem.ref == normalise_ref(ref)) if plausible_ref(ref) else None
        if problem is None or not may_see(access, problem):
            raise NotFound(f"no problem {ref!r}")
        return problem

    def visible(self, query, access: ProblemAccess | None):
        """``query`` over Problem restricted to what ``access`` may see."""
        if access is None or access.sees_security:
            return query
        return query.where(Problem.security == False)  # noqa: E712

    def incidents(self, problem: Problem) -> list[Incident]:
        """The linked incidents, newest first (all of them: the caller filters by visibility)."""
        return list(
            Incident.select()
            .join(ProblemIncident, on=ProblemIncident.incident == Incident.id)
            .where(ProblemIncident.problem == problem)
            .order_by(Incident.opened_at.desc(), Incident.id.desc())
        )

    def problems_of(self, incident: Incident, access: ProblemAccess | None = None) -> list[Problem]:
        query = (
            Problem.select()
            .join(ProblemIncident, on=ProblemIncident.problem == Problem.id)
            .where(ProblemIncident.incident == incident)
        )
        return list(self.visible(query, access).order_by(Problem.id))

    def candidates(self, problem: Problem, access: ProblemAccess | None = None) -> list[Candidate]:
        """Unlinked incidents of the last CANDIDATE_WINDOW that share a cause code, an alert fingerprint or
        the service with the problem or its incidents (drills and cancelled ones left out), newest first."""
        linked = ProblemIncident.select(ProblemIncident.incident).where(ProblemIncident.problem == problem)
        mine = Incident.select(Incident.cause_code, Incident.service).where(Incident.id.in_(linked))
        causes = {problem.cause_code} | {i.cause_code for i in mine}
        services = {problem.service} | {i.service for i in mine}
        causes.discard("")
        services.discard("")
        prints = CorrelationKey.select(CorrelationKey.value).where(
            (CorrelationKey.kind == "fingerprint") & CorrelationKey.incident.in_(linked)
        )
        fingerprints = {k.value for k in prints.limit(100)}
        shared = Incident.id.in_(
            CorrelationKey.select(CorrelationKey.incident).where(
                (CorrelationKey.kind == "fingerprint") & CorrelationKey.value.in_(fingerprints)
            )
        )
        conditions = [shared] if fingerprints else []
        if causes:
            conditions.append(Incident.cause_code.in_(causes))
        if services:
            conditions.append(Incident.service.in_(services))
        if not conditions:
            return []
        query = Incident.select().where(
            (Incident.opened_at >= self.clock.now() - CANDIDATE_WINDOW)
            & (Incident.drill == False)  # noqa: E712
            & (Incident.status != CANCELLED)
            & Incident.id.not_in(linked)
            & functools.reduce(operator.or_, conditions)
        )
        if access is not None and not access.sees_security:
            query = query.where(Incident.security == False)  # noqa: E712
        rows = list(query.order_by(Incident.opened_at.desc(), Incident.id.desc()).limit(CANDIDATE_LIMIT))
        with_print = set()
        if fingerprints and rows:
            with_print = {
                k.incident_id
                for k in CorrelationKey.select(CorrelationKey.incident).where(
                    (CorrelationKey.kind == "fingerprint")
                    & CorrelationKey.value.in_(fingerprints)
                    & CorrelationKey.incident.in_([i.id for i in rows])
                )
            }
        result = []
        for incident in rows:
            shares = (
                ("cause",) * (incident.cause_code in causes)
                + ("fingerprint",) * (incident.id in with_print)
                + ("service",) * (incident.service in services)
            )
            result.append(Candidate(incident, shares))
        return result

    def recurring_causes(self, access: ProblemAccess | None = None, *, limit: int = 20) -> list[dict]:
        """Cause codes shared by two or more incidents of the last CANDIDATE_WINDOW that no problem holds:
        ``{"cause", "incidents", "latest"}`` (the newest incident's reference), most frequent first."""
        query = Incident.select(
            Incident.cause_code,
            peewee.fn.COUNT(Incident.id).alias("n"),
            peewee.fn.MAX(Incident.id).alias("latest_id"),
        ).where(
            (Incident.opened_at >= self.clock.now() - CANDIDATE_WINDOW)
            & (Incident.cause_code != "")
            & (Incident.drill == False)  # noqa: E712
            & (Incident.status != CANCELLED)
            & Incident.id.not_in(ProblemIncident.select(ProblemIncident.incident))
        )
        if access is not None and not access.sees_security:
            query = query.where(Incident.security == False)  # noqa: E712
        rows = list(
            query.group_by(Incident.cause_code)
            .having(peewee.fn.COUNT(Incident.id) > 1)
            .order_by(peewee.fn.COUNT(Incident.id).desc(), Incident.cause_code)
            .limit(limit)
        )
        refs = (
            {
                i.id: i.ref
                for i in Incident.select(Incident.id, Incident.ref).where(Incident.id.in_([r.latest_id for r in rows]))
            }
            if rows
            else {}
        )
        return [{"cause": r.cause_code, "incidents": r.n, "latest": refs.get(r.latest_id)} for r in rows]

    # ------------------------------------------------------------ changing

    def create(
        self,
        *,
        title: str,
        actor: str,
        access: ProblemAccess | None = None,
        incident_ref: str | None = None,
        description: str = "",
        owner: str | None = None,
        workaround: str = "",
        root_cause: str = "",
        cause_code: str = "",
        service: str = "",
    ) -> Problem:
        """A new problem; with ``incident_ref``, made from that incident (its title, cause code, service and
        security flag are the defaults) and linked to it."""
        _may_change(access)
        now = self.clock.now()
        with db.atomic():
            incident = self.lifecycle.find(incident_ref, access) if incident_ref else None
            title = " ".join((title or (incident.title if incident else "")).split())
            if not title:
                raise TransitionError("new problem", "create", "-", "a title is required")
            fields = _checked(
                dict(
                    title=title,
                    description=description,
                    workaround=workaround,
                    root_cause=root_cause,
                    cause_code=cause_code or (incident.cause_code if incident else ""),
                    service=service or (incident.service if incident else ""),
                )
            )
            number = _next_number()
            problem = Problem.create(
                number=number,
                ref=f"{REF_PREFIX}-{number}",
                status=PROBLEM_OPEN,
                owner=_user(owner) if owner else None,
                security=bool(incident and incident.security),
                created_by=actor,
                created_at=now,
                updated_at=now,
                **fields,
            )
            self._event(problem, "created", actor, field="status", new=PROBLEM_OPEN)  # then "linked" names it
            if incident is not None:
                self._link(problem, incident, actor, now)
        return problem

    def update(self, ref: str, actor: str, *, access: ProblemAccess | None = None, **changes) -> Problem:
        """Change any of EDITABLE and ``owner`` (a user name, or "" for none); one event per changed field."""
        unknown = set(changes) - set(EDITABLE) - {"owner"}
        if unknown:
            raise TransitionError(normalise_ref(ref), "update", "-", f"unknown fields: {', '.join(sorted(unknown))}")
        _may_change(access)
        with db.atomic():
            problem = self._lock(ref, "update", access)
            owner = changes.pop("owner", None)
            fields = _checked(changes)
            if "title" in fields and not fields["title"]:
                raise TransitionError(problem.ref, "update", problem.status, "the title cannot be blank")
            changed = [(name, getattr(problem, name), value) for name, value in fields.items()]
            changed = [c for c in changed if c[1] != c[2]]
            for name, _old, value in changed:
                setattr(problem, name, value)
            if owner is not None:
                before = problem.owner.name if problem.owner_id else ""
                user = _user(owner) if owner.strip() else None
                if (user.name if user else "") != before:
                    problem.owner = user
                    changed.append(("owner", before, user.name if user else ""))
            if not changed:
                return problem
            problem.updated_at = self.clock.now()
            problem.save()
            for name, old, new in changed:
                self._event(problem, "changed", actor, field=name, old=old, new=new)
        return problem

    def set_status(
        self, ref: str, actor: str, status: str, *, reason: str = "", access: ProblemAccess | None = None
    ) -> Problem:
        """Move to ``status`` (see TRANSITIONS); recorded on the problem and on every linked incident."""
        if status not in TRANSITIONS:
            raise TransitionError(
                normalise_ref(ref), "set status", "-", f"status must be one of {', '.join(TRANSITIONS)}"
            )
        _may_change(access)
        allowed, needed = TRANSITIONS[status]
        with db.atomic():
            problem = self._lock(ref, f"move to {status}", access)
            if problem.status not in allowed:
                raise TransitionError(
                    problem.ref, f"move to {status}", problem.status, f"only allowed from {', '.join(allowed)}"
                )
            missing = [name.replace("_", " ") for name in needed if not getattr(problem, name).strip()]
            if missing:
                raise TransitionError(
                    problem.ref, f"move to {status}", problem.status, f"{' and '.join(missing)} required"
                )
            if status == PROBLEM_OPEN and not (reason or "").strip():
                raise TransitionError(problem.ref, "reopen", problem.status, "a reason is required")
            now = self.clock.now()
            old = problem.status
            problem.status = status
            problem.updated_at = now
            if status == RESOLVED:
                problem.resolved_at = now
            if status == CLOSED:
                problem.closed_at = now
            if status == PROBLEM_OPEN:
                problem.resolved_at = None
            problem.save()
            body = (reason or "").strip()
            self._event(problem, "status", actor, field="status", old=old, new=status, body=body)
            news = f"{problem.ref} is now {status.replace('_', ' ')}"
            if not problem.security:  # a restricted problem's text stays on its own page (see _link)
                news = f"{problem.ref} ({problem.title}) is now {status.replace('_', ' ')}"
                if status == KNOWN_ERROR:
                    news += f". Workaround: {problem.workaround}"
                if status == RESOLVED:
                    news += f". Root cause: {problem.root_cause}"
            for incident in self.incidents(problem):  # at most MAX_LINKS
                self.lifecycle.record(incident.ref, actor, "problem", field="problem", old=old, new=status, body=news)
        return problem

    def link(self, ref: str, actor: str, incident_ref: str, *, access: ProblemAccess | None = None) -> Problem:
        """Link an incident (open or closed) to the problem; ``access`` must see and change the incident."""
        _may_change(access)
        with db.atomic():
            problem = self._lock(ref, "link", access)
            incident = self.lifecycle.find(incident_ref, access)
            exists = ProblemIncident.get_or_none(
                (ProblemIncident.problem == problem) & (ProblemIncident.incident == incident)
            )
            if exists is not None:
                raise TransitionError(problem.ref, "link", problem.status, f"{incident.ref} is linked already")
            if ProblemIncident.select().where(ProblemIncident.problem == problem).count() >= MAX_LINKS:
                raise TransitionError(
                    problem.ref, "link", problem.status, f"a problem holds at most {MAX_LINKS} incidents"
                )
            self._link(problem, incident, actor, self.clock.now())
            problem.updated_at = self.clock.now()
            problem.save()
        return problem

    def unlink(self, ref: str, actor: str, incident_ref: str, *, access: ProblemAccess | None = None) -> Problem:
        _may_change(access)
        with db.atomic():
            problem = self._lock(ref, "unlink", access)
            incident = self.lifecycle.find(incident_ref, access)
            deleted = (
                ProblemIncident.delete()
                .where((ProblemIncident.problem == problem) & (ProblemIncident.incident == incident))
                .execute()
            )
            if not deleted:
                raise NotFound(f"{incident.ref} is not linked to {problem.ref}")
            self._event(problem, "unlinked", actor, field="incident", old=incident.ref, incident=incident)
            self.lifecycle.record(
                incident.ref, actor, "problem", field="problem", old=problem.ref, body=f"unlinked from {problem.ref}"
            )
            problem.updated_at = self.clock.now()
            problem.save()
        return problem

    # ------------------------------------------------------------ internals

    def _link(self, problem: Problem, incident: Incident, actor: str, now) -> None:
        ProblemIncident.create(problem=problem, incident=incident, linked_by=actor, linked_at=now)
        self._event(problem, "linked", actor, field="incident", new=incident.ref, incident=incident)
        # A restricted (security) problem may hold an incident anyone sees: its timeline names the problem only.
        body = f"linked to {problem.ref}" if problem.security else f"linked to {problem.ref}: {problem.title}"
        self.lifecycle.record(incident.ref, actor, "problem", field="problem", new=problem.ref, body=body)
        if incident.security and not problem.security:
            problem.security = True  # it names a security incident now: restricted from here on
            problem.save()
            self._event(problem, "changed", actor, field="security", old=False, new=True)

    def _lock(self, ref: str, action: str, access: ProblemAccess | None) -> Problem:
        problem = self.get(ref, access)
        if is_postgres():
            problem = Problem.select().where(Problem.id == problem.id).for_update().get()
        if problem.status == CLOSED:
            raise TransitionError(problem.ref, action, problem.status, "a closed problem is read-only")
        return problem

    def _event(self, problem, type_, actor, *, field="", old=None, new=None, body="", incident=None) -> ProblemEvent:
        return ProblemEvent.create(
            problem=problem,
            at=self.clock.now(),
            type=type_,
            actor=actor,
            field=field,
            old=None if old is None else str(old),
            new=None if new is None else str(new),
            body=body or "",
            incident=incident,
        )


def _may_change(access: ProblemAccess | None) -> None:
    if access is not None and not access.can_create():
        raise Forbidden("viewers cannot change problems")


def _checked(fields: dict) -> dict:
    """Text fields without NUL, trimmed, within their limits."""
    result = {}
    for name, value in fields.items():
        if not isinstance(value, str):
            raise TransitionError("problem", f"set {name}", "-", f"{name} must be a string")
        value = value.replace("\x00", "").strip()
        if len(value) > LIMITS.get(name, 20000):
            raise TransitionError("problem", f"set {name}", "-", f"{name} is longer than {LIMITS[name]} characters")
        result[name] = value
    return result


def _user(name: str) -> User:
    user = User.get_or_none(User.name == name.strip())
    if user is None:
        raise NotFound(f"owner: no user {name!r}")
    return user


def _next_number() -> int:
    query = Counter.update(value=Counter.value + 1).where(Counter.name == "problem").returning(Counter.value).execute()
    row = next(iter(query), None)
    if row is None:  # created by migration 4; recreated if someone removed it
        Counter.insert(name="problem", value=1).execute()
        return 1
    return row.value


RESTRICTED = "(restricted)"


def problem_document(
    problem: Problem, access: ProblemAccess | None, *, incidents: list[Incident] | None = None
) -> dict:
    """One problem as JSON (the API's shape: add keys, never rename). With ``incidents`` (its linked ones), the
    ones ``access`` may see with their post-incident reviews, the review actions, and how many are hidden."""
    doc = {
        "ref": problem.ref,
        "title": problem.title,
        "description": problem.description,
        "status": problem.status,
        "owner": problem.owner.name if problem.owner_id else None,
        "workaround": problem.workaround,
        "root_cause": problem.root_cause,
        "cause_code": problem.cause_code or None,
        "service": problem.service or None,
        "security": problem.security,
        "created_by": problem.created_by,
        "created_at": iso(problem.created_at),
        "updated_at": iso(problem.updated_at),
        "resolved_at": iso(problem.resolved_at),
        "closed_at": iso(problem.closed_at),
    }
    if incidents is not None:
        shown = [i for i in incidents if access is None or access.can_see(i)]
        doc["incidents"] = [_linked_document(i) for i in shown]
        doc["restricted_incidents"] = len(incidents) - len(shown)
        doc["actions"] = [
            {"incident": i.ref, "what": a.get("what", ""), "owner": a.get("owner", ""), "due": a.get("due") or None}
            for i in shown
            for a in review_of(i)["actions"]
        ]
    return doc


def review_of(incident: Incident) -> dict:
    """The incident's post-incident review as ``{"cause", "actions"}`` (empty when it has none)."""
    review = incident.review if isinstance(incident.review, dict) else {}
    actions = [a for a in review.get("actions") or [] if isinstance(a, dict)]
    return {"cause": review.get("cause") or "", "actions": actions}


def _linked_document(incident: Incident) -> dict:
    review = review_of(incident)
    return {
        "ref": incident.ref,
        "title": incident.title,
        "status": incident.status,
        "priority": incident.priority,
        "service": incident.service or None,
        "cause_code": incident.cause_code or None,
        "opened_at": iso(incident.opened_at),
        "resolved_at": iso(incident.resolved_at),
        "review": review if incident.review else None,
    }


def event_document(event: ProblemEvent, hidden: set[str]) -> dict:
    """One ProblemEvent; a reference in ``hidden`` (an incident the reader may not see) is RESTRICTED."""

    def shown(value):
        return RESTRICTED if value in hidden else value

    return {
        "at": iso(event.at),
        "type": event.type,
        "actor": event.actor,
        "field": event.field,
        "old": shown(event.old),
        "new": shown(event.new),
        "body": event.body,
    }


def hidden_incident_refs(events: list[ProblemEvent], access: ProblemAccess | None) -> set[str]:
    """References of incidents that the events name and ``access`` may not see."""
    if access is None or access.sees_security:
        return set()
    ids = {e.incident_id for e in events if e.incident_id}
    if not ids:
        return set()
    rows = Incident.select(Incident.ref).where(Incident.id.in_(ids) & (Incident.security == True))  # noqa: E712
    return {i.ref for i in rows}
