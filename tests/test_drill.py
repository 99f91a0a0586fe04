"""`inlet drill` against a running Service: inject, follow through allocation, escalation and hand-off, clean up."""

from __future__ import annotations

import pytest

from gateway.cli.run_drill import run_drill
from gateway.service import Service
from store.db import db
from store.models import Inbound, Incident, Notification, Timer
from tests.conftest import free_port

GROUPS = [
    {"name": "service-desk", "escalation": "default", "channels": ["json://sd/"]},
    {"name": "network", "escalation": "default"},
    {"name": "security"},  # no escalation policy: the drill's escalation step must fail
]
POLICY = [{"name": "default", "steps": [{"after": "15m", "when": "unacknowledged", "notify": ["json://oncall/"]}]}]


DRILL = [{"name": "drill", "kind": "drill", "token_env": "INLET_DRILL_TOKEN"}]


@pytest.fixture(autouse=True)
def drill_token(monkeypatch):
    monkeypatch.setenv("INLET_DRILL_TOKEN", "drill-token-for-tests")


@pytest.fixture
def running(store):
    def start(**extra):
        config = store.config(
            group=GROUPS, escalation=POLICY, integration=DRILL, web={"host": "127.0.0.1", "port": free_port()}, **extra
        )
        service = Service(config, roles={"web", "worker", "timers"})
        service.start()
        started.append(service)
        return config

    started = []
    yield start
    for service in started:
        service.stop()
    db.connect(reuse_if_open=True)


@pytest.mark.parametrize("procedure", ["standard", "major", "security"])
def test_drill_passes_every_step_and_cleans_up(running, procedure):
    config = running(stakeholder=[{"name": "board", "notify": ["json://127.0.0.1:9/"], "procedures": ["major"]}])
    lines = []
    group = "network" if procedure == "security" else None
    results = run_drill(config, procedure=procedure, group=group, timeout=15, report=lines.append)
    assert [r.name for r in results] == [
        "inject", "register", "allocate", "schedule escalation", "first escalation step", "notification hand-off",
        "clean up",
    ]  # fmt: skip
    assert all(r.ok for r in results), "\n".join(lines)
    assert lines[-1].startswith("PASS  drill") and "7/7 steps" in lines[-1]
    handoff = next(r for r in results if r.name == "notification hand-off").detail
    assert "escalation/escalation" in handoff
    assert ("stakeholder/major_declared" in handoff) == (procedure == "major")
    with db.connection_context():
        assert Incident.select().count() == 0 and Inbound.select().count() == 0
        assert Timer.select().count() == 0 and Notification.select().count() == 0


def test_a_kept_drill_incident_is_flagged_drill(running):
    config = running()
    results = run_drill(config, timeout=15, keep=True, report=lambda line: None)
    assert all(r.ok for r in results)
    with db.connection_context():
        incident = Incident.get()
        assert incident.drill and incident.title.startswith("[DRILL ")
        assert Timer.get(Timer.incident == incident).status == "fired"


def test_drill_fails_visibly_when_a_group_has_no_escalation(running):
    config = running()
    lines = []
    results = run_drill(config, group="security", timeout=15, report=lines.append)
    failed = [r for r in results if not r.ok]
    assert [r.name for r in failed] == ["schedule escalation", "notification hand-off"]
    assert "no escalation timer" in failed[0].detail
    assert lines[-1].startswith("FAIL  drill")
    assert results[-1].name == "clean up" and results[-1].ok


def test_drill_fails_when_nothing_processes_the_report(store):
    config = store.config(group=GROUPS, escalation=POLICY, integration=DRILL, web={"port": free_port()})
    service = Service(config, roles={"web"})  # intake, but no pipeline worker
    service.start()
    try:
        results = run_drill(config, timeout=0.3, report=lambda line: None)
    finally:
        service.stop()
        db.connect(reuse_if_open=True)
    assert [(r.name, r.ok) for r in results] == [("inject", True), ("register", False)]
    assert "nothing after" in results[-1].detail


def test_inlet_drill_command_exit_code(store, capsys, monkeypatch):
    from gateway.cli.main import main

    port = free_port()  # nothing listens there
    path = store.write_config(group=GROUPS, escalation=POLICY, integration=DRILL, web={"port": port})
    assert main(["-c", str(path), "drill", "--timeout", "0.3"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  inject" in out and f"127.0.0.1:{port}/hooks/drill unreachable" in out and "FAIL  drill" in out
    monkeypatch.delenv("INLET_DRILL_TOKEN")
    assert main(["-c", str(path), "drill", "--timeout", "0.3"]) == 1
    assert "set INLET_DRILL_TOKEN" in capsys.readouterr().out
    without = store.write_config(group=GROUPS, escalation=POLICY)
    assert main(["-c", str(without), "drill", "--timeout", "0.3"]) == 1
    assert "no [[integration]] of kind 'drill'" in capsys.readouterr().out
    assert main(["-c", str(path), "drill", "--group", "nope"]) == 1
    assert "no group 'nope'" in capsys.readouterr().err
