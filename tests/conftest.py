"""Shared fixtures: a configuration, and a fresh database on SQLite and on PostgreSQL.

Every test that takes ``store`` runs twice, ``[sqlite]`` and ``[postgres]``:
a temporary SQLite file, or a throwaway schema in the local PostgreSQL
database ``test`` (trust auth on 127.0.0.1:5432; `make test` starts it).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from gateway.config import config_from_dict
from store.db import db, open_database
from store.migrations import upgrade

PG_DSN = os.environ.get("INLET_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parent.parent


def base_config_dict(database_url: str, **sections) -> dict:
    """A small valid configuration; ``sections`` replace or add top-level keys."""
    data = {
        "fallback_group": "service-desk",
        "database": {"url": database_url},
        "web": {"host": "127.0.0.1", "port": 0},
        "group": [
            {"name": "service-desk", "escalation": "default"},
            {"name": "network", "escalation": "default"},
            {"name": "security"},
        ],
        "escalation": [{"name": "default", "steps": [{"after": "15m", "notify": ["json://127.0.0.1:9/"]}]}],
    }
    data.update(sections)
    return data


class Store:
    """A database for one test: its URL, a config builder, and raw SQL access."""

    def __init__(self, kind: str, url: str, tmp_path: Path):
        self.kind, self.url, self.tmp_path = kind, url, tmp_path

    def config(self, **sections):
        return config_from_dict(base_config_dict(self.url, **self._local(sections)), str(self.tmp_path / "config.toml"))

    def _local(self, sections: dict) -> dict:
        """Local state (generated keys) in the test's folder, not in the working directory."""
        return {**sections, "inlet": {"data_dir": str(self.tmp_path / "data"), **sections.get("inlet", {})}}

    def write_config(self, **sections) -> Path:
        """The configuration as a TOML file (for CLI and subprocess tests)."""
        import tomli_w

        path = self.tmp_path / "config.toml"
        path.write_text(tomli_w.dumps(base_config_dict(self.url, **self._local(sections))))
        return path


def _pg_schema_url(schema: str) -> str:
    return f"{PG_DSN}?options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def _fresh_database(kind: str, tmp_path: Path):
    if kind == "sqlite":
        yield Store("sqlite", f"sqlite:///{tmp_path / 'inlet.db'}", tmp_path)
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(PG_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    try:
        yield Store("postgres", _pg_schema_url(schema), tmp_path)
    finally:
        if db.obj is not None and not db.is_closed():
            db.close()
        if db.obj is not None and hasattr(db.obj, "close_all"):
            db.obj.close_all()
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@contextlib.contextmanager
def _migrated(fresh: Store):
    open_database(fresh.config())
    upgrade()
    db.connect(reuse_if_open=True)
    yield fresh
    if not db.is_closed():
        db.close()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_store(request, tmp_path):
    """A fresh, empty database (no schema yet) on each backend."""
    with _fresh_database(request.param, tmp_path) as fresh:
        yield fresh


@pytest.fixture
def store(empty_store):
    """A fresh database at the latest schema, opened through the proxy, on each backend."""
    with _migrated(empty_store) as ready:
        yield ready


@pytest.fixture
def pg_store(tmp_path):
    """Like ``store``, PostgreSQL only: for what only PostgreSQL does (several processes)."""
    with _fresh_database("postgres", tmp_path) as fresh, _migrated(fresh) as ready:
        yield ready


@pytest.fixture
def reporter_mailbox():
    """The reporters' mail server: a loopback SMTP sink that keeps what Inlet sends them."""
    from tests.sinks import SmtpSink

    sink = SmtpSink(free_port()).start()
    yield sink
    sink.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_pause = threading.Event().wait  # a poll interval inside a deadline, not a sleep-and-hope


def wait_for(condition, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    """Poll ``condition`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        _pause(interval)
