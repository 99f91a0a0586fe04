"""The catalogue of monitoring tools (parsers/presets.py, Amazon SNS) and title templates, over real HTTP.

Each tool's firing and resolving payload (tests/fixtures/tools/, shaped after the tool's own
documentation) goes through a running Service (waitress + pipeline worker) on loopback, on both
databases, and must open one incident and resolve it. Amazon SNS messages are signed with the
test's own key; its certificate is served on loopback through the test-only origin allowance —
verification itself is never turned off — and forged certificate URLs are refused without a fetch.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.clock import FixedClock
from gateway.core.errors import ConfigError, ParseError
from gateway.intake.sns_signature import TEST_ORIGIN_ENV
from gateway.service import Service
from parsers.generic import GenericOptions
from parsers.generic import parse as parse_generic
from parsers.presets import PRESETS
from parsers.signal import FIRING, RESOLVED
from parsers.sns import string_to_sign
from parsers.template import parse_template
from parsers.webhooks import parse_webhook
from store.db import db
from store.models import Inbound
from tests.conftest import free_port
from tests.sinks import HttpSink
from tests.test_hooks import TOKEN, Inlet

FIXTURES = Path(__file__).parent / "fixtures" / "tools"
SECRET = "s3cret-for-tools"
TOPIC = "arn:aws:sns:eu-central-1:123456789012:inlet"
CERT_PATH = "/SimpleNotificationService-test.pem"

# tool kind -> (title of the firing payload, its dedup key as the tool sends it)
EXPECTED = {
    "uptime-kuma": ("Shop front: getaddrinfo ENOTFOUND shop.example.com", "29"),
    "zabbix": ("db-1: High CPU utilization (over 90% for 5m)", "4711"),
    "sentry": ("ReferenceError: heck is not defined", "1117540176"),
    "datadog": ("[Triggered on {host:web-3}] Web latency p95 above 800 ms", "9f0b1e2d3c4a5b6c"),
    "netdata": ("Critical alert: disk_space_usage = 96.3% on db-1", "db-1/disk_space._/disk_space_usage"),
    "checkmk": ("mysql-1: Filesystem /var", "mysql-1/Filesystem /var"),
    "icinga2": ("web-1.example.com: HTTP", "web-1!http"),
}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


# ---------------------------------------------------------------- the presets, pure


@pytest.mark.parametrize("kind", sorted(PRESETS))
def test_each_tool_kind_reads_its_firing_and_resolving_payload(kind):
    assert kind in EXPECTED, "every preset has a fixture pair and an expectation here"
    options = PRESETS[kind].options()
    [firing] = parse_webhook(kind, fixture(f"{kind}-firing"), options)
    [resolved] = parse_webhook(kind, fixture(f"{kind}-resolved"), options)
    assert (firing.title, firing.fingerprint, firing.status) == (*EXPECTED[kind], FIRING)
    assert (resolved.fingerprint, resolved.status) == (EXPECTED[kind][1], RESOLVED)
    assert firing.source == kind
    assert all(link.startswith("https://") for link in firing.links)


def test_a_notification_that_is_not_about_an_alert_is_stored_and_ignored_not_refused():
    assigned = fixture("sentry-resolved") | {"action": "assigned"}
    assert parse_webhook("sentry", assigned, PRESETS["sentry"].options()) == []
    options = PRESETS["checkmk"].options()
    downtime = fixture("checkmk-firing") | {"NOTIFY_NOTIFICATIONTYPE": "DOWNTIMESTART"}
    assert parse_webhook("checkmk", downtime, options) == []
    # a word the tool never sends is still a 400 naming the field
    with pytest.raises(ParseError, match="field 'NOTIFY_NOTIFICATIONTYPE'"):
        parse_webhook("checkmk", fixture("checkmk-firing") | {"NOTIFY_NOTIFICATIONTYPE": "WHATEVER"}, options)


def test_host_notifications_of_checkmk_and_icinga_fall_back_to_the_host():
    host = {k: v for k, v in fixture("checkmk-firing").items() if "SERVICE" not in k}
    host |= {"NOTIFY_WHAT": "HOST", "NOTIFY_HOSTSTATE": "DOWN", "NOTIFY_HOSTOUTPUT": "PING CRITICAL"}
    [signal] = parse_webhook("checkmk", host, PRESETS["checkmk"].options())
    assert (signal.title, signal.fingerprint, signal.severity) == ("mysql-1 is DOWN", "mysql-1", "DOWN")


def test_an_integration_mapping_lays_over_the_preset():
    options = PRESETS["zabbix"].options({"title": "{event_name} ({event_severity})"})
    [signal] = parse_webhook("zabbix", fixture("zabbix-firing"), options)
    assert signal.title == "High CPU utilization (over 90% for 5m) (High)"
    assert signal.fingerprint == "4711"  # the rest of the preset holds


# ---------------------------------------------------------------- templates


@pytest.mark.parametrize("text", ["{x!r}", "{x:>99999}", "{x[0]}", "{ x }", "{}", "{a..b}", "{", "a}b", "{{x}"])
def test_a_template_with_anything_but_paths_in_braces_is_refused_when_the_config_loads(text):
    with pytest.raises(ConfigError, match="does not open or close a field"):
        parse_template(text)


def test_a_template_reads_the_payload_only_never_python_attributes():
    hostile = GenericOptions(mapping={"title": ["{0.__class__}", "{__class__.__mro__}", "title"]})
    payload = {"title": "fallback", "0": "text"}
    [signal] = parse_generic(payload, hostile)
    assert signal.title == "fallback"  # "{0.__class__}" read the key "__class__" of a string: nothing
    [signal] = parse_generic({"0": {"__class__": "a key, not an attribute"}}, hostile)
    assert signal.title == "a key, not an attribute"
    assert parse_template("{{literal}} {a.0.b}").render(lambda path: {"a.0.b": 7}[path]) == "{literal} 7"


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=60),
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.dictionaries(st.text(max_size=5), c, max_size=3) | st.lists(c, max_size=3),
        max_leaves=8,
    ),
)
def test_mapping_entries_either_load_or_say_why_and_read_any_payload(text, payload):
    try:
        options = GenericOptions(mapping={"title": [text, "t"]})
    except ConfigError:
        return  # a path or template that cannot be: refused when the configuration loads
    body = payload if isinstance(payload, dict) else {"v": payload}
    try:
        [signal] = parse_generic({**body, "t": "x"}, options)
    except ParseError:
        return  # a value of the wrong type is a 400 naming the field, never another exception
    assert signal.title


def test_template_rendering_is_linear_in_its_output():
    template = parse_template("{a}" * 10_000)
    assert len(template.render(lambda path: "x" * 10)) == 100_000


# ---------------------------------------------------------------- over real HTTP, both databases


def _sign(body: bytes) -> str:
    return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


class Certificate:
    """A key and a self-signed certificate standing in for Amazon's signing certificate."""

    def __init__(self, now: datetime):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.eu-central-1.amazonaws.com")])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def signed(self, message: dict, cert_url: str, version: str = "1") -> dict:
        message = copy.deepcopy(message) | {"SigningCertURL": cert_url, "SignatureVersion": version}
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(string_to_sign(message), padding.PKCS1v15(), algorithm)
        return message | {"Signature": base64.b64encode(signature).decode()}


@pytest.fixture
def tools(store, monkeypatch):
    """A running Service with one integration per tool kind, and the loopback 'Amazon' of the SNS tests."""
    clock = FixedClock(datetime(2026, 12, 3, 10, 0, tzinfo=UTC))
    amazon = HttpSink(free_port()).start()
    origin = f"http://127.0.0.1:{amazon.port}"
    certificate = Certificate(clock.now())
    amazon.files[CERT_PATH] = certificate.pem()
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    monkeypatch.setenv(TEST_ORIGIN_ENV, origin)
    integrations = [{"name": kind, "kind": kind, "token_env": "HOOK_TOKEN"} for kind in PRESETS if kind != "sentry"]
    integrations.append({"name": "sentry", "kind": "sentry", "auth": "hmac", "secret_env": "HOOK_SECRET"})
    integrations.append({"name": "sns", "kind": "sns", "auth": "sns", "sns_topic_arns": [TOPIC]})
    config = store.config(integration=integrations)
    db.close()
    service = Service(config, roles={"web", "worker"}, clock=clock)
    service.start()
    inlet = Inlet(service, clock)
    inlet.amazon, inlet.origin, inlet.certificate = amazon, origin, certificate
    yield inlet
    inlet.http.close()
    service.stop()
    amazon.stop()


def _post_tool(inlet: Inlet, kind: str, body: dict):
    if kind != "sentry":
        return inlet.post(kind, body)
    raw = json.dumps(body).encode()
    headers = {"Sentry-Hook-Signature": _sign(raw), "Sentry-Hook-Resource": "event_alert"}
    return inlet.post(kind, None, token=None, raw=raw, headers=headers)


def test_every_tool_opens_one_incident_and_its_recovery_resolves_it(tools):
    for kind in sorted(PRESETS):
        assert _post_tool(tools, kind, fixture(f"{kind}-firing")).status_code == 202, kind
        tools.settled()
        [incident] = tools.incidents(kind)
        assert (incident.title, incident.status) == (EXPECTED[kind][0], "new"), kind
        again = fixture(f"{kind}-firing")
        again["__repeat"] = 1  # a repeat (another body) joins the same incident
        assert _post_tool(tools, kind, again).status_code == 202, kind
        assert _post_tool(tools, kind, fixture(f"{kind}-resolved")).status_code == 202, kind
        tools.settled()
        [incident] = tools.incidents(kind)
        assert (incident.status, incident.resolution_code) == ("resolved", "auto-recovered"), kind


def test_a_sentry_request_without_its_signature_is_refused(tools):
    answer = tools.post("sentry", fixture("sentry-firing"), token=None)
    assert answer.status_code == 401 and "Sentry-Hook-Signature" in answer.json()["error"]
    raw = json.dumps(fixture("sentry-firing")).encode()
    answer = tools.post("sentry", None, token=None, raw=raw, headers={"Sentry-Hook-Signature": _sign(raw + b" ")})
    assert answer.status_code == 403
    assert Inbound.select().count() == 0


def _post_sns(inlet: Inlet, message: dict):
    raw = json.dumps(message).encode()
    headers = {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": message.get("Type", "")}
    return inlet.post("sns", None, token=None, raw=raw, headers=headers)


def test_a_signed_cloudwatch_alarm_opens_an_incident_and_its_ok_resolves_it(tools):
    cert_url = tools.origin + CERT_PATH
    firing = tools.certificate.signed(fixture("sns-firing"), cert_url)
    assert _post_sns(tools, firing).status_code == 202
    resolved = tools.certificate.signed(fixture("sns-resolved"), cert_url, version="2")
    assert _post_sns(tools, resolved).status_code == 202
    tools.settled()
    [incident] = tools.incidents("sns")
    assert incident.title == "shop-api-5xx"
    assert (incident.status, incident.resolution_code) == ("resolved", "auto-recovered")
    fetched = [r for r in tools.amazon.requests if r["path"] == CERT_PATH]
    assert len(fetched) == 1  # fetched once, then kept


@pytest.mark.parametrize(
    "forged",
    [
        "https://sns.eu-central-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/SimpleNotificationService-test.pem",
        "http://sns.eu-central-1.amazonaws.com/cert.pem",
        "https://sns.eu-central-1.amazonaws.com@127.0.0.1/cert.pem",
        "https://sns.eu-central-1.amazonaws.com:8443/cert.pem",
        "https://sns.eu-central-1.amazonaws.com/cert.txt",
        "{origin_other_port}" + CERT_PATH,
        "file:///etc/passwd",
    ],
)
def test_a_forged_certificate_url_is_refused_before_anything_is_fetched(tools, forged):
    other = f"http://127.0.0.1:{free_port()}"
    url = forged.replace("{origin_other_port}", other)
    answer = _post_sns(tools, tools.certificate.signed(fixture("sns-firing"), url))
    assert answer.status_code == 403 and "SigningCertURL" in answer.json()["error"]
    assert tools.amazon.requests == []
    assert Inbound.select().count() == 0


def test_an_altered_message_a_foreign_topic_or_a_foreign_key_is_refused(tools):
    cert_url = tools.origin + CERT_PATH
    signed = tools.certificate.signed(fixture("sns-firing"), cert_url)
    altered = signed | {"Message": signed["Message"].replace("ALARM", "OK")}
    answer = _post_sns(tools, altered)
    assert (answer.status_code, answer.json()["error"]) == (403, "wrong signature")
    foreign_topic = tools.certificate.signed(fixture("sns-firing") | {"TopicArn": TOPIC + "-other"}, cert_url)
    assert _post_sns(tools, foreign_topic).status_code == 403
    stranger = Certificate(tools.clock.now()).signed(fixture("sns-firing"), cert_url)  # not the served key
    assert _post_sns(tools, stranger).status_code == 403
    unsigned = signed | {"Signature": "not base64!"}
    assert _post_sns(tools, unsigned).status_code == 403
    assert Inbound.select().count() == 0


def test_a_subscription_is_confirmed_at_the_url_amazon_gave_and_nothing_else(tools):
    confirm_path = "/?Action=ConfirmSubscription&TopicArn=" + TOPIC + "&Token=abc"
    tools.amazon.files[confirm_path] = b"<ConfirmSubscriptionResponse/>"
    message = fixture("sns-subscription-confirmation") | {"SubscribeURL": tools.origin + confirm_path}
    answer = _post_sns(tools, tools.certificate.signed(message, tools.origin + CERT_PATH))
    assert answer.status_code == 202
    assert [r["path"] for r in tools.amazon.requests if r["path"] != CERT_PATH] == [confirm_path]
    tools.settled()
    assert tools.incidents("sns") == []  # stored, and ignored: it holds no signal
    assert Inbound.select().count() == 1

    elsewhere = fixture("sns-subscription-confirmation") | {
        "SubscribeURL": "https://evil.example/?Action=ConfirmSubscription"
    }
    answer = _post_sns(tools, tools.certificate.signed(elsewhere | {"MessageId": "m2"}, tools.origin + CERT_PATH))
    assert answer.status_code == 503 and "SubscribeURL" in answer.json()["error"]


def test_amazon_unreachable_for_the_certificate_is_a_503_to_retry(tools):
    tools.amazon.files.clear()
    answer = _post_sns(tools, tools.certificate.signed(fixture("sns-firing"), tools.origin + "/missing.pem"))
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert Inbound.select().count() == 0


def test_the_test_origin_allows_loopback_only(monkeypatch):
    from gateway.intake.sns_signature import amazon_url

    monkeypatch.setenv(TEST_ORIGIN_ENV, "http://evil.example:80")
    assert amazon_url("http://evil.example:80/cert.pem", certificate=True) is not None
    monkeypatch.setenv(TEST_ORIGIN_ENV, "http://127.0.0.1:9")
    assert amazon_url("http://127.0.0.1:9/cert.pem", certificate=True) is None
    monkeypatch.delenv(TEST_ORIGIN_ENV)
    assert amazon_url("http://127.0.0.1:9/cert.pem", certificate=True) is not None
    assert amazon_url("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem", certificate=True) is None
    assert (
        amazon_url("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-x.pem", certificate=True) is None
    )


def test_every_tool_kind_is_in_the_readme_and_the_example_config():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = (Path(__file__).parent.parent / "config.example.toml").read_text()
    for preset in PRESETS.values():
        assert f'kind = "{preset.name}"' in readme, preset.tool
        assert preset.name in example, preset.tool
    assert 'kind = "sns"' in readme and "sns_topic_arns" in example


CONTRIB = Path(__file__).parent.parent / "contrib"


@pytest.mark.parametrize(
    ("kind", "script", "settings"),
    [
        ("checkmk", "checkmk-inlet", lambda url: {"NOTIFY_PARAMETER_1": url, "NOTIFY_PARAMETER_2": TOKEN}),
        ("icinga2", "icinga2-inlet", lambda url: {"INLET_URL": url, "INLET_TOKEN": TOKEN}),
    ],
)
def test_the_contrib_notification_scripts_post_what_the_tool_gives_them(tools, kind, script, settings):
    url = f"{tools.url}/hooks/{kind}"
    for name in ("firing", "resolved"):
        variables = fixture(f"{kind}-{name}")
        env = {"PATH": os.environ["PATH"], **variables, **settings(url)}
        done = subprocess.run([sys.executable, CONTRIB / script], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    tools.settled()
    [incident] = tools.incidents(kind)
    assert (incident.title, incident.status) == (EXPECTED[kind][0], "resolved")
    refused = subprocess.run(
        [sys.executable, CONTRIB / script],
        env={"PATH": os.environ["PATH"], **fixture(f"{kind}-firing"), **settings(url + "-nowhere")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "404" in refused.stderr
