"""Durable intake: every source stores its raw input here before it answers.

SMTP answers ``250`` and a webhook ``202`` only once :meth:`InboundWriter.store`
has returned, i.e. once the Inbound row is committed (DESIGN.md §2.1). One
writer thread commits the rows of many concurrent sessions and requests
together (group commit): SQLite has one write lock, and a commit per request
thread collapses under load (DESIGN.md §7).

A duplicate (same ``dedup_key``: Message-ID, content hash, webhook idempotency
key) is not stored twice; the caller learns the id of the row that was.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime

import peewee

from gateway.clock import Clock
from gateway.errors import StoreUnavailable
from store.db import db
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


class InboundWriter:
    """A single writer thread that commits queued Inbound rows in batches."""

    def __init__(
        self, *, clock: Clock | None = None, max_batch: int = 500, on_commit: Callable[[], None] | None = None
    ):
        self.clock = clock or Clock()
        self.max_batch = max_batch
        self.on_commit = on_commit
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    # ------------------------------------------------------------ callers

    def submit(self, record: InboundRecord) -> Future:
        """Queue a record; the future resolves to :class:`Accepted` once committed."""
        future: Future = Future()
        if self._stopped.is_set() or self._thread is None:
            future.set_exception(StoreUnavailable("intake is not running"))
            return future
        self._queue.put((record, future))
        return future

    def store(self, record: InboundRecord, timeout: float = 30.0) -> Accepted:
        """Store a record and wait for its commit; StoreUnavailable when it cannot be stored in time."""
        try:
            return self.submit(record).result(timeout=timeout)
        except FutureTimeout:
            raise StoreUnavailable(f"the store did not commit within {timeout:g}s") from None

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
                return

    def _commit(self, batch) -> None:
        try:
            # One connection for the writer's life: opening and closing one per batch (SQLite checkpoints
            # its WAL on the last close) cost more than the inserts.
            db.connect(reuse_if_open=True)
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

    def _insert(self, batch) -> list[Accepted]:
        """Insert the batch in one transaction; the hot path uses one prepared statement (DESIGN.md §7)."""
        now = self.clock.now()
        sql = self._insert_sql()
        convert = [Inbound._meta.fields[name].db_value for name in _COLUMNS]
        results = []
        with db.atomic():
            for record, _future in batch:
                values = (
                    record.source,
                    record.integration,
                    record.received_at or now,
                    record.dedup_key,
                    PENDING,
                    record.raw,
                    record.headers,
                    record.envelope_from,
                    list(record.envelope_to),
                    record.peer,
                    "",
                    "",
                    [],
                    0,
                )
                params = [to_db(v) for to_db, v in zip(convert, values, strict=True)]
                inserted = db.execute_sql(sql, params).fetchone()
                if inserted is not None:
                    results.append(Accepted(inserted[0]))
                else:
                    existing = Inbound.select(Inbound.id).where(Inbound.dedup_key == record.dedup_key).get()
                    results.append(Accepted(existing.id, duplicate=True))
        return results

    def _insert_sql(self) -> str:
        """``INSERT … ON CONFLICT DO NOTHING RETURNING id`` for the open database (SQLite and PostgreSQL)."""
        if getattr(self, "_sql_for", None) is not db.obj:
            fields = Inbound._meta.fields
            columns = ", ".join(f'"{fields[name].column_name}"' for name in _COLUMNS)
            marks = ", ".join([db.obj.param] * len(_COLUMNS))
            table = Inbound._meta.table_name
            self._sql = f'INSERT INTO "{table}" ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING RETURNING "id"'
            self._sql_for = db.obj
        return self._sql


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
    "reason",
    "mail_class",
    "decisions",
    "attempts",
)


def _reason(exc: Exception) -> str:
    if isinstance(exc, peewee.OperationalError | peewee.InterfaceError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else "database unavailable"
    return type(exc).__name__
