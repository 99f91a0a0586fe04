"""How each ``[[mailbox]]`` poller is doing, readable by every process: the one place to ask.

The IMAP poller runs in the ``imap`` role process; ``/readyz``, the queue's header, the Configuration page
(and the Heartbeats page) run in the web processes. The database is the only channel between them
(DESIGN.md §2.5), so the poller writes its state to the ``mailbox_health`` table (store/models.py
``MailboxHealth``) when it changes and after every complete scan, and :func:`states` reads it. The
supervisor's status pipe is not used: it reaches only the supervisor, not the web processes, nor a web
process on another machine.

Every error is kept in words a person can act on ("cannot log in" / "the server refused the login:
Authentication failed"), never a Python repr: gateway/intake/imap.py ``describe`` makes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import peewee

from gateway.core.clock import Clock
from gateway.core.errors import StoreUnavailable
from notifiers.words import moment
from store.db import db
from store.models import MailboxHealth

log = logging.getLogger("inlet.imap")

CONNECTING, CONNECTED, IDLE, FAILING = "connecting", "connected", "idle", "failing"
NOT_STARTED = "not started"  # no row yet: the imap role has not reported on this mailbox


@dataclass(frozen=True)
class MailboxStatus:
    """One configured mailbox as its poller last reported it."""

    name: str
    status: str  # connecting, connected, idle, failing, or "not started"
    since: datetime | None  # when it entered ``status`` (failing: the first failure of this run)
    problem: str = ""  # while failing: what fails, e.g. "cannot log in"
    last_error: str = ""  # the last error in words, kept after a recovery
    last_error_at: datetime | None = None
    last_poll_at: datetime | None = None  # the last complete scan of the folder

    @property
    def ok(self) -> bool:
        """Mail is being read: logged in and scanning or waiting for news."""
        return self.status in (CONNECTED, IDLE)

    def summary(self) -> str:
        """One line for people: "cannot log in since 2026-12-03 14:05 UTC (the server refused the login: …)"."""
        if self.status == FAILING:
            return f"{self.problem or 'failing'} since {moment(self.since)} ({self.last_error})"
        if self.status == IDLE:
            return f"connected, waiting for mail since {moment(self.since)}; last checked {moment(self.last_poll_at)}"
        if self.status == CONNECTED:
            return f"connected since {moment(self.since)}, reading the folder"
        if self.status == CONNECTING:
            return f"connecting since {moment(self.since)}"
        return "not polled yet (the imap role has not reported on it)"

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "status": self.status,
            "ok": self.ok,
            "since": _iso(self.since),
            "problem": self.problem,
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
            "last_poll_at": _iso(self.last_poll_at),
            "summary": self.summary(),
        }


def states(config) -> list[MailboxStatus]:
    """Every ``[[mailbox]]`` of ``config``, in the file's order, with its state. Raises the store's errors
    (peewee.PeeweeException, StoreUnavailable) when the database is away: the caller says so."""
    names = [box.name for box in config.mailbox]
    if not names:
        return []
    with db.connection_context():
        rows = {r.mailbox: r for r in MailboxHealth.select().where(MailboxHealth.mailbox.in_(names))}
    found = []
    for name in names:
        row = rows.get(name)
        if row is None:
            found.append(MailboxStatus(name, NOT_STARTED, None))
            continue
        found.append(
            MailboxStatus(
                name=name,
                status=row.status,
                since=row.since,
                problem=row.problem if row.status == FAILING else "",
                last_error=row.last_error,
                last_error_at=row.last_error_at,
                last_poll_at=row.last_poll_at,
            )
        )
    return found


def trouble(config) -> list[str]:
    """Lines for people about the mailboxes whose mail is not being read now: "mailbox support: cannot log in
    since … (the server refused the login: Authentication failed)"; [] when all are read (or none is configured).
    A mailbox not started yet is not trouble: the imap role may not run yet."""
    return [f"mailbox {s.name}: {s.summary()}" for s in states(config) if s.status == FAILING]


class Reporter:
    """What one poller writes: a row per mailbox, changed when its state changes and after each scan.

    A failure to write is logged and dropped: the state is a report, it must never stop the poller.
    """

    def __init__(self, mailbox: str, clock: Clock):
        self.mailbox, self.clock = mailbox, clock
        self.status: str | None = None
        self.since: datetime | None = None

    def connecting(self) -> None:
        if self.status != FAILING:  # while failing, a retry is not news: "failing since" keeps its start
            self._enter(CONNECTING)

    def connected(self) -> None:
        self._enter(CONNECTED)

    def polled(self) -> None:
        """A complete scan of the folder: mail is being read; now waiting for news."""
        now = self._enter(IDLE, write=False)
        self._write(now, last_poll_at=now)

    def failed(self, problem: str, reason: str) -> None:
        now = self._enter(FAILING, write=False)
        self._write(now, problem=problem[:100], last_error=reason, last_error_at=now)

    def _enter(self, status: str, write: bool = True) -> datetime:
        now = self.clock.now()
        if status != self.status:
            self.status, self.since = status, now
            if write:
                self._write(now)
        return now

    def _write(self, now: datetime, **fields) -> None:
        values = {"status": self.status, "since": self.since, **fields}
        if self.status != FAILING:
            values["problem"] = ""
        columns = {getattr(MailboxHealth, name): value for name, value in values.items()}
        try:
            with db.connection_context():
                MailboxHealth.insert(mailbox=self.mailbox, **values).on_conflict(
                    conflict_target=[MailboxHealth.mailbox], update=columns
                ).execute()
        except (peewee.PeeweeException, StoreUnavailable) as exc:
            log.warning("mailbox %s: cannot record its state (%s): %s", self.mailbox, self.status, exc)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
