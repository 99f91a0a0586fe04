"""A real Prometheus Alertmanager fires into Inlet over its webhook receiver, on both databases."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
import requests

from gateway.service import Service
from store.db import db
from store.models import PENDING, Inbound, Incident
from tests.conftest import free_port, wait_for

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
TOKEN = "am-t0ken-for-tests"

CONFIG = """\
global:
  resolve_timeout: 1m
route:
  receiver: inlet
  group_by: ["alertname"]
  group_wait: 200ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: inlet
    webhook_configs:
      - url: "{url}"
        send_resolved: true
        http_config:
          authorization:
            credentials: "{token}"
"""


@pytest.fixture
def inlet(store, monkeypatch):
    monkeypatch.setenv("AM_TOKEN", TOKEN)
    config = store.config(integration=[{"name": "prometheus", "kind": "alertmanager", "token_env": "AM_TOKEN"}])
    db.close()
    service = Service(config, roles={"web", "worker"})
    service.start()
    yield service
    service.stop()


@pytest.fixture
def alertmanager(inlet, tmp_path):
    web = next(c for c in inlet.components if c.name == "web")
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG.format(url=f"http://127.0.0.1:{web.port}/hooks/prometheus", token=TOKEN))
    port = free_port()
    log = (tmp_path / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready():
        if process.poll() is not None:
            raise AssertionError(f"alertmanager exited: {(tmp_path / 'alertmanager.log').read_text()[-2000:]}")
        try:
            return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(ready, timeout=20, message="alertmanager to be ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def post_alerts(url, alerts):
    answer = requests.post(f"{url}/api/v2/alerts", json=alerts, timeout=5)
    assert answer.status_code == 200, answer.text


def alert(name, instance, *, resolved=False):
    now = datetime.now(UTC)
    return {
        "labels": {"alertname": name, "instance": instance, "severity": "critical"},
        "annotations": {"summary": f"{name} on {instance}"},
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
        "endsAt": (now - timedelta(seconds=1) if resolved else now + timedelta(hours=1)).isoformat(),
        "generatorURL": "http://prometheus.example.org/graph",
    }


def incidents():
    return list(Incident.select().where(Incident.integration == "prometheus").order_by(Incident.title))


def applied():
    return Inbound.select().count() > 0 and Inbound.select().where(Inbound.status == PENDING).count() == 0


def test_alertmanager_groups_fire_into_one_incident_each_and_resolve(inlet, alertmanager):
    post_alerts(
        alertmanager,
        [alert("DiskFull", "db-1"), alert("DiskFull", "db-2"), alert("NodeDown", "web-1")],
    )

    def two_incidents_with_all_alerts():
        found = incidents()
        return applied() and len(found) == 2 and sum(i.signal_count for i in found) >= 3 and found

    disk, node = wait_for(two_incidents_with_all_alerts, timeout=30, message="two incidents from alertmanager")
    assert disk.title.startswith("DiskFull on db-") and node.title == "NodeDown on web-1"
    assert (disk.priority, disk.status) == ("P1", "new")
    assert Inbound.select().where(Inbound.status == "processed").count() >= 2

    post_alerts(alertmanager, [alert("DiskFull", "db-1", resolved=True), alert("DiskFull", "db-2", resolved=True)])

    def disk_resolved():
        return Incident.get_by_id(disk.id).status == "resolved"

    wait_for(disk_resolved, timeout=30, message="alertmanager to send the resolved group")
    disk = Incident.get_by_id(disk.id)
    assert disk.resolution_code == "auto-recovered"
    assert Incident.get_by_id(node.id).status == "new"
    assert len(incidents()) == 2
