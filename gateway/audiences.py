"""Who gets what: a lifecycle hook that writes outbox rows for each change.

Runs inside the lifecycle's transaction (gateway/incidents/lifecycle.py), so a
notification exists exactly when the change that caused it was committed.

- **reporter** (email, threaded): acknowledgement on registration (neutral text
  for security incidents; none when the caller says ``acknowledge_reporter:
  False`` — auto-replies, bounces, lists, loops, throttled senders), public
  updates, resolution (reply if not fixed), closure.
- **resolver group** (its ``channels``): new, reassigned, escalated, reopened,
  SLA warning and breach — unless the caller says ``page: False`` (flapping,
  maintenance). A ``schedule:NAME`` channel is the on-call user's own channels
  at that moment (:func:`expand_targets`); the event records who was paged.
- **stakeholders** (``[[stakeholder]]`` subscriptions): major declaration,
  public updates, resolution; security incidents only to subscriptions with
  ``security = true``, and then in neutral words.

Escalation steps, major-incident reminders and SLA timers are written by the
process engine with :func:`notifiers.outbox.enqueue` and the templates
``escalation``, ``major_reminder``, ``sla_warning``, ``sla_breach``,
``major_declared``.
"""

from __future__ import annotations

import functools
import logging
import secrets

from gateway import schedules
from gateway.config.mail_settings import email_options
from gateway.config.schema import format_duration
from gateway.incidents.lifecycle import Change, add_key
from notifiers import mailer
from notifiers.outbox import enqueue
from parsers.email import make_message_id
from store.db import db
from store.models import CANCELLED, CLOSED, CorrelationKey, Event, Notification

REPORTER, GROUP, STAKEHOLDER = "reporter", "group", "stakeholder"
MESSAGE_ID = "message-id"
_REPORTER_TEMPLATES = {
    "create": "acknowledgement",
    "update": "update",
    "reply": "update",
    "resolve": "resolved",
    "close": "closed",
}
_GROUP_TEMPLATES = {
    "create": "new",
    "assign": "assigned",
    "escalate": "escalated",
    "reopen": "reopened",
    "sla_warning": "sla_warning",
    "sla_breach": "sla_breach",
}
_MAX_REFERENCES = 10
log = logging.getLogger("inlet.notify")


class Audiences:
    """The hook: ``Audiences(config)(change)`` writes the rows this change calls for."""

    def __init__(self, config):
        self.config, self.settings = config, config.notifications
        self._options = None

    def __call__(self, change: Change) -> None:
        if not self.settings.enabled:
            return
        self.reporter(change)
        if change.context.get("page", True):
            self.group(change)
        self.stakeholders(change)

    # ------------------------------------------------------------ reporter

    def reporter(self, change: Change) -> None:
        incident = change.incident
        template = _REPORTER_TEMPLATES.get(change.action)
        contact = incident.reporter if incident.reporter_id else None
        if template is None or contact is None:
            return
        if change.action == "update" and change.event.visibility != "public":
            return  # a change of fields, not a public update
        if change.action in ("update", "reply") and (change.event.actor or "").strip().lower() == contact.email.lower():
            return  # the reporter's own reply: they wrote it, it is not news to them
        now = change.event.at
        if contact.undeliverable_until and contact.undeliverable_until > now:
            return
        if self._braked(incident, contact.email, change.event, now):
            return
        restricted = False
        if change.action == "create":
            if not (self.settings.acknowledge_reporter and change.context.get("acknowledge_reporter", True)):
                return
            restricted = incident.security
        context = {"body": change.event.body, "restricted": restricted}
        context.update(self.thread(incident, now))
        enqueue(
            audience=REPORTER,
            template=template,
            targets=[mailer.email_target(contact.email)],
            now=now,
            incident=incident,
            event=change.event,
            context=context,
        )

    def _braked(self, incident, address: str, event, now) -> bool:
        """The loop brake: True (and the event says why) when this incident already mailed
        ``address`` reporter_mail_limit times within reporter_mail_window (counted from the outbox rows)."""
        limit, window = self.settings.reporter_mail_limit, self.settings.reporter_mail_window
        # the targets column as stored (JSON text); the SQL built once (it runs for every new email)
        targets = Notification.targets.db_value([mailer.email_target(address)])
        since = Notification.created_at.db_value(now - window)
        (sent,) = db.execute_sql(_braked_sql(db.param), [incident.id, REPORTER, targets, since]).fetchone()
        if sent < limit:
            return False
        why = f"loop brake: {sent} emails to {address} about {incident.ref} within {format_duration(window)}"
        log.warning("%s (limit %d): not sending %s", why, limit, event.type)
        event.data = {**(event.data or {}), "loop_brake": f"{why} (limit {limit}): not emailed"}
        Event.update(data=event.data).where(Event.id == event.id).execute()
        return True

    def thread(self, incident, now) -> dict:
        """A new signed Message-ID, recorded on the incident so replies thread back, and the References."""
        if self._options is None:
            self._options = email_options(self.config)
        earlier = [
            k.value
            for k in CorrelationKey.select(CorrelationKey.value)
            .where((CorrelationKey.incident == incident) & (CorrelationKey.kind == MESSAGE_ID))
            .order_by(CorrelationKey.id)
        ]
        message_id = make_message_id(incident.ref, self._options, secrets.token_hex(8))
        add_key(incident, MESSAGE_ID, message_id.strip("<>"), now)
        if incident.status in (CLOSED, CANCELLED):  # a reply to a closed incident opens a new one
            CorrelationKey.update(open=False).where(
                (CorrelationKey.incident == incident) & (CorrelationKey.value == message_id.strip("<>"))
            ).execute()
        references = earlier[:1] + earlier[1:][-(_MAX_REFERENCES - 1) :] if earlier else []
        return {"message_id": message_id, "references": [f"<{r}>" for r in references]}

    # ------------------------------------------------------------ resolver group

    def group(self, change: Change) -> None:
        incident = change.incident
        template = _GROUP_TEMPLATES.get(change.action)
        if template is None or not incident.group:
            return
        if change.action == "assign" and change.before.get("group") == incident.group:
            return  # a new assignee inside the same group is not a reassignment
        context = {"body": change.event.body, "previous_group": change.before.get("group") or ""}
        enqueue_for_group(self.config, incident, template, now=change.event.at, event=change.event, context=context)

    # ------------------------------------------------------------ stakeholders

    def stakeholders(self, change: Change) -> None:
        incident = change.incident
        event = _stakeholder_event(change)
        if event is None:
            return
        names = [
            s.name
            for s in self.config.stakeholder
            if event in s.events and (s.security or not incident.security) and _subscribed(s, incident)
        ]
        if not names:
            return
        template = {"major_declared": "major_declared", "update": "update", "resolved": "resolved"}[event]
        enqueue(
            audience=STAKEHOLDER,
            template=template,
            targets=names,
            now=change.event.at,
            incident=incident,
            event=change.event,
            context={"body": change.event.body, "restricted": bool(incident.security)},
        )


def enqueue_for_group(config, incident, template: str, *, now, event=None, context: dict | None = None):
    """Write a row for the incident's resolver group, if it has channels; return it (or None).

    For the timers too: ``enqueue_for_group(config, incident, "sla_warning", now=now,
    context={"target": "resolve", "due": "…"})``.
    """
    group = config.group_named(incident.group) if incident.group else None
    if group is None or not group.channels:
        return None
    targets = [group.name]
    if any(c.startswith(schedules.PREFIX) for c in group.channels):  # who is on call now, not at delivery
        targets, paged = expand_targets(config, group.channels, now)
        record_paged(event, paged)
        if not targets:
            return None
    return enqueue(
        audience=GROUP,
        template=template,
        targets=targets,
        now=now,
        incident=incident,
        event=event,
        context=context,
    )


def expand_targets(config, targets, at) -> tuple[list[str], list[dict]]:
    """``targets`` with each ``schedule:NAME`` replaced by the channels of whoever is on call at ``at``
    (their email address, then their own Apprise URLs: gateway/schedules.py), and who was paged."""
    out, paged = [], []
    for target in targets:
        channels = [target]
        if target.startswith(schedules.PREFIX):
            name = target[len(schedules.PREFIX) :]
            who, address, urls = schedules.reach(config, name, at)
            channels = ([mailer.email_target(address)] if address else []) + urls
            entry = {"schedule": name, "user": who.user if who else None, "channels": len(channels)}
            if who is None:
                entry["why"] = "nobody is on call"
            elif not channels:
                entry["why"] = f"{who.user} has no email address and no channels (or is disabled)"
            else:
                entry["source"] = who.source
            paged.append(entry)
        out.extend(c for c in channels if c not in out)
    return out, paged


def record_paged(event, paged: list[dict]) -> None:
    """Keep on the event who the schedules paged (the incident's timeline shows it)."""
    if event is None or not paged:
        return
    fresh = Event.get_or_none(Event.id == event.id)
    data = {**((fresh.data if fresh is not None else None) or {}), "paged": paged}
    Event.update(data=data).where(Event.id == event.id).execute()
    event.data = data


def _stakeholder_event(change: Change) -> str | None:
    incident = change.incident
    if change.action == "create" and incident.major:
        return "major_declared"
    if change.action == "update" and "major" in change.before and not change.before["major"] and incident.major:
        return "major_declared"
    if change.action == "update" and change.event.type == "update" and change.event.visibility == "public":
        return "update"  # only a published status update: never a reply to or from the reporter
    if change.action == "resolve":
        return "resolved"
    return None


def _subscribed(s, incident) -> bool:
    return all(
        not wanted or value in wanted
        for wanted, value in (
            (s.services, incident.service),
            (s.categories, incident.category),
            (s.priorities, incident.priority),
            (s.procedures, incident.procedure),
        )
    )


@functools.cache
def _braked_sql(param: str) -> str:
    return (
        f'SELECT COUNT(*) FROM "notification" WHERE "incident_id" = {param} AND "audience" = {param} '
        f'AND "targets" = {param} AND "created_at" > {param}'
    )
