"""Notifications end to end: lifecycle hook → outbox rows → delivery → real loopback receivers.

Apprise ``json://`` and ``form://`` go to a loopback HTTP sink, reporter email
to a loopback aiosmtpd sink. Time is a FixedClock: backoff and rate windows
are crossed by moving it, and the delivery's ``tick()`` is called directly.
Apprise's plugin throttle is set to 0 by the configuration (apprise_throttle).
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from gateway.accounts import create_user
from gateway.config.mail_settings import email_options, message_id_secret
from gateway.core.clock import Clock, FixedClock
from gateway.service import build_lifecycle
from notifiers import digest
from notifiers.apprise_adapter import channel_key
from notifiers.delivery import Delivery
from notifiers.mailer import build_message
from notifiers.outbox import counts_by_status, enqueue
from notifiers.render import Rendered, Renderer
from parsers.email import verify_message_id
from store.models import CorrelationKey, Event, Notification, NotificationAttempt
from tests.conftest import free_port, wait_for
from tests.sinks import HttpSink, SmtpSink

INTAKE = "desk@inlet.example.org"


@pytest.fixture
def smtp():
    sink = SmtpSink(free_port()).start()
    yield sink
    sink.stop()


@pytest.fixture
def http():
    sink = HttpSink(free_port()).start()
    yield sink
    sink.stop()


@pytest.fixture
def clock():
    return FixedClock()


def make_config(store, smtp, tmp_path, *, channels=(), stakeholders=(), **notifications):
    settings = {
        "from_address": INTAKE,
        "smtp_port": smtp.port,
        "apprise_throttle": "0s",
        "backoff": "10s",
        "backoff_max": "1m",
        "max_attempts": 3,
        "send_timeout": "5s",
    }
    settings.update(notifications)
    return store.config(
        inlet={"data_dir": str(tmp_path / "data"), "base_url": "https://inlet.example.org"},
        notifications=settings,
        group=[
            {"name": "service-desk", "escalation": "default", "channels": list(channels)},
            {"name": "network", "escalation": "default", "channels": list(channels)},
            {"name": "security"},
        ],
        stakeholder=list(stakeholders),
        mail={"loop_token": INTAKE},
    )


@pytest.fixture
def setup(store, smtp, http, clock, tmp_path):
    """A config with the HTTP sink as the groups' json:// channel, a lifecycle with the hook, a delivery."""
    made = []

    def build(**kwargs):
        kwargs.setdefault("channels", [f"json://{http.url}"])
        config = make_config(store, smtp, tmp_path, **kwargs)
        delivery = Delivery(config, clock=clock, worker_id="w1")
        made.append(delivery)
        return config, build_lifecycle(config, clock), delivery

    yield build
    for delivery in made:
        delivery.pool.shutdown()


def drain(delivery) -> int:
    """Tick until nothing is due; return the rows handled."""
    total = 0
    while n := delivery.tick():
        total += n
    return total


def create(lc, **kwargs):
    values = dict(title="VPN down", actor="alice", reporter_email="ann@example.org", group="network")
    values.update(kwargs)
    return lc.create(**values)


# ------------------------------------------------------------ reporter email


def test_acknowledgement_email_threads_and_is_marked_automatic(setup, smtp, http, clock):
    config, lc, delivery = setup()
    incident = create(lc, description="Cannot connect since 9:00")
    assert drain(delivery) == 2  # the reporter's acknowledgement, the group's "new"

    ((mail_from, rcpts, msg),) = smtp.messages
    assert rcpts == ["ann@example.org"]
    assert mail_from == INTAKE
    assert f"[{incident.ref}]" in msg["Subject"]
    assert INTAKE in msg["From"] and msg["Reply-To"] == INTAKE
    assert msg["Auto-Submitted"] == "auto-replied"  # it answers the reporter's message (RFC 3834 section 5)
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["X-Loop"] == INTAKE
    text = msg.get_body(("plain",)).get_content()
    # the reporter has no account: the link opens their page of this incident (web/reporter.py), not the agents'
    assert incident.ref in text and "VPN down" in text and "https://inlet.example.org/r/" in text
    assert "/incidents/" not in text
    html = msg.get_body(("html",)).get_content()
    assert 'href="https://inlet.example.org/r/' in html
    # The Message-ID is Inlet's (verifiable) and recorded on the incident, so a reply threads back.
    assert verify_message_id(msg["Message-ID"], email_options(config)) == incident.ref
    key = CorrelationKey.get(CorrelationKey.kind == "message-id")
    assert key.incident_id == incident.id and f"<{key.value}>" == msg["Message-ID"]

    (group_message,) = http.json()
    assert incident.ref in group_message["title"] and "network" in group_message["message"]


def test_updates_resolution_and_closure_reach_the_reporter_in_one_thread(setup, smtp):
    config, lc, delivery = setup(channels=[])
    incident = create(lc)
    lc.note(incident.ref, "bob", "Internal: checking the gateway")  # internal: not sent
    lc.note(incident.ref, "bob", "We are restarting the VPN gateway.", public=True)
    lc.resolve(incident.ref, "bob", code="fixed", notes="Gateway restarted.", cause="software")
    lc.close(incident.ref, "bob")
    drain(delivery)

    subjects = [m["Subject"] for _f, _r, m in smtp.messages]
    assert [s.split(":")[0] for s in subjects] == [f"[{incident.ref}] Received", f"[{incident.ref}] Update"] + [
        f"[{incident.ref}] Resolved",
        f"[{incident.ref}] Closed",
    ]
    bodies = [m.get_body(("plain",)).get_content() for _f, _r, m in smtp.messages]
    assert "restarting the VPN gateway" in bodies[1] and "checking the gateway" not in "".join(bodies)
    assert "Gateway restarted." in bodies[2] and "Reply to this message if it is not fixed" in bodies[2]
    ack_id = smtp.messages[0][2]["Message-ID"]
    for _f, _r, msg in smtp.messages[1:]:
        assert msg["In-Reply-To"] == ack_id and ack_id in msg["References"]
    ids = {m["Message-ID"] for _f, _r, m in smtp.messages}
    assert len(ids) == 4
    keys = {f"<{k.value}>": k.open for k in CorrelationKey.select().where(CorrelationKey.kind == "message-id")}
    assert set(keys) == ids
    assert keys[smtp.messages[-1][2]["Message-ID"]] is False  # closed: a reply opens a new incident


def test_no_acknowledgement_when_the_caller_says_so(setup, smtp):
    _config, lc, delivery = setup(channels=[])
    create(lc, context={"acknowledge_reporter": False})
    drain(delivery)
    assert smtp.messages == []
    assert Notification.select().count() == 0


def test_security_acknowledgement_is_neutral_and_no_stakeholder_hears(setup, smtp, http):
    stake = {"name": "all", "notify": [f"json://{http.url}"]}
    _config, lc, delivery = setup(channels=[], stakeholders=[stake])
    incident = create(
        lc, title="Phishing from ceo-fake.example", description="Password entered", security=True, major=True
    )
    drain(delivery)
    ((_f, _r, msg),) = smtp.messages
    everything = msg.as_string()
    assert incident.ref in msg["Subject"]
    assert "Phishing" not in everything and "Password entered" not in everything and "ceo-fake" not in everything
    assert http.requests == []


def test_security_stakeholder_opted_in_gets_neutral_text(setup, http):
    stake = {"name": "ciso", "notify": [f"json://{http.url}"], "security": True}
    _config, lc, delivery = setup(channels=[], stakeholders=[stake])
    create(lc, title="Ransomware on fileserver", reporter_email=None, security=True, major=True)
    drain(delivery)
    ((message),) = http.json()
    assert "MAJOR" in message["title"] and "Ransomware" not in message["title"] + message["message"]


def test_crlf_in_incident_data_cannot_add_headers(setup, smtp):
    _config, lc, delivery = setup(channels=[])
    incident = create(lc)
    lc.update(incident.ref, "bob", title="VPN\r\nBcc: victim@example.org\r\n\r\nbody")
    lc.note(incident.ref, "bob", "Update\r\nBcc: victim2@example.org", public=True)
    drain(delivery)
    for _f, rcpts, msg in smtp.messages:
        assert rcpts == ["ann@example.org"]
        assert msg["Bcc"] is None
        assert "\n" not in msg["Subject"]


def test_build_message_refuses_to_break_headers(store, smtp, tmp_path):
    config = make_config(store, smtp, tmp_path)
    message = Rendered("a\r\nBcc: x@example.org\x00", "text", "md", "<p>html</p>")
    msg = build_message(config, "ann@example.org", message, message_id="<id\r\nX-Evil: 1@x>", references=["<a@b>"])
    raw = msg.as_bytes()
    assert b"\nBcc:" not in raw and b"\nX-Evil:" not in raw and b"\x00" not in raw


# ------------------------------------------------------------ groups and stakeholders


def test_group_channels_on_reassignment_and_reopen_and_form_channel(setup, http):
    config, lc, delivery = setup(channels=[f"form://{http.url}"])
    incident = create(lc, reporter_email=None, group="service-desk")
    lc.assign(incident.ref, "bob", group="network", reason="VPN is network's")
    lc.resolve(incident.ref, "bob", code="fixed", notes="done", cause="software")
    lc.reopen(incident.ref, "ann", "still broken")
    drain(delivery)
    titles = [f["title"] for f in http.forms()]
    assert len(titles) == 3
    assert "New" in titles[0] and "Assigned to network" in titles[1] and "Reopened" in titles[2]
    assert "from service-desk" in http.forms()[1]["message"]


def test_no_paging_of_groups_when_the_caller_says_so(setup, http, smtp):
    _config, lc, delivery = setup()
    create(lc, context={"page": False})
    drain(delivery)
    assert http.requests == []
    assert len(smtp.messages) == 1  # the reporter is still told


def test_stakeholders_by_priority_and_events(setup, http):
    p1 = {"name": "p1-chat", "notify": [f"json://{http.url}"], "priorities": ["P1"]}
    _config, lc, delivery = setup(channels=[], stakeholders=[p1])
    quiet = create(lc, reporter_email=None, impact="low", urgency="low", major=True)
    loud = create(lc, reporter_email=None, impact="high", urgency="high", title="Core switch down")
    lc.update(loud.ref, "bob", major=True, procedure="major")
    lc.note(loud.ref, "bob", "Vendor engaged", public=True)
    create_user("bob", "agent", "pw-bob-long-enough")
    lc.assign(loud.ref, "bob", assignee="bob")  # a major incident's commander
    lc.resolve(loud.ref, "bob", code="fixed", notes="Switch replaced", cause="hardware")
    drain(delivery)
    messages = http.json()
    assert [m["title"].split(":")[0] for m in messages] == [
        f"[{loud.ref}] MAJOR INCIDENT",
        f"[{loud.ref}] Update",
        f"[{loud.ref}] Resolved",
    ]
    assert "Vendor engaged" in messages[1]["message"] and quiet.ref not in str(messages)


def test_engine_templates_render(setup, http):
    _config, lc, delivery = setup(channels=[])
    incident = create(lc, reporter_email=None)
    for template, context in (
        ("escalation", {"step": 1, "condition": "unacknowledged"}),
        ("sla_warning", {"target": "resolve", "due": "2026-01-05 13:00"}),
        ("sla_breach", {"target": "respond"}),
        ("major_declared", {}),
        ("major_reminder", {}),
    ):
        enqueue(
            audience="escalation",
            template=template,
            targets=[f"json://{http.url}"],
            now=lc.clock.now(),
            incident=incident,
            context=context,
        )
    drain(delivery)
    titles = [m["title"] for m in http.json()]
    assert len(titles) == 5 and all(incident.ref in t for t in titles)
    assert "step 1" in titles[0] and "SLA warning" in titles[1] and "breached" in http.json()[2]["message"]


# ------------------------------------------------------------ retries and failure


def test_sink_down_is_retried_with_backoff_and_delivered_once_up(setup, store, clock):
    down = HttpSink(free_port())  # not started: connections are refused
    _config, lc, delivery = setup(channels=[f"json://{down.url}"])
    create(lc, reporter_email=None)
    assert delivery.tick() == 1
    row = Notification.get()
    assert row.status == "pending" and row.attempts == 1
    assert clock.now() + timedelta(seconds=5) <= row.next_attempt_at <= clock.now() + timedelta(seconds=10)
    assert delivery.tick() == 0  # not due yet
    down.start()
    try:
        clock.advance(seconds=10)
        assert delivery.tick() == 1
        row = Notification.get()
        assert row.status == "sent" and row.attempts == 2
        assert len(down.requests) == 1
        assert [a.ok for a in NotificationAttempt.select().order_by(NotificationAttempt.id)] == [False, True]
        clock.advance(hours=1)
        assert delivery.tick() == 0 and len(down.requests) == 1
    finally:
        down.stop()


def test_permanent_failure_is_failed_with_an_event_and_the_other_target_is_sent_once(setup, http, clock):
    dead = HttpSink(free_port())
    _config, lc, delivery = setup(channels=[f"json://{http.url}", f"json://{dead.url}"])
    incident = create(lc, reporter_email=None)
    other = create(lc, reporter_email=None, group="service-desk", title="Printer jam")
    http.status = 200
    for _ in range(3):
        delivery.tick()
        clock.advance(minutes=1)
    rows = list(Notification.select().order_by(Notification.id))
    assert [r.status for r in rows] == ["failed", "failed"]
    assert all(r.attempts == 3 for r in rows)
    assert len(http.requests) == 2  # each row once to the good channel, never re-sent on retries
    good = rows[0].results[channel_key(f"json://{http.url}")]
    assert good["status"] == "sent"
    events = list(Event.select().where(Event.type == "notification_failed"))
    assert {e.incident_id for e in events} == {incident.id, other.id}
    assert all(e.visibility == "internal" and "Connection error" in e.body for e in events)
    assert counts_by_status()["failed"] == 2


def test_an_invalid_url_fails_at_once(setup, http):
    _config, lc, delivery = setup(channels=["nosuchscheme://x", f"json://{http.url}"])
    create(lc, reporter_email=None)
    delivery.tick()
    row = Notification.get()
    assert row.status == "failed" and row.attempts == 1 and len(http.requests) == 1


def test_reporter_mail_refused_permanently_fails_without_retry(setup, smtp):
    _config, lc, delivery = setup(channels=[])
    create(lc)
    smtp.refuse = 550
    delivery.tick()
    row = Notification.get()
    assert row.status == "failed" and "550" in row.last_error


# ------------------------------------------------------------ storms


def test_a_storm_to_one_channel_becomes_one_digest(setup, http, clock):
    _config, lc, delivery = setup(channels=[], rate_limit=20, rate_window="5m", batch=50)
    incident = create(lc, reporter_email=None)
    for i in range(200):
        enqueue(
            audience="group",
            template="update",
            targets=[f"json://{http.url}"],
            now=clock.now(),
            incident=incident,
            context={"body": f"row {i}"},
        )
    drain(delivery)
    assert len(http.requests) == 20
    counts = counts_by_status()
    assert counts["sent"] == 20 and counts["digested"] == 180 and counts["pending"] == 1
    (pending,) = Notification.select().where(Notification.template == digest.DIGEST)
    _start, end = digest.window(clock.now(), timedelta(minutes=5))
    assert pending.next_attempt_at == end and len(pending.context["items"]) == 180
    clock.advance(minutes=5)
    drain(delivery)
    assert len(http.requests) == 21
    last = http.json()[-1]
    assert "180 notifications" in last["title"] and last["message"].count(incident.ref) >= 180
    assert counts_by_status() == {"pending": 0, "sent": 21, "failed": 0, "digested": 180}


# ------------------------------------------------------------ concurrency


def test_sends_run_concurrently_across_rows(setup, clock):
    """Eight channels on a sink that holds each request until eight are in flight: serial sending would fail."""
    gate = threading.Barrier(8, timeout=10)

    class GatedSink(HttpSink):
        pass

    sink = GatedSink(free_port())
    sink.start()
    handler = sink.server.RequestHandlerClass
    original = handler.do_POST

    def do_post(self):
        gate.wait()
        original(self)

    handler.do_POST = do_post
    try:
        _config, lc, delivery = setup(channels=[], concurrency=8, send_timeout="20s")
        incident = create(lc, reporter_email=None)
        for i in range(8):
            enqueue(
                audience="group",
                template="update",
                targets=[f"json://{sink.url}{i}"],
                now=clock.now(),
                incident=incident,
                context={"body": str(i)},
            )
        delivery.tick()
        assert counts_by_status()["sent"] == 8
    finally:
        sink.stop()


def test_two_workers_on_postgresql_deliver_each_row_once(pg_store, smtp, http, tmp_path):
    config = make_config(pg_store, smtp, tmp_path, rate_limit=10_000, batch=10)
    lc = build_lifecycle(config)
    incident = create(lc, reporter_email=None)
    Notification.delete().execute()
    for i in range(100):
        enqueue(
            audience="group",
            template="update",
            targets=[f"json://{http.url}"],
            now=Clock().now(),
            incident=incident,
            context={"body": f"row-{i}-end"},
        )
    workers = [Delivery(config, worker_id=f"w{n}", interval=0.05) for n in (1, 2)]
    for w in workers:
        w.start()
    try:
        wait_for(lambda: counts_by_status()["sent"] == 100, timeout=30, message="100 rows sent")
    finally:
        for w in workers:
            w.stop()
    bodies = [m["message"] for m in http.json()]
    for i in range(100):
        assert sum(f"row-{i}-end" in b for b in bodies) == 1
    assert len(bodies) == 100
    by_worker = {w: NotificationAttempt.select().where(NotificationAttempt.worker == w).count() for w in ("w1", "w2")}
    assert sum(by_worker.values()) == 100


# ------------------------------------------------------------ templates and secrets


def test_html_is_escaped_and_templates_can_be_overridden(tmp_path):
    values = {
        "ref": "INC-1",
        "title": "<script>x</script>",
        "priority": "P1",
        "status": "new",
        "group": "g",
        "link": "https://x/incidents/INC-1",
        "description": "",
        "body": "<b>hi</b>",
    }
    rendered = Renderer().render("new", values)
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html
    assert "<script>x</script>" in rendered.text
    assert "\\<script\\>" in rendered.markdown
    link_bait = Renderer().render("new", dict(values, title="[login](https://evil.example) | x"))
    assert "\\[login\\](https://evil.example) \\| x" in link_bait.markdown
    (tmp_path / "new.j2").write_text("{% extends layout %}{% block subject %}Custom {{ ref }}{% endblock %}")
    assert Renderer(str(tmp_path)).render("new", values).subject == "Custom INC-1"


def test_message_id_secret_from_env_or_generated_once(store, smtp, tmp_path, monkeypatch):
    config = make_config(store, smtp, tmp_path)
    monkeypatch.delenv("INLET_MESSAGE_ID_SECRET", raising=False)
    first = message_id_secret(config)
    assert len(first) == 64 and message_id_secret(config) == first
    assert (tmp_path / "data" / "message-id.key").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("INLET_MESSAGE_ID_SECRET", "from-the-environment")
    assert message_id_secret(config) == b"from-the-environment"


# ------------------------------------------------------------ threading back (the intake side)


def test_a_reply_to_the_acknowledgement_finds_its_incident_and_our_own_mail_is_a_loop(setup, smtp):
    """What the email intake sees: the reply's References lead to the incident by one key lookup.

    The full path through the SMTP intake is the integration test the lead
    adds once the email intake is merged (see the report).
    """
    from email.message import EmailMessage

    from gateway.audiences import MESSAGE_ID
    from gateway.pipeline.signal_steps import find_by_key
    from parsers.email import OWN_LOOP, classify_mail, parse_email

    config, lc, delivery = setup(channels=[])
    incident = create(lc)
    drain(delivery)
    ((_f, _r, ack),) = smtp.messages
    options = email_options(config)

    reply = EmailMessage()
    reply["From"] = "Ann <ann@example.org>"
    reply["To"] = INTAKE
    reply["Subject"] = "Re: " + ack["Subject"]
    reply["Message-ID"] = "<reply-1@example.org>"
    reply["In-Reply-To"] = ack["Message-ID"]
    reply["References"] = ack["Message-ID"]
    reply.set_content("It is still broken.")
    signal = parse_email(reply.as_bytes(), options)
    assert find_by_key(MESSAGE_ID, [r.strip("<>") for r in signal.references]).id == incident.id
    assert classify_mail(reply, options)[0] != OWN_LOOP

    assert classify_mail(ack, options)[0] == OWN_LOOP  # our acknowledgement bounced back to the intake


# ------------------------------------------------------------ command line and service


def test_notify_test_command(store, smtp, http, tmp_path, capsys):
    from gateway.cli.main import main

    path = store.write_config(
        inlet={"data_dir": str(tmp_path / "data")},
        notifications={"from_address": INTAKE, "smtp_port": smtp.port, "apprise_throttle": "0s"},
        group=[
            {"name": "service-desk", "channels": [f"json://{http.url}", f"form://{http.url}"]},
            {"name": "network"},
            {"name": "security"},
        ],
        escalation=[],
    )
    assert main(["-c", str(path), "notify", "test", "service-desk"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in out] == ["OK", "OK"]
    assert len(http.requests) == 2 and all(b"Test" in r["body"] for r in http.requests)

    assert main(["-c", str(path), "notify", "test", "email:ann@example.org"]) == 0
    assert capsys.readouterr().out.startswith("OK\temail:ann@example.org")
    assert smtp.messages[-1][2]["Subject"].startswith("Test message")

    dead = f"json://127.0.0.1:{free_port()}/x"
    assert main(["-c", str(path), "notify", "test", dead]) == 1
    assert capsys.readouterr().out.startswith("FAILED\tjson://127.0.0.1")

    assert main(["-c", str(path), "notify", "test", "network"]) == 1
    assert "has no channels" in capsys.readouterr().err
    assert main(["-c", str(path), "notify", "test", "nobody"]) == 1
    assert "not an Apprise URL" in capsys.readouterr().err


def test_serve_runs_the_delivery_worker(store, smtp, http, tmp_path):
    from gateway.service import Service

    config = make_config(store, smtp, tmp_path, channels=[f"json://{http.url}"])
    service = Service(config, roles={"notify"})
    assert any(isinstance(c, Delivery) for c in service.components)
    service.start()
    try:
        create(service.lifecycle, reporter_email=None)
        wait_for(lambda: http.requests, timeout=10, message="the group's message")
    finally:
        service.stop()


def test_a_failing_channel_is_tried_once_per_round(setup, http, clock):
    _config, lc, delivery = setup(channels=[])
    incident = create(lc, reporter_email=None)
    http.status = 500
    for i in range(3):
        enqueue(
            audience="group",
            template="update",
            targets=[f"json://{http.url}"],
            now=clock.now(),
            incident=incident,
            context={"body": str(i)},
        )
    assert delivery.tick() == 3
    assert len(http.requests) == 1
    details = [a.detail for a in NotificationAttempt.select().order_by(NotificationAttempt.id)]
    assert len(details) == 3 and sum(d.startswith("not tried") for d in details) == 2
    http.status = 200
    clock.advance(minutes=1)
    assert delivery.tick() == 3 and len(http.requests) == 4
    assert counts_by_status()["sent"] == 3


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"notifications": {"from_address": "nobody"}}, "[notifications] → from_address: must be an email address"),
        ({"notifications": {"lease": "10s"}}, "[notifications] → lease: must be at least 4 × send_timeout"),
        ({"notifications": {"backoff": "2h"}}, "[notifications] → backoff_max: must be at least 'backoff'"),
        ({"notifications": {"smtp_security": "tls"}}, "smtp_security: must be one of none, starttls, ssl"),
        ({"stakeholder": [{"name": "x"}]}, "[[stakeholder]] 'x' → notify: needs at least one Apprise URL"),
        ({"stakeholder": [{"name": "x", "notify": ["json://h/"], "events": ["new"]}]}, "events: must be among"),
        ({"stakeholder": [{"name": "x", "notify": ["network"]}]}, "'network' is not an Apprise URL"),
    ],
)
def test_notification_settings_are_checked(tmp_path, sections, message):
    from gateway.config.loader import config_from_dict
    from gateway.core.errors import ConfigError
    from tests.conftest import base_config_dict

    with pytest.raises(ConfigError) as err:
        config_from_dict(base_config_dict("sqlite:///x.db", **sections), "inlet.toml")
    assert message in str(err.value)


def test_a_slow_channel_stops_within_its_round_budget_and_the_rest_is_deferred(setup, clock):
    slow = HttpSink(free_port()).start()
    handler = slow.server.RequestHandlerClass
    original, pause = handler.do_POST, threading.Event().wait

    def do_post(self):
        pause(0.6)  # a slow webhook: the server takes its time
        original(self)

    handler.do_POST = do_post
    try:
        _config, lc, delivery = setup(channels=[], send_timeout="1s", lease="4s")  # 2 s per channel per round
        incident = create(lc, reporter_email=None)
        for i in range(6):
            enqueue(
                audience="group",
                template="update",
                targets=[f"json://{slow.url}"],
                now=clock.now(),
                incident=incident,
                context={"body": str(i)},
            )
        assert delivery.tick() == 6
        rows = list(Notification.select().order_by(Notification.id))
        statuses = [r.status for r in rows]
        sent = statuses.count("sent")
        assert 1 <= sent <= 4 and statuses == ["sent"] * sent + ["pending"] * (6 - sent)
        assert all(r.attempts == 0 and r.next_attempt_at == clock.now() for r in rows[sent:])
        assert NotificationAttempt.select().count() == sent == len(slow.requests)
        drain(delivery)  # the deferred rows are due at once
        assert counts_by_status()["sent"] == 6 and len(slow.requests) == 6
    finally:
        slow.stop()


def test_a_crashed_workers_rows_are_taken_over_after_the_lease(setup, http, clock):
    config, lc, crashed = setup()
    create(lc, reporter_email=None)
    assert len(crashed.claim()) == 1  # claimed, then the worker dies before sending
    other = Delivery(config, clock=clock, worker_id="w2")
    try:
        assert other.tick() == 0  # the lease still holds
        clock.advance(minutes=5, seconds=1)
        assert other.tick() == 1
        assert len(http.requests) == 1 and Notification.get().status == "sent"
    finally:
        other.pool.shutdown()


def test_a_row_for_a_group_without_channels_fails_visibly(setup, clock):
    _config, lc, delivery = setup(channels=[])
    incident = create(lc, reporter_email=None)
    enqueue(audience="group", template="new", targets=["network"], now=clock.now(), incident=incident)
    delivery.tick()
    row = Notification.get()
    assert row.status == "failed" and "no channels" in row.last_error
    assert Event.get(Event.type == "notification_failed").incident_id == incident.id


@pytest.mark.parametrize("setting, context", [(True, {"acknowledge_reporter": False}), (False, {})])
def test_acknowledgement_can_be_switched_off(setup, smtp, setting, context):
    _config, lc, delivery = setup(channels=[], acknowledge_reporter=setting)
    incident = create(lc, context=context)
    lc.note(incident.ref, "bob", "We are on it", public=True)
    drain(delivery)
    assert [m["Subject"].split(":")[0] for _f, _r, m in smtp.messages] == [f"[{incident.ref}] Update"]


def test_an_undeliverable_reporter_is_not_written_to(setup, smtp, clock):
    from store.models import Contact

    _config, lc, delivery = setup(channels=[])
    create(lc)
    Contact.update(undeliverable_until=clock.now() + timedelta(days=1)).execute()
    create(lc, title="Second")
    drain(delivery)
    assert len(smtp.messages) == 1


def test_group_mailto_channel_goes_through_apprise_with_loop_headers(setup, smtp):
    channel = f"mailto://127.0.0.1:{smtp.port}?from=inlet@inlet.example.org&to=network@example.org&mode=insecure"
    _config, lc, delivery = setup(channels=[channel])
    incident = create(lc, reporter_email=None)
    drain(delivery)
    ((_f, rcpts, msg),) = smtp.messages
    assert rcpts == ["network@example.org"] and incident.ref in msg["Subject"]
    assert msg["Auto-Submitted"] == "auto-generated" and msg["X-Loop"] == INTAKE
    assert msg["X-Auto-Response-Suppress"] == "All"


def test_timers_tell_the_group_about_sla_warning_and_breach(setup, http, clock):
    from gateway.audiences import enqueue_for_group

    config, lc, delivery = setup()
    incident = create(lc, reporter_email=None)
    enqueue_for_group(config, incident, "sla_warning", now=clock.now(), context={"target": "resolve", "due": "13:00"})
    enqueue_for_group(config, incident, "sla_breach", now=clock.now(), context={"target": "resolve"})
    drain(delivery)
    titles = [m["title"] for m in http.json()]
    assert titles[1:] == [f"[{incident.ref}] SLA warning: VPN down", f"[{incident.ref}] SLA breached: VPN down"]
    assert "close to its resolve target (13:00)" in http.json()[1]["message"]
