"""Durable intake: every source stores its raw input here before it answers.

SMTP answers ``250`` and a webhook ``202`` only once the Inbound row is
committed (DESIGN.md §2.1). Rows of many concurrent sessions and requests are
committed together (group commit): SQLite has one write lock, and a commit per
request thread collapses under load (DESIGN.md §7). Threaded callers (webhooks,
IMAP, import) hand their rows to one writer thread (:meth:`InboundWriter.store`);
the SMTP event loop commits the sessions of one loop turn itself
(:meth:`InboundWriter.commit_now`), without a thread hand-over per message.

A duplicate (same ``dedup_key``: Message-ID, content hash, webhook idempotency
key) is not stored twice; the caller learns the id of the row that was.
"""

from __future__ import annotations

import functools
import logging
import mmap
import os
import queue
import struct
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import peewee

from gateway.core.clock import Clock
from gateway.core.errors import StoreUnavailable
from gateway.core.private_files import create_private_file
from parsers.signal import plain_text, plain_value
from store import wakeup
from store.db import db, local_write_turn
from store.models import PENDING, Inbound

log = logging.getLogger("inlet.intake")


@dataclass(frozen=True)
class InboundRecord:
    """What an intake edge hands over: the input exactly as received."""

    source: str  # smtp | imap | import | webhook
    raw: bytes
    dedup_key: str | None = None
    integration: str = ""
    headers: dict = field(default_factory=dict)
    envelope_from: str | None = None
    envelope_to: tuple[str, ...] = ()
    peer: str = ""
    received_at: datetime | None = None


@dataclass(frozen=True)
class Accepted:
    inbound_id: int
    duplicate: bool = False


class Ticket:
    """The writer's answer to one caller: :class:`Accepted` or the error, once.

    One C-level lock, held until the answer is in: a ``concurrent.futures.Future`` (a
    Condition over a Python lock) cost the request threads more than the insert itself.
    Quacks like a future (``set_result``/``set_exception``), as the asyncio futures of
    the SMTP loop do, so one commit path serves both.
    """

    __slots__ = ("_answered", "_value", "_error")

    def __init__(self):
        self._answered = threading.Lock()
        self._answered.acquire()
        self._value: Accepted | None = None
        self._error: BaseException | None = None

    def set_result(self, value: Accepted) -> None:
        self._value = value
        self._answered.release()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._answered.release()

    def result(self, timeout: float) -> Accepted:
        if not self._answered.acquire(timeout=timeout):
            raise StoreUnavailable(f"the store did not commit within {timeout:g}s")
        self._answered.release()  # answered stays answered
        if self._error is not None:
            raise self._error
        return self._value


class IntakeActivity:
    """When an intake edge of any process of this machine last took or let go of work in hand: a
    monotonic time (system-wide on Linux) in an 8-byte file shared by memory, ``<data_dir>/intake-busy``.

    The roles of ``inlet serve`` run in separate processes, so the pipeline worker cannot see the
    listeners' work in hand; it sees this stamp instead and waits while it is fresh, as it waits for
    work in hand in its own process. A stamp is one store into shared memory: no lock, no system call.
    """

    FRESH = 0.005  # seconds: a session sending message after message stamps more often than this

    def __init__(self, folder: str | os.PathLike):
        path = Path(folder) / "intake-busy"
        create_private_file(path)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)
            self._map = mmap.mmap(fd, 8)
        finally:
            os.close(fd)

    def stamp(self) -> None:
        struct.pack_into("d", self._map, 0, time.monotonic())

    def fresh(self) -> bool:
        return time.monotonic() - struct.unpack_from("d", self._map, 0)[0] < self.FRESH


class InboundWriter:
    """A single writer thread that commits queued Inbound rows in batches."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        max_batch: int = 500,
        on_commit: Callable[[], None] | None = None,
        activity: IntakeActivity | None = None,
    ):
        self.activity = activity  # shared with the other processes of this machine, see IntakeActivity
        self.clock = clock or Clock()
        self.max_batch = max_batch
        self.on_commit = on_commit
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # C-level: no Python lock for callers to convoy on
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._in_hand: weakref.WeakSet = weakref.WeakSet()  # see in_hand()
        self._pause = threading.Event()  # never set: a timed wait

    # ------------------------------------------------------------ callers

    def submit(self, record: InboundRecord) -> Ticket:
        """Queue a record; the ticket answers :class:`Accepted` once committed."""
        ticket = Ticket()
        if self._stopped.is_set() or self._thread is None:
            ticket.set_exception(StoreUnavailable("intake is not running"))
            return ticket
        self._queue.put((record, ticket))
        return ticket

    def store(self, record: InboundRecord, timeout: float = 30.0) -> Accepted:
        """Store a record and wait for its commit; StoreUnavailable when it cannot be stored in time."""
        return self.submit(record).result(timeout)

    def in_hand(self, token: object) -> None:
        """Say that an intake edge has work in hand for ``token`` (an SMTP session between its
        first recipient and the answer to DATA, a webhook request until it is answered).

        Held weakly: a session that disconnects or a request that ends lets go of it by itself.
        """
        self._in_hand.add(token)
        if self.activity is not None:
            self.activity.stamp()

    def out_of_hand(self, token: object) -> None:
        self._in_hand.discard(token)
        if self.activity is not None:
            self.activity.stamp()

    def in_hand_count(self) -> int:
        """How many sessions and requests have work in hand now."""
        return len(self._in_hand)

    def busy(self) -> bool:
        """Whether an intake edge of this process has work in hand, or one of another process had a moment ago."""
        return bool(self._in_hand) or (self.activity is not None and self.activity.fresh())

    def wait_while_busy(self, at_most: float) -> None:
        """Wait while an intake edge has work in hand, at most ``at_most`` seconds.

        Background work (the pipeline worker) calls it before each unit: within a burst some session
        or request is always in hand and the unit waits (at most ``at_most``, so it never starves), so
        intake is acknowledged first and applied right after; steady traffic leaves gaps and is applied
        as it comes. Work in hand is what intake has to do, however slow the worker makes it; rates and
        gaps between commits were fooled by that. The listeners of other processes count through
        their fresh :class:`IntakeActivity` stamp.
        """
        deadline = time.monotonic() + at_most
        pause = 0.001
        while self.busy():
            now = time.monotonic()
            if now >= deadline:
                return
            self._pause.wait(min(pause, deadline - now))
            pause = min(pause * 2, 0.02)  # a burst is not polled a thousand times a second

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="inbound-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Commit what is queued, then stop."""
        self._stopped.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def commit_now(self, batch) -> None:
        """Commit ``(record, future)`` pairs in the calling thread and resolve the futures.

        For an event loop that batches its own sessions (SMTP): no thread hand-over per message.
        """
        self._commit(batch)

    # ------------------------------------------------------------ the writer

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if not db.is_closed():
                db.close()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item] if item is not None else []
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    item = None
                    continue
                batch.append(more)
            if batch:
                self._commit(batch)
            if item is None and self._stopped.is_set() and self._queue.empty():
                if not db.is_closed():
                    db.close()
                return

    def _commit(self, batch) -> None:
        try:
            # One connection for the writer's life: on SQLite, closing the last connection checkpoints
            # the WAL, which per batch would cost more than the batch itself.
            db.connect(reuse_if_open=True)
            with local_write_turn():
                results = self._insert(batch)
        except Exception as exc:  # the whole batch failed: try each row alone, so one bad row fails alone
            if not db.is_closed():
                db.close()  # a broken connection is not reused
            if len(batch) > 1:
                for one in batch:
                    self._commit([one])
                return
            record, future = batch[0]
            log.error("cannot store inbound from %s: %s", record.source, exc)
            future.set_exception(StoreUnavailable(f"cannot store the message: {_reason(exc)}"))
            return
        for (_record, future), accepted in zip(batch, results, strict=True):
            future.set_result(accepted)
        if self.on_commit:
            self.on_commit()
        try:
            wakeup.announce(wakeup.INBOUND)  # the pipeline workers of other processes (and machines)
        except Exception as exc:  # a hint: the rows are stored and answered, the workers poll anyway
            log.warning("stored inbound rows, but could not wake the workers: %s", exc)

    def _insert(self, batch) -> list[Accepted]:
        # One statement for the whole batch, in its own (autocommit) transaction: every call into the
        # driver lets go of the interpreter lock, and under load winning it back cost more than the
        # insert (webhook requests spent ~230 µs each in BEGIN, INSERT per row, COMMIT). The raw
        # connection, not peewee's query builder (≈4× the driver per row, DESIGN.md §7); values go
        # through the model fields' own conversions, so rows are what the models would write.
        now = self.clock.now()
        keys = [record.dedup_key or f"unique:{uuid.uuid4().hex}" for record, _ticket in batch]
        params = []
        for (record, _ticket), key in zip(batch, keys, strict=True):
            row = (
                record.source,
                plain_text(record.integration),
                record.received_at or now,
                key,
                PENDING,
                record.raw,
                plain_value(record.headers),
                plain_text(record.envelope_from) if record.envelope_from is not None else None,
                plain_value(list(record.envelope_to)),
                plain_text(record.peer),
            )  # text every store can keep: SMTP envelopes carry 8-bit bytes as lone surrogates
            params.extend(field.db_value(value) for field, value in zip(_FIELDS, row, strict=True))
        inserted = dict((key, id_) for id_, key in db.execute_sql(_insert_sql(db.param, len(batch)), params))
        results = []
        for key in keys:
            if key in inserted:  # the first of the batch with this key is the one stored
                results.append(Accepted(inserted.pop(key)))
            else:  # stored before, or earlier in this batch
                existing = Inbound.select(Inbound.id).where(Inbound.dedup_key == key).get()
                results.append(Accepted(existing.id, duplicate=True))
        return results


_COLUMNS = (
    "source",
    "integration",
    "received_at",
    "dedup_key",
    "status",
    "raw",
    "headers",
    "envelope_from",
    "envelope_to",
    "peer",
)
_FIELDS = tuple(Inbound._meta.fields[name] for name in _COLUMNS)
_DEFAULTS = ("reason", "mail_class", "decisions", "attempts")  # NOT NULL columns with model defaults


@functools.lru_cache(maxsize=64)
def _insert_sql(param: str, rows: int) -> str:
    one = f"({', '.join([param] * len(_COLUMNS))}, '', '', '[]', 0)"
    return (
        f"INSERT INTO inbound ({', '.join(_COLUMNS + _DEFAULTS)}) VALUES {', '.join([one] * rows)} "
        "ON CONFLICT (dedup_key) DO NOTHING RETURNING id, dedup_key"
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, peewee.OperationalError | peewee.InterfaceError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else "database unavailable"
    return type(exc).__name__
