"""The one door through which any incident changes (DESIGN.md §1, §4).

Every action validates the transition against the state machine, changes the
incident, writes an Event (actor, old → new, visibility) and runs the change
hooks (notifications, timers) — all in one transaction. A refused action
raises :class:`TransitionError` saying from which state to which and why.

State machine::

    new ─► acknowledged ─► in_progress ─► resolved ─► closed   (closed is final)
      │          │          ▲    │            │
      │          └──► on_hold ◄──┘            └─► in_progress   (reopen)
      └─► cancelled (from any open state; final, excluded from metrics)

Resolve is allowed from every open state: monitoring sources resolve alerts
that no person has touched, and an on-hold incident may be fixed by the reply
it was waiting for.

Authorization of the *other end*: an action that touches a second incident
(``link``; ``resolve`` cascading to children) takes ``access``, the acting
person's rights (anything with ``can_see(incident)`` and ``can_act(incident)``,
e.g. web/auth.py's SessionUser). The check sits here, where the second incident
is looked up and locked, because this is the one door every surface (UI, API,
CLI, pipeline) passes through: a surface cannot forget it, and the incident is
checked in the same transaction that changes it. A hidden incident raises the
same NotFound as a missing one (no existence oracle), a visible one the actor
may not change raises Forbidden; a cascade skips the children the actor may not
change. ``access=None`` is Inlet itself (pipeline, timers, CLI): everything.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Protocol

from gateway.config.procedure_settings import procedure_for
from gateway.core.clock import Clock
from gateway.core.errors import Forbidden, NoSuchIncident, NotFound, TransitionError
from gateway.incidents import sla
from gateway.incidents.sla import SlaSection
from gateway.membership import check_assignable
from notifiers.words import label
from store.db import db
from store.models import (
    ACKNOWLEDGED,
    CANCELLED,
    CLOSED,
    IN_PROGRESS,
    LEVELS,
    NEW,
    ON_HOLD,
    OPEN_STATUSES,
    RESOLVED,
    Contact,
    CorrelationKey,
    Counter,
    Event,
    Incident,
)

# action -> (states it is allowed from, state it leads to)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "acknowledge": ((NEW,), ACKNOWLEDGED),
    "start": ((NEW, ACKNOWLEDGED), IN_PROGRESS),
    "hold": ((ACKNOWLEDGED, IN_PROGRESS), ON_HOLD),
    "resume": ((ON_HOLD,), IN_PROGRESS),
    "resolve": (OPEN_STATUSES, RESOLVED),
    "close": ((RESOLVED,), CLOSED),
    "reopen": ((RESOLVED,), IN_PROGRESS),
    "cancel": (OPEN_STATUSES, CANCELLED),
}
FINAL = (CLOSED, CANCELLED)
# Who an Event is for: ``public`` — a status update an agent published (status page, stakeholders,
# the reporter); ``reporter`` — between the reporter and the agents (an agent's reply, the reporter's
# own email reply), never public; ``internal`` — agents only.
PUBLIC, REPORTER, INTERNAL = "public", "reporter", "internal"
FIX_TYPES = ("workaround", "permanent")
LINK_KINDS = ("parent", "child", "related")
ESCALATION_KINDS = ("functional", "hierarchical", "automatic")
STATUS_PAGE_STATES = ("investigating", "identified", "monitoring", "resolved")
# Actions a major incident refuses until it has its commander (the assignee).
COMMANDER_REQUIRED = ("acknowledge", "start", "resolve")


@dataclass
class Change:
    """What one lifecycle call did; handed to every hook inside the transaction."""

    action: str
    incident: Incident
    event: Event
    actor: str
    before: dict = field(default_factory=dict)
    context: dict = field(default_factory=dict)  # caller's hints for hooks, e.g. {"acknowledge_reporter": False}


Hook = Callable[[Change], None]


class Collaborator(Protocol):
    """A part of the incident flow the lifecycle calls on every change, handing itself over:
    procedures and escalation (gateway/incidents/procedures.py, escalation.py). What they change,
    they change through the lifecycle's public methods, so every hook sees it."""

    def on_change(self, lifecycle: Lifecycle, change: Change) -> None: ...


class Access(Protocol):
    """What an acting person may do; ``None`` in its place means Inlet itself (everything)."""

    def can_see(self, incident: Incident) -> bool: ...

    def can_act(self, incident: Incident) -> bool: ...


class Policy:
    """Priority from the configured impact × urgency matrix; SLA targets from the
    configured targets and the group's business-hours calendar (gateway/incidents/sla.py)."""

    def __init__(self, config=None):
        self.config = config
        self.sla = config.sla if config is not None else SlaSection()
        self.security_group = config.web.security_group if config is not None else "security"

    def priority(self, impact: str, urgency: str) -> str:
        return sla.priority(impact, urgency, self.sla.matrix)

    def calendar(self, incident: Incident):
        group = self.config.group_named(incident.group) if self.config is not None and incident.group else None
        calendar = self.config.calendar_named(group.calendar) if group is not None and group.calendar else None
        return sla.effective_calendar(incident.priority, calendar, self.sla)

    def paused(self, incident: Incident, since: datetime, until: datetime) -> timedelta:
        """Time on hold that counts against the SLA clock (business time with a calendar)."""
        return sla.business_time(since, until, self.calendar(incident))

    def targets(self, incident: Incident) -> tuple[datetime, datetime]:
        due = self.due(incident)
        return due.respond_by, due.resolve_by

    def due(self, incident: Incident, now: datetime | None = None) -> sla.SlaDue:
        """Respond-by, resolve-by and the warning point; while on hold, as of ``now``."""
        return sla.targets_for(
            incident.opened_at,
            incident.priority,
            now or incident.opened_at,
            sla=self.sla,
            calendar=self.calendar(incident),
            paused=timedelta(seconds=incident.paused_seconds),
            on_hold_since=incident.on_hold_since if now is not None else None,
        )


class Lifecycle:
    """Create and change incidents. On each change, inside its transaction, ``procedures`` and
    ``escalation`` run first (each handed this lifecycle), then each of ``hooks``.

    A method takes the reference of the incident to change; a collaborator or hook changing the
    incident of its :class:`Change` passes that Incident itself (already locked by the
    transaction), so the hooks after it see the change on the object they hold.
    """

    def __init__(
        self,
        *,
        ref_prefix: str = "INC",
        clock: Clock | None = None,
        policy: Policy | None = None,
        procedures: Collaborator | None = None,
        escalation: Collaborator | None = None,
        hooks=(),
    ):
        self.ref_prefix = ref_prefix
        self.clock = clock or Clock()
        self.policy = policy or Policy()
        self.procedures = procedures
        self.escalation = escalation
        self.hooks: list[Hook] = list(hooks)

    # ------------------------------------------------------------ reading

    def get(self, ref: str) -> Incident:
        """The incident with this reference (case-insensitive), or NotFound."""
        incident = Incident.first_where(ref=normalise_ref(ref))
        if incident is None:
            raise NotFound(f"no incident {ref!r}")
        return incident

    def find(self, ref: str, access: Access | None = None) -> Incident:
        """The incident ``access`` may see and change, locked for this transaction (see :meth:`_find`)."""
        return self._find(ref, access, lock=True)

    # ------------------------------------------------------------ creating

    def create(
        self,
        *,
        title: str,
        actor: str,
        description: str = "",
        source: str = "manual",
        integration: str = "",
        reporter_email: str | None = None,
        reporter_name: str = "",
        impact: str = "medium",
        urgency: str = "medium",
        category: str = "",
        service: str = "",
        group: str = "",
        procedure: str = "standard",
        tags: Iterable[str] = (),
        labels: dict | None = None,
        major: bool = False,
        security: bool = False,
        drill: bool = False,
        decisions: dict | None = None,
        keys: Iterable[tuple[str, str]] = (),
        inbound=None,
        visibility: str = INTERNAL,
        context: dict | None = None,
    ) -> Incident:
        """Register a new incident with its first Event; return it."""
        title = " ".join((title or "").split())[:500]
        if not title:
            raise TransitionError("new incident", "create", "-", "a title is required")
        _check_level("impact", impact)
        _check_level("urgency", urgency)
        procedure, major, security = self.procedure_for_category(category, major, security, procedure)
        now = self.clock.now()
        with db.atomic():
            number = _next_number()
            reporter = contact_for(reporter_email, reporter_name, now) if reporter_email else None
            incident = Incident(
                number=number,
                ref=f"{self.ref_prefix}-{number}",
                title=title,
                description=description,
                status=NEW,
                category=category,
                service=service,
                impact=impact,
                urgency=urgency,
                priority=self.policy.priority(impact, urgency),
                procedure=procedure,
                group=group,
                reporter=reporter,
                source=source,
                integration=integration,
                tags=sorted(set(tags)),
                labels=labels or {},
                major=major,
                security=security,
                drill=drill,
                decisions=decisions or {},
                opened_at=now,
                updated_at=now,
                signal_count=1 if source != "manual" else 0,
                last_signal_at=now if source != "manual" else None,
            )
            incident.respond_by, incident.resolve_by = self.policy.targets(incident)
            incident.save(force_insert=True)
            for kind, value in keys:
                add_key(incident, kind, value, now)
            event = self._event(
                incident, "created", actor, visibility, field="status", new=NEW, body=description, inbound=inbound
            )
            self._run_hooks(Change("create", incident, event, actor, context=context or {}))
        return incident

    # ------------------------------------------------------------ status changes

    def acknowledge(self, ref: str, actor: str) -> Incident:
        return self._transition(ref, "acknowledge", actor)

    def start(self, ref: str, actor: str) -> Incident:
        return self._transition(ref, "start", actor)

    def hold(self, ref: str, actor: str, reason: str) -> Incident:
        return self._transition(ref, "hold", actor, body=_required(ref, "hold", reason, "a reason"))

    def resume(self, ref: str, actor: str, body: str = "") -> Incident:
        return self._transition(ref, "resume", actor, body=body)

    def resolve(
        self,
        ref: str,
        actor: str,
        *,
        code: str,
        notes: str,
        cause: str,
        fix: str = "workaround",
        cause_text: str = "",
        cascade: bool = True,
        access: Access | None = None,
    ) -> Incident:
        """Resolve with a resolution record: code, notes and cause are required.

        With ``cascade`` the open children are resolved with it (gateway/incidents/procedures.py), only those
        ``access`` may change; the forms and the API ask for it (no cascade unless chosen).
        """
        missing = [name for name, value in (("code", code), ("notes", notes), ("cause", cause)) if not value.strip()]
        if missing:
            current = self.get(ref)
            raise TransitionError(current.ref, "resolve", current.status, f"{', '.join(missing)} required")
        if fix not in FIX_TYPES:
            raise TransitionError(ref, "resolve", "-", f"fix must be one of {', '.join(FIX_TYPES)}")
        fields = dict(
            resolution_code=code, resolution_notes=notes, cause_code=cause, fix_type=fix, cause_text=cause_text
        )
        return self._transition(
            ref,
            "resolve",
            actor,
            body=notes,
            visibility=PUBLIC,
            fields=fields,
            context={"access": access, "cascade": cascade},
            access=access,
        )

    def close(self, ref: str, actor: str, *, by: str = "agent") -> Incident:
        """Close a resolved incident; major and security incidents need their review first."""
        return self._transition(ref, "close", actor, fields={"closed_by": by})

    def reopen(self, ref: str, actor: str, reason: str, *, context: dict | None = None) -> Incident:
        body = _required(ref, "reopen", reason, "a reason")
        return self._transition(ref, "reopen", actor, body=body, context=context)

    def cancel(self, ref: str, actor: str, reason: str) -> Incident:
        return self._transition(ref, "cancel", actor, body=_required(ref, "cancel", reason, "a reason"))

    # ------------------------------------------------------------ other changes

    def note(
        self,
        ref: str | Incident,
        actor: str,
        body: str,
        *,
        public: bool = False,
        inbound=None,
        context: dict | None = None,
    ) -> Event:
        """Add an internal note, or a published status update (status page, stakeholders, the reporter)."""
        body = _required(ref, "add a note", body, "a text")
        with db.atomic():
            incident = self._lock(ref, "add a note")
            incident.updated_at = self.clock.now()
            incident.save()
            kind = "update" if public else "note"
            event = self._event(incident, kind, actor, PUBLIC if public else INTERNAL, body=body, inbound=inbound)
            self._run_hooks(Change(kind, incident, event, actor, context=context or {}))
        return event

    def reply(self, ref: str, actor: str, body: str, *, inbound=None, context: dict | None = None) -> Event:
        """A message between the reporter and the agents (Event ``reply``, visibility ``reporter``).

        From an agent (no ``inbound``) it is mailed to the reporter; the reporter's own email reply
        (with its ``inbound``) is kept for the agents. Never on the status page, never to stakeholders.
        """
        body = _required(ref, "reply", body, "a text")
        with db.atomic():
            incident = self._lock(ref, "reply")
            incident.updated_at = self.clock.now()
            incident.save()
            event = self._event(incident, "reply", actor, REPORTER, body=body, inbound=inbound)
            self._run_hooks(Change("reply", incident, event, actor, context=context or {}))
        return event

    def assign(
        self,
        ref: str | Incident,
        actor: str,
        *,
        group: str | None = None,
        assignee: str | None = None,
        reason: str = "",
    ):
        """Move to another group and/or member; a change of group counts as a reassignment."""
        with db.atomic():
            incident = self._lock(ref, "assign")
            before = {"group": incident.group, "assignee": incident.assignee.name if incident.assignee else None}
            user = None
            if assignee:  # only who may work the incident in its (new) group: NotAssignable says why not
                target = incident.group if group is None else group
                user = check_assignable(assignee, target, incident.security, self.policy.security_group)
            changed = []
            if group is not None and group != incident.group:
                if incident.group:
                    incident.reassignment_count += 1
                incident.group = group
                changed.append(("group", before["group"], group))
            if assignee is not None and (user and user.name) != before["assignee"]:
                incident.assignee = user
                changed.append(("assignee", before["assignee"], user.name if user else None))
            if not changed:
                return incident
            incident.updated_at = self.clock.now()
            incident.save()
            for name, old, new in changed:
                event = self._event(incident, "assigned", actor, INTERNAL, field=name, old=old, new=new, body=reason)
            self._run_hooks(Change("assign", incident, event, actor, before))
        return incident

    def update(self, ref: str, actor: str, *, reason: str = "", **fields) -> Incident:
        """Change classification fields (title, category, service, impact, urgency, flags).

        A change of impact or urgency recomputes the priority and the SLA targets.
        """
        allowed = {
            "title", "category", "service", "impact", "urgency", "major", "security", "procedure", "tags", "status_page"
        }  # fmt: skip
        unknown = set(fields) - allowed
        if unknown:
            raise TransitionError(ref, "update", "-", f"cannot change {', '.join(sorted(unknown))} this way")
        if "status_page" in fields and fields["status_page"] not in STATUS_PAGE_STATES:
            raise TransitionError(ref, "update", "-", f"status_page must be one of {', '.join(STATUS_PAGE_STATES)}")
        for name in ("impact", "urgency"):
            if name in fields:
                _check_level(name, fields[name])
        with db.atomic():
            incident = self._lock(ref, "update")
            categorised = {"category", "major", "security"} & set(fields) and "procedure" not in fields
            if categorised and self.policy.config is not None:
                procedure, major, security = self.procedure_for_category(
                    fields.get("category", incident.category),
                    fields.get("major", incident.major),
                    fields.get("security", incident.security),
                )
                fields.update(procedure=procedure, major=major, security=security)
            before = {name: getattr(incident, name) for name in fields}
            events = []
            for name, value in fields.items():
                if before[name] != value:
                    setattr(incident, name, value)
                    events.append((name, before[name], value))
            priority = self.policy.priority(incident.impact, incident.urgency)
            if priority != incident.priority:
                events.append(("priority", incident.priority, priority))
                before["priority"] = incident.priority
                incident.priority = priority
                incident.respond_by, incident.resolve_by = self.policy.targets(incident)
            if not events:
                return incident
            incident.updated_at = self.clock.now()
            incident.save()
            for name, old, new in events:
                event = self._event(incident, "changed", actor, INTERNAL, field=name, old=old, new=new, body=reason)
            self._run_hooks(Change("update", incident, event, actor, before))
        return incident

    def set_status_page(self, ref, actor: str, state: str) -> Incident:
        """Set what the public status page says of a major incident (a public ``changed`` Event).

        The procedures call it as the incident moves (gateway/incidents/procedures.py); a closed
        incident takes it too (closing it says ``resolved``). Nothing happens when it says so already.
        """
        if state not in STATUS_PAGE_STATES:
            allowed = ", ".join(STATUS_PAGE_STATES)
            raise TransitionError(str(ref), "set the status page", "-", f"must be one of {allowed}")
        with db.atomic():
            incident = self._find(ref, None, lock=True)
            if incident.status_page == state:
                return incident
            before = {"status_page": incident.status_page}
            incident.status_page = state
            incident.updated_at = self.clock.now()
            incident.save()
            event = self._event(
                incident, "changed", actor, PUBLIC, field="status_page", old=before["status_page"] or None, new=state
            )
            self._run_hooks(Change("status_page", incident, event, actor, before))
        return incident

    def link(
        self, ref: str, actor: str, other_ref: str, kind: str = "related", *, access: Access | None = None
    ) -> Incident:
        """Link two incidents: ``parent`` makes ``other_ref`` the parent of ``ref``; ``child`` the reverse.

        ``access`` must see and change both ends (see the module doc). A ``related`` link may
        name a closed incident (a follow-up of it): closed incidents are read-only, so the link
        is recorded on ``ref`` alone.
        """
        if kind not in LINK_KINDS:
            raise TransitionError(ref, "link", "-", f"kind must be one of {', '.join(LINK_KINDS)}")
        with db.atomic():
            incident = self._lock(ref, "link", access)
            other = self._find(other_ref, access) if kind == "related" else None
            if other is not None and other.status in FINAL:  # (ref itself is open: _lock said so)
                event = self._event(incident, "linked", actor, INTERNAL, field=kind, new=other.ref)
                self._run_hooks(Change("link", incident, event, actor))
                return incident
            other = self._lock(other_ref, "link", access)
            if other.id == incident.id:
                raise TransitionError(incident.ref, "link", incident.status, "an incident cannot be linked to itself")
            child, parent = (incident, other) if kind == "parent" else (other, incident)
            if kind != "related":
                if _is_ancestor(child, parent):
                    raise TransitionError(child.ref, "link", child.status, f"{parent.ref} is its descendant")
                child.parent = parent
                child.updated_at = self.clock.now()
                child.save()
            event = self._event(incident, "linked", actor, INTERNAL, field=kind, new=other.ref)
            self._event(other, "linked", actor, INTERNAL, field=_reverse(kind), new=incident.ref)
            self._run_hooks(Change("link", incident, event, actor))
        return incident

    def escalate(
        self, ref: str, actor: str, kind: str, reason: str, *, group: str | None = None, context: dict | None = None
    ) -> Incident:
        """Escalate with a reason: ``functional`` moves the incident to ``group`` (a reassignment),
        ``hierarchical`` involves management, ``automatic`` is an escalation step that fired.

        Sets the escalated flag (an automatic step only when its context says ``flag``) and writes
        an ``escalated`` Event; the escalation hook pages whom the kind calls for.
        """
        if kind not in ESCALATION_KINDS:
            raise TransitionError(ref, "escalate", "-", f"kind must be one of {', '.join(ESCALATION_KINDS)}")
        reason = _required(ref, "escalate", reason, "a reason")
        context = dict(context or {})
        with db.atomic():
            incident = self._lock(ref, "escalate")
            if incident.status not in OPEN_STATUSES:
                raise TransitionError(incident.ref, "escalate", incident.status, "only an open incident escalates")
            before = {"group": incident.group, "escalated": incident.escalated}
            if kind == "functional":
                if not group or group == incident.group:
                    raise TransitionError(incident.ref, "escalate", incident.status, "name another group")
                if self.policy.config is not None and self.policy.config.group_named(group) is None:
                    raise NotFound(f"no group {group!r}")
                incident.group = group
                incident.reassignment_count += 1
            if kind != "automatic" or context.get("flag"):
                incident.escalated = True
            incident.updated_at = self.clock.now()
            incident.save()
            # One timeline entry per escalation: its kind, and for a functional one the move (in data).
            moved = {"moved": [before["group"], group]} if kind == "functional" else None
            event = self._event(
                incident, "escalated", actor, INTERNAL, field="escalation", new=kind, body=reason, data=moved
            )
            context.update(kind=kind, reason=reason)
            self._run_hooks(Change("escalate", incident, event, actor, before, context))
        return incident

    def review(self, ref: str, actor: str, *, cause: str, actions: list[dict]) -> Incident:
        """Record the post-incident review (cause; actions, each with ``what``, ``owner`` and an optional
        ``due`` date, YYYY-MM-DD)."""
        cause = _required(ref, "review", cause, "a cause")
        if not actions or any(not (a.get("what") or "").strip() or not (a.get("owner") or "").strip() for a in actions):
            raise TransitionError(normalise_ref(ref), "review", "-", "actions are required, each with what and owner")
        dues = [_due_date(ref, a.get("due")) for a in actions]
        with db.atomic():
            incident = self._lock(ref, "review")
            now = self.clock.now()
            incident.review = {
                "cause": cause,
                "actions": [
                    {"what": a["what"].strip(), "owner": a["owner"].strip(), "due": due}
                    for a, due in zip(actions, dues, strict=True)
                ],
                "by": actor,
                "at": now.isoformat(),
            }
            incident.updated_at = now
            incident.save()
            lines = "; ".join(
                f"{a['what']} ({a['owner']}{', due ' + a['due'] if a['due'] else ''})"
                for a in incident.review["actions"]
            )
            event = self._event(incident, "reviewed", actor, INTERNAL, body=f"Cause: {cause}. Actions: {lines}")
            self._run_hooks(Change("review", incident, event, actor))
        return incident

    def record(
        self,
        ref: str,
        actor: str,
        type_: str,
        *,
        field: str = "",
        old=None,
        new=None,
        body: str = "",
        access: Access | None = None,
    ) -> Event:
        """Write an internal Event about something outside the incident (e.g. the problem it is linked to).

        No incident field changes and no hook runs (nobody is notified), so a closed or cancelled
        incident takes it too: its timeline is the audit log. ``access`` must see and change the incident.
        Call it inside the transaction that made the change it records.
        """
        incident = self._find(ref, access, lock=True)
        return self._event(incident, type_, actor, INTERNAL, field=field, old=old, new=new, body=body)

    def add_signal(self, ref: str, actor: str, *, at: datetime | None = None) -> Incident:
        """Count one more signal of an open problem (no timeline entry: repeats are not news)."""
        now = at or self.clock.now()
        # One statement that returns the row as it is now (a repeat is most of an alert storm): atomic by
        # itself, no savepoint around it, its SQL built once.
        sql = _add_signal_sql(db.param, Incident.column_list())
        row = db.execute_sql(sql, [Incident.last_signal_at.db_value(now), normalise_ref(ref)]).fetchone()
        if row is None:
            raise NotFound(f"no incident {ref!r}")
        return Incident.from_row(row)

    def flap(self, ref: str, actor: str, *, flapping: bool, count: bool = True, context: dict | None = None):
        """Count a flap (a re-fire soon after an automatic recovery) and set the flapping flag.

        A change of the flag writes an Event (it is a state change); counting alone does not.
        """
        with db.atomic():
            incident = self._lock(ref, "count a flap")
            before = {"flapping": incident.flapping, "flap_count": incident.flap_count}
            if count:
                incident.flap_count += 1
            incident.flapping = flapping
            incident.updated_at = self.clock.now()
            incident.save()
            if before["flapping"] != flapping:
                body = "flapping: paging stops until it is stable" if flapping else "stable again: paging resumes"
                event = self._event(
                    incident,
                    "changed",
                    actor,
                    INTERNAL,
                    field="flapping",
                    old=before["flapping"],
                    new=flapping,
                    body=body,
                )
                self._run_hooks(Change("flap", incident, event, actor, before, context or {}))
        return incident

    def remove_drill(self, ref: str | Incident) -> None:
        """Delete a drill incident with its timeline, keys, timers and outbox rows (the drill cleans up
        after itself, gateway/drill.py). Any other incident is refused: its timeline is the audit log."""
        with db.atomic():
            incident = self._find(ref, None, lock=True)
            if not incident.drill:
                raise TransitionError(incident.ref, "remove", incident.status, "only a drill incident can be removed")
            incident.delete_instance(recursive=True, delete_nullable=True)

    def procedure_for_category(
        self, category: str, major: bool, security: bool, procedure: str = "standard"
    ) -> tuple[str, bool, bool]:
        """(procedure, major, security) for a category and flags: the one place where a category named in
        ``[procedures] major_categories`` / ``security_categories`` / ``low_impact_categories`` takes effect,
        however the category was set (rule, form, CLI, API). The lists only raise flags, never clear them;
        with a configuration the procedure follows from the category and flags alone (gateway/procedures.py);
        without a configuration (tools, tests) the caller's procedure and flags stand."""
        config = self.policy.config
        if config is None:
            return procedure, bool(major), bool(security)
        return procedure_for(config, category=category or "", major=major, security=security)

    # ------------------------------------------------------------ internals

    def _transition(
        self, ref, action, actor, *, body="", visibility=INTERNAL, fields=None, context=None, access=None
    ) -> Incident:
        allowed, target = TRANSITIONS[action]
        with db.atomic():
            incident = self._lock(ref, action, access)
            if incident.status not in allowed:
                raise TransitionError(
                    incident.ref,
                    action,
                    incident.status,
                    f"only allowed from {', '.join(map(label, allowed))} (would lead to {label(target)})",
                )
            if action in COMMANDER_REQUIRED and incident.major and incident.assignee_id is None:
                raise TransitionError(
                    incident.ref, action, incident.status, "a major incident needs its commander (assignee) first"
                )
            if action == "close" and (incident.major or incident.security) and not incident.review:
                kind = "major" if incident.major else "security"
                raise TransitionError(
                    incident.ref, action, incident.status, f"a {kind} incident needs its post-incident review first"
                )
            now = self.clock.now()
            before = {"status": incident.status}
            for name, value in (fields or {}).items():
                setattr(incident, name, value)
            self._apply_status(incident, action, target, now)
            incident.updated_at = now
            incident.save()
            event = self._event(
                incident,
                _EVENT_TYPES[action],
                actor,
                visibility,
                field="status",
                old=before["status"],
                new=target,
                body=body,
            )
            self._run_hooks(Change(action, incident, event, actor, before, context or {}))
        return incident

    def _apply_status(self, incident: Incident, action: str, target: str, now: datetime) -> None:
        if incident.status == ON_HOLD and incident.on_hold_since:
            incident.paused_seconds += int(self.policy.paused(incident, incident.on_hold_since, now).total_seconds())
            incident.on_hold_since = None
        incident.status = target
        if target in (ACKNOWLEDGED, IN_PROGRESS) and incident.acknowledged_at is None:
            incident.acknowledged_at = now
        if target == ON_HOLD:
            incident.on_hold_since = now
        if target == RESOLVED:
            incident.resolved_at = now
        if action == "reopen":
            incident.reopen_count += 1
            incident.resolved_at = None
        if target == CLOSED:
            incident.closed_at = now
        if target == CANCELLED:
            incident.cancelled_at = now
        if action in ("resume", "reopen", "resolve"):
            incident.respond_by, incident.resolve_by = self.policy.targets(incident)
        set_keys_open(incident, target in OPEN_STATUSES or target == RESOLVED)

    def _find(self, ref: str | Incident, access: Access | None, *, lock: bool = False) -> Incident:
        """The incident ``access`` may see and change; NotFound when it is missing *or hidden* (one
        answer for both: no existence oracle), Forbidden when it is visible but not the actor's to change.

        ``ref`` may be the Incident of a :class:`Change` (a hook changing it): locked by the
        transaction already, it is used as it is.
        """
        incident = ref if isinstance(ref, Incident) else Incident.first_where(ref=normalise_ref(ref), for_update=lock)
        if incident is None or (access is not None and not access.can_see(incident)):
            raise NoSuchIncident(f"no incident {ref!r}")
        if access is not None and not access.can_act(incident):
            raise Forbidden(f"you may not change {incident.ref}")
        return incident

    def _lock(self, ref: str | Incident, action: str, access: Access | None = None) -> Incident:
        incident = self._find(ref, access, lock=True)
        if incident.status in FINAL:
            raise TransitionError(
                incident.ref, action, incident.status, f"a {label(incident.status)} incident is read-only"
            )
        return incident

    def _event(
        self, incident, type_, actor, visibility, *, field="", old=None, new=None, body="", inbound=None, data=None
    ):
        extra = {"data": data} if data else {}
        return Event.create(
            **extra,
            incident=incident,
            at=self.clock.now(),
            type=type_,
            actor=actor,
            visibility=visibility,
            field=field,
            old=None if old is None else str(old),
            new=None if new is None else str(new),
            body=body or "",
            inbound=inbound,
        )

    def _run_hooks(self, change: Change) -> None:
        for collaborator in (self.procedures, self.escalation):
            if collaborator is not None:
                collaborator.on_change(self, change)
        for hook in self.hooks:
            hook(change)


_EVENT_TYPES = {
    "acknowledge": "acknowledged",
    "start": "started",
    "hold": "held",
    "resume": "resumed",
    "resolve": "resolved",
    "close": "closed",
    "reopen": "reopened",
    "cancel": "cancelled",
}


def normalise_ref(ref: str) -> str:
    return (ref or "").strip().upper()


def contact_for(email: str, name: str, now: datetime) -> Contact:
    """The Contact for an address, created once even when two threads race."""
    email = email.strip().lower()
    known = Contact.first_where(email=email)  # most reporters write more than once
    if known is not None:
        return known
    Contact.insert(email=email, name=name or "", created_at=now).on_conflict_ignore().execute()
    return Contact.get(Contact.email == email)


def add_key(incident: Incident, kind: str, value: str, now: datetime, state: str = "") -> None:
    CorrelationKey.create(incident=incident, kind=kind, value=value[:512], open=True, state=state, created_at=now)


def set_keys_open(incident: Incident, is_open: bool) -> None:
    """Keys of a closed or cancelled incident no longer thread new signals onto it."""
    CorrelationKey.update(open=is_open).where(CorrelationKey.incident == incident).execute()


def _next_number() -> int:
    """The next incident number, from a counter row locked by the creating transaction."""
    row = db.execute_sql(_next_number_sql(db.param), ["incident"]).fetchone()  # SQL built once
    if row is None:  # the row is created by the first migration; recreate if someone removed it
        Counter.insert(name="incident", value=1).execute()
        return 1
    return row[0]


@functools.cache
def _add_signal_sql(param: str, columns: str) -> str:
    count = '"signal_count" = "signal_count" + 1'
    return f'UPDATE "incident" SET {count}, "last_signal_at" = {param} WHERE "ref" = {param} RETURNING {columns}'


@functools.cache
def _next_number_sql(param: str) -> str:
    return f'UPDATE "counter" SET "value" = "value" + 1 WHERE "name" = {param} RETURNING "value"'


def _required(ref: str, action: str, value: str, what: str) -> str:
    if not (value or "").strip():
        raise TransitionError(normalise_ref(ref), action, "-", f"{what} is required")
    return value.strip()


def _due_date(ref: str, value) -> str | None:
    """A review action's due date as YYYY-MM-DD, None when not given; TransitionError when not a date."""
    text = value.strip() if isinstance(value, str) else ""
    if value is not None and not isinstance(value, str):
        text = "?"
    if not text:
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        why = f"due {text[:40]!r} is not a date (YYYY-MM-DD)"
        raise TransitionError(normalise_ref(ref), "review", "-", why) from None


def _check_level(name: str, value: str) -> None:
    if value not in LEVELS:
        raise TransitionError("incident", f"set {name}", "-", f"{name} must be one of {', '.join(LEVELS)}")


def _is_ancestor(candidate: Incident, of: Incident) -> bool:
    node, seen = of, set()
    while node is not None and node.id not in seen:
        if node.id == candidate.id:
            return True
        seen.add(node.id)
        node = node.parent
    return False


def _reverse(kind: str) -> str:
    return {"parent": "child", "child": "parent"}.get(kind, kind)
