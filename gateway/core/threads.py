"""Background threads of ``inlet serve``: one daemon thread per component, started and stopped the same way.

:class:`Loop` is the thread: ``start()`` runs :meth:`Loop.run` in a daemon thread, ``stop()`` sets the
stop event (``self.stopping``) and joins. A subclass loops in ``run()`` until ``self.stopping`` is set and
waits on it (``self.stopping.wait(seconds)``), so a stop is noticed at once (the IMAP poller:
gateway/intake/imap.py).

:class:`Worker` is the loop of the workers that claim rows and act on them: it calls one ``tick()``
immediately when woken, else every ``interval``; a ``transient`` error (the database is away) is logged
and retried with backoff (1, 2, 4 … ``max_backoff`` seconds), except a ``contended`` one (the database is
there, another writer held its lock too long): that is retried every ``interval``, since backing off
would leave work waiting long after the lock is free; any other error is logged and the loop goes on.
The database session around each tick and the wakeup listener are given by the caller
(store/wakeup.py ``worker``): this module imports nothing of Inlet.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

log = logging.getLogger("inlet.worker")


class Loop:
    """A component whose ``run()`` loops in its own daemon thread until ``stop()``."""

    join_timeout = 30.0  # seconds stop() waits for the thread

    def __init__(self, name: str):
        self.name = name
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self.stopping.clear()
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.join_timeout)


class Worker(Loop):
    """Calls ``tick()`` (which returns how much it did) until stopped."""

    def __init__(
        self,
        name: str,
        tick: Callable[[], int],
        *,
        interval: float = 1.0,
        max_backoff: float = 30.0,
        session: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        transient: tuple[type[BaseException], ...] = (),
        contended: Callable[[BaseException], bool] = lambda exc: False,
        listener=None,
    ):
        """``session()``: the context each tick runs in; ``transient``: the errors retried with backoff;
        ``contended(exc)``: whether a transient error is contention, retried every ``interval`` instead;
        ``listener``: an object with ``start()`` and ``stop()`` that calls :meth:`wake` on outside work."""
        super().__init__(name)
        self.tick, self.interval, self.max_backoff = tick, interval, max_backoff
        self.session, self.transient, self.contended, self.listener = session, transient, contended, listener
        self._wake = threading.Event()

    def where(self) -> str:
        return f"{self.name} worker"

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self.listener is not None:
            self.listener.start()
        super().start()

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()
        if self.listener is not None:
            self.listener.stop()
        super().stop()

    def run(self) -> None:
        delay = self.interval
        while not self.stopping.is_set():
            self._wake.clear()
            try:
                with self.session():
                    done = self.tick()
                delay = self.interval
            except self.transient as exc:
                done = 0
                if self.contended(exc):
                    log.warning("%s: database busy (%s); retrying in %.0fs", self.name, exc, self.interval)
                    delay = self.interval
                else:
                    log.warning("%s: database unavailable (%s); retrying in %.0fs", self.name, exc, delay)
                    delay = min(delay * 2, self.max_backoff)
            except Exception:  # a bug must not kill the worker: log it and go on
                log.exception("%s: tick failed", self.name)
                done = 0
            if not done:
                self._wake.wait(delay)
