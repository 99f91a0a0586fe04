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
from datetime import datetime

import peewee

from gateway import membership
from gateway.audiences import expand_targets, record_paged
from gateway.incidents.escalation import policy_for
from gateway.incidents.timers import cancel_timers, upsert_timer
from notifiers.outbox import enqueue
from store.models import OPEN_STATUSES, RESOLVED, Counter, Incident, Timer, User

log = logging.getLogger("inlet.procedures")

MAJOR_REMINDER, AUTO_CLOSE = "major_reminder", "auto_close"


# What the public status page says after a lifecycle step of a major incident;
# the commander may say more in between (lifecycle.update(status_page=...)).
STATUS_PAGE_FOLLOWS = {
    "start": "identified",
    "resume": "identified",
    "reopen": "identified",
    "resolve": "monitoring",
    "close": "resolved",
}


class Procedures:
    """The procedure effects: a lifecycle hook plus the handlers of its timers.

    Given to the :class:`~gateway.incidents.lifecycle.Lifecycle` when it is built; the lifecycle
    hands itself to each call, and every change made here goes through its public methods (so
    every hook sees it). The configuration is the lifecycle's (it follows a reload).
    """

    # ------------------------------------------------------------ hook

    def on_change(self, lifecycle, change) -> None:
        incident, action, config = change.incident, change.action, lifecycle.policy.config
        if config is None:
            return
        now = lifecycle.clock.now()
        if action == "create":
            self._assign_member(lifecycle, change)
        if (action == "create" and incident.major) or (
            action == "update" and "major" in change.before and incident.major and not change.before["major"]
        ):
            self._declare_major(lifecycle, change, now)
        if incident.major and action in STATUS_PAGE_FOLLOWS:
            lifecycle.set_status_page(incident, change.actor, STATUS_PAGE_FOLLOWS[action])
        if action == "resolve":
            cancel_timers(incident, (MAJOR_REMINDER,))
            if incident.procedure == "low-impact" and not (incident.major or incident.security):
                upsert_timer(incident, AUTO_CLOSE, 0, now + config.procedures.auto_close_after)
            if change.context.get("cascade", True):
                self._resolve_children(lifecycle, change)
        if action in ("cancel", "close"):
            cancel_timers(incident, (MAJOR_REMINDER, AUTO_CLOSE))
        if action == "reopen":
            cancel_timers(incident, (AUTO_CLOSE,))
            if incident.major:
                self._schedule_reminder(config, incident, now)

    def _declare_major(self, lifecycle, change, now: datetime) -> None:
        incident, config = change.incident, lifecycle.policy.config
        context = {"ref": incident.ref, "title": incident.title, "priority": incident.priority, "group": incident.group}
        # The stakeholder broadcast is the notifications hook's ([[stakeholder]] subscriptions).
        lifecycle.set_status_page(incident, change.actor, "investigating")
        targets = list(config.procedures.major_page)
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
        self._schedule_reminder(config, incident, now)

    def _schedule_reminder(self, config, incident: Incident, now: datetime) -> None:
        cancel_timers(incident, (MAJOR_REMINDER,))
        last = (
            Timer.select(peewee.fn.MAX(Timer.step))
            .where((Timer.incident == incident) & (Timer.kind == MAJOR_REMINDER))
            .scalar()
        )
        upsert_timer(incident, MAJOR_REMINDER, (last or 0) + 1, now + config.procedures.major_reminder_interval)

    def _resolve_children(self, lifecycle, change) -> None:
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
            lifecycle.resolve(
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
            lifecycle.note(
                parent,
                change.actor,
                f"{skipped} open child incident(s) not resolved with it: {change.actor} may not change them.",
            )

    def _assign_member(self, lifecycle, change) -> None:
        incident, config = change.incident, lifecycle.policy.config
        group = config.group_named(incident.group) if incident.group else None
        if group is None or not group.assign or incident.assignee_id is not None:
            return
        names = membership.members_of(group.name)
        users = {u.name: u for u in User.select().where(User.name.in_(names) & (User.active == True))}  # noqa: E712
        members = [users[name] for name in names if name in users]
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
        lifecycle.assign(incident, "allocation", assignee=user.name, reason=group.assign)

    # ------------------------------------------------------------ timer handlers

    def fire_reminder(self, lifecycle, timer: Timer, incident: Incident, now: datetime) -> str:
        if incident.status not in OPEN_STATUSES or not incident.major:
            return "cancelled"
        config = lifecycle.policy.config
        group = config.group_named(incident.group)
        event = lifecycle.note(
            incident.ref, "escalation", f"Reminder {timer.step}: post an update on this major incident."
        )
        targets, paged = expand_targets(config, list(group.channels) if group else [], now)
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
        upsert_timer(incident, MAJOR_REMINDER, timer.step + 1, now + config.procedures.major_reminder_interval)
        return "fired"

    def fire_auto_close(self, lifecycle, timer: Timer, incident: Incident, now: datetime) -> str:
        if incident.status != RESOLVED or incident.major or incident.security:
            return "cancelled"
        lifecycle.close(incident.ref, "auto-close", by="auto")
        return "fired"


def _next_turn(name: str) -> int:
    """A counter row incremented in the caller's transaction (round-robin position)."""
    rows = list(Counter.update(value=Counter.value + 1).where(Counter.name == name).returning(Counter.value).execute())
    if rows:
        return rows[0].value
    Counter.insert(name=name, value=0).on_conflict_ignore().execute()
    return 0
