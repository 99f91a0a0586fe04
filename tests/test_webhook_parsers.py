"""Webhook parsers: Alertmanager, Grafana, PagerDuty Events v2, generic JSON.

Fixtures in tests/data/webhooks follow the shapes in each tool's documentation
(Alertmanager webhook_config, Grafana webhook contact point, PagerDuty Events API v2).
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.errors import ConfigError, ParseError
from parsers import alertmanager, generic, grafana, pagerduty
from parsers.generic import GenericOptions
from parsers.presets import PRESETS
from parsers.severity import DEFAULT_SEVERITY_MAP, severity_to_impact_urgency
from parsers.signal import ACKNOWLEDGED, FIRING, RESOLVED, Signal
from parsers.webhooks import KINDS, parse_webhook

DATA = Path(__file__).parent / "data" / "webhooks"


def load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


def error_of(parse, payload, options=None) -> str:
    with pytest.raises(ParseError) as caught:
        parse(payload, options)
    return str(caught.value)


# --- Alertmanager -------------------------------------------------------------------------------


def test_alertmanager_firing_gives_one_signal_per_alert():
    payload = load("alertmanager_firing")
    signals = alertmanager.parse(payload)

    assert [s.fingerprint for s in signals] == ["5e9a1c0d27b34f81", "a07f3e66c18d2b95"]
    first, second = signals
    assert first.source == "alertmanager"
    assert first.status == FIRING
    assert first.group_key == payload["groupKey"]
    assert first.title == "Filesystem /var on db-1 will be full within 24 hours"
    assert first.text.startswith("Filesystem /var on db-1.example.org:9100 is 91.3% full")
    assert "dashboard: node-exporter-full" in first.text
    assert first.severity == "warning"
    assert first.labels["mountpoint"] == "/var"
    assert first.links == (
        payload["alerts"][0]["generatorURL"],
        "https://runbooks.example.org/storage/disk-filling-up",
        "http://alertmanager.example.org:9093",
    )
    # nanoseconds are cut to microseconds; the offset is normalised to UTC
    assert first.occurred_at == datetime(2024, 5, 14, 5, 31, 12, 418530, tzinfo=UTC)
    assert first.details["endsAt"] is None
    assert first.details["receiver"] == "inlet"
    assert first.details["truncatedAlerts"] == 0
    assert first.details["externalURL"] == "http://alertmanager.example.org:9093"
    assert first.details["groupKey"] == payload["groupKey"]
    assert first.details["annotations"]["dashboard"] == "node-exporter-full"
    # no summary: the description is the title
    assert second.title == "Filesystem / on db-2.example.org:9100 is 88.0% full and growing."
    assert second.occurred_at == datetime(2024, 5, 14, 5, 36, 42, 900000, tzinfo=UTC)


def test_alertmanager_resolved_keeps_end_time_and_falls_back_to_alertname_on_instance():
    (signal,) = alertmanager.parse(load("alertmanager_resolved"))

    assert signal.status == RESOLVED
    assert signal.title == "InstanceDown on web-3:9100"
    assert signal.text == ""
    assert signal.severity == "critical"
    assert signal.details["endsAt"] == "2024-05-14T09:17:30.500000+00:00"


def test_alertmanager_minimal_alert_with_unknown_keys():
    (signal,) = alertmanager.parse(load("alertmanager_minimal"))

    assert signal.title == "Watchdog"
    assert signal.group_key is None
    assert signal.severity is None
    assert signal.links == ()
    assert signal.occurred_at is None
    assert re.fullmatch(r"[0-9a-f]{16}", signal.fingerprint)


def test_alertmanager_fingerprint_from_labels_is_stable_and_order_free():
    labels = {"alertname": "HighLoad", "instance": "a:9100", "job": "node"}
    reordered = dict(reversed(list(labels.items())))
    one = alertmanager.parse({"alerts": [{"status": "firing", "labels": labels}]})[0]
    two = alertmanager.parse({"alerts": [{"status": "resolved", "labels": reordered}]})[0]
    other = alertmanager.parse({"alerts": [{"status": "firing", "labels": {**labels, "job": "x"}}]})[0]

    assert one.fingerprint == two.fingerprint
    assert one.fingerprint != other.fingerprint


def test_alertmanager_title_without_alertname_uses_fingerprint():
    (signal,) = alertmanager.parse({"alerts": [{"status": "firing", "labels": {}, "fingerprint": "abc"}]})
    assert signal.title == "Alert abc"


def test_alertmanager_empty_alerts_list_gives_no_signals():
    assert alertmanager.parse({"version": "4", "alerts": []}) == []


def test_alertmanager_drops_links_that_are_not_http():
    payload = load("alertmanager_minimal")
    payload["externalURL"] = "javascript:alert(1)"
    payload["alerts"][0]["generatorURL"] = "file:///etc/passwd"
    payload["alerts"][0]["annotations"] = {"runbook_url": "https://runbooks.example.org/w"}
    (signal,) = alertmanager.parse(payload)
    assert signal.links == ("https://runbooks.example.org/w",)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("alerts"), "field 'alerts': required"),
        (lambda p: p.update(alerts={}), "field 'alerts': expected a list, got an object"),
        (lambda p: p["alerts"].__setitem__(1, "x"), "field 'alerts[1]': expected an object, got a string"),
        (lambda p: p["alerts"][1].pop("status"), "field 'alerts[1].status': required"),
        (
            lambda p: p["alerts"][0].update(status="pending"),
            "field 'alerts[0].status': expected 'firing' or 'resolved', got 'pending'",
        ),
        (
            lambda p: p["alerts"][0].update(status=1),
            "field 'alerts[0].status': expected 'firing' or 'resolved', got a number",
        ),
        (lambda p: p["alerts"][0].pop("labels"), "field 'alerts[0].labels': required"),
        (
            lambda p: p["alerts"][0]["labels"].update(severity=3),
            "field 'alerts[0].labels.severity': expected a string, got a number",
        ),
        (
            lambda p: p["alerts"][1].update(annotations=["x"]),
            "field 'alerts[1].annotations': expected an object, got a list",
        ),
        (
            lambda p: p["alerts"][0].update(startsAt="yesterday"),
            "field 'alerts[0].startsAt': expected an ISO 8601 timestamp, got 'yesterday'",
        ),
        (lambda p: p.update(groupKey=7), "field 'groupKey': expected a string, got a number"),
        (lambda p: p.update(truncatedAlerts="0"), "field 'truncatedAlerts': expected a whole number, got a string"),
    ],
)
def test_alertmanager_errors_name_the_field(change, message):
    payload = load("alertmanager_firing")
    change(payload)
    assert error_of(alertmanager.parse, payload) == message


# --- Grafana ------------------------------------------------------------------------------------


def test_grafana_firing_alerts_with_links_and_values():
    payload = load("grafana_firing")
    first, second = grafana.parse(payload)

    assert first.source == "grafana"
    assert first.status == FIRING
    assert first.fingerprint == "d2c61b3f4a9e0e77"
    assert first.group_key == payload["groupKey"]
    assert first.title == "p99 latency of checkout-api is above 1.5 s"
    assert first.severity == "critical"
    assert first.links == (
        "https://grafana.example.org/alerting/grafana/eb2b31a5/view?orgId=1",
        "https://grafana.example.org/d/checkout01?orgId=1",
        "https://grafana.example.org/d/checkout01?orgId=1&viewPanel=4",
        payload["alerts"][0]["silenceURL"],
        "https://runbooks.example.org/checkout/latency",
        "https://grafana.example.org/",
    )
    assert first.details["values"] == {"A": 1.742, "C": 1}
    assert first.details["valueString"].startswith("[ var='A'")
    assert first.details["orgId"] == 1
    assert first.details["state"] == "alerting"
    assert first.details["title"] == "[FIRING:2] Checkout (checkout-api)"
    assert first.occurred_at == datetime(2024, 6, 3, 12, 20, tzinfo=UTC)

    # no annotations, no instance: the alert name is the title; empty dashboard links are skipped
    assert second.title == "Error budget burn"
    assert second.severity is None
    assert "" not in second.links
    assert second.links[0] == "https://grafana.example.org/alerting/grafana/7fa03c11/view?orgId=1"
    assert second.details["values"] == {"B": 14.2, "C": None}


def test_grafana_resolved_without_values():
    (signal,) = grafana.parse(load("grafana_resolved"))

    assert signal.status == RESOLVED
    assert signal.title == "More than 5000 messages waiting in orders queue."
    assert signal.details["values"] == {}
    assert signal.details["valueString"] == "[ var='A' labels={queue=orders} value=311 ]"
    assert signal.details["endsAt"] == "2024-06-03T10:42:10+00:00"
    assert signal.details["state"] == "ok"


def test_grafana_tolerates_unknown_and_missing_optional_keys():
    payload = {"alerts": [{"status": "firing", "labels": {"alertname": "X"}, "imageURL": None, "newField": [1]}]}
    payload["futureTopLevel"] = {"a": 1}
    (signal,) = grafana.parse(payload)
    assert signal.title == "X"
    assert signal.details["orgId"] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("alerts"), "field 'alerts': required"),
        (lambda p: p.update(orgId="1"), "field 'orgId': expected a whole number, got a string"),
        (lambda p: p.update(title=["x"]), "field 'title': expected a string, got a list"),
        (lambda p: p["alerts"][0].update(values=[1]), "field 'alerts[0].values': expected an object, got a list"),
        (
            lambda p: p["alerts"][0]["values"].update(A="high"),
            "field 'alerts[0].values.A': expected a number, got a string",
        ),
        (
            lambda p: p["alerts"][1].update(dashboardURL=0),
            "field 'alerts[1].dashboardURL': expected a string, got a number",
        ),
        (lambda p: p["alerts"][1].update(status=None), "field 'alerts[1].status': required"),
    ],
)
def test_grafana_errors_name_the_field(change, message):
    payload = load("grafana_firing")
    change(payload)
    assert error_of(grafana.parse, payload) == message


def test_grafana_legacy_payload_is_rejected():
    legacy = {"ruleName": "CPU", "state": "alerting", "evalMatches": [], "title": "[Alerting] CPU"}
    assert error_of(grafana.parse, legacy) == "field 'alerts': required"


# --- PagerDuty ----------------------------------------------------------------------------------


def test_pagerduty_trigger():
    payload = load("pagerduty_trigger")
    (signal,) = pagerduty.parse(payload)

    assert signal.source == "pagerduty"
    assert signal.status == FIRING
    assert signal.fingerprint == "db-primary/replication-lag"
    assert signal.title == "Replication lag on db-primary above 120 s"
    assert signal.severity == "error"
    assert signal.labels == {
        "source": "db-primary.prod.example.org",
        "component": "postgres",
        "group": "prod-database",
        "class": "replication lag",
    }
    assert signal.occurred_at == datetime(2024, 7, 9, 11, 4, 27, 831000, tzinfo=UTC)
    assert "lag seconds: 134" in signal.text
    assert "replica: db-replica-2" in signal.text
    # the javascript: link is dropped; client_url is kept
    assert signal.links == (
        "https://wiki.example.org/runbooks/replication-lag",
        "https://monitoring.example.org/checks/replication",
    )
    assert signal.details["routing_key"] == payload["routing_key"]
    assert signal.details["dedup_key_generated"] is False
    assert signal.details["client"] == "Example Monitoring"
    assert signal.details["custom_details"]["replica"] == "db-replica-2"
    assert signal.details["links"][0] == {
        "href": "https://wiki.example.org/runbooks/replication-lag",
        "text": "Runbook",
    }
    assert signal.details["images"][0]["alt"] == "Lag over the last hour"


def test_pagerduty_trigger_without_dedup_key_generates_one():
    payload = load("pagerduty_trigger_minimal")
    (first,) = pagerduty.parse(payload)
    (second,) = pagerduty.parse(payload)

    assert re.fullmatch(r"[0-9a-f]{32}", first.fingerprint)
    assert first.fingerprint != second.fingerprint
    assert first.details["dedup_key_generated"] is True
    assert first.title == "Nightly backup job failed"
    assert first.text == "Nightly backup job failed"
    assert first.labels == {"source": "backup-01"}
    assert first.links == ()
    assert first.occurred_at is None


def test_pagerduty_acknowledge_without_payload():
    (signal,) = pagerduty.parse(load("pagerduty_acknowledge"))

    assert signal.status == ACKNOWLEDGED
    assert signal.fingerprint == "db-primary/replication-lag"
    assert signal.title == "Acknowledge db-primary/replication-lag"
    assert signal.severity is None
    assert signal.labels == {}


def test_pagerduty_resolve_with_partial_payload():
    (signal,) = pagerduty.parse(load("pagerduty_resolve"))

    assert signal.status == RESOLVED
    assert signal.fingerprint == "db-primary/replication-lag"
    assert signal.title == "Replication lag on db-primary back to normal"
    assert signal.occurred_at == datetime(2024, 7, 9, 11, 31, 2, tzinfo=UTC)


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_pagerduty_dedup_key_required_to_acknowledge_or_resolve(action):
    payload = {"routing_key": "k", "event_action": action}
    assert error_of(pagerduty.parse, payload) == f"field 'dedup_key': required for event_action '{action}'"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("event_action"), "field 'event_action': required"),
        (
            lambda p: p.update(event_action="escalate"),
            "field 'event_action': expected one of 'trigger', 'acknowledge', 'resolve', got 'escalate'",
        ),
        (lambda p: p.pop("payload"), "field 'payload': required"),
        (lambda p: p.update(payload="down"), "field 'payload': expected an object, got a string"),
        (lambda p: p["payload"].pop("summary"), "field 'payload.summary': required"),
        (lambda p: p["payload"].update(summary="  "), "field 'payload.summary': must not be empty"),
        (
            lambda p: p["payload"].update(summary="x" * 1025),
            "field 'payload.summary': longer than 1024 characters (1025)",
        ),
        (lambda p: p["payload"].pop("source"), "field 'payload.source': required"),
        (lambda p: p["payload"].pop("severity"), "field 'payload.severity': required"),
        (
            lambda p: p["payload"].update(severity="sev1"),
            "field 'payload.severity': expected one of 'critical', 'error', 'warning', 'info', got 'sev1'",
        ),
        (
            lambda p: p["payload"].update(timestamp="17/07/2015"),
            "field 'payload.timestamp': expected an ISO 8601 timestamp, got '17/07/2015'",
        ),
        (lambda p: p.update(dedup_key="k" * 256), "field 'dedup_key': longer than 255 characters (256)"),
        (lambda p: p.update(dedup_key=42), "field 'dedup_key': expected a string, got a number"),
        (lambda p: p.update(routing_key=True), "field 'routing_key': expected a string, got a boolean"),
        (lambda p: p.update(links={"href": "x"}), "field 'links': expected a list, got an object"),
        (lambda p: p["links"][1].pop("href"), "field 'links[1].href': required"),
        (lambda p: p["images"][0].pop("src"), "field 'images[0].src': required"),
        (lambda p: p.update(client_url=1), "field 'client_url': expected a string, got a number"),
    ],
)
def test_pagerduty_errors_name_the_field(change, message):
    payload = load("pagerduty_trigger")
    change(payload)
    assert error_of(pagerduty.parse, payload) == message


def test_pagerduty_summary_of_exactly_1024_characters_is_accepted():
    payload = load("pagerduty_trigger_minimal")
    payload["payload"]["summary"] = "s" * 1024
    assert pagerduty.parse(payload)[0].title == "s" * 1024


# --- Generic ------------------------------------------------------------------------------------


def test_generic_full_schema():
    (signal,) = generic.parse(load("generic_full"))

    assert signal.source == "generic"
    assert signal.title == "Disk almost full on db-1"
    assert signal.text == "/var is at 93% and growing by 2% an hour."
    assert signal.severity == "warning"
    assert signal.fingerprint == "db-1:/var"
    assert signal.status == FIRING
    assert signal.labels == {"service": "billing", "host": "db-1", "priority": "2", "paged": "false"}
    assert signal.links == ("https://monitor.example.org/checks/42",)
    assert signal.details == {}


def test_generic_minimal_defaults():
    (signal,) = generic.parse(load("generic_minimal"))

    assert signal.title == "Printer on floor 3 is out of toner"
    assert signal.status == FIRING
    assert signal.fingerprint is None
    assert signal.severity is None
    assert signal.labels == {}
    assert signal.links == ()
    assert signal.text == ""


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("firing", FIRING),
        ("alerting", FIRING),
        ("Problem", FIRING),
        ("TRIGGER", FIRING),
        ("resolved", RESOLVED),
        ("ok", RESOLVED),
        ("OK", RESOLVED),
        (" recovered ", RESOLVED),
    ],
)
def test_generic_status_words(word, status):
    assert generic.parse({"title": "t", "status": word})[0].status == status


def test_generic_mapping_with_dotted_paths_and_list_indexes():
    options = GenericOptions(
        mapping={
            "title": "alert.name",
            "dedup_key": "alert.id",
            "severity": "alert.level",
            "status": "state",
            "labels": "tags",
            "link": "items.0.url",
            "message": "items.1.name",
        }
    )
    (signal,) = generic.parse(load("generic_mapped"), options)

    assert signal.title == "HTTPS certificate of shop.example.org expires in 7 days"
    assert signal.fingerprint == "88213"
    assert signal.severity == "minor"
    assert signal.status == RESOLVED
    assert signal.labels == {"team": "web", "env": "prod"}
    assert signal.links == ("https://uptime.example.org/monitors/88213",)
    assert signal.text == "cdn.example.org"
    assert signal.details["mapping"]["title"] == "alert.name"


def test_generic_unmapped_fields_are_read_from_their_own_names():
    options = GenericOptions(mapping={"title": "alert.name"})
    (signal,) = generic.parse({"alert": {"name": "A"}, "severity": "info", "title": "ignored"}, options)
    assert signal.title == "A"
    assert signal.severity == "info"


def test_generic_list_index_out_of_range_is_absent():
    options = GenericOptions(mapping={"title": "items.5.name"})
    assert error_of(generic.parse, load("generic_mapped"), options) == "field 'items.5.name': required (title)"


@pytest.mark.parametrize(
    ("payload", "mapping", "message"),
    [
        ({}, {}, "field 'title': required"),
        ({"title": ""}, {}, "field 'title': must not be empty"),
        ({"title": 5}, {}, "field 'title': expected a string, got a number"),
        ({"alert": {}}, {"title": "alert.name"}, "field 'alert.name': required (title)"),
        (
            {"alert": "x"},
            {"title": "alert.name"},
            "field 'alert': expected an object or list to read 'alert.name', got a string",
        ),
        (
            {"items": [{"name": "n"}]},
            {"title": "items.first.name"},
            "field 'items': a list, so 'first' in 'items.first.name' must be an element number",
        ),
        (
            {"alert": {"name": ["n"]}},
            {"title": "alert.name"},
            "field 'alert.name': expected a string, got a list (title)",
        ),
        (
            {"title": "t", "status": "maybe"},
            {},
            "field 'status': expected one of 'firing', 'alerting', 'problem', "
            "'trigger', 'resolved', 'ok', 'recovered', got 'maybe'",
        ),
        ({"title": "t", "s": True}, {"status": "s"}, "field 's': expected a string, got a boolean (status)"),
        ({"title": "t", "labels": ["a"]}, {}, "field 'labels': expected an object, got a list"),
        (
            {"title": "t", "tags": {"a": {"b": 1}}},
            {"labels": "tags"},
            "field 'tags.a': expected a string, number or boolean, got an object",
        ),
        ({"title": "t", "dedup_key": 1.5}, {}, "field 'dedup_key': expected a string or whole number, got a number"),
        ({"title": "t", "link": 3}, {}, "field 'link': expected a string, got a number"),
    ],
)
def test_generic_errors_name_the_path(payload, mapping, message):
    assert error_of(generic.parse, payload, GenericOptions(mapping=mapping)) == message


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"name": "a.b"}, "generic mapping: unknown field 'name'"),
        ({"title": ""}, "generic mapping: 'title' must be a dotted path"),
        ({"title": "a..b"}, "generic mapping: 'title' must be a dotted path"),
    ],
)
def test_generic_options_reject_bad_mappings(mapping, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        GenericOptions(mapping=mapping)


# --- Registry -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "fixture", "count"),
    [
        ("alertmanager", "alertmanager_firing", 2),
        ("grafana", "grafana_firing", 2),
        ("pagerduty", "pagerduty_trigger", 1),
        ("generic", "generic_full", 1),
    ],
)
def test_parse_webhook_dispatches_by_kind(kind, fixture, count):
    signals = parse_webhook(kind, load(fixture))
    assert len(signals) == count
    assert {s.source for s in signals} == {kind}


def test_parse_webhook_passes_options_to_generic():
    signals = parse_webhook("generic", {"alert": {"name": "A"}}, GenericOptions(mapping={"title": "alert.name"}))
    assert signals[0].title == "A"


@pytest.mark.parametrize(
    ("body", "kind"), [([], "alertmanager"), ("text", "grafana"), (None, "pagerduty"), (3, "generic")]
)
def test_parse_webhook_rejects_bodies_that_are_not_objects(body, kind):
    with pytest.raises(ParseError, match=r"^request body: expected a JSON object, got "):
        parse_webhook(kind, body)


def test_parse_webhook_rejects_unknown_kind():
    with pytest.raises(ParseError, match="unknown webhook kind 'opsgenie'"):
        parse_webhook("opsgenie", {})


def test_kinds_are_the_formats_and_the_monitoring_tools():
    formats = {"alertmanager", "grafana", "pagerduty", "generic", "drill", "sns"}
    tools = {"uptime-kuma", "zabbix", "sentry", "datadog", "netdata", "checkmk", "icinga2"}
    assert set(KINDS) == formats | tools


def test_drill_report():
    (signal,) = parse_webhook("drill", load("drill"))
    assert (signal.source, signal.fingerprint) == ("drill", "drill:3f2a9c01be47")
    assert signal.labels == {
        "inlet_drill": "3f2a9c01be47", "inlet_drill_procedure": "major", "inlet_drill_group": "network"
    }  # fmt: skip
    for payload, field in (({"title": "x"}, "drill_id"), ({"drill_id": "a1"}, "title"),
                           ({"drill_id": "a1", "title": "x", "procedure": "chaos"}, "procedure")):  # fmt: skip
        with pytest.raises(ParseError, match=f"field '{field}'"):
            parse_webhook("drill", payload)


def test_parsers_import_only_the_signal_type_and_errors_from_inlet():
    """DESIGN.md section 3: parsers/ stays pure; it imports nothing of gateway/ but the errors."""
    import ast

    root = Path(__file__).parent.parent / "parsers"
    for module in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                inlet_package = top in ("gateway", "store", "notifiers", "web")
                allowed = not inlet_package or name == "gateway.core.errors"  # libraries are fine; I/O layers are not
                assert allowed, f"{module.name} imports {name}"


# --- Severity -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        ("critical", ("high", "high")),
        ("error", ("high", "medium")),
        ("major", ("high", "medium")),
        ("warning", ("medium", "medium")),
        ("minor", ("medium", "medium")),
        ("info", ("low", "low")),
        (" Critical ", ("high", "high")),
        ("unheard-of", None),
        ("", None),
        (None, None),
    ],
)
def test_default_severity_map(severity, expected):
    assert severity_to_impact_urgency(severity, None) == expected


def test_severity_mapping_overrides_and_extends_defaults():
    mapping = {"critical": ("high", "medium"), "P5": ("low", "low")}
    assert severity_to_impact_urgency("critical", mapping) == ("high", "medium")
    assert severity_to_impact_urgency("p5", mapping) == ("low", "low")
    assert severity_to_impact_urgency("warning", mapping) == ("medium", "medium")
    assert DEFAULT_SEVERITY_MAP["critical"] == ("high", "high")


def test_severity_mapping_rejects_unknown_levels():
    with pytest.raises(ConfigError, match="severity map: 'sev1' must be"):
        severity_to_impact_urgency("sev1", {"sev1": ("urgent", "high")})


# --- Properties: any JSON in, Signals or ParseError out -----------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)

TOOLS = Path(__file__).parent / "fixtures" / "tools"
FIXTURES = {
    "alertmanager": ["alertmanager_firing", "alertmanager_resolved", "alertmanager_minimal"],
    "grafana": ["grafana_firing", "grafana_resolved"],
    "pagerduty": ["pagerduty_trigger", "pagerduty_trigger_minimal", "pagerduty_acknowledge", "pagerduty_resolve"],
    "generic": ["generic_full", "generic_minimal", "generic_mapped"],
    "drill": ["drill"],
    # the monitoring tools' own payloads (tests/fixtures/tools, with their origins)
    **{kind: [TOOLS / f"{kind}-firing.json", TOOLS / f"{kind}-resolved.json"] for kind in (*PRESETS, "sns")},
}
MAPPED = GenericOptions(
    mapping={"title": "alert.name", "dedup_key": "alert.id", "labels": "tags", "link": "items.0.url"}
)


def paths(value, prefix=()):
    """Every path (a tuple of keys and indexes) into a JSON value, the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


@st.composite
def mutated_fixtures(draw, kind):
    """A documented payload with one field replaced by arbitrary JSON, or one key removed."""
    name = draw(st.sampled_from(FIXTURES[kind]))
    payload = json.loads(name.read_text()) if isinstance(name, Path) else copy.deepcopy(load(name))
    path = draw(st.sampled_from([p for p in paths(payload) if p]))
    parent = payload
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return payload


def assert_signals_or_parse_error(kind, payload, options=None):
    try:
        signals = parse_webhook(kind, payload, options)
    except ParseError as error:
        assert str(error)
        return
    assert isinstance(signals, list)
    for signal in signals:
        assert isinstance(signal, Signal)
        assert signal.source == kind
        assert isinstance(signal.title, str) and signal.title.strip()
        assert signal.status in (FIRING, RESOLVED, ACKNOWLEDGED)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in signal.labels.items())
        assert all(link.startswith(("http://", "https://")) for link in signal.links)
        assert signal.occurred_at is None or signal.occurred_at.tzinfo is not None


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("kind", sorted(KINDS))
@PROPERTY_SETTINGS
@given(payload=json_values)
def test_any_json_gives_signals_or_parse_error(kind, payload):
    assert_signals_or_parse_error(kind, payload)


@pytest.mark.parametrize("kind", sorted(KINDS))
@PROPERTY_SETTINGS
@given(data=st.data())
def test_mutated_documented_payloads_give_signals_or_parse_error(kind, data):
    payload = data.draw(mutated_fixtures(kind))
    assert_signals_or_parse_error(kind, payload)
    if kind == "generic":
        assert_signals_or_parse_error(kind, payload, MAPPED)


@PROPERTY_SETTINGS
@given(payload=json_values, path=st.lists(st.text(alphabet="ab0123", min_size=1, max_size=3), min_size=1, max_size=4))
def test_generic_any_mapping_path_gives_signals_or_parse_error(payload, path):
    options = GenericOptions(mapping={"title": ".".join(path)})
    assert_signals_or_parse_error("generic", payload, options)
