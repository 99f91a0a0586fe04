"""Shared fixtures: a configuration, and a fresh database on SQLite and on PostgreSQL.

Every test that takes ``store`` runs twice, ``[sqlite]`` and ``[postgres]``:
a temporary SQLite file, or a throwaway schema in the local PostgreSQL
database ``test`` (trust auth on 127.0.0.1:5432; `make test` starts it).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import uuid
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import psycopg2
import pytest
import requests

from gateway.config.loader import config_from_dict
from gateway.service import Service
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
        "smtp": {"host": "127.0.0.1", "port": 0},  # any free port: tests run side by side (pytest -n)
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


@contextlib.contextmanager
def service_running(config, roles: set[str]):
    """An in-process ``Service`` with ``roles`` started for the block and stopped after it (the test's own
    database connection opened again, since the service's threads close theirs)."""
    running = Service(config, roles=roles)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        db.connect(reuse_if_open=True)


def in_db(query):
    """Run a query on a fresh connection (the service's threads commit on their own)."""
    with db.connection_context():
        return query()


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


# ------------------------------------------------ `inlet serve` as a subprocess

INLET = [sys.executable, "-m", "gateway.cli.main"]
SUPPORT = "support@example.org"
TOKEN = "t0ken-for-supervisor-tests"


class Served:
    """`inlet serve` as a subprocess: its output lines as they come, its role processes by name."""

    def __init__(self, store, *, env: dict | None = None, **sections):
        self.web_port, self.smtp_port = free_port(), free_port()
        settings = {
            "web": {"host": "127.0.0.1", "port": self.web_port},
            "smtp": {"port": self.smtp_port},
            "address": [{"address": SUPPORT}],
            "integration": [{"name": "plain", "kind": "generic", "token_env": "SUPERVISOR_TEST_TOKEN"}],
            **sections,
        }
        self.path = store.write_config(**settings)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "SUPERVISOR_TEST_TOKEN": TOKEN, **(env or {})}
        self.lines: list[str] = []
        self._spawn()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen([*INLET, "-c", str(self.path), "serve"], cwd=ROOT, env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        self.reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self.reader.start()

    def kill(self) -> None:
        """SIGKILL the supervisor (a crash, the OOM killer); wait until its role processes are gone too."""
        roles = self.pids().values()
        self.proc.kill()
        self.proc.wait()
        self.reader.join(timeout=10)
        self.proc.stdout.close()
        wait_for(lambda: not any(alive(pid) for pid in roles), timeout=20, message="the role processes to die")

    def restart(self) -> None:
        """Start `inlet serve` again on the same configuration and ports; wait until it runs."""
        self.lines.append("--- restarted\n")
        self._spawn()
        wait_for(lambda: self.said("inlet: running"), timeout=60, message="inlet serve to start again")

    def wait_started(self) -> None:
        wait_for(lambda: self.said("inlet: running"), timeout=60, message="inlet serve to start its roles")

    @property
    def since_start(self) -> str:
        """The output of the latest start only."""
        return self.output.rsplit("--- restarted\n", 1)[-1]

    def _read(self, proc) -> None:
        for line in proc.stdout:
            self.lines.append(line)

    def said(self, text: str) -> bool:
        assert self.proc.poll() is None or text in self.since_start, self.output
        return text in self.since_start

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def pids(self) -> dict[str, int]:
        """The latest pid of each role process, from the supervisor's lines."""
        found = {}
        for match in re.finditer(r"inlet: (\S+) (?:\([^)]*\) started|running again) as pid (\d+)", self.output):
            found[match.group(1)] = int(match.group(2))
        return found

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"inlet serve did not stop within {timeout}s:\n{self.output}") from None
        return self.proc.returncode

    def send_mail(self, subject: str) -> float:
        """Send one message; the time its 250 came back."""
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "alice@customer.example", SUPPORT, subject
        msg["Message-ID"] = make_msgid(domain="customer.example")
        msg.set_content("Details follow.")
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as client:
            client.send_message(msg)
        return time.monotonic()

    def post_hook(self, title: str) -> requests.Response:
        return requests.post(
            f"http://127.0.0.1:{self.web_port}/hooks/plain",
            json={"title": title, "dedup_key": title},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )


@pytest.fixture
def serve(store):
    started = []

    def start(**sections) -> Served:
        started.append(Served(store, **sections))
        started[-1].wait_started()
        return started[-1]

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
        served.reader.join(timeout=10)
        served.proc.stdout.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except OSError:
        return False
