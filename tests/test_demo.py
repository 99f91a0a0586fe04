"""`inlet demo` against a running instance: emails through SMTP and alerts through the webhook
become incidents (the example configuration's addresses and integration)."""

from __future__ import annotations

import pytest

from gateway.cli.main import main
from gateway.service import Service
from store.db import db
from store.models import Incident
from tests.conftest import free_port, wait_for

TOKEN = "demo-token-for-the-test"


@pytest.fixture
def running(store, monkeypatch):
    monkeypatch.setenv("INLET_ALERTMANAGER_TOKEN", TOKEN)
    sections = dict(
        web={"host": "127.0.0.1", "port": free_port()},
        smtp={"host": "127.0.0.1", "port": free_port()},
        address=[
            {"address": "support@example.org", "group": "service-desk"},
            {"address": "security@example.org", "group": "security", "security": True},
        ],
        integration=[{"name": "alertmanager", "kind": "alertmanager", "token_env": "INLET_ALERTMANAGER_TOKEN"}],
    )
    path = store.write_config(**sections)
    service = Service(store.config(**sections), roles={"web", "smtp", "worker"})
    service.start()
    yield path
    service.stop()
    db.connect(reuse_if_open=True)


def test_demo_populates_the_queue_through_the_real_intake(running, capsys):
    assert main(["-c", str(running), "demo"]) == 0
    out = capsys.readouterr().out
    assert out.count("250 accepted") == 4 and "202 accepted" in out

    def populated():
        with db.connection_context():
            return Incident.select().count() == 5 and list(Incident.select().order_by(Incident.number))

    incidents = wait_for(populated, timeout=20, message="five incidents from the demo")
    by_title = {i.title: i for i in incidents}
    assert by_title["Suspicious email asking for my password"].security
    assert by_title["Disk /var on db-1.example.org:9100 is 95 % full"].signal_count == 2  # one group, one incident


def test_demo_says_when_nothing_listens(store, capsys):
    path = store.write_config(smtp={"port": free_port()}, address=[{"address": "support@example.org"}])
    assert main(["-c", str(path), "demo"]) == 1
    err = capsys.readouterr().err
    assert "nothing was accepted: is `inlet serve` running" in err
