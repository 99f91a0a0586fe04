"""Data retention: drop the raw bodies and attachment data of incidents closed long ago.

Run by the timers role in bounded batches (one short transaction each, so SQLite's write turn is
never held long). Only incidents that are ``closed`` (final and read-only) and were closed before
the cut-off are touched; open, resolved and cancelled incidents keep everything, and security
incidents keep their evidence (DESIGN.md §4). The rows stay: an Inbound keeps its headers, status and
decisions with an empty ``raw``; an Attachment keeps its name, type, size and SHA-256 with its data
dropped and ``skipped`` saying why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from peewee import fn

from gateway.config.schema import setting
from gateway.core.clock import Clock
from store.db import db
from store.models import CLOSED, Attachment, Inbound, Incident

log = logging.getLogger("inlet.retention")

DROPPED = "dropped by [retention]"


@dataclass(frozen=True)
class RetentionSection:
    inbound_raw: timedelta = setting(
        timedelta(0),
        help="Drop the raw email or webhook body of inputs whose incident closed this long ago (0s: keep).",
    )
    attachments: timedelta = setting(
        timedelta(0), help="Drop the attachment data of incidents closed this long ago (0s: keep)."
    )
    batch: int = setting(500, help="Rows changed per transaction.", minimum=1)
    idle_interval: timedelta = setting(
        timedelta(minutes=10), help="How long to wait before looking again once nothing is left to drop."
    )


class Retention:
    """``tick()`` drops one batch of each kind that is due and returns how many rows it changed."""

    def __init__(self, section: RetentionSection, clock: Clock | None = None):
        self.section, self.clock = section, clock or Clock()
        self._next_look = 0.0  # monotonic time of the next look once a look found nothing

    @property
    def enabled(self) -> bool:
        return bool(self.section.inbound_raw or self.section.attachments)

    def tick(self) -> int:
        if not self.enabled or time.monotonic() < self._next_look:
            return 0
        done = 0
        if self.section.inbound_raw:
            done += self._drop_raw(self._closed_before(self.section.inbound_raw))
        if self.section.attachments:
            done += self._drop_attachments(self._closed_before(self.section.attachments))
        if not done:
            self._next_look = time.monotonic() + self.section.idle_interval.total_seconds()
        return done

    def _closed_before(self, age: timedelta):
        """Incidents closed before now - ``age``, security incidents excepted (their evidence is kept)."""
        cutoff = self.clock.now() - age
        return Incident.select(Incident.id).where(
            (Incident.status == CLOSED) & (Incident.closed_at < cutoff) & (Incident.security == False)  # noqa: E712
        )

    def _drop_raw(self, incidents) -> int:
        with db.atomic():
            ids = [
                row_id
                for (row_id,) in Inbound.select(Inbound.id)
                .where(Inbound.incident.in_(incidents) & (fn.LENGTH(Inbound.raw) > 0))
                .limit(self.section.batch)
                .tuples()
            ]
            if ids:
                Inbound.update(raw=b"").where(Inbound.id.in_(ids)).execute()
        if ids:
            log.info("retention: dropped the raw body of %d inputs of closed incidents", len(ids))
        return len(ids)

    def _drop_attachments(self, incidents) -> int:
        of_incidents = Inbound.select(Inbound.id).where(Inbound.incident.in_(incidents))
        with db.atomic():
            ids = [
                row_id
                for (row_id,) in Attachment.select(Attachment.id)
                .where(
                    (Attachment.incident.in_(incidents) | Attachment.inbound.in_(of_incidents))
                    & Attachment.data.is_null(False)
                )
                .limit(self.section.batch)
                .tuples()
            ]
            if ids:
                Attachment.update(data=None, skipped=DROPPED).where(Attachment.id.in_(ids)).execute()
        if ids:
            log.info("retention: dropped the data of %d attachments of closed incidents", len(ids))
        return len(ids)
