"""Wakeups between roles: a commit that creates work wakes the role that does it (DESIGN.md §6).

The database stays the only channel for the work itself (§2.5); a wakeup carries
nothing but "look now", so a lost one costs at most one poll interval. Channels:
``inbound`` (pipeline workers) and ``notification`` (outbox delivery).

- PostgreSQL: ``NOTIFY inlet_<channel>`` inside the writing transaction (the server
  delivers it at commit and drops it on rollback, to every process of every machine);
  a listener ``LISTEN``s on a connection of its own.
- SQLite (the processes of one machine): after the commit, one datagram to the socket
  of each listener in ``<data_dir>/wake/`` (a folder only the owner may enter). The
  send never blocks: a full socket already has a wakeup waiting.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import select
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import peewee

from gateway.core.threads import Worker
from store import db as store_db
from store.db import contended, db, is_postgres

log = logging.getLogger("inlet.wakeup")

INBOUND, NOTIFICATION = "inbound", "notification"
CHANNELS = (INBOUND, NOTIFICATION)

_sender: list[socket.socket] = []  # one non-blocking socket per process, made on first use
_numbers = itertools.count(1)


def _folder() -> Path | None:
    """Where this installation's local wakeup sockets live: ``data_dir/wake`` (as the database was opened)."""
    data_dir = store_db.opened["data_dir"]
    return Path(data_dir) / "wake" if data_dir else None


def announce(channel: str) -> None:
    """Wake the listeners of ``channel`` once the current transaction commits (now, outside one)."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown wakeup channel {channel!r}")
    if db.obj is None:
        return
    if is_postgres():
        db.execute_sql(f"NOTIFY inlet_{channel}")  # a fixed name; PostgreSQL folds repeats within a transaction
        return
    db.after_commit(_SENDERS[channel])


def _send(channel: str) -> None:
    folder = _folder()
    if folder is None:
        return
    try:
        names = os.listdir(folder)
    except OSError:
        return  # no listener has started yet
    prefix = f"{channel}."
    if not _sender:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        _sender.append(sock)
        atexit.register(sock.close)
    for name in names:
        if not name.startswith(prefix):
            continue
        path = str(folder / name)
        try:
            _sender[0].sendto(b"!", path)
        except BlockingIOError:
            pass  # its queue is full: a wakeup is waiting already
        except ConnectionRefusedError:  # nobody bound: its process died without cleaning up
            with contextlib.suppress(OSError):
                os.unlink(path)
        except OSError:
            pass  # a hint, never an error of the commit that sent it


_SENDERS = {channel: (lambda c=channel: _send(c)) for channel in CHANNELS}


class Listener:
    """Calls ``wake()`` whenever ``channel`` is announced, from a thread of its own."""

    def __init__(self, channel: str, wake: Callable[[], None]):
        if channel not in CHANNELS:
            raise ValueError(f"unknown wakeup channel {channel!r}")
        self.channel, self.wake = channel, wake
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._path: str | None = None
        self._quit_r, self._quit_w = -1, -1  # a pipe stop() writes to: the thread leaves its select at once

    def start(self) -> None:
        if db.obj is None:
            return
        self._stop.clear()
        target = self._listen_postgres if is_postgres() else self._listen_local
        if not is_postgres() and not self._bind():
            return
        self._quit_r, self._quit_w = os.pipe()
        self._thread = threading.Thread(target=target, name=f"wake-{self.channel}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            os.write(self._quit_w, b"!")
            self._thread.join(timeout=5)
            self._thread = None
            os.close(self._quit_r)
            os.close(self._quit_w)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)
            self._path = None

    # ------------------------------------------------------------ SQLite: a datagram socket in data_dir/wake

    def _bind(self) -> bool:
        folder = _folder()
        if folder is None:
            return False
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if stat.S_IMODE(folder.stat().st_mode) != 0o700:
                folder.chmod(0o700)  # only the owner's processes may wake or be woken
            path = str(folder / f"{self.channel}.{os.getpid()}.{next(_numbers)}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
        except OSError as exc:  # e.g. a path longer than a socket address may be
            log.warning("%s: no wakeups (%s); polling only", self.channel, exc)
            return False
        sock.setblocking(False)
        self._sock, self._path = sock, path
        return True

    def _listen_local(self) -> None:
        sock = self._sock
        while True:
            readable, _, _ = select.select([sock, self._quit_r], [], [])
            if self._quit_r in readable:
                return
            with contextlib.suppress(OSError):
                while sock.recv(16):  # fold what came meanwhile into one wakeup (ends with EAGAIN)
                    pass
            self.wake()

    # ------------------------------------------------------------ PostgreSQL: LISTEN on a connection of its own

    def _listen_postgres(self) -> None:
        import psycopg2
        import psycopg2.extensions

        delay = 1.0
        while not self._stop.is_set():
            conn = None
            try:
                target = db.obj
                conn = psycopg2.connect(dbname=target.database, **target.connect_params)
                conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
                with conn.cursor() as cur:
                    cur.execute(f"LISTEN inlet_{self.channel}")
                delay = 1.0
                self.wake()  # what was announced while no one listened
                while not self._stop.is_set():
                    readable, _, _ = select.select([conn, self._quit_r], [], [], 60.0)
                    if self._quit_r in readable:
                        return
                    if readable:
                        conn.poll()
                        if conn.notifies:
                            conn.notifies.clear()
                            self.wake()
            except psycopg2.Error as exc:
                log.warning("%s: wakeups interrupted (%s); polling until back", self.channel, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
            finally:
                if conn is not None:
                    conn.close()


def worker(name: str, tick: Callable[[], int], *, interval: float = 1.0, wake_on: str | None = None) -> Worker:
    """A worker thread whose ticks run in a database connection: retried with backoff while the database is
    away, woken at once when ``wake_on`` (a channel) is announced, else every ``interval`` seconds."""
    transient = (peewee.OperationalError, peewee.InterfaceError)
    thread = Worker(
        name, tick, interval=interval, session=lambda: db.connection_context(), transient=transient, contended=contended
    )
    if wake_on:
        thread.listener = Listener(wake_on, thread.wake)
    return thread
