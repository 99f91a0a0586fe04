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

Firing (:class:`~gateway.incidents.timers.TimerWorker`, wired in ``gateway/service.py``): a due timer
is claimed in a transaction that first locks its incident and then the timer
row, on PostgreSQL with ``FOR UPDATE SKIP LOCKED`` (a row another process holds
is skipped, never waited for), on SQLite with a conditional update under the
write lock. The handler re-checks the condition: when it no longer holds the
timer is cancelled; when the point moved later (on hold, priority lowered) it
is rescheduled; else the step escalates through ``Lifecycle.escalate(kind=
"automatic")`` — an Event, the escalated flag when ``flag = true`` — and this
module's hook pages the step's targets with an outbox row (``audience=
"escalation"``, template ``escalation`` / ``sla_warning`` / ``sla_breach``).
A ``schedule:NAME`` target pages whoever is on call then (gateway/schedules.py);
the escalated event records who (``data["paged"]``).
"""

from __future__ import annotations

from datetime import datetime

from gateway.audiences import expand_targets, record_paged
from gateway.incidents.timers import cancel_timers, upsert_timer
from notifiers.outbox import enqueue
from notifiers.words import duration
from store.models import NEW, ON_HOLD, OPEN_STATUSES, Event, Incident, Timer

ESCALATION = "escalation"
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
    """The escalation hook (scheduling and paging) and the handler of escalation timers.

    Given to the :class:`~gateway.incidents.lifecycle.Lifecycle` when it is built; the lifecycle
    hands itself to each call, and the configuration is the lifecycle's (it follows a reload).
    """

    # ------------------------------------------------------------ hook

    def on_change(self, lifecycle, change) -> None:
        incident, action, config = change.incident, change.action, lifecycle.policy.config
        if config is None:
            return
        if action in ("create", "resume", "reopen", "acknowledge", "start", "hold", "assign", "update"):
            if action == "update" and not ({"priority", "major"} & set(change.before)):
                return
            self.schedule(lifecycle, incident, new=action == "create")
        elif action in ("resolve", "cancel", "close"):
            cancel_timers(incident, (ESCALATION,))
        elif action == "escalate":
            if change.context.get("kind") == "functional":
                self.schedule(lifecycle, incident)
            self._page(lifecycle, change)

    def schedule(self, lifecycle, incident: Incident, *, new: bool = False) -> None:
        """Bring the incident's escalation timers in line with its policy and state
        (``new``: it was just created and has no timers to cancel)."""
        policy = policy_for(lifecycle.policy.config, incident)
        held = []
        for i, step in enumerate(policy.steps if policy else []):
            if may_hold(incident, step):
                upsert_timer(
                    incident, ESCALATION, i, trigger_at(lifecycle.policy, incident, step), {"policy": policy.name}
                )
                held.append(i)
        if not new:  # the steps that no longer hold, and those the policy no longer has
            cancel_timers(incident, (ESCALATION,), keep=held)

    def _page(self, lifecycle, change) -> None:
        incident, context, config = change.incident, change.context, lifecycle.policy.config
        now = lifecycle.clock.now()
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

    def fire(self, lifecycle, timer: Timer, incident: Incident, now: datetime) -> str | datetime:
        """Fire one escalation step: "fired", "cancelled", or a later due time."""
        config = lifecycle.policy.config
        policy = policy_for(config, incident)
        if policy is None or timer.step >= len(policy.steps):
            return "cancelled"
        step = policy.steps[timer.step]
        if not may_hold(incident, step):
            return "cancelled"
        due = trigger_at(lifecycle.policy, incident, step, now)
        if due > now and not incident.drill:  # a drill compresses the delays (gateway/cli/run_drill.py)
            return due
        after = int(step.after.total_seconds())
        reason = {
            "unacknowledged": f"not acknowledged after {duration(step.after)}",
            "unresolved": f"not resolved after {duration(step.after)}",
            "resolve_sla_warning": f"{int(config.sla.warning_fraction * 100)} % of the resolve target used",
            "resolve_sla_breach": "resolve target breached",
        }[step.when]
        lifecycle.escalate(
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
                "targets": targets_of(config, incident, step),
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
