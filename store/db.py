"""The database: one proxy, opened once from the configuration's URL.

``sqlite:///var/inlet.db`` (relative) or ``sqlite:////abs/inlet.db`` selects the
embedded SQLite default (WAL, foreign keys, busy timeout, ``BEGIN IMMEDIATE``
so concurrent writers queue instead of failing); ``postgresql://user@host:port/db``
selects PostgreSQL with a connection pool. peewee keeps one connection per
thread, so the database is safe to use from many threads.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import peewee
from playhouse.pool import PooledPostgresqlDatabase

from gateway.core.errors import ConfigError, StoreUnavailable
from gateway.core.private_files import create_private_file

db = peewee.DatabaseProxy()
opened = {"data_dir": None}  # the [inlet] data_dir of the configuration the database was opened with


def is_postgres(database: peewee.Database | None = None) -> bool:
    target = database or db.obj
    return isinstance(target, peewee.PostgresqlDatabase)


# PostgreSQL's serialization failure, deadlock detected, lock not available
CONTENTION_CODES = frozenset({"40001", "40P01", "55P03"})


def contended(exc: BaseException) -> bool:
    """Whether a database error is contention (another writer held a lock), not the database being away:
    SQLite's "database is locked" / "busy" (its busy timeout ran out, or a snapshot went stale), or a
    PostgreSQL serialization failure, deadlock or lock timeout. peewee wraps the driver's error: the
    original is its first argument."""
    orig = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    if getattr(orig, "pgcode", None) in CONTENTION_CODES:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database table is locked" in text or "database is busy" in text


def make_database(url: str, *, password: str | None = None, pool_size: int = 10, busy_timeout: float = 10.0):
    """Build (not connect) a peewee database for ``url``."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if not path:
            raise ConfigError(f"database url {url!r}: no file path (use sqlite:///var/inlet.db)")
        if path != ":memory:":
            # Created 0600 before SQLite opens it: SQLite gives -wal and -shm the database file's mode.
            create_private_file(path)
        return _TurnTakingSqlite(
            path,
            pragmas={
                "journal_mode": "wal",
                "foreign_keys": 1,
                "busy_timeout": int(busy_timeout * 1000),
                "synchronous": "normal",
            },
            timeout=busy_timeout,
            lock_type="IMMEDIATE",
            check_same_thread=False,
        )
    if parts.scheme in ("postgresql", "postgres"):
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise ConfigError(f"database url {redact(url)!r}: no database name")
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return PooledPostgresqlDatabase(
            name,
            user=unquote(parts.username) if parts.username else None,
            password=password or (unquote(parts.password) if parts.password else None),
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            max_connections=pool_size,
            stale_timeout=300,
            timeout=busy_timeout,
            connect_timeout=int(options.pop("connect_timeout", 5)),
            **options,
        )
    raise ConfigError(f"database url {redact(url)!r}: scheme must be sqlite:// or postgresql://")


def sqlite_files(url: str) -> list[Path]:
    """The files of a ``sqlite://`` database (its folder, the file, -wal, -shm, -turn, -want, -claim1); none for
    PostgreSQL."""
    parts = urlsplit(url)
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if parts.scheme != "sqlite" or not path or path == ":memory:":
        return []
    folder = [Path(path).parent] if Path(path).parent != Path(".") else []  # the working folder is not ours
    suffixes = ("", "-wal", "-shm", "-turn", "-want", f"-claim{CLAIM_INBOUND}")
    return [*folder, *(Path(path + suffix) for suffix in suffixes)]


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def describe(database: peewee.Database) -> str:
    """'PostgreSQL database "inlet" on 127.0.0.1:5432' or 'SQLite file var/inlet.db' (never a password)."""
    if isinstance(database, peewee.PostgresqlDatabase):
        params = database.connect_params
        return f"PostgreSQL database {database.database!r} on {params.get('host')}:{params.get('port')}"
    return f"SQLite file {database.database}"


def open_database(config) -> peewee.Database:
    """Initialise the proxy from ``config.database`` and check the database answers."""
    section = config.database
    password = os.environ.get(section.password_env) if section.password_env else None
    database = make_database(
        section.url, password=password, pool_size=section.pool_size, busy_timeout=section.busy_timeout.total_seconds()
    )
    db.initialize(database)
    opened["data_dir"] = config.inlet.data_dir
    try:
        with db.connection_context():
            db.execute_sql("SELECT 1")
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if password:
            reason = reason.replace(password, "***")
        raise StoreUnavailable(f"cannot connect to {describe(database)}: {reason}") from None
    return database


# SQLite has one write lock, and its busy handler waits by sleeping (1, 2, 5 … 100 ms): writers that meet
# there lose milliseconds per turn — in the SMTP event loop, every session's. So every writer of every
# process takes the write turn first: a thread lock (threads of one process queue on it) and then an
# exclusive flock on a file next to the database (processes queue in the kernel, which wakes the next
# one the moment the turn is given back). Transactions take it in begin() and give it back at commit or
# rollback, a write statement outside a transaction around itself (_TurnTakingSqlite): the discipline
# holds for every writer without each remembering it.
_sqlite_writes = threading.Lock()
_turn = threading.local()  # depth: how many nested holds this thread has; txn: begin() took one
_turn_files: dict[str, int] = {}  # lock file path (<database>-turn, -want) -> its open descriptor in this process
_WRITE = re.compile(r"\s*(?:INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b", re.IGNORECASE)


def _turn_fd(database, suffix: str = "-turn") -> int | None:
    path = getattr(database, "database", None)
    if not path or path == ":memory:":
        return None
    fd = _turn_files.get(path + suffix)
    if fd is None:
        fd = os.open(f"{path}{suffix}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        _turn_files[path + suffix] = fd
    return fd


def _take_turn(database) -> None:
    depth = getattr(_turn, "depth", 0)
    if depth == 0:
        _sqlite_writes.acquire()
        try:
            fd = _turn_fd(database)
            if fd is not None:
                _flock_turn(database, fd)
        except BaseException:
            _sqlite_writes.release()
            raise
        _turn.fd = fd
    _turn.depth = depth + 1


def _flock_turn(database, fd: int) -> None:
    """Take the turn file; while waiting for it, say so on ``<database>-want`` (a shared lock that
    :func:`turn_wanted` sees), so a holder that can stop early (the pipeline's batches) gives it back."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    want = _turn_fd(database, "-want")
    fcntl.flock(want, fcntl.LOCK_SH)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    finally:
        fcntl.flock(want, fcntl.LOCK_UN)


def turn_wanted() -> bool:
    """Whether a writer of another process waits for the SQLite write turn (False on PostgreSQL): the
    holder of a long turn gives it back at the next point where it can. Only the thread of a process that
    takes the turn file waits on it (the others queue on the process's lock), so a shared lock on the want
    file held by any open file description but ours is another process's writer."""
    if is_postgres():
        return False
    want = _turn_fd(db.obj, "-want")
    if want is None:
        return False
    try:
        fcntl.flock(want, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(want, fcntl.LOCK_UN)
    return False


def _give_turn() -> None:
    _turn.depth -= 1
    if _turn.depth == 0:
        if _turn.fd is not None:
            fcntl.flock(_turn.fd, fcntl.LOCK_UN)
        _sqlite_writes.release()


@contextlib.contextmanager
def local_write_turn():
    """Hold the SQLite write turn of every process on this machine (nothing on PostgreSQL, whose row
    locks do the work). Re-entrant within a thread."""
    if is_postgres():
        yield
        return
    _take_turn(db.obj)
    try:
        yield
    finally:
        _give_turn()


class _TurnTakingSqlite(peewee.SqliteDatabase):
    """SQLite whose transactions and lone write statements take the write turn (see above)."""

    def begin(self, lock_type=None):
        if (lock_type or self._lock_type or "").upper() == "DEFERRED":
            # Reads first, on a snapshot, without the turn: it is taken at the first write (execute_sql),
            # which fails at once (SQLITE_BUSY_SNAPSHOT, "database is locked") if another writer committed
            # since the snapshot; the caller then runs its transaction again. For work that may spend long
            # before it writes (the pipeline's rules), so no one waits for it meanwhile.
            super().begin(lock_type)
            _turn.lazy = True
            return
        _take_turn(self)
        try:
            super().begin(lock_type)
        except BaseException:
            _give_turn()
            raise
        _turn.txn = getattr(_turn, "txn", 0) + 1

    def _end_turn(self) -> None:
        _turn.lazy = False
        if getattr(_turn, "txn", 0):
            _turn.txn -= 1
            _give_turn()

    def commit(self):
        super().commit()  # when it fails, peewee rolls back, and rollback() gives the turn back
        self._end_turn()

    def rollback(self):
        try:
            super().rollback()
        finally:
            self._end_turn()

    def execute_sql(self, sql, params=None):
        if self.in_transaction():
            if getattr(_turn, "lazy", False) and _WRITE.match(sql):
                _take_turn(self)
                _turn.lazy = False
                _turn.txn = getattr(_turn, "txn", 0) + 1
            return super().execute_sql(sql, params)
        if getattr(_turn, "depth", 0) or not _WRITE.match(sql):
            return super().execute_sql(sql, params)
        _take_turn(self)
        try:
            return super().execute_sql(sql, params)
        finally:
            _give_turn()


# Advisory lock classes: what the second key numbers. On PostgreSQL the first key is the hash of the class
# and the schema (advisory locks are per database: two Inlets in two schemas of one database must not
# take each other's locks).
_PG_CLASS = "hashtext(current_schema() || ':' || %s)"
CLAIM_INBOUND = 1  # an Inbound's id
NEW_PROBLEM = 2  # the hash of a correlation key no open incident has (yet)


@contextlib.contextmanager
def claimed(kind: int, key: int):
    """Yield whether this process holds ``(kind, key)`` for the block (see :func:`claimed_all`)."""
    with claimed_all(kind, [key]) as taken:
        yield key in taken


@contextlib.contextmanager
def claimed_all(kind: int, keys: list[int]):
    """Yield the set of ``keys`` of class ``kind`` this process holds for the block, each taken without
    waiting (one another process holds is left out) and given back at the end, or by the system when the
    process dies: on PostgreSQL session advisory locks (taken in one statement); on SQLite a lock on byte
    ``key`` of ``<database>-claim<kind>`` (POSIX record locks: per process, so the threads of one process
    share them)."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        yield set()
        return
    if not is_postgres():
        fd = _claim_fd(db.obj, kind)
        if fd is None:
            yield set(keys)
            return
        taken: set[int] = set()
        try:
            for key in keys:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, key)
                except OSError:
                    continue
                taken.add(key)
            yield taken
        finally:
            for key in taken:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, key)
        return
    rows = db.execute_sql(
        f"SELECT k FROM unnest(%s::int[]) AS k WHERE pg_try_advisory_lock({_PG_CLASS}, k)", (keys, str(kind))
    )
    taken = {row[0] for row in rows.fetchall()}
    try:
        yield taken
    finally:
        if taken:
            db.execute_sql(
                f"SELECT pg_advisory_unlock({_PG_CLASS}, k) FROM unnest(%s::int[]) AS k", (str(kind), sorted(taken))
            )


_claim_files: dict[tuple[str, int], int] = {}  # never closed: closing any descriptor of a file drops its locks


def _claim_fd(database, kind: int) -> int | None:
    path = getattr(database, "database", None)
    if not path or path == ":memory:":
        return None
    fd = _claim_files.get((path, kind))
    if fd is None:
        fd = os.open(f"{path}-claim{kind}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        _claim_files[(path, kind)] = fd
    return fd


def wait_for_key(kind: int, text: str) -> None:
    """PostgreSQL: wait for the transaction advisory lock on ``(kind, hash of text)``, held until this
    transaction ends, so transactions of several processes deciding about one key take turns (SQLite's
    one write turn and snapshot check already serialise them: nothing to do)."""
    if is_postgres():
        db.execute_sql(f"SELECT pg_advisory_xact_lock({_PG_CLASS}, hashtext(%s))", (str(kind), text))
