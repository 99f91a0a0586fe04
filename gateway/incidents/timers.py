"""Timers: rows due at a point in time (escalation steps, major reminders, auto-close), fired exactly once.

``upsert_timer`` and ``cancel_timers`` keep an incident's Timer rows in line (called by the
lifecycle hooks of gateway/incidents/escalation.py and procedures.py); :class:`TimerWorker`
claims due rows and runs the handler of their kind (wired in gateway/service.py).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime

import peewee

from gateway.core.clock import Clock
from store.db import db, is_postgres
from store.models import PENDING, Incident, Timer

log = logging.getLogger("inlet.timers")


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
