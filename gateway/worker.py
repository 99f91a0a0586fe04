"""Background workers of ``inlet serve``: threads that claim rows and act on them.

A :class:`Worker` runs one ``tick()`` function in a loop: immediately when
woken (the intake writer of this process committed rows, or a commit in any
process announced work on the worker's wakeup channel: store/wakeup.py), else
every ``interval``. A database error is logged and retried with backoff, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import peewee

from store import wakeup
from store.db import db

log = logging.getLogger("inlet.worker")


class Worker:
    """Calls ``tick()`` (which returns how much it did) until stopped."""

    def __init__(
        self,
        name: str,
        tick: Callable[[], int],
        *,
        interval: float = 1.0,
        max_backoff: float = 30.0,
        wake_on: str | None = None,
    ):
        self.name, self.tick, self.interval, self.max_backoff = name, tick, interval, max_backoff
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener = wakeup.Listener(wake_on, self.wake) if wake_on else None

    def where(self) -> str:
        return f"{self.name} worker"

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._stop.clear()
        if self._listener is not None:
            self._listener.start()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._listener is not None:
            self._listener.stop()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        delay = self.interval
        while not self._stop.is_set():
            self._wake.clear()
            try:
                with db.connection_context():
                    done = self.tick()
                delay = self.interval
            except (peewee.OperationalError, peewee.InterfaceError) as exc:
                log.warning("%s: database unavailable (%s); retrying in %.0fs", self.name, exc, delay)
                done = 0
                delay = min(delay * 2, self.max_backoff)
            except Exception:  # a bug must not kill the worker: log it and go on
                log.exception("%s: tick failed", self.name)
                done = 0
            if not done:
                self._wake.wait(delay)


TRANSACTION_BATCH = 50  # Inbounds taken together (counted in one commit, applied in turns of TURN_BUDGET)
BUSY_BATCH = (
    5  # while intake has work in hand: short units between the waits for it (bench/e2e_latency.py --one-session)
)


def pipeline_tick(
    pipeline,
    batch: int = 200,
    before_each: Callable[[float], None] | None = None,
    report: Callable[[int | None], None] | None = None,
    busy: Callable[[], bool] | None = None,
) -> Callable[[], int]:
    """A tick that runs the pipeline over pending Inbound rows, oldest first, in transactions of
    up to ``TRANSACTION_BATCH`` (:meth:`~gateway.pipeline.driver.Pipeline.run_batch`).

    ``before_each(seconds the previous Inbound took)`` is called before each transaction (e.g. to
    yield to intake), the first of a tick included. ``report(inbound id)`` names the Inbound in hand
    and ``report(None)`` says none is, so the supervisor can stop a run that overruns its time limit.
    While ``busy()`` (intake has work in hand) the units are ``BUSY_BATCH`` Inbounds, else ``TRANSACTION_BATCH``.
    """
    from gateway.pipeline.driver import pending_ids

    spent = [0.0]  # the last Inbound's time, across ticks: at a burst's start each tick finds only a row or two

    def tick() -> int:
        ids = pending_ids(batch)
        start = 0
        while start < len(ids):
            if before_each is not None:
                before_each(spent[0])
            size = BUSY_BATCH if busy is not None and busy() else TRANSACTION_BATCH
            chunk, start = ids[start : start + size], start + size
            started = time.monotonic()
            pipeline.run_batch(chunk, report)  # takes this process's SQLite write turn for its writes only
            spent[0] = (time.monotonic() - started) / len(chunk)
        return len(ids)

    return tick
