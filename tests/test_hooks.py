"""Webhook intake over real HTTP: Inlet's Service (waitress + pipeline worker) on loopback, both databases."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from gateway.core.clock import FixedClock
from gateway.service import Service
from store.db import db
from store.models import PENDING, CorrelationKey, Event, Inbound, Incident
from tests.conftest import wait_for

DATA = Path(__file__).parent / "data" / "webhooks"
TOKEN, SECRET, ROUTING_KEY = "t0ken-for-tests", "s3cret-for-tests", "R0UTINGKEY0000000000000000000000"

INTEGRATIONS = [
    {"name": "am", "kind": "alertmanager", "token_env": "HOOK_TOKEN", "group": "network"},
    {
        "name": "grafana",
        "kind": "grafana",
        "auth": "hmac",
        "secret_env": "HOOK_SECRET",
        "timestamp_header": "X-Grafana-Alerting-Signature-Timestamp",
    },
    {
        "name": "gh",
        "kind": "generic",
        "auth": "hmac",
        "secret_env": "HOOK_SECRET",
        "signature_header": "X-Hub-Signature-256",
        "signature_style": "sha256=",
    },
    {"name": "pd", "kind": "pagerduty", "auth": "routing_key", "routing_key_env": "HOOK_ROUTING_KEY"},
    {"name": "pdb", "kind": "pagerduty", "token_env": "HOOK_TOKEN"},
    {
        "name": "gen",
        "kind": "generic",
        "token_env": "HOOK_TOKEN",
        "mapping": {"title": "check.name", "dedup_key": "check.id", "status": "state"},
        "severity_map": {"page": ["high", "high"]},
        "category": "monitoring",
        "service": "billing",
    },
    {"name": "plain", "kind": "generic", "token_env": "HOOK_TOKEN", "resolve_when": "any"},
    {"name": "limited", "kind": "generic", "token_env": "HOOK_TOKEN", "rate_limit": 3, "rate_window": "1h"},
    {"name": "grouped", "kind": "alertmanager", "token_env": "HOOK_TOKEN", "group_by": ["alertname", "cluster"]},
    {"name": "flappy", "kind": "generic", "token_env": "HOOK_TOKEN", "flap_threshold": 2, "reopen_window": "10m"},
    {"name": "unset", "kind": "generic", "token_env": "HOOK_TOKEN_NOT_SET"},
]
MAINTENANCE = [
    {
        "name": "db work",
        "start": "2026-01-05T08:00:00+00:00",
        "end": "2026-01-05T12:00:00+00:00",
        "integrations": ["plain"],
        "labels": {"cluster": "db"},
    }
]


class Inlet:
    """A running Service and an HTTP client for it."""

    def __init__(self, service: Service, clock: FixedClock):
        self.service, self.clock = service, clock
        web = next(c for c in service.components if c.name == "web")
        self.url = f"http://127.0.0.1:{web.port}"
        self.http = requests.Session()

    def post(self, name, body, *, token=TOKEN, headers=None, raw: bytes | None = None):
        data = raw if raw is not None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        if token:
            sent["Authorization"] = f"Bearer {token}"
        return self.http.post(f"{self.url}/hooks/{name}", data=data, headers=sent, timeout=30)

    def settled(self, timeout=20.0):
        """Wait until the pipeline has taken every stored request."""
        wait_for(
            lambda: Inbound.select().where(Inbound.status == PENDING).count() == 0,
            timeout=timeout,
            message="the pipeline to apply every inbound",
        )

    def incidents(self, integration):
        return list(Incident.select().where(Incident.integration == integration).order_by(Incident.id))


@pytest.fixture
def inlet(store, monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    monkeypatch.setenv("HOOK_ROUTING_KEY", ROUTING_KEY)
    monkeypatch.delenv("HOOK_TOKEN_NOT_SET", raising=False)
    config = store.config(integration=INTEGRATIONS, maintenance=MAINTENANCE)
    clock = FixedClock()
    db.close()
    service = Service(config, roles={"web", "worker"}, clock=clock)
    service.start()
    running = Inlet(service, clock)
    yield running
    running.http.close()
    service.stop()


def load(name):
    return json.loads((DATA / name).read_text())


def generic(title="Disk full", key="disk-1", status="firing", **more):
    return {"title": title, "dedup_key": key, "status": status, **more}


# ---------------------------------------------------------------- each kind, from the tools' documentation


def test_alertmanager_group_opens_one_incident_and_resolves_when_all_resolved(inlet):
    firing = load("alertmanager_firing.json")
    answer = inlet.post("am", firing)
    assert answer.status_code == 202 and isinstance(answer.json()["inbound_id"], int)
    inlet.settled()
    (incident,) = inlet.incidents("am")
    assert (incident.status, incident.group, incident.signal_count) == ("new", "network", 2)
    states = {k.value: k.state for k in incident.keys if k.kind == "fingerprint"}
    assert states == {"am:5e9a1c0d27b34f81": "firing", "am:a07f3e66c18d2b95": "firing"}

    one_resolved = json.loads(json.dumps(firing))
    one_resolved["alerts"][0]["status"] = "resolved"
    assert inlet.post("am", one_resolved).status_code == 202
    inlet.settled()
    incident = Incident.get_by_id(incident.id)
    assert incident.status == "new"  # one of two still firing

    for alert in one_resolved["alerts"]:
        alert["status"] = "resolved"
    one_resolved["status"] = "resolved"
    assert inlet.post("am", one_resolved).status_code == 202
    inlet.settled()
    incident = Incident.get_by_id(incident.id)
    assert (incident.status, incident.resolution_code) == ("resolved", "auto-recovered")
    types = [e.type for e in incident.events.order_by(Event.id)]
    assert types == ["created", "note", "resolved"]  # one entry per state change


def test_grafana_hmac_with_timestamp(inlet):
    body = json.dumps(load("grafana_firing.json")).encode()
    stamp = str(int(inlet.clock.now().timestamp()))
    good = hmac.new(SECRET.encode(), stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    headers = {"X-Grafana-Alerting-Signature-Timestamp": stamp}
    sig = "X-Grafana-Alerting-Signature"
    assert inlet.post("grafana", None, raw=body, token=None, headers=headers).status_code == 401
    wrong = inlet.post("grafana", None, raw=body, token=None, headers={**headers, sig: "00" * 32})
    assert wrong.status_code == 403
    old = str(int(inlet.clock.now().timestamp()) - 3600)
    replayed_sig = hmac.new(SECRET.encode(), old.encode() + b":" + body, hashlib.sha256).hexdigest()
    replayed = {"X-Grafana-Alerting-Signature-Timestamp": old, sig: replayed_sig}
    assert inlet.post("grafana", None, raw=body, token=None, headers=replayed).status_code == 403
    assert inlet.post("grafana", None, raw=body, token=None, headers={**headers, sig: good}).status_code == 202
    inlet.settled()
    (incident,) = inlet.incidents("grafana")
    assert incident.signal_count == 2 and incident.source == "grafana"

    resolved = load("grafana_firing.json")
    resolved["status"] = "resolved"
    for alert in resolved["alerts"]:
        alert["status"] = "resolved"
    resolved = json.dumps(resolved).encode()
    good = hmac.new(SECRET.encode(), stamp.encode() + b":" + resolved, hashlib.sha256).hexdigest()
    assert inlet.post("grafana", None, raw=resolved, token=None, headers={**headers, sig: good}).status_code == 202
    unrelated = json.dumps(load("grafana_resolved.json")).encode()  # a recovery with no open incident: ignored
    good = hmac.new(SECRET.encode(), stamp.encode() + b":" + unrelated, hashlib.sha256).hexdigest()
    assert inlet.post("grafana", None, raw=unrelated, token=None, headers={**headers, sig: good}).status_code == 202
    inlet.settled()
    assert Incident.get_by_id(incident.id).status == "resolved"
    assert len(inlet.incidents("grafana")) == 1


def test_github_style_signature(inlet):
    body = json.dumps(generic()).encode()
    good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert inlet.post("gh", None, raw=body, token=None).status_code == 401
    bad = inlet.post("gh", None, raw=body, token=None, headers={"X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert bad.status_code == 403
    assert inlet.post("gh", None, raw=body, token=None, headers={"X-Hub-Signature-256": good}).status_code == 202


def test_pagerduty_trigger_acknowledge_resolve_by_routing_key(inlet):
    trigger = load("pagerduty_trigger_minimal.json")
    trigger["routing_key"] = ROUTING_KEY
    trigger.pop("dedup_key", None)
    answer = inlet.post("pd", trigger, token=None)
    assert answer.status_code == 202
    reply = answer.json()
    assert (reply["status"], reply["message"]) == ("success", "Event processed")
    key = reply["dedup_key"]
    assert key and len(key) >= 16
    again = inlet.post("pd", trigger, token=None)  # re-delivery: same answer, same generated key
    assert again.json()["dedup_key"] == key
    inlet.settled()
    (incident,) = inlet.incidents("pd")
    assert incident.signal_count == 1

    ack = {"routing_key": ROUTING_KEY, "event_action": "acknowledge", "dedup_key": key}
    assert inlet.post("pd", ack, token=None).json()["dedup_key"] == key
    inlet.settled()
    assert Incident.get_by_id(incident.id).status == "acknowledged"
    resolve = {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": key}
    assert inlet.post("pd", resolve, token=None).status_code == 202
    inlet.settled()
    incident = Incident.get_by_id(incident.id)
    assert (incident.status, incident.resolution_code) == ("resolved", "auto-recovered")

    missing = {k: v for k, v in trigger.items() if k != "routing_key"}
    assert inlet.post("pd", missing, token=None).status_code == 401
    assert inlet.post("pd", {**trigger, "routing_key": "X" * 32}, token=None).status_code == 403


def test_pagerduty_documented_payloads_with_bearer(inlet):
    answer = inlet.post("pdb", load("pagerduty_trigger.json"))
    assert answer.status_code == 202
    assert answer.json()["dedup_key"] == load("pagerduty_trigger.json")["dedup_key"]
    inlet.settled()
    assert inlet.post("pdb", load("pagerduty_acknowledge.json")).status_code == 202
    assert inlet.post("pdb", load("pagerduty_resolve.json")).status_code == 202
    inlet.settled()
    (incident,) = inlet.incidents("pdb")
    assert incident.status == "resolved"


def test_generic_mapping_and_defaults(inlet):
    body = {"check": {"name": "Payments API down", "id": 42}, "state": "alerting", "severity": "page"}
    assert inlet.post("gen", body).status_code == 202
    inlet.settled()
    (incident,) = inlet.incidents("gen")
    assert (incident.title, incident.impact, incident.urgency, incident.priority) == (
        "Payments API down",
        "high",
        "high",
        "P1",
    )
    assert (incident.category, incident.service, incident.group) == ("monitoring", "billing", "service-desk")
    assert inlet.post("gen", {**body, "state": "ok"}).status_code == 202
    inlet.settled()
    assert Incident.get_by_id(incident.id).status == "resolved"


# ---------------------------------------------------------------- refusals


def test_authentication_failures(inlet):
    assert inlet.post("am", load("alertmanager_minimal.json"), token=None).status_code == 401
    wrong = inlet.post("am", load("alertmanager_minimal.json"), token="nope")
    assert (wrong.status_code, wrong.json()["error"]) == (403, "wrong token")
    unset = inlet.post("unset", generic())
    assert unset.status_code == 503 and "not configured" in unset.json()["error"]
    assert inlet.post("nobody", generic()).status_code == 404
    assert Inbound.select().count() == 0


def test_answers_carry_security_headers_and_no_session_cookie(inlet):
    for response in (inlet.post("am", load("alertmanager_minimal.json")), inlet.post("am", {}, token="nope")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
        assert "Set-Cookie" not in response.headers  # machines get no session


def test_bad_payload_is_400_naming_the_field_and_not_stored(inlet):
    answer = inlet.post("am", {"alerts": [{"status": "fired", "labels": {}}]})
    assert answer.status_code == 400
    assert answer.json()["field"] == "alerts[0].status"
    answer = inlet.post("am", None, raw=b'{"alerts": [')
    assert answer.status_code == 400 and "JSON" in answer.json()["error"]
    assert Inbound.select().count() == 0


def test_oversize_and_content_type(inlet):
    big = {"title": "x", "message": "y" * 1_100_000}
    answer = inlet.post("plain", big)
    assert answer.status_code == 413 and "larger than" in answer.json()["error"]
    chunks = iter([b'{"title": "x", "message": "', b"y" * 1_100_000, b'"}'])  # chunked: no Content-Length
    chunked = inlet.http.post(
        f"{inlet.url}/hooks/plain",
        data=chunks,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert chunked.status_code == 413 and "larger than" in chunked.json()["error"]
    text = inlet.post("plain", None, raw=b"title=x", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415 and "application/json" in text.json()["error"]
    assert Inbound.select().count() == 0


def test_rate_limit(inlet):
    codes = [inlet.post("limited", generic(key=f"k{i}")).status_code for i in range(3)]
    assert codes == [202, 202, 202]
    over = inlet.post("limited", generic(key="k4"))
    assert over.status_code == 429
    assert int(over.headers["Retry-After"]) >= 1 and "rate limit" in over.json()["error"]
    inlet.clock.advance(minutes=20)  # one request per 20 minutes is back
    assert inlet.post("limited", generic(key="k5")).status_code == 202
    assert inlet.post("plain", generic()).status_code == 202  # other integrations are not limited by it


def test_store_unavailable_is_503_with_retry_after(inlet):
    inlet.service.writer.stop()
    answer = inlet.post("plain", generic())
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert "cannot store" in answer.json()["error"]


# ---------------------------------------------------------------- idempotency, storm


def test_idempotent_redelivery(inlet):
    first = inlet.post("plain", generic())
    again = inlet.post("plain", generic())
    assert again.json() == first.json()
    keyed = inlet.post("plain", generic(title="other"), headers={"Idempotency-Key": "abc"})
    keyed_again = inlet.post("plain", generic(title="other, re-sent"), headers={"Idempotency-Key": "abc"})
    assert keyed_again.json() == keyed.json() != first.json()
    inlet.settled()
    assert Inbound.select().count() == 2
    (incident,) = inlet.incidents("plain")
    assert incident.signal_count == 2  # the same dedup key: one incident, two signals
    inlet.clock.advance(minutes=11)  # after the idempotency window a re-delivery counts again
    assert inlet.post("plain", generic()).json() != first.json()
    inlet.settled()
    assert Incident.get_by_id(incident.id).signal_count == 3


def test_storm_of_repeats_is_one_incident(inlet):
    for i in range(500):
        assert inlet.post("plain", generic(message=f"reading {i}")).status_code == 202
    inlet.settled(timeout=60)
    (incident,) = inlet.incidents("plain")
    assert incident.signal_count == 500
    assert [e.type for e in incident.events] == ["created"]


# ---------------------------------------------------------------- grouping, flapping, maintenance


def test_grouping_by_labels(inlet):
    def alert(instance, cluster, status="firing"):
        return {
            "status": "firing",
            "alerts": [{"status": status, "labels": {"alertname": "Down", "cluster": cluster, "instance": instance}}],
        }

    for instance in ("a", "b", "c"):
        assert inlet.post("grouped", alert(instance, "eu")).status_code == 202
    assert inlet.post("grouped", alert("a", "us")).status_code == 202
    inlet.settled()
    eu, us = inlet.incidents("grouped")
    assert (eu.signal_count, us.signal_count) == (3, 1)
    keys = CorrelationKey.select().where(CorrelationKey.incident == eu)
    assert keys.where(CorrelationKey.kind == "fingerprint").count() == 3
    for instance in ("a", "b"):
        inlet.post("grouped", alert(instance, "eu", "resolved"))
    inlet.settled()
    assert Incident.get_by_id(eu.id).status == "new"
    inlet.post("grouped", alert("c", "eu", "resolved"))
    inlet.settled()
    assert Incident.get_by_id(eu.id).status == "resolved"
    assert Incident.get_by_id(us.id).status == "new"


def test_flapping_reopens_the_same_incident_and_stops_paging(inlet):
    pages = []
    inlet.service.lifecycle.hooks.append(lambda change: pages.append((change.action, change.context.get("page", True))))
    for cycle in range(4):
        inlet.post("flappy", generic(message=f"fire {cycle}"))
        inlet.settled()
        inlet.clock.advance(minutes=1)
        inlet.post("flappy", generic(status="resolved", message=f"ok {cycle}"))
        inlet.settled()
        inlet.clock.advance(minutes=1)
    (incident,) = inlet.incidents("flappy")
    assert (incident.flap_count, incident.flapping, incident.reopen_count) == (3, True, 3)
    reopens = [page for action, page in pages if action == "reopen"]
    assert reopens == [True, True, False]  # the third flap is more than the threshold of 2
    inlet.clock.advance(minutes=30)  # beyond the reopen window: a new problem, a new incident
    inlet.post("flappy", generic(message="much later"))
    inlet.settled()
    assert len(inlet.incidents("flappy")) == 2


def test_maintenance_window_records_without_paging(inlet):
    pages = []
    inlet.service.lifecycle.hooks.append(lambda change: pages.append((change.action, change.context.get("page", True))))
    inlet.post("plain", generic(key="db-1", labels={"cluster": "db"}))
    inlet.post("plain", generic(key="web-1", labels={"cluster": "web"}))
    inlet.settled()
    db_incident, web_incident = inlet.incidents("plain")
    assert pages == [("create", False), ("create", True)]
    inbound = Inbound.get(Inbound.incident == db_incident)
    assert any(d["step"] == "maintenance" and d["window"] == "db work" for d in inbound.decisions)
    inlet.post("plain", generic(key="db-1", status="resolved", labels={"cluster": "db"}))
    inlet.settled()
    assert Incident.get_by_id(db_incident.id).status == "resolved"  # resolves pass
    assert pages[-1] == ("resolve", True)
    inlet.clock.advance(timedelta(hours=4))  # after the window: paging again
    inlet.post("plain", generic(key="db-2", labels={"cluster": "db"}))
    inlet.settled()
    assert pages[-1] == ("create", True)


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "x", "kind": "generic", "token_env": "T", "group": "nope"}, "group: no [[group]] named 'nope'"),
        ({"name": "x", "kind": "generic"}, "token_env: auth = 'bearer' needs token_env"),
        ({"name": "x", "kind": "generic", "auth": "hmac"}, "secret_env: auth = 'hmac' needs secret_env"),
        ({"name": "x", "kind": "generic", "auth": "routing_key", "routing_key_env": "K"}, "for kind = 'pagerduty'"),
        ({"name": "x/y", "kind": "generic", "token_env": "T"}, "name: must be a plain name"),
        ({"name": "x", "kind": "nagios", "token_env": "T"}, "kind: must be one of alertmanager"),
        ({"name": "x", "kind": "generic", "token_env": "T", "mapping": {"titel": "a"}}, "unknown field 'titel'"),
        ({"name": "x", "kind": "am", "token_env": "T", "severity_map": {"p": ["x", "y"]}}, "kind: must be one of"),
        ({"name": "x", "kind": "generic", "token_env": "T", "severity_map": {"p": ["x", "y"]}}, "'p' must be"),
        (
            {"name": "x", "kind": "grafana", "token_env": "T", "mapping": {"title": "a"}},
            "for kind = 'generic' and the tool kinds only",
        ),
    ],
)
def test_integration_config_errors(tmp_path, entry, message):
    from gateway.config.loader import config_from_dict
    from gateway.core.errors import ConfigError
    from tests.conftest import base_config_dict

    with pytest.raises(ConfigError) as caught:
        config_from_dict(base_config_dict("sqlite:///x.db", integration=[entry]), "c.toml")
    assert message in str(caught.value) and "[[integration]]" in str(caught.value)


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"start": "2026-01-05T08:00:00", "end": "2026-01-05T09:00:00+00:00"}, "start: not an ISO 8601 time"),
        ({"start": "2026-01-05T08:00:00Z", "end": "2026-01-05T07:00:00Z"}, "end: must be after start"),
        ({"start": "2026-01-05T08:00:00Z", "end": "2026-01-05T09:00:00Z", "integrations": ["x"]}, "no [[integr"),
    ],
)
def test_maintenance_config_errors(window, message):
    from gateway.config.loader import config_from_dict
    from gateway.core.errors import ConfigError
    from tests.conftest import base_config_dict

    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(base_config_dict("sqlite:///x.db", maintenance=[{"name": "m", **window}]), "c.toml")


def test_example_config_loads_without_its_secrets(monkeypatch):
    from gateway.config.loader import load_config
    from tests.conftest import ROOT

    monkeypatch.delenv("INLET_ALERTMANAGER_TOKEN", raising=False)
    config = load_config(ROOT / "config.example.toml")
    assert [i.name for i in config.integration] == ["alertmanager", "drill"]


def test_missing_secret_is_logged_once(inlet, caplog):
    from gateway.config import integrations

    integrations._warned.clear()  # other tests of this process may have warned already
    with caplog.at_level("WARNING", logger="inlet.hooks"):
        for _ in range(3):
            assert inlet.post("unset", generic()).status_code == 503
    warnings = [r.getMessage() for r in caplog.records if "HOOK_TOKEN_NOT_SET" in r.getMessage()]
    assert len(warnings) == 1


# ---------------------------------------------------------------- trust boundary: credentials and bodies


def test_routing_key_that_is_not_plain_text_is_refused(inlet):
    """A lone surrogate cannot be encoded: checking it must deny, never let the request through."""
    trigger = load("pagerduty_trigger_minimal.json")
    for key in ("\ud800", ROUTING_KEY[:-1] + "\udcff", "\x00" + ROUTING_KEY):
        raw = json.dumps({**trigger, "routing_key": key}).encode()  # ensure_ascii: "\ud800" escapes
        answer = inlet.post("pd", None, raw=raw, token=None)
        assert answer.status_code in (401, 403), (key, answer.status_code, answer.text)
        assert answer.json()["error"]
    for key in (42, ["x"], {"k": ROUTING_KEY}, None):
        answer = inlet.post("pd", {**trigger, "routing_key": key}, token=None)
        assert answer.status_code in (401, 403) and answer.json()["error"]
    assert Inbound.select().count() == 0


def test_hmac_timestamp_must_be_a_finite_number(inlet):
    body = json.dumps(load("grafana_firing.json")).encode()
    sig_header, stamp_header = "X-Grafana-Alerting-Signature", "X-Grafana-Alerting-Signature-Timestamp"
    now = int(inlet.clock.now().timestamp())
    for stamp in ("nan", "NaN", "inf", "-inf", "1e999", f"{now}_0", "\u0661\u0662", "-1", f"{now}e0", "0x10"):
        sent = stamp.encode("utf-8").decode("latin-1")  # as the header travels
        good = hmac.new(SECRET.encode(), sent.encode("latin-1") + b":" + body, hashlib.sha256).hexdigest()
        headers = {stamp_header: sent, sig_header: good}
        answer = inlet.post("grafana", None, raw=body, token=None, headers=headers)
        assert answer.status_code in (401, 403), (stamp, answer.status_code)
    assert Inbound.select().count() == 0


def test_signature_and_token_headers_with_odd_bytes_are_denied(inlet):
    body = json.dumps(generic()).encode()
    for value in (b"sha256=\xff\xfe", b"\xed\xa0\x80", b"sha256=" + b"0" * 64 + b"\x85"):
        answer = inlet.post("gh", None, raw=body, token=None, headers={"X-Hub-Signature-256": value})
        assert answer.status_code == 403
    answer = inlet.post("plain", None, raw=body, token=None, headers={"Authorization": b"Bearer \xed\xa0\x80"})
    assert answer.status_code == 403
    assert Inbound.select().count() == 0


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"title": "\\ud800", "dedup_key": "k"}', "title"),
        (b'{"title": "ok", "labels": {"\\udfff": "x"}}', "labels"),
        (b'{"title": "ok", "details": [1, {"a": "x\\u0000y"}]}', "details[1].a"),
        (b'{"title": NaN}', ""),
        (b'{"title": "ok", "n": 1e999}', ""),
        (b'{"title": "ok", "n": -Infinity}', ""),
        (b'{"title": "ok", "n": ' + b"9" * 5000 + b"}", ""),
        (b"[" * 100_000 + b"]" * 100_000, ""),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, ""),
        (b'{"title": "ok", "deep": ' + b"[" * 200 + b"]" * 200 + b"}", "deep"),
        (b'{"title": "\xed\xa0\x80"}', ""),  # a surrogate encoded as UTF-8 bytes: not UTF-8
    ],
)
def test_body_that_is_not_plain_json_text_is_400_with_a_json_answer(inlet, raw, field):
    keyed = raw.replace(b'{"title"', b'{"routing_key": "' + ROUTING_KEY.encode() + b'", "title"', 1)
    for name, token, body in (("plain", TOKEN, raw), ("pd", None, keyed)):
        answer = inlet.post(name, None, raw=body, token=token)
        assert answer.status_code == 400, (name, answer.status_code, answer.text[:200])
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.json()["error"] and answer.json()["field"].startswith(field)
    assert Inbound.select().count() == 0


def test_unauthenticated_bad_body_is_refused_for_the_credential_first(inlet):
    """Bearer and HMAC are checked before the body is read: a stranger learns nothing about parsing."""
    deep = b"[" * 100_000 + b"]" * 100_000
    assert inlet.post("plain", None, raw=deep, token=None).status_code == 401
    assert inlet.post("plain", None, raw=deep, token="nope").status_code == 403
