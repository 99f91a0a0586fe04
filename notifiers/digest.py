"""Storms: a per-channel rate limit, and one digest for what goes over it.

Windows are fixed (aligned to the epoch) and ``rate_window`` long. A channel
that has had ``rate_limit`` sends in the current window gets no more single
messages: each further message is folded into the channel's digest row, a
Notification (template ``digest``) due when the window ends. Nothing is
dropped: the folded row records which digest carries it, and the digest is
delivered, retried and failed like any other row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import peewee

from store.db import db, is_postgres
from store.models import PENDING, Notification, NotificationAttempt

DIGEST = "digest"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def window(now: datetime, length: timedelta) -> tuple[datetime, datetime]:
    """The fixed window holding ``now``: (start, end)."""
    start = _EPOCH + length * ((now - _EPOCH) // length)
    return start, start + length


def sent_since(channel: str, since: datetime) -> int:
    """Attempts made to this channel since ``since`` (one indexed count)."""
    return (
        NotificationAttempt.select(peewee.fn.COUNT(NotificationAttempt.id))
        .where((NotificationAttempt.channel == channel) & (NotificationAttempt.at >= since))
        .scalar()
    )


def fold(item_id: int, target: str, channel: str, *, due: datetime, now: datetime) -> int:
    """Add outbox row ``item_id`` to the pending digest of ``channel`` (created if needed); return the digest's id.

    Only a digest that is not due yet and not claimed takes new items, so no
    item can be added to a digest while it is being sent.
    """
    with db.atomic():
        query = Notification.select().where(
            (Notification.channel == channel)
            & (Notification.status == PENDING)
            & (Notification.template == DIGEST)
            & (Notification.next_attempt_at > now)
            & Notification.claimed_by.is_null()
        )
        if is_postgres():
            query = query.for_update()
        digest = query.order_by(Notification.id).first()
        if digest is None:
            digest = Notification.create(
                audience=DIGEST,
                template=DIGEST,
                targets=[target],
                context={"items": [item_id]},
                status=PENDING,
                next_attempt_at=due,
                created_at=now,
                channel=channel,
            )
        else:
            digest.context = {**digest.context, "items": [*digest.context.get("items", []), item_id]}
            digest.save()
    return digest.id
