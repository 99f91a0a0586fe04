"""Refused inputs in /metrics: ``inlet_intake_total{outcome="rejected", reason}``, through the real servers.

Inlet's SMTP server refuses through smtplib, the webhook endpoint over HTTP, then /metrics is read over
HTTP with an admin's token; on both databases. Each listener process counts refusals in memory and adds
them to the store once per ``[serve] refusals_flush_interval`` (gateway/intake/refusals.py): a flood of refusals
costs a bounded number of writes, a refusal answered while the store was away is counted once it is back,
and a clean stop writes what is still counted, so the counts survive a restart.
"""

from __future__ import annotations

import re
import smtplib
import socket
import time

import pytest
import requests

from gateway import accounts
from gateway.intake.refusals import REASONS
from gateway.service import Service
from store.db import db
from tests.conftest import free_port, wait_for
from tests.test_metrics import value

SUPPORT = "support@example.org"
TOKEN = "t0ken-for-refusal-tests"
RAW = b"From: rita@customer.example\r\nTo: support@example.org\r\nSubject: Printer\r\n\r\nIt is on fire.\r\n"


class Inlet:
    """SMTP and web listeners of one Service (no pipeline worker: nothing here needs processing)."""

    def __init__(self, store, tmp_path, flush: str, **smtp):
        self.smtp_port, self.web_port = free_port(), free_port()
        self.config = store.config(
            inlet={"data_dir": str(tmp_path / "data")},
            serve={"refusals_flush_interval": flush},
            smtp={"port": self.smtp_port, "max_recipients": 2, "max_message_size": 2000, **smtp},
            web={"host": "127.0.0.1", "port": self.web_port, "max_body_size": 2000},
            address=[{"address": SUPPORT}],
            integration=[
                {"name": "plain", "kind": "generic", "token_env": "HOOK_TOKEN"},
                {"name": "limited", "kind": "generic", "token_env": "HOOK_TOKEN", "rate_limit": 1},
            ],
        )
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.service: Service | None = None

    def start(self) -> Inlet:
        db.close()
        self.service = Service(self.config, roles={"smtp", "web"})
        self.service.start()
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None

    def metrics(self) -> str:
        with db.connection_context():
            if accounts.User.get_or_none(accounts.User.name == "admin") is None:
                accounts.create_user("admin", "admin", "a long test password", email="admin@example.org")
            token = accounts.issue_api_token("admin")
        response = requests.get(f"{self.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert response.status_code == 200, response.text
        return response.text

    def rejected(self, source: str, reason: str) -> float:
        return value(self.metrics(), "inlet_intake_total", source=source, outcome="rejected", reason=reason)

    def hook(self, name: str = "plain", *, token: str | None = TOKEN, headers=None, **kwargs) -> requests.Response:
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        if "data" not in kwargs:
            kwargs.setdefault("json", {"title": "Disk full"})
        return requests.post(f"{self.url}/hooks/{name}", headers=headers, timeout=10, **kwargs)


@pytest.fixture
def inlet(store, tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    running = Inlet(store, tmp_path, "1s").start()
    yield running
    running.stop()


def test_every_refusal_is_counted_by_source_and_reason(inlet):
    with smtplib.SMTP("127.0.0.1", inlet.smtp_port, timeout=10) as client:
        client.ehlo()
        assert client.rcpt("x@example.org")[0] == 503  # RCPT before MAIL: aiosmtpd's own refusal
        client.mail("rita@customer.example")
        assert client.rcpt("nobody@example.org")[0] == 550
        assert client.rcpt(SUPPORT)[0] == 250
        assert client.rcpt(SUPPORT)[0] == 250
        assert client.rcpt(SUPPORT)[0] == 452  # over max_recipients = 2
        assert client.data(RAW + (b"x" * 70 + b"\r\n") * 40)[0] == 552
    unknown = "evil-<script>-name"
    assert inlet.hook(token=None).status_code == 401
    assert inlet.hook(token="wrong").status_code == 403
    assert inlet.hook(data=b"{not json").status_code == 415  # no JSON content type
    assert inlet.hook(unknown).status_code == 404
    assert inlet.hook(json={"title": "x" * 3000}).status_code == 413
    assert inlet.hook("limited").status_code == 202 and inlet.hook("limited").status_code == 429
    assert inlet.hook(data=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400

    expected = {
        ("smtp", "protocol"): 1,
        ("smtp", "recipient_unknown"): 1,
        ("smtp", "too_many_recipients"): 1,
        ("smtp", "too_large"): 1,
        ("webhook", "unauthenticated"): 1,
        ("webhook", "forbidden"): 1,
        ("webhook", "content_type"): 1,
        ("webhook", "unknown_integration"): 1,
        ("webhook", "too_large"): 1,
        ("webhook", "rate_limited"): 1,
        ("webhook", "bad_request"): 1,
    }

    def counted():
        page = inlet.metrics()
        got = {
            key: value(page, "inlet_intake_total", source=key[0], outcome="rejected", reason=key[1]) for key in expected
        }
        return page if got == expected else None

    page = wait_for(counted, timeout=15, message=f"the refusals in /metrics: {expected}")
    assert "# TYPE inlet_intake_total counter" in page
    assert value(page, "inlet_intake_total", source="webhook", outcome="accepted") == 0  # never processed here
    reasons = re.findall(r'inlet_intake_total\{[^}]*outcome="rejected"[^}]*reason="([^"]*)"', page)
    sources = re.findall(r'inlet_intake_total\{[^}]*outcome="rejected"[^}]*source="([^"]*)"', page)
    assert reasons and all(reason in REASONS[source] for reason, source in zip(reasons, sources, strict=True))
    assert "evil" not in page and "nobody@" not in page  # nothing a client sent becomes a label


def test_refused_and_timed_out_connections_are_counted(store, tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    inlet = Inlet(store, tmp_path, "1s", max_sessions_per_client=1, idle_timeout="1s").start()
    try:
        with socket.create_connection(("127.0.0.1", inlet.smtp_port), timeout=10) as first:
            lines = first.makefile("rb")
            assert lines.readline().startswith(b"220")
            with socket.create_connection(("127.0.0.1", inlet.smtp_port), timeout=10) as second:
                assert second.makefile("rb").readline().startswith(b"421 4.7.0")  # one session per client here
            assert lines.readline().startswith(b"421 4.4.2")  # the first one, left idle, is closed

        def counted():
            page = inlet.metrics()
            refused = value(page, "inlet_intake_total", source="smtp", outcome="rejected", reason="connections")
            idle = value(page, "inlet_intake_total", source="smtp", outcome="rejected", reason="timeout")
            return (refused, idle) == (1, 1)

        wait_for(counted, timeout=15, message="a refused and a timed-out connection in /metrics")
    finally:
        inlet.stop()


def test_a_refusal_while_the_store_is_away_is_counted_once_it_is_back(inlet):
    db.execute_sql("ALTER TABLE inbound RENAME TO inbound_away")
    db.execute_sql("ALTER TABLE refusal_count RENAME TO refusal_count_away")
    try:
        with smtplib.SMTP("127.0.0.1", inlet.smtp_port, timeout=10) as client:
            client.ehlo()
            client.mail("rita@customer.example")
            client.rcpt(SUPPORT)
            code, text = client.data(RAW)
        assert (code, text[:5]) == (451, b"4.3.0")
        response = inlet.hook()
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert inlet.service.refusals.flush() == 0  # the counts table is away too: nothing written, nothing lost
    finally:
        db.execute_sql("ALTER TABLE inbound_away RENAME TO inbound")
        db.execute_sql("ALTER TABLE refusal_count_away RENAME TO refusal_count")

    def counted():
        page = inlet.metrics()
        smtp = value(page, "inlet_intake_total", source="smtp", outcome="rejected", reason="store_unavailable")
        hook = value(page, "inlet_intake_total", source="webhook", outcome="rejected", reason="store_unavailable")
        return (smtp, hook) == (1, 1)

    wait_for(counted, timeout=15, message="the refusals of the outage, counted once the store is back")


def count_row_writes(store) -> None:
    """A trigger counts every row the database writes into refusal_count: a count of writes that does not
    rely on the code under test."""
    db.execute_sql("CREATE TABLE refusal_writes (n INTEGER NOT NULL)")
    db.execute_sql("INSERT INTO refusal_writes VALUES (0)")
    if store.kind == "sqlite":
        for event in ("INSERT", "UPDATE"):
            db.execute_sql(
                f"CREATE TRIGGER refusal_{event.lower()} AFTER {event} ON refusal_count "
                "BEGIN UPDATE refusal_writes SET n = n + 1; END"
            )
    else:
        db.execute_sql(
            "CREATE FUNCTION count_refusal_write() RETURNS trigger AS $$ "
            "BEGIN UPDATE refusal_writes SET n = n + 1; RETURN NULL; END $$ LANGUAGE plpgsql"
        )
        db.execute_sql(
            "CREATE TRIGGER refusal_write AFTER INSERT OR UPDATE ON refusal_count "
            "FOR EACH ROW EXECUTE FUNCTION count_refusal_write()"
        )


def row_writes() -> int:
    with db.connection_context():
        return db.execute_sql("SELECT n FROM refusal_writes").fetchone()[0]


def test_a_thousand_refusals_cost_a_bounded_number_of_writes(inlet, store):
    count_row_writes(store)
    refusals = inlet.service.refusals
    writes_before = refusals.writes
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", inlet.smtp_port, timeout=10) as client:
        client.ehlo()
        client.mail("rita@customer.example")
        for n in range(600):
            assert client.rcpt(f"nobody{n}@example.org")[0] == 550
    with requests.Session() as http:
        for _ in range(400):
            response = http.post(f"{inlet.url}/hooks/plain", json={"title": "x"}, timeout=10)
            assert response.status_code == 401
    elapsed = time.monotonic() - started

    def counted():
        page = inlet.metrics()
        smtp = value(page, "inlet_intake_total", source="smtp", outcome="rejected", reason="recipient_unknown")
        hook = value(page, "inlet_intake_total", source="webhook", outcome="rejected", reason="unauthenticated")
        return (smtp, hook) == (600, 400)

    wait_for(counted, timeout=15, message="the 1,000 refusals in /metrics")
    writes = refusals.writes - writes_before
    # One write per flush interval at most (and one more for the flush that caught the tail): never one per refusal.
    # Each write adds to one row per (source, reason): two here, as the database's own count of rows shows.
    assert 1 <= writes <= elapsed / refusals.interval + 2, (writes, elapsed)
    rows = row_writes()
    assert 2 <= rows <= 2 * writes and rows <= 2 * (elapsed / refusals.interval + 2), (rows, writes, elapsed)
    assert refusals.flush() == 0 and refusals.writes - writes_before == writes  # nothing new: no write


def test_a_clean_stop_writes_what_is_counted_and_the_counts_survive_a_restart(store, tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    first = Inlet(store, tmp_path, "1h").start()  # no periodic flush during the test: only the stop writes
    try:
        for _ in range(3):
            assert first.hook(token=None).status_code == 401
        assert first.service.refusals.writes == 0
    finally:
        first.stop()
    second = Inlet(store, tmp_path, "1h").start()
    try:
        assert second.rejected("webhook", "unauthenticated") == 3
        assert second.hook(token="wrong").status_code == 403
    finally:
        second.stop()
    third = Inlet(store, tmp_path, "1h").start()
    try:
        assert third.rejected("webhook", "unauthenticated") == 3 and third.rejected("webhook", "forbidden") == 1
    finally:
        third.stop()
