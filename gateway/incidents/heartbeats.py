"""Heartbeats: noticing that a source went silent (the ``[[heartbeat]]`` entries and the built-in ones).

A beat is one UPDATE of the heartbeat's row (:func:`record_beat`: cheap, and idempotent but for the
count). The timers role evaluates the heartbeats (:class:`HeartbeatTimer`): one overdue by more than its
grace is *expired*, and the process whose conditional UPDATE sets ``expired_at`` writes, in the same
transaction, an Inbound of source ``heartbeat`` carrying a firing alert with the fingerprint
``heartbeat:<name>``; a beat after that turns into the resolving Inbound the same way. From there the
one flow applies (gateway/pipeline/heartbeat_steps.py, then the alert steps): the fingerprint correlates
onto one incident, and the resolving signal resolves it with the code ``auto-recovered``.

States: waiting (never beat) → ok → late (past due, within grace) → expired.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import peewee

from gateway.config.heartbeat_settings import DEFAULT_TITLE, MAILBOX_PREFIX, OUTBOX, Heartbeat, heartbeats_of
from gateway.core.clock import Clock, iso
from notifiers.outbox import failing_since
from notifiers.words import moment
from store import wakeup
from store.db import db
from store.models import HeartbeatState, Inbound, Incident

log = logging.getLogger("inlet.heartbeats")

SOURCE = "heartbeat"  # the Inbound source of expiries and recoveries
FINGERPRINT_PREFIX = "heartbeat:"
WAITING, OK, LATE, EXPIRED = "waiting", "ok", "late", "expired"
STATES = (WAITING, OK, LATE, EXPIRED)
FIRING, RESOLVED = "firing", "resolved"


def record_beat(name: str, at: datetime) -> None:
    """A beat of heartbeat ``name`` at ``at``: one UPDATE (an INSERT the first time, before the timers saw it)."""
    updated = (
        HeartbeatState.update(last_beat_at=at, beats=HeartbeatState.beats + 1)
        .where(HeartbeatState.name == name)
        .execute()
    )
    if not updated:
        HeartbeatState.insert(name=name, started_at=at, last_beat_at=at, beats=1).on_conflict(
            conflict_target=[HeartbeatState.name],
            update={HeartbeatState.last_beat_at: at, HeartbeatState.beats: HeartbeatState.beats + 1},
        ).execute()


def polled(box, at: datetime) -> None:
    """A successful poll of ``[[mailbox]] box``: the beat of its built-in heartbeat, when it has silent_after.

    A beat that cannot be written is logged, never raised: it must not cost the poller its connection."""
    if box.silent_after <= timedelta(0):
        return
    try:
        with db.connection_context():
            record_beat(MAILBOX_PREFIX + box.name, at)
    except peewee.DatabaseError as exc:
        log.warning("mailbox %s: cannot record its heartbeat: %s", box.name, exc)


@dataclass(frozen=True)
class Status:
    """One heartbeat as people see it: its state, last beat, when the next is due, when it expires."""

    heartbeat: Heartbeat
    state: str
    last_beat_at: datetime | None
    due_at: datetime
    expires_at: datetime
    expired_at: datetime | None  # when it expired, while it still is
    beats: int

    @property
    def name(self) -> str:
        return self.heartbeat.name

    @property
    def since(self) -> datetime:
        """The time of the last sign of life: the last beat, or when Inlet began to watch."""
        return self.last_beat_at or (self.due_at - self.heartbeat.interval)

    def document(self) -> dict:
        """The JSON of the API and ``inlet heartbeat list --json``."""
        hb = self.heartbeat
        return {
            "name": hb.name,
            "state": self.state,
            "interval_seconds": int(hb.interval.total_seconds()),
            "grace_seconds": int(hb.grace.total_seconds()),
            "last_beat_at": iso(self.last_beat_at),
            "next_due_at": iso(self.due_at),
            "expires_at": iso(self.expires_at),
            "expired_at": iso(self.expired_at),
            "beats": self.beats,
            "group": hb.group,
            "priority": hb.priority,
        }


def status_of(hb: Heartbeat, row: HeartbeatState | None, now: datetime) -> Status:
    """The state of ``hb`` at ``now`` from its row (None: not watched yet, so waiting from now)."""
    started = row.started_at if row is not None else now
    last = row.last_beat_at if row is not None else None
    due = (last or started) + hb.interval
    expires = due + hb.grace
    still_expired = row is not None and row.expired_at is not None and (last is None or last < row.expired_at)
    if still_expired or now > expires:
        state = EXPIRED
    elif now > due:
        state = LATE
    else:
        state = OK if last is not None else WAITING
    expired_at = row.expired_at if row is not None and state == EXPIRED else None
    return Status(hb, state, last, due, expires, expired_at, row.beats if row is not None else 0)


def statuses(config, now: datetime) -> list[Status]:
    """Every heartbeat of ``config`` at ``now``, in the order of the file (built-in ones last)."""
    beats = heartbeats_of(config)
    rows = {r.name: r for r in HeartbeatState.select().where(HeartbeatState.name.in_([h.name for h in beats]))}
    return [status_of(hb, rows.get(hb.name), now) for hb in beats]


def history(name: str, limit: int = 10) -> list[dict]:
    """The incidents the silences of heartbeat ``name`` opened, newest first: ref, title, status, opened, resolved."""
    query = (
        Incident.select(Incident.ref, Incident.title, Incident.status, Incident.opened_at, Incident.resolved_at)
        .where(Incident.integration == f"{FINGERPRINT_PREFIX}{name}"[:100])
        .order_by(Incident.id.desc())
        .limit(limit)
    )
    return [
        {"ref": i.ref, "title": i.title, "status": i.status, "opened_at": i.opened_at, "resolved_at": i.resolved_at}
        for i in query
    ]


def incident_title(hb: Heartbeat, since: datetime) -> str:
    """The title of the incident an expiry opens: the configured wording with {name} and {since} filled in."""
    return (hb.title or DEFAULT_TITLE).replace("{name}", hb.name).replace("{since}", moment(since))


class HeartbeatTimer:
    """The timers role's look at the heartbeats: expiries and recoveries become Inbounds, each once."""

    def __init__(self, config, clock: Clock | None = None):
        """``config``: a callable returning the configuration in force (it follows a reload)."""
        self.config = config
        self.clock = clock or Clock()

    def tick(self) -> int:
        """Write the Inbound of each heartbeat that expired or recovered since the last tick; return how many."""
        config, now = self.config(), self.clock.now()
        beats = heartbeats_of(config)
        if not beats:
            return 0
        with db.connection_context():
            names = [h.name for h in beats]
            if OUTBOX in names and failing_since(now, config.notifications.failing_incident_after) is None:
                record_beat(OUTBOX, now)  # the outbox's beat: a moment its deliveries are not failing
            known = set(HeartbeatState.select(HeartbeatState.name).where(HeartbeatState.name.in_(names)).tuples())
            missing = [n for n in names if (n,) not in known]
            if missing:  # watched from now on: a heartbeat that never beats expires interval + grace from here
                HeartbeatState.insert_many(
                    [{"name": n, "started_at": now} for n in missing]
                ).on_conflict_ignore().execute()
            rows = {r.name: r for r in HeartbeatState.select().where(HeartbeatState.name.in_(names))}
            done = 0
            for hb in beats:
                row = rows[hb.name]
                if row.expired_at is None:
                    done += self._expire(hb, row, now)
                elif row.last_beat_at is not None and row.last_beat_at >= row.expired_at:
                    done += self._recover(hb, row, now)
            return done

    def _expire(self, hb: Heartbeat, row: HeartbeatState, now: datetime) -> int:
        deadline = now - hb.interval - hb.grace
        if (row.last_beat_at or row.started_at) >= deadline:
            return 0
        with db.atomic():
            won = (
                HeartbeatState.update(expired_at=now)
                .where(
                    (HeartbeatState.id == row.id)
                    & HeartbeatState.expired_at.is_null()
                    & (
                        (HeartbeatState.last_beat_at < deadline)
                        | (HeartbeatState.last_beat_at.is_null() & (HeartbeatState.started_at < deadline))
                    )
                )
                .execute()
            )
            if not won:
                return 0  # another process took it, or a beat came meanwhile
            since = row.last_beat_at or row.started_at
            _write(hb.name, FIRING, now, since=since)
        log.warning("heartbeat %s expired: silent since %s", hb.name, moment(since))
        return 1

    def _recover(self, hb: Heartbeat, row: HeartbeatState, now: datetime) -> int:
        with db.atomic():
            won = (
                HeartbeatState.update(expired_at=None)
                .where((HeartbeatState.id == row.id) & (HeartbeatState.expired_at == row.expired_at))
                .execute()
            )
            if not won:
                return 0
            _write(hb.name, RESOLVED, now, since=row.expired_at, beat_at=row.last_beat_at)
        log.info("heartbeat %s recovered: a beat at %s", hb.name, moment(row.last_beat_at))
        return 1


def _write(name: str, status: str, at: datetime, *, since: datetime, beat_at: datetime | None = None) -> None:
    """The Inbound of an expiry (firing) or a recovery (resolved), inside the caller's transaction."""
    body = {"heartbeat": name, "status": status, "at": iso(at), "since": iso(since), "beat_at": iso(beat_at)}
    Inbound.create(
        source=SOURCE,
        integration=f"{FINGERPRINT_PREFIX}{name}"[:100],
        received_at=at,
        dedup_key=f"{FINGERPRINT_PREFIX}{status}:{iso(at)}:{name}"[:255],
        raw=json.dumps(body).encode(),
        headers={},
    )
    wakeup.announce(wakeup.INBOUND)


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
