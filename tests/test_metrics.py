"""/metrics and /readyz over real HTTP: a running Service (SMTP intake, webhooks, pipeline worker, delivery)
takes real inputs, then the series are read back with an admin's token; on both databases."""

from __future__ import annotations

import re
import smtplib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
import requests

from gateway import accounts
from gateway.core.clock import FixedClock
from gateway.service import Service, build_lifecycle
from store.db import db, make_database
from store.migrations import LATEST, MIGRATIONS
from store.models import PENDING, Inbound, NotificationAttempt, SchemaVersion
from tests.conftest import free_port, wait_for
from tests.test_web import Web

SUPPORT = "support@example.org"
TOKEN = "t0ken-for-metrics-tests"


class Running:
    def __init__(self, service: Service):
        self.service = service
        web = next(c for c in service.components if c.name == "web")
        self.url = f"http://127.0.0.1:{web.port}"
        with db.connection_context():
            accounts.create_user("admin", "admin", "a long test password", email="admin@example.org")
            self.token = accounts.issue_api_token("admin")

    def metrics(self) -> str:
        response = requests.get(f"{self.url}/metrics", headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
        assert response.status_code == 200, response.text
        return response.text

    def mail(self, subject: str, **headers) -> None:
        message = EmailMessage()
        message["From"] = "Rita <rita@customer.example>"
        message["To"] = SUPPORT
        message["Subject"] = subject
        for name, value in headers.items():
            message[name.replace("_", "-")] = value
        message.set_content(f"{subject}: details follow.")
        with smtplib.SMTP("127.0.0.1", self.service.smtp.port, timeout=10) as client:
            client.send_message(message)


def value(text: str, name: str, **labels) -> float:
    """The sample ``name{labels}`` of a Prometheus text page (labels in any order); 0 when absent."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if found == {k: str(v) for k, v in labels.items()}:
            return float(match.group(3))
    return 0.0


def _start(store, tmp_path, monkeypatch, roles):
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    monkeypatch.setenv("INLET_MESSAGE_ID_SECRET", "metrics-test-secret")
    dead_port = free_port()  # nothing listens: every mail delivery fails
    config = store.config(
        inlet={"data_dir": str(tmp_path)},
        smtp={"port": free_port()},
        web={"host": "127.0.0.1", "port": free_port()},
        address=[{"address": SUPPORT}],
        integration=[{"name": "plain", "kind": "generic", "token_env": "HOOK_TOKEN"}],
        notifications={"from_address": SUPPORT, "smtp_port": dead_port, "apprise_throttle": "0s"},
    )
    db.close()
    service = Service(config, roles=roles)
    service.start()
    return service


@pytest.fixture
def running(store, tmp_path, monkeypatch):
    service = _start(store, tmp_path, monkeypatch, {"smtp", "web", "worker", "notify"})
    yield Running(service)
    service.stop()


@pytest.fixture
def intake_only(store, tmp_path, monkeypatch):
    """SMTP and web without the pipeline worker: what comes in stays pending."""
    service = _start(store, tmp_path, monkeypatch, {"smtp", "web"})
    yield Running(service)
    service.stop()


def test_metrics_after_real_inputs(running):
    running.mail("Printer on fire")
    running.mail("Out of office", Auto_Submitted="auto-replied")  # a loop guard: ignored
    hook = requests.post(
        f"{running.url}/hooks/plain",
        json={"title": "Disk full on db1", "severity": "critical"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert hook.status_code == 202, hook.text

    def settled():
        with db.connection_context():
            return Inbound.select().where(Inbound.status == PENDING).count() == 0 and Inbound.select().count() == 3

    wait_for(settled, timeout=20, message="the three inputs to be processed")
    with db.connection_context():
        lifecycle = build_lifecycle(running.service.config, FixedClock(datetime.now(UTC) - timedelta(days=3)))
        late = lifecycle.create(title="Old and forgotten", actor="t", group="service-desk", impact="high")
        running.service.lifecycle.escalate(late.ref, "admin", "hierarchical", "three days without an answer")

    def delivery_failed():
        with db.connection_context():
            return NotificationAttempt.select().where(NotificationAttempt.ok == False).count()  # noqa: E712

    failures = wait_for(delivery_failed, timeout=20, message="a failed delivery to the dead mail port")

    text = running.metrics()
    assert "# TYPE inlet_intake_total counter" in text
    assert value(text, "inlet_intake_total", source="smtp", outcome="accepted") == 1
    assert value(text, "inlet_intake_total", source="smtp", outcome="ignored") == 1
    assert value(text, "inlet_intake_total", source="webhook", outcome="accepted") == 1
    assert value(text, "inlet_intake_pending", source="smtp") == 0
    assert value(text, "inlet_pipeline_lag_seconds") == 0
    assert "# TYPE inlet_processing_latency_seconds histogram" in text
    assert value(text, "inlet_processing_latency_seconds_gcount") == 3
    assert value(text, "inlet_processing_latency_seconds_bucket", le="+Inf") == 3
    assert value(text, "inlet_processing_latency_seconds_bucket", le="60.0") == 3  # processed within seconds
    assert 0 < value(text, "inlet_processing_latency_seconds_gsum") < 60

    opened = [value(text, "inlet_open_incidents", priority=p, group="service-desk") for p in ("P1", "P2", "P3")]
    assert opened == [1, 1, 1], text  # the critical alert (P1), the late high-impact one (P2), the email (P3)
    assert value(text, "inlet_sla_breached", target="respond", priority="P2") == 1
    assert value(text, "inlet_sla_breached", target="resolve", priority="P2") == 1
    assert value(text, "inlet_sla_breached", target="respond", priority="P3") == 0
    assert value(text, "inlet_open_incidents_escalated", priority="P2") == 1
    assert value(text, "inlet_escalations_total", kind="hierarchical") == 1
    assert value(text, "inlet_delivery_failures_total") >= failures >= 1
    assert value(text, "inlet_outbox_depth") >= 1  # the failed acknowledgement waits for its retry


def test_pipeline_lag_and_pending_while_no_worker_runs(intake_only):
    intake_only.mail("Nobody processes this")
    with db.connection_context():
        received = Inbound.get().received_at
    text = intake_only.metrics()
    assert value(text, "inlet_intake_pending", source="smtp") == 1
    assert value(text, "inlet_intake_total", source="smtp", outcome="accepted") == 0
    lag = value(text, "inlet_pipeline_lag_seconds")
    assert 0 < lag <= (datetime.now(UTC) - received).total_seconds() + 1
    assert value(text, "inlet_processing_latency_seconds_gcount") == 0
    later = intake_only.metrics()
    assert value(later, "inlet_pipeline_lag_seconds") >= lag  # the same input, older


# ---------------------------------------------------------------- /readyz


def test_readyz_200_when_the_schema_is_current_503_when_it_is_behind(intake_only):
    ready = requests.get(f"{intake_only.url}/readyz", timeout=10)
    assert ready.status_code == 200
    checks = {"database": "ok", "schema": "ok"}
    assert ready.json() == {"status": "ready", "checks": checks, "mailboxes": [], "warnings": []}  # no [[mailbox]]
    with db.connection_context():
        SchemaVersion.delete().where(SchemaVersion.version == LATEST).execute()
    behind = requests.get(f"{intake_only.url}/readyz", timeout=10)
    assert behind.status_code == 503 and behind.headers["Content-Type"] == "application/json"
    body = behind.json()
    assert body["status"] == "not ready" and body["checks"]["database"] == "ok"
    previous = MIGRATIONS[-2][0]
    assert f"version {previous}, this Inlet needs {LATEST}: run 'inlet db upgrade'" in body["checks"]["schema"]
    assert requests.get(f"{intake_only.url}/healthz", timeout=10).status_code == 200  # alive, just not ready


def test_readyz_503_when_the_database_is_unreachable(store):
    web = Web(store)
    client = web.app.test_client()
    assert client.get("/readyz").status_code == 200
    # the same app, its database now a PostgreSQL server that is not there (nothing listens on the port)
    original = db.obj
    db.close()
    if hasattr(original, "close_all"):
        original.close_all()
    db.initialize(make_database(f"postgresql://inlet@127.0.0.1:{free_port()}/inlet", busy_timeout=2))
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json
    assert body["checks"]["database"].startswith("unreachable (") and "127.0.0.1" not in str(body)
    assert body["checks"]["schema"] == "unknown: the database is unreachable"
