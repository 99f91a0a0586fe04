"""Procedures (DESIGN.md §4): what major, security, standard and low-impact incidents do differently.

Each effect lives here once, as a lifecycle hook or a timer handler:

- **major**: declared (created major, or changed to major) → a stakeholder broadcast
  (outbox ``audience="stakeholder"``, ``template="major_declared"``; not for a
  security incident), the status page set to ``investigating``, the escalation
  contacts of the group's policy paged at once (``template="escalation"``), and an
  update reminder every ``major_reminder_interval`` while open (a ``major_reminder``
  Timer → ``template="major_reminder"`` to the group). Resolving sets the status
  page to ``resolved``. The commander rule and the review rule are checked by the
  lifecycle itself (``COMMANDER_REQUIRED``, close without review).
- **security**: restricted visibility is the ``security`` flag; nothing is broadcast.
- **low-impact**: resolved → an ``auto_close`` Timer at ``auto_close_after``; it
  closes the incident (``closed_by="auto"``) if it is still resolved. Never for a
  major or security incident. Reopening cancels it.
- **parent/child**: resolving a parent resolves each open child (its own
  ``resolved`` Event; the notifications hook tells each reporter).
- **allocation to a member**: a group with ``assign = "round-robin"`` or
  ``"least-loaded"`` gets new incidents assigned to one of its active members.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import peewee

from gateway.schema import setting
from notifiers.outbox import enqueue
from store.models import OPEN_STATUSES, PENDING, RESOLVED, Counter, Incident, Timer, User

log = logging.getLogger("inlet.procedures")

MAJOR_REMINDER, AUTO_CLOSE = "major_reminder", "auto_close"
PROCEDURES = ("major", "security", "standard", "low-impact")


# What the public status page says after a lifecycle step of a major incident;
# the commander may say more in between (lifecycle.update(status_page=...)).
STATUS_PAGE_FOLLOWS = {
    "start": "identified",
    "resume": "identified",
    "reopen": "identified",
    "resolve": "monitoring",
    "close": "resolved",
}


@dataclass(frozen=True)
class ProceduresSection:
    categories: list[str] = setting(
        factory=list, help="Known categories; when given, rules and the lists below may name only these."
    )
    major_categories: list[str] = setting(factory=list, help="Categories that make an incident major.")
    security_categories: list[str] = setting(factory=list, help="Categories that make an incident a security one.")
    low_impact_categories: list[str] = setting(
        factory=list, help="Categories handled as low-impact (auto-closed after the resolved window)."
    )
    auto_close_after: timedelta = setting(timedelta(days=5), help="Resolved window after which low-impact closes.")
    major_page: list[str] = setting(
        factory=list, help="Extra targets paged at once for a major incident (besides the policy's contacts)."
    )
    major_reminder_interval: timedelta = setting(
        timedelta(minutes=30), help="How often to remind the group to post an update on an open major incident."
    )


def procedure_for(config, *, category: str, major: bool, security: bool) -> tuple[str, bool, bool]:
    """(procedure, major, security) for a category and flags: flags and category lists make major/security."""
    p = config.procedures
    major = bool(major or (category and category in p.major_categories))
    security = bool(security or (category and category in p.security_categories))
    if major:
        return "major", major, security
    if security:
        return "security", major, security
    return ("low-impact" if category and category in p.low_impact_categories else "standard"), major, security


def check_procedures(config) -> None:
    """Cross-references: categories named by rules and lists must be known (when categories are given)."""
    from gateway.schema import KeyProblem

    p = config.procedures
    if not p.categories:
        return
    known = set(p.categories)
    for key in ("major_categories", "security_categories", "low_impact_categories"):
        for i, name in enumerate(getattr(p, key)):
            if name not in known:
                raise KeyProblem(("procedures", f"{key}[{i}]"), f"unknown category {name!r}: not in 'categories'")
    for r in config.rule:
        if r.category and r.category not in known:
            raise KeyProblem((f"[[rule]] {r.name!r}", "category"), f"unknown category {r.category!r}")


def upsert_timer(incident: Incident, kind: str, step: int, due: datetime, data: dict | None = None) -> None:
    """Make the timer (incident, kind, step) pending at ``due``, unless it fired already."""
    timer = Timer.get_or_none((Timer.incident == incident) & (Timer.kind == kind) & (Timer.step == step))
    if timer is None:
        Timer.create(incident=incident, kind=kind, step=step, due_at=due, status=PENDING, data=data or {})
    elif timer.status != "fired":
        Timer.update(due_at=due, status=PENDING, data=data or {}).where(Timer.id == timer.id).execute()


def cancel_timers(
    incident: Incident, kinds: tuple[str, ...], steps: list[int] | None = None, *, keep: list[int] | None = None
) -> int:
    """Cancel the pending timers of these kinds: of ``steps`` only, or all but the steps to ``keep``."""
    query = Timer.update(status="cancelled").where(
        (Timer.incident == incident) & (Timer.kind.in_(kinds)) & (Timer.status == PENDING)
    )
    if steps is not None:
        query = query.where(Timer.step.in_(steps))
    if keep is not None:
        query = query.where(Timer.step.not_in(keep))
    return query.execute()


class Procedures:
    """The procedure effects: a lifecycle hook plus the handlers of its timers."""

    def __init__(self, lifecycle):
        self.lifecycle = lifecycle

    @property
    def config(self):
        return self.lifecycle.policy.config

    # ------------------------------------------------------------ hook

    def on_change(self, change) -> None:
        incident, action, config = change.incident, change.action, self.config
        if config is None:
            return
        now = self.lifecycle.clock.now()
        if action == "create":
            self._assign_member(change, now)
        if (action == "create" and incident.major) or (
            action == "update" and "major" in change.before and incident.major and not change.before["major"]
        ):
            self._declare_major(change, now)
        if incident.major and action in STATUS_PAGE_FOLLOWS:
            self._set_status_page(change, STATUS_PAGE_FOLLOWS[action])
        if action == "resolve":
            cancel_timers(incident, (MAJOR_REMINDER,))
            if incident.procedure == "low-impact" and not (incident.major or incident.security):
                upsert_timer(incident, AUTO_CLOSE, 0, now + config.procedures.auto_close_after)
            if change.context.get("cascade", True):
                self._resolve_children(change)
        if action in ("cancel", "close"):
            cancel_timers(incident, (MAJOR_REMINDER, AUTO_CLOSE))
        if action == "reopen":
            cancel_timers(incident, (AUTO_CLOSE,))
            if incident.major:
                self._schedule_reminder(incident, now)

    def _declare_major(self, change, now: datetime) -> None:
        incident, config = change.incident, self.config
        context = {"ref": incident.ref, "title": incident.title, "priority": incident.priority, "group": incident.group}
        # The stakeholder broadcast is the notifications hook's ([[stakeholder]] subscriptions).
        self._set_status_page(change, "investigating")
        targets = list(config.procedures.major_page)
        from gateway.escalation import policy_for
        from notifiers.audiences import expand_targets, record_paged

        policy = policy_for(config, incident)
        for step in policy.steps if policy else ():
            targets += [t for t in step.notify if t not in targets]
        targets, paged = expand_targets(config, targets, now)  # schedule:NAME -> who is on call now
        record_paged(change.event, paged)
        if targets:
            enqueue(
                audience="escalation",
                template="escalation",
                targets=targets,
                now=now,
                incident=incident,
                event=change.event,
                context={**context, "reason": "major incident declared", "when": "major"},
            )
        self._schedule_reminder(incident, now)

    def _schedule_reminder(self, incident: Incident, now: datetime) -> None:
        cancel_timers(incident, (MAJOR_REMINDER,))
        last = (
            Timer.select(peewee.fn.MAX(Timer.step))
            .where((Timer.incident == incident) & (Timer.kind == MAJOR_REMINDER))
            .scalar()
        )
        upsert_timer(incident, MAJOR_REMINDER, (last or 0) + 1, now + self.config.procedures.major_reminder_interval)

    def _set_status_page(self, change, state: str) -> None:
        incident = change.incident
        if incident.status_page == state:
            return
        old = incident.status_page or None
        Incident.update(status_page=state).where(Incident.id == incident.id).execute()
        incident.status_page = state
        self.lifecycle._event(incident, "changed", change.actor, "public", field="status_page", old=old, new=state)

    def _resolve_children(self, change) -> None:
        """Resolve the open children the resolver may change (``context["access"]``; None: Inlet, all of them).

        The others stay open; the parent's timeline counts the visible ones left open, without naming them.
        """
        parent, access = change.incident, change.context.get("access")
        children = Incident.select().where((Incident.parent == parent) & (Incident.status.in_(OPEN_STATUSES)))
        skipped = 0
        for child in children:
            if access is not None and not access.can_act(child):
                skipped += access.can_see(child)  # a hidden child is not even counted: no oracle
                continue
            self.lifecycle.resolve(
                child.ref,
                change.actor,
                code=parent.resolution_code,
                notes=f"Resolved with {parent.ref}: {parent.resolution_notes}",
                cause=parent.cause_code,
                fix=parent.fix_type or "workaround",
                cause_text=parent.cause_text,
                access=access,
            )
        if skipped:
            self.lifecycle._event(
                parent,
                "note",
                change.actor,
                "internal",
                body=f"{skipped} open child incident(s) not resolved with it: {change.actor} may not change them.",
            )

    def _assign_member(self, change, now: datetime) -> None:
        incident, config = change.incident, self.config
        group = config.group_named(incident.group) if incident.group else None
        if group is None or not group.assign or incident.assignee_id is not None:
            return
        users = {u.name: u for u in User.select().where(User.name.in_(group.members) & (User.active == True))}  # noqa: E712
        members = [users[name] for name in group.members if name in users]
        if not members:
            return
        if group.assign == "round-robin":
            user = members[_next_turn(f"rr:{group.name}") % len(members)]
        else:  # least-loaded: fewest open incidents, ties by the order in the group
            load = dict(
                Incident.select(Incident.assignee, peewee.fn.COUNT(Incident.id))
                .where(Incident.assignee.in_(members) & Incident.status.in_(OPEN_STATUSES))
                .group_by(Incident.assignee)
                .tuples()
            )
            user = min(members, key=lambda u: load.get(u.id, 0))
        Incident.update(assignee=user).where(Incident.id == incident.id).execute()
        incident.assignee = user
        self.lifecycle._event(
            incident, "assigned", "allocation", "internal", field="assignee", new=user.name, body=group.assign
        )

    # ------------------------------------------------------------ timer handlers

    def fire_reminder(self, timer: Timer, incident: Incident, now: datetime) -> str:
        if incident.status not in OPEN_STATUSES or not incident.major:
            return "cancelled"
        group = self.config.group_named(incident.group)
        from notifiers.audiences import expand_targets, record_paged  # as policy_for above: config imports us

        event = self.lifecycle.note(
            incident.ref, "escalation", f"Reminder {timer.step}: post an update on this major incident."
        )
        targets, paged = expand_targets(self.config, list(group.channels) if group else [], now)
        record_paged(event, paged)
        if targets:
            enqueue(
                audience="group",
                template="major_reminder",
                targets=targets,
                now=now,
                incident=incident,
                event=event,
                context={"ref": incident.ref, "title": incident.title, "reminder": timer.step},
            )
        upsert_timer(incident, MAJOR_REMINDER, timer.step + 1, now + self.config.procedures.major_reminder_interval)
        return "fired"

    def fire_auto_close(self, timer: Timer, incident: Incident, now: datetime) -> str:
        if incident.status != RESOLVED or incident.major or incident.security:
            return "cancelled"
        self.lifecycle.close(incident.ref, "auto-close", by="auto")
        return "fired"


def _next_turn(name: str) -> int:
    """A counter row incremented in the caller's transaction (round-robin position)."""
    rows = list(Counter.update(value=Counter.value + 1).where(Counter.name == name).returning(Counter.value).execute())
    if rows:
        return rows[0].value
    Counter.insert(name=name, value=0).on_conflict_ignore().execute()
    return 0
