"""The outbox: notifications are rows written in the transaction of the change that caused them.

Anything that decides to tell someone something (lifecycle hooks, escalation
timers) calls :func:`enqueue` inside its transaction; a worker delivers the
rows through Apprise (DESIGN.md §2.4). Nothing is ever sent inline.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from peewee import fn

from store import wakeup
from store.models import FAILED, PENDING, Event, Incident, Notification


def enqueue(
    *,
    audience: str,
    template: str,
    targets: list[str],
    now: datetime,
    incident: Incident | None = None,
    event: Event | None = None,
    context: dict | None = None,
    due: datetime | None = None,
) -> Notification:
    """Write one outbox row: ``template`` rendered for ``audience`` and sent to ``targets``.

    ``targets`` are Apprise URLs or tags; ``context`` holds what the template
    needs beyond the incident (e.g. the body of a public update).
    """
    if due is None or due <= now:  # at this transaction's commit: delivery takes it within milliseconds
        wakeup.announce(wakeup.NOTIFICATION)
    return Notification.create(
        incident=incident,
        event=event,
        audience=audience,
        template=template,
        targets=list(targets),
        context=context or {},
        status=PENDING,
        next_attempt_at=due or now,
        created_at=now,
    )


def counts_by_status() -> dict[str, int]:
    """Outbox rows per status (pending, sent, failed, digested): for /metrics and the failed list."""
    counts = dict.fromkeys(("pending", "sent", "failed", "digested"), 0)
    query = Notification.select(Notification.status, fn.COUNT(Notification.id).alias("n")).group_by(Notification.status)
    for row in query.tuples():
        counts[row[0]] = row[1]
    return counts


def failing_since(now: datetime, after: timedelta) -> Notification | None:
    """The oldest row still undelivered after failed attempts that was written more than ``after`` ago (or one
    that failed for good within the last day): notifications have been failing that long. None: all is well."""
    retrying = (Notification.status == PENDING) & (Notification.attempts > 0)
    given_up = (Notification.status == FAILED) & (Notification.created_at >= now - timedelta(days=1))
    return (
        Notification.select()
        .where((retrying | given_up) & (Notification.created_at <= now - after))
        .order_by(Notification.created_at)
        .first()
    )
