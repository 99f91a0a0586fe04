"""Fuzzing the edges a stranger reaches: raw SMTP sessions and the webhook endpoint of a running Service
(smtp + web + pipeline worker) on loopback, on both databases. Arbitrary bytes, deep nesting, lone
surrogates, huge numbers and odd credentials: every answer is a clean protocol reply (an SMTP code; an
HTTP status with a JSON body, never a 500), and afterwards the server still serves and the pipeline
still turns a normal input into an incident. Bounded: a few dozen examples per edge, a few seconds."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import smtplib
import socket
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.core.clock import FixedClock
from gateway.service import Service
from store.db import db
from store.models import HeartbeatState, Incident
from tests.conftest import free_port, wait_for

TOKEN, SECRET, ROUTING_KEY = "t0ken-for-fuzzing", "s3cret-for-fuzzing", "R0UTINGKEY00000000000000000FUZZ"
SUPPORT = "support@example.org"
FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
SMTP_REPLY = re.compile(rb"[2-5][0-9][0-9][ -][^\r\n]*\r\n")


@pytest.fixture
def inlet(store, tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    monkeypatch.setenv("HOOK_ROUTING_KEY", ROUTING_KEY)
    monkeypatch.setenv("INLET_MESSAGE_ID_SECRET", "fuzz-test-secret")
    config = store.config(
        inlet={"data_dir": str(tmp_path)},
        smtp={"port": free_port(), "max_message_size": 200_000},
        address=[{"address": SUPPORT}, {"address": "@example.org"}],
        integration=[
            {"name": "plain", "kind": "generic", "token_env": "HOOK_TOKEN", "rate_limit": 0},
            {"name": "am", "kind": "alertmanager", "token_env": "HOOK_TOKEN", "rate_limit": 0},
            {
                "name": "signed",
                "kind": "generic",
                "auth": "hmac",
                "secret_env": "HOOK_SECRET",
                "timestamp_header": "X-Timestamp",
                "signature_header": "X-Signature",
                "rate_limit": 0,
            },
            {
                "name": "pd",
                "kind": "pagerduty",
                "auth": "routing_key",
                "routing_key_env": "HOOK_ROUTING_KEY",
                "rate_limit": 0,
            },
            # the tool kinds: a preset with a bearer token, one with its own signature header, and SNS
            {"name": "kuma", "kind": "uptime-kuma", "token_env": "HOOK_TOKEN", "rate_limit": 0},
            {"name": "sentry", "kind": "sentry", "auth": "hmac", "secret_env": "HOOK_SECRET", "rate_limit": 0},
            {"name": "sns", "kind": "sns", "auth": "sns", "sns_topic_arns": ["arn:aws:sns:eu-central-1:1:t"]},
        ],
        heartbeat=[  # pings through a bearer and an HMAC integration, and a Watchdog alert
            {"name": "ping", "interval": "5m", "integration": "plain"},
            {"name": "signed-ping", "interval": "5m", "integration": "signed"},
            {"name": "watchdog", "interval": "5m", "integration": "am", "labels": {"alertname": "Watchdog"}},
        ],
    )
    db.close()
    service = Service(config, roles={"smtp", "web", "worker"}, clock=FixedClock())
    service.start()
    web = next(c for c in service.components if c.name == "web")
    yield service, f"http://127.0.0.1:{web.port}", service.smtp.port
    service.stop()


# ---------------------------------------------------------------- strategies

# The heartbeat pings (web/hooks.py): a bearer one, an HMAC one, and one its integration does not take.
HEARTBEAT_PATHS = ["plain/heartbeat/ping", "signed/heartbeat/signed-ping", "am/heartbeat/ping"]

# Text with everything in it: lone surrogates, NUL, controls, any plane.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=30)
HUGE_NUMBERS = st.one_of(
    st.integers(1, 20_000).map(lambda n: "9" * n),
    st.sampled_from(["1e999", "-1e999", "1e-999", "NaN", "Infinity", "-Infinity", "-0", "1.5e308", "0x10"]),
)


def _json_values(leaves):
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
        max_leaves=12,
    )


JSON_VALUES = _json_values(st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT)


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "deep", "number", "alert", "pagerduty", "kuma", "sns"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":  # json.dumps writes a lone surrogate as a "\ud800" escape, NaN as NaN
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "deep":
        depth = draw(st.sampled_from([10, 65, 1_000, 5_000, 150_000]) | st.integers(1, 150_000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return opener * depth + b"1" + closer * depth if opener != b"[" else opener * depth + closer * depth
    if kind == "number":
        return f'{{"title": "n", "value": {draw(HUGE_NUMBERS)}}}'.encode()
    if kind == "alert":
        alert = {"status": draw(ANY_TEXT | st.just("firing")), "labels": draw(st.dictionaries(ANY_TEXT, ANY_TEXT))}
        return json.dumps({"alerts": [alert], "title": draw(ANY_TEXT), "dedup_key": draw(ANY_TEXT)}).encode()
    if kind == "kuma":
        status = draw(st.integers() | ANY_TEXT | st.none())
        heartbeat = {"status": status, "msg": draw(ANY_TEXT)}
        return json.dumps({"heartbeat": heartbeat, "monitor": draw(JSON_VALUES), "msg": draw(ANY_TEXT)}).encode()
    if kind == "sns":  # an SNS envelope with odd certificate URLs and signatures: never fetched, never a 500
        url = draw(
            st.sampled_from(["https://sns.eu-central-1.amazonaws.com.evil/x.pem", "file:///etc/passwd"]) | ANY_TEXT
        )
        message = {"Type": draw(st.sampled_from(["Notification", "SubscriptionConfirmation"]) | ANY_TEXT)}
        message |= {"TopicArn": "arn:aws:sns:eu-central-1:1:t", "Message": draw(ANY_TEXT), "MessageId": "m"}
        message |= {"Timestamp": "t", "SigningCertURL": url, "Signature": draw(ANY_TEXT), "SignatureVersion": "1"}
        return json.dumps(message).encode()
    key = draw(st.sampled_from([ROUTING_KEY, ROUTING_KEY + "\ud800", "\udcff", ""]) | ANY_TEXT)
    event = {"routing_key": key, "event_action": "trigger", "payload": draw(JSON_VALUES)}
    return json.dumps(event).encode()


HEADER_VALUE = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").strip())


# ---------------------------------------------------------------- the webhook endpoint


def test_webhook_endpoint_answers_every_request_cleanly(inlet):
    service, url, _port = inlet
    http = requests.Session()

    now = str(int(service.clock.now().timestamp())).encode()
    # Mostly well-addressed and authenticated, so that the bodies get as far as the parsers.
    names = st.sampled_from(["plain", "am", "signed", "pd", "kuma", "sentry", "sns", *HEARTBEAT_PATHS])
    odd_names = ANY_TEXT.filter(lambda t: t not in ("", ".", ".."))

    @FUZZ
    @given(
        name=st.one_of(names, names, names, odd_names),
        body=bodies(),
        content_type=st.sampled_from(["application/json"] * 4 + ["application/x+json", "text/plain", ""]),
        auth=st.one_of(*[st.just(f"Bearer {TOKEN}".encode())] * 3, HEADER_VALUE),
        stamp=st.one_of(st.just(now), st.just(now), st.sampled_from([b"nan", b"inf", b"1e999", b"-0"]), HEADER_VALUE),
        sign=st.integers(0, 3).map(bool),
        method=st.sampled_from(["POST", "POST", "POST", "GET"]),
    )
    @example(
        "plain", b"[" * 100_000 + b"]" * 100_000, "application/json", f"Bearer {TOKEN}".encode(), now, False, "POST"
    )
    @example("signed", b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "application/json", b"", now, True, "POST")
    @example("signed/heartbeat/signed-ping", b"\xff" * 1000, "", b"", now, True, "POST")
    @example("plain/heartbeat/ping", b"", "", f"Bearer {TOKEN}".encode(), now, False, "GET")
    @example(
        "pd",
        b'{"routing_key": "\\ud800", "a": ' + b"[" * 3_000 + b"]" * 3_000 + b"}",
        "application/json",
        b"",
        now,
        False,
        "POST",
    )
    def post(name, body, content_type, auth, stamp, sign, method):
        headers = {"Content-Type": content_type, "X-Timestamp": stamp}
        if auth:
            headers["Authorization"] = auth
        if sign:
            digest = hmac.new(SECRET.encode(), stamp + b":" + body, hashlib.sha256).hexdigest()
            headers["X-Signature"] = digest
            headers["Sentry-Hook-Signature"] = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        path = name if name in HEARTBEAT_PATHS else quote(name, safe="", errors="surrogatepass")
        answer = http.request(method, f"{url}/hooks/{path}", data=body, headers=headers)
        assert answer.status_code != 500 and (answer.status_code < 300 or 400 <= answer.status_code < 600)
        if answer.text.endswith("(generated by inlet)"):  # waitress refused the request itself: HTTP-level
            assert answer.status_code == 400, answer.text
        elif answer.status_code >= 400:
            assert answer.headers["Content-Type"] == "application/json", answer.text[:200]
            assert answer.json()["error"]

    post()
    assert HeartbeatState.get(HeartbeatState.name == "ping").beats >= 1  # the example's ping got through
    normal = {"title": "Fuzzing over", "dedup_key": "after-fuzz"}
    answer = http.post(f"{url}/hooks/plain", json=normal, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 202
    assert wait_for(lambda: _incident("Fuzzing over"), timeout=30, message="the incident after the fuzzing")


# ---------------------------------------------------------------- raw SMTP sessions

COMMAND = st.one_of(
    st.binary(max_size=120),
    st.tuples(
        st.sampled_from([b"EHLO ", b"HELO ", b"MAIL FROM:", b"RCPT TO:", b"NOOP ", b"VRFY ", b"RSET", b"AUTH PLAIN "]),
        st.binary(max_size=80),
    ).map(b"".join),
    st.tuples(st.sampled_from([b"MAIL FROM:<", b"RCPT TO:<"]), st.binary(max_size=40), st.just(b"@example.org>")).map(
        b"".join
    ),
    st.just(b"MAIL FROM:<fuzz@customer.example> SMTPUTF8 BODY=8BITMIME"),
    st.just(b"RCPT TO:<support@example.org>"),
).map(lambda line: line.replace(b"\r", b"").replace(b"\n", b""))


@st.composite
def messages(draw) -> bytes:
    charset = draw(st.sampled_from([b"utf-8", b"utf-7", b"unicode-escape", b"utf-16", b"x-unknown", b"zlib"]))
    subject = draw(st.binary(max_size=60) | st.sampled_from([b"=?utf-7?Q?+2AA-?=", b"=?unicode-escape?Q?\\ud800?="]))
    body = draw(st.binary(max_size=400) | st.sampled_from([b"+2AA-", b"\\udfff", b"\xed\xa0\x80"]))
    depth = draw(st.integers(0, 30))
    nested = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth))
    head = b"From: " + draw(st.binary(max_size=40)) + b" <fuzz@customer.example>\r\nSubject: " + subject
    head += b"\r\nMIME-Version: 1.0\r\n"
    raw = head + nested + b"Content-Type: text/plain; charset=" + charset + b"\r\n\r\n" + body + b"\r\n"
    lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"").split(b"\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)  # dot-stuffing


def _reply(reader) -> bytes:
    lines = [reader.readline()]
    while SMTP_REPLY.fullmatch(lines[-1]) and lines[-1][3:4] == b"-":
        lines.append(reader.readline())
    for line in lines:
        assert SMTP_REPLY.fullmatch(line), lines  # a code and a text, never a traceback or silence
    return lines[-1]


def test_smtp_sessions_get_a_protocol_reply_to_everything(inlet):
    _service, _url, port = inlet

    @FUZZ
    @given(noise=st.lists(COMMAND, max_size=4), envelope=st.integers(0, 3), message=messages())
    def session(noise, envelope, message):
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            reader = sock.makefile("rb")
            assert _reply(reader).startswith(b"220")

            def command(line: bytes) -> bytes:
                sock.sendall(line + b"\r\n")
                code = _reply(reader)
                if code.startswith(b"354"):  # a DATA among the noise: end the message at once
                    sock.sendall(b".\r\n")
                    code = _reply(reader)
                return code

            for line in noise:
                if command(line)[:3] in (b"221", b"421"):  # the server ended the session, cleanly
                    return
            if envelope:  # mostly a well-formed envelope, so that the message gets as far as the store
                for line in (
                    b"EHLO fuzz.example",
                    b"MAIL FROM:<fuzz@customer.example>",
                    b"RCPT TO:<support@example.org>",
                ):
                    command(line)
            sock.sendall(b"DATA\r\n")
            code = _reply(reader)
            if code.startswith(b"354"):
                sock.sendall(message + b"\r\n.\r\n")
                _reply(reader)
            sock.sendall(b"QUIT\r\n")
            assert _reply(reader)[:3] in (b"221", b"421")

    session()
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@customer.example", SUPPORT, "Fuzzing over, printer jammed"
    msg["Message-ID"] = make_msgid(domain="customer.example")
    msg.set_content("A normal message after the fuzzing.")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.send_message(msg)
    assert wait_for(
        lambda: _incident("Fuzzing over, printer jammed"), timeout=60, message="the normal email's incident"
    )


def _incident(title: str):
    with db.connection_context():
        return Incident.get_or_none(Incident.title == title)
