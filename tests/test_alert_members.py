"""Alert incidents show their alerts: real Alertmanager/Grafana webhooks over HTTP into a running Service,
the incident page read over HTTP by a signed-in agent; on both databases."""

from __future__ import annotations

import copy
import html
import json
import re
from pathlib import Path

import pytest
import requests

from gateway import accounts
from gateway.core.clock import FixedClock
from gateway.service import Service
from store.db import db
from store.models import PENDING, Alert, Inbound, Incident
from tests.conftest import wait_for

DATA = Path(__file__).parent / "data" / "webhooks"
TOKEN, SECRET = "t0ken-for-alert-tests", "s3cret-for-alert-tests"
AGENT, PASSWORD = "olga", "a long enough password"


class Inlet:
    def __init__(self, service: Service):
        self.service = service
        web = next(c for c in service.components if c.name == "web")
        self.url = f"http://127.0.0.1:{web.port}"
        self.http = requests.Session()

    def post(self, name: str, body: dict):
        answer = self.http.post(
            f"{self.url}/hooks/{name}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        wait_for(
            lambda: Inbound.select().where(Inbound.status == PENDING).count() == 0,
            timeout=20,
            message="the pipeline to apply every inbound",
        )
        return answer

    def agent(self) -> requests.Session:
        browser = requests.Session()
        token = re.search(r'name="csrf_token" value="([^"]+)"', browser.get(f"{self.url}/login").text).group(1)
        answer = browser.post(
            f"{self.url}/login", data={"name": AGENT, "password": PASSWORD, "csrf_token": token}, timeout=10
        )
        assert answer.ok and "/login" not in answer.url, answer.text
        return browser


@pytest.fixture
def inlet(store, monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    config = store.config(
        group=[{"name": "service-desk", "members": [AGENT]}, {"name": "storage", "members": [AGENT]}],
        integration=[
            {"name": "am", "kind": "alertmanager", "token_env": "HOOK_TOKEN", "group": "service-desk"},
            {
                "name": "apps",
                "kind": "alertmanager",
                "token_env": "HOOK_TOKEN",
                "service_label": "app",
                "service": "fallback-service",
            },
            {"name": "plain", "kind": "alertmanager", "token_env": "HOOK_TOKEN", "service": "fallback-service"},
            {"name": "graf", "kind": "grafana", "token_env": "HOOK_TOKEN"},
        ],
        rule=[
            {
                "name": "billing is payments",
                "labels": {"service": {"any": ["billing"]}},
                "service": "payments",
            },
            {"name": "network alerts", "labels": {"category": {"any": ["network"]}}, "category": "infrastructure"},
        ],
    )
    db.close()
    service = Service(config, roles={"web", "worker"}, clock=FixedClock())
    accounts.create_user(AGENT, "agent", PASSWORD, email="olga@example.org")
    service.start()
    running = Inlet(service)
    yield running
    running.http.close()
    service.stop()


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def alert(fingerprint: str, status: str = "firing", **labels) -> dict:
    return {
        "status": status,
        "labels": {"alertname": "DiskFillingUp", **labels},
        "annotations": {"summary": f"Disk {fingerprint} filling"},
        "startsAt": "2024-05-14T05:36:42Z",
        "endsAt": "2024-05-14T06:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": f"http://prometheus.example.org:9090/graph?g0.expr=disk&fp={fingerprint}",
        "fingerprint": fingerprint,
    }


def group(*alerts: dict, key: str = '{}:{alertname="DiskFillingUp"}') -> dict:
    return {"version": "4", "groupKey": key, "status": "firing", "receiver": "inlet", "alerts": list(alerts)}


def alert_rows(page: str) -> list[str]:
    section = re.search(r'<section class="alerts".*?</section>', page, re.S)
    assert section, "no Alerts section on the incident page"
    return re.findall(r'<tr class="alert alert-(?:firing|resolved)">.*?</tr>', section.group(0), re.S)


def test_alert_group_incident_lists_every_member_alert_with_its_state(inlet):
    firing = load("alertmanager_firing.json")
    hostile = alert("bad0000000000001", instance="db-3")
    hostile["generatorURL"] = "javascript:alert(1)"
    hostile["annotations"] = {
        "summary": "<script>alert(2)</script>",
        "description": "Filesystem / on db-3 is full",
        "runbook_url": "data:text/html,<b>x</b>",
    }
    firing["alerts"].append(hostile)
    inlet.post("am", firing)
    (incident,) = Incident.select().where(Incident.integration == "am")
    assert incident.signal_count == 3

    resolved = copy.deepcopy(firing)
    resolved["alerts"] = [firing["alerts"][1] | {"status": "resolved", "endsAt": "2024-05-14T09:17:30.5Z"}]
    inlet.post("am", resolved)

    page = inlet.agent().get(f"{inlet.url}/incidents/{incident.ref}").text
    rows = alert_rows(page)
    assert len(rows) == 3, rows  # every member, not only the first
    by_host = {re.search(r"instance=(db-\d)", row).group(1): row for row in rows}
    assert "firing" in by_host["db-1"] and "resolved" in by_host["db-2"] and "firing" in by_host["db-3"]
    assert rows[-1] is by_host["db-2"]  # firing first
    assert 'datetime="2024-05-14T05:31:12.418Z"' in by_host["db-1"]  # startsAt, +02:00 shown in UTC
    assert 'datetime="2024-05-14T09:17:30.500Z"' in by_host["db-2"]  # endsAt of the resolved one
    assert "<time" not in by_host["db-1"].split("</td>")[3]  # a firing alert has no end (Go's zero time)
    assert "mountpoint=/var" in by_host["db-1"]
    assert "Filesystem /var on db-1.example.org:9100 is 91.3% full and growing." in by_host["db-1"]
    assert "node-exporter-full" in by_host["db-1"]  # annotations beyond summary/description too
    source = html.escape(firing["alerts"][0]["generatorURL"], quote=True)
    assert f'<a href="{source}" rel="noopener noreferrer nofollow" target="_blank">source</a>' in by_host["db-1"]
    assert 'href="https://runbooks.example.org/storage/disk-filling-up"' in by_host["db-1"]
    # from outside: escaped text, and only http(s) URLs become links
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in by_host["db-3"] and "<script>" not in by_host["db-3"]
    assert "<a " not in by_host["db-3"] and "href" not in by_host["db-3"]


def test_repeats_write_nothing_and_a_refire_updates_the_alert(inlet):
    inlet.post("am", group(alert("aaaa000000000001", instance="a"), alert("aaaa000000000002", instance="b")))
    (incident,) = Incident.select().where(Incident.integration == "am")
    before = {a.fingerprint: a.updated_at for a in Alert.select()}
    inlet.service.clock.advance(minutes=5)
    inlet.post("am", group(alert("aaaa000000000001", instance="a"), alert("aaaa000000000002", instance="b")))
    assert {a.fingerprint: a.updated_at for a in Alert.select()} == before  # nothing changed: nothing written
    inlet.post("am", group(alert("aaaa000000000002", "resolved", instance="b")))
    states = {a.fingerprint: a.status for a in Alert.select().where(Alert.incident == incident)}
    assert states == {"am:aaaa000000000001": "firing", "am:aaaa000000000002": "resolved"}


def test_grafana_alerts_link_their_panel_and_dashboard(inlet):
    inlet.post("graf", load("grafana_firing.json"))
    (incident,) = Incident.select().where(Incident.integration == "graf")
    page = inlet.agent().get(f"{inlet.url}/incidents/{incident.ref}").text
    rows = alert_rows(page)
    payload = load("grafana_firing.json")
    assert len(rows) == len(payload["alerts"])
    first = payload["alerts"][0]
    shown = "".join(rows)
    for name, key in (("panel", "panelURL"), ("dashboard", "dashboardURL"), ("source", "generatorURL")):
        if first.get(key):
            assert f'href="{html.escape(first[key], quote=True)}"' in shown and f">{name}</a>" in shown


@pytest.mark.parametrize(
    ("integration", "labels", "service", "why"),
    [
        ("am", {"service": "storage"}, "storage", "label 'service'"),  # the label, by default `service`
        ("apps", {"app": "checkout", "service": "ignored"}, "checkout", "label 'app'"),  # the label it names
        ("apps", {"service": "ignored"}, "fallback-service", "source default"),  # no such label: its default
        ("plain", {"service": "storage"}, "storage", "label 'service'"),  # the label wins over the default
        ("am", {"service": "billing"}, "payments", "rule 'billing is payments'"),  # a rule wins over the label
        ("am", {}, "", None),
    ],
)
def test_an_alerts_service_label_becomes_the_incidents_service(inlet, integration, labels, service, why):
    inlet.post(integration, group(alert("cccc000000000001", **labels), key=f"{integration}:{sorted(labels.items())}"))
    (incident,) = Incident.select().where(Incident.integration == integration)
    assert incident.service == service
    decisions = Inbound.get(Inbound.incident == incident).decisions
    allocate = next(d for d in decisions if d.get("step") == "allocate")
    assert allocate["why"].get("service") == why


@pytest.mark.parametrize(
    ("labels", "category", "why"),
    [
        ({"category": "storage"}, "storage", "label 'category'"),  # the label, by default `category`
        ({"category": "network"}, "infrastructure", "rule 'network alerts'"),  # a rule wins over the label
        ({}, "", None),
    ],
)
def test_an_alerts_category_label_becomes_the_incidents_category(inlet, labels, category, why):
    inlet.post("am", group(alert("dddd000000000001", **labels), key=f"cat:{sorted(labels.items())}"))
    (incident,) = Incident.select().where(Incident.integration == "am")
    assert incident.category == category
    decisions = Inbound.get(Inbound.incident == incident).decisions
    allocate = next(d for d in decisions if d.get("step") == "allocate")
    assert allocate["why"].get("category") == why
