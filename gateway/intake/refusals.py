"""Refused inputs, counted: what the intake turned away before storing it (an SMTP 4xx/5xx, a webhook 4xx/5xx).

A refused input leaves no Inbound row, so ``/metrics`` could not count it from the store. Writing a row per
refusal would hand a flood of refusals one database write each (an amplification: a refusal is meant to be
cheap). So each listener process counts in memory — :meth:`Refusals.count` is one ``deque.append``, atomic
under the GIL, no lock on the refusing path (DESIGN.md §7) — and a thread of its own adds the counts to the
``refusal_count`` rows in one short transaction every ``[serve] refusals_flush_interval`` and at a clean stop,
and writes nothing when nothing was refused. Counts a flush could not write (the store is down: the very
refusals answered 451/503) are kept and written by the next flush that can.

Reasons are a fixed set of names per source (:data:`REASONS`), never text from a client: the ``reason``
label of ``inlet_intake_total{outcome="rejected"}`` stays bounded.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from datetime import UTC, datetime

import peewee

from store.db import db
from store.models import RefusalCount

log = logging.getLogger("inlet.refusals")

SMTP = "smtp"
WEBHOOK = "webhook"
REASONS = {
    SMTP: (
        "connections",  # 421: over the overall or per-client connection limit
        "shutting_down",  # 421: the server is stopping
        "timeout",  # 421: idle, over the session time limit, or evicted while idle and the server full
        "recipient_unknown",  # 550: not an [[address]] of Inlet
        "too_many_recipients",  # 452
        "too_large",  # 552: over [smtp] max_message_size
        "auth",  # 535/538: authentication failed or needs TLS
        "protocol",  # aiosmtpd's own refusals: syntax, bad sequence, line too long, command limits
        "store_unavailable",  # 451: the store did not commit in time
        "local_error",  # 451: an exception in the session
    ),
    WEBHOOK: (
        "unknown_integration",  # 404
        "too_large",  # 413
        "content_type",  # 415
        "unauthenticated",  # 401
        "forbidden",  # 403: wrong token or signature, wrong routing key
        "auth_unconfigured",  # 503: the integration's secret is not set on the server
        "bad_request",  # 400: not JSON, not plain text, or a payload the parser refuses
        "rate_limited",  # 429
        "store_unavailable",  # 503: the store did not commit in time
        "sns_unconfirmed",  # 503: an Amazon SNS subscription could not be confirmed
    ),
}
KNOWN = frozenset((source, reason) for source, reasons in REASONS.items() for reason in reasons)


class Refusals:
    """The refusals of one process, counted in memory and flushed to the store periodically."""

    name = "refusals"

    def __init__(self, interval: float = 5.0):
        self.interval = max(interval, 0.05)  # a zero interval would spin, not write more often
        self.writes = 0  # flushes that wrote (committed) counts: what a flood of refusals costs the store
        self._events: deque[tuple[str, str]] = deque()  # appended by any thread, drained by the flusher only
        self._unwritten: Counter[tuple[str, str]] = Counter()  # the flusher's own
        self._flushing = threading.Lock()  # the flusher thread and stop(): never on the refusing path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def count(self, source: str, reason: str) -> None:
        """One refusal of ``source`` for ``reason`` (a name of :data:`REASONS`); cheap and never raises."""
        self._events.append((source, reason))

    def where(self) -> str:
        return f"refusal counter (flushed every {self.interval:g}s)"

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="refusals", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write what is still counted (if the store takes it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # a bug must not end the counting: the counts stay for the next flush
                log.exception("flushing the refusal counts failed")

    def flush(self) -> int:
        """Add the counts since the last write to the store in one transaction; return how many refusals
        were written (0, and no write at all, when none came). Kept for the next flush when the store fails."""
        with self._flushing:
            events = self._events
            for _ in range(len(events)):  # only what is there now: refusals keep coming meanwhile
                key = events.popleft()
                if key in KNOWN:
                    self._unwritten[key] += 1
                else:  # a bug at a refusal point, not a client's doing: never a free-text label
                    log.error("refusal of unknown reason %r not counted", key)
            if not self._unwritten:
                return 0
            now = datetime.now(UTC)
            rows = [
                {"source": source, "reason": reason, "count": n, "updated_at": now}
                for (source, reason), n in sorted(self._unwritten.items())
            ]
            try:
                with db.connection_context(), db.atomic():
                    RefusalCount.insert_many(rows).on_conflict(
                        conflict_target=[RefusalCount.source, RefusalCount.reason],
                        update={
                            RefusalCount.count: RefusalCount.count + peewee.EXCLUDED.count,
                            RefusalCount.updated_at: peewee.EXCLUDED.updated_at,
                        },
                    ).execute()
            except (peewee.DatabaseError, peewee.InterfaceError) as exc:
                log.warning("refusal counts not written (%s): kept for the next flush", exc)
                return 0
            written = self._unwritten.total()
            self._unwritten.clear()
            self.writes += 1
            return written
