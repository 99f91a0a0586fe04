"""Escalation: policy steps as Timer rows, fired exactly once by the timer worker.

Scheduling (a lifecycle hook): on create, on a change of priority or group, on
resume and reopen, each step of the incident's policy becomes a Timer row
``(incident, "escalation", step)`` due at its trigger point:

==========================  ===============================================
``when``                    due at
==========================  ===============================================
``unacknowledged``          opened + ``after``
``unresolved``              opened + ``after``
``resolve_sla_warning``     the warning point (resolve target × ``sla.warning_fraction``) + ``after``
``resolve_sla_breach``      resolve-by + ``after``
==========================  ===============================================

Acknowledging cancels the ``unacknowledged`` steps; holding cancels the SLA
steps (the clock stops; resuming reschedules them at the moved points);
resolving, cancelling and closing cancel every pending step. A fired step never
fires again (the unique row says so).

Firing (:class:`TimerWorker`, registered in ``gateway/service.py``): a due timer
is claimed in a transaction that first locks its incident and then the timer
row, on PostgreSQL with ``FOR UPDATE SKIP LOCKED`` (a row another process holds
is skipped, never waited for), on SQLite with a conditional update under the
write lock. The handler re-checks the condition: when it no longer holds the
timer is cancelled; when the point moved later (on hold, priority lowered) it
is rescheduled; else the step escalates through ``Lifecycle.escalate(kind=
"automatic")`` — an Event, the escalated flag when ``flag = true`` — and this
module's hook pages the step's targets with an outbox row (``audience=
"escalation"``, template ``escalation`` / ``sla_warning`` / ``sla_breach``).
A ``schedule:NAME`` target pages whoever is on call then (gateway/oncall.py);
the escalated event records who (``data["paged"]``).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime

import peewee

from gateway.clock import Clock
from notifiers.audiences import expand_targets, record_paged
from notifiers.outbox import enqueue
from notifiers.words import duration
from store.db import db, is_postgres
from store.models import NEW, ON_HOLD, OPEN_STATUSES, PENDING, Event, Incident, Timer

log = logging.getLogger("inlet.escalation")

ESCALATION = "escalation"
SLA_WHENS = ("unresolved", "resolve_sla_warning", "resolve_sla_breach")
TEMPLATES = {
    "unacknowledged": "escalation",
    "unresolved": "escalation",
    "resolve_sla_warning": "sla_warning",
    "resolve_sla_breach": "sla_breach",
}


def policy_for(config, incident: Incident):
    """The escalation policy of the incident's group (per priority if the group says so), or None."""
    group = config.group_named(incident.group) if incident.group else None
    if group is None:
        return None
    name = group.escalation_by_priority.get(incident.priority) or group.escalation
    return config.policy_named(name) if name else None


def trigger_at(policy, incident: Incident, step, now: datetime | None = None) -> datetime:
    """When ``step`` is due for this incident (SLA points as of ``now`` while on hold)."""
    if step.when in ("unacknowledged", "unresolved"):
        return incident.opened_at + step.after
    due = policy.due(incident, now)
    point = due.warn_at if step.when == "resolve_sla_warning" else due.resolve_by
    return point + step.after


def may_hold(incident: Incident, step) -> bool:
    """Whether the step's condition can still come true (else its timer is cancelled)."""
    if incident.status not in OPEN_STATUSES:
        return False
    if step.when == "unacknowledged":
        return incident.status == NEW
    return incident.status != ON_HOLD


def targets_of(config, incident: Incident, step) -> list[str]:
    targets = list(step.notify)
    group = config.group_named(incident.group) if step.managers and incident.group else None
    for t in group.managers if group else ():
        if t not in targets:
            targets.append(t)
    return targets


class Escalation:
    """The escalation hook (scheduling and paging) and the handler of escalation timers."""

    def __init__(self, lifecycle):
        self.lifecycle = lifecycle

    @property
    def config(self):
        return self.lifecycle.policy.config

    # ------------------------------------------------------------ hook

    def on_change(self, change) -> None:
        incident, action = change.incident, change.action
        if self.config is None:
            return
        if action in ("create", "resume", "reopen", "acknowledge", "start", "hold", "assign", "update"):
            if action == "update" and not ({"priority", "major"} & set(change.before)):
                return
            self.schedule(incident, new=action == "create")
        elif action in ("resolve", "cancel", "close"):
            from gateway.procedures import cancel_timers

            cancel_timers(incident, (ESCALATION,))
        elif action == "escalate":
            if change.context.get("kind") == "functional":
                self.schedule(incident)
            self._page(change)

    def schedule(self, incident: Incident, *, new: bool = False) -> None:
        """Bring the incident's escalation timers in line with its policy and state
        (``new``: it was just created and has no timers to cancel)."""
        from gateway.procedures import cancel_timers, upsert_timer

        policy = policy_for(self.config, incident)
        held = []
        for i, step in enumerate(policy.steps if policy else []):
            if may_hold(incident, step):
                upsert_timer(
                    incident, ESCALATION, i, trigger_at(self.lifecycle.policy, incident, step), {"policy": policy.name}
                )
                held.append(i)
        if not new:  # the steps that no longer hold, and those the policy no longer has
            cancel_timers(incident, (ESCALATION,), keep=held)

    def _page(self, change) -> None:
        incident, context, config = change.incident, change.context, self.config
        now = self.lifecycle.clock.now()
        kind = context.get("kind")
        base = {"ref": incident.ref, "title": incident.title, "priority": incident.priority, "group": incident.group}
        base.update(kind=kind, reason=context.get("reason", ""))
        if kind == "automatic":
            targets, template = context.get("targets", []), TEMPLATES.get(context.get("when"), "escalation")
            base.update({k: context[k] for k in ("policy", "step", "when", "after") if k in context})
        else:
            group = config.group_named(incident.group)
            if kind == "hierarchical":
                targets = list(group.managers) if group else []
            else:  # functional: the new group hears of it on its channels
                targets = list(group.channels) if group else []
            template = "escalation"
        targets, paged = expand_targets(config, targets, now)  # schedule:NAME -> who is on call now
        record_paged(change.event, paged)
        if kind == "hierarchical" and not targets:
            _record_unpaged(change.event, f"no manager to page: group {incident.group or '(none)'} has no managers")
        if targets:
            enqueue(
                audience="escalation",
                template=template,
                targets=targets,
                now=now,
                incident=incident,
                event=change.event,
                context=base,
            )

    # ------------------------------------------------------------ timer handler

    def fire(self, timer: Timer, incident: Incident, now: datetime) -> str | datetime:
        """Fire one escalation step: "fired", "cancelled", or a later due time."""
        policy = policy_for(self.config, incident)
        if policy is None or timer.step >= len(policy.steps):
            return "cancelled"
        step = policy.steps[timer.step]
        if not may_hold(incident, step):
            return "cancelled"
        due = trigger_at(self.lifecycle.policy, incident, step, now)
        if due > now and not incident.drill:  # a drill compresses the delays (gateway/drill.py)
            return due
        after = int(step.after.total_seconds())
        reason = {
            "unacknowledged": f"not acknowledged after {duration(step.after)}",
            "unresolved": f"not resolved after {duration(step.after)}",
            "resolve_sla_warning": f"{int(self.config.sla.warning_fraction * 100)} % of the resolve target used",
            "resolve_sla_breach": "resolve target breached",
        }[step.when]
        self.lifecycle.escalate(
            incident.ref,
            "escalation",
            "automatic",
            f"step {timer.step + 1} of policy {policy.name!r}: {reason}",
            context={
                "policy": policy.name,
                "step": timer.step,
                "when": step.when,
                "after": after,
                "flag": step.flag,
                "targets": targets_of(self.config, incident, step),
            },
        )
        return "fired"


def _record_unpaged(event, why: str) -> None:
    """Say on the escalation's timeline entry that it paged nobody, and why."""
    data = {**(event.data or {}), "outcome": why}
    event.body = f"{event.body}\n{why[0].upper()}{why[1:]}." if event.body else f"{why[0].upper()}{why[1:]}."
    Event.update(body=event.body, data=data).where(Event.id == event.id).execute()
    event.data = data


def last_outcome(incident: Incident) -> str:
    """What the incident's latest escalation came to: 'done', or why it paged nobody ("no manager to page: …")."""
    latest = (
        Event.select()
        .where((Event.incident == incident.id) & (Event.type == "escalated"))
        .order_by(Event.id.desc())
        .first()
    )
    return ((latest.data or {}).get("outcome") if latest is not None else None) or "done"


Handler = Callable[[Timer, Incident, datetime], "str | datetime"]


class TimerWorker:
    """Claims due Timer rows and runs their handler, each row exactly once across processes."""

    def __init__(self, handlers: dict[str, Handler], clock: Clock | None = None, *, name: str | None = None):
        self.handlers = handlers
        self.clock = clock or Clock()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"

    def tick(self, batch: int = 100) -> int:
        """Fire what is due now; return how many timers were fired or cancelled."""
        now = self.clock.now()
        due = list(
            Timer.select(Timer.id, Timer.incident)
            .where((Timer.status == PENDING) & (Timer.due_at <= now))
            .order_by(Timer.due_at, Timer.id)
            .limit(batch)
            .tuples()
        )
        done = 0
        for timer_id, incident_id in due:
            try:
                done += self._fire_one(timer_id, incident_id, now)
            except (peewee.OperationalError, peewee.InterfaceError):
                raise  # the database is away: the worker backs off and the timer stays pending
            except Exception:  # one broken timer (a bug, a refused transition) must not block the others
                log.exception("timer %s failed", timer_id)
                with db.atomic():
                    Timer.update(status="failed", fired_at=now, fired_by=self.name).where(
                        (Timer.id == timer_id) & (Timer.status == PENDING)
                    ).execute()
        return done

    def _fire_one(self, timer_id: int, incident_id: int, now: datetime) -> int:
        with db.atomic():
            # Lock order: incident, then timer, the same as lifecycle changes (whose hooks update timers).
            if is_postgres():
                incident = (
                    Incident.select().where(Incident.id == incident_id).for_update(skip_locked=True).get_or_none()
                )
                if incident is None:
                    return 0  # being changed or fired elsewhere: the next tick sees it again
                timer = (
                    Timer.select()
                    .where((Timer.id == timer_id) & (Timer.status == PENDING) & (Timer.due_at <= now))
                    .for_update(skip_locked=True)
                    .get_or_none()
                )
                if timer is None:
                    return 0
            else:
                claimed = (
                    Timer.update(fired_by=self.name)
                    .where((Timer.id == timer_id) & (Timer.status == PENDING) & (Timer.due_at <= now))
                    .execute()
                )
                if not claimed:
                    return 0
                timer = Timer.get_by_id(timer_id)
                incident = Incident.get_by_id(incident_id)
            handler = self.handlers.get(timer.kind)
            result = handler(timer, incident, now) if handler else "cancelled"
            if isinstance(result, datetime):
                Timer.update(due_at=result).where(Timer.id == timer_id).execute()
                return 0
            Timer.update(status=result, fired_at=now, fired_by=self.name).where(Timer.id == timer_id).execute()
            log.info("timer %s (%s step %s of %s): %s", timer_id, timer.kind, timer.step, incident.ref, result)
            return 1
