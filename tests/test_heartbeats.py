"""Heartbeats: a source that goes silent opens exactly one incident, and beats again resolve it.

Time moves through the project's clock (FixedClock), never by sleeping: the timers' look at the
heartbeats (HeartbeatTimer.tick) runs at the instants the test chooses, the pipeline worker of a
real Service applies what it writes, and pings go through the real HTTP endpoint. Both databases;
the race of two timer processes on PostgreSQL runs in two real processes.
"""

from __future__ import annotations

import json
import multiprocessing
from datetime import timedelta
from email.message import EmailMessage

import pytest
import requests

from gateway.core.clock import FixedClock
from gateway.incidents.heartbeats import EXPIRED, LATE, OK, WAITING, HeartbeatTimer, polled, statuses
from gateway.service import Service
from store.db import db
from store.models import PENDING, Event, HeartbeatState, Inbound, Incident, Notification
from tests.conftest import wait_for
from tests.test_imap import dovecot  # noqa: F401 -- the real Dovecot fixture

TOKEN, SECRET = "t0ken-for-heartbeats", "s3cret-for-heartbeats"
INTEGRATIONS = [
    {"name": "am", "kind": "alertmanager", "token_env": "HB_TOKEN", "rate_limit": 5, "rate_window": "1h"},
    {"name": "signed", "kind": "generic", "auth": "hmac", "secret_env": "HB_SECRET"},
    {"name": "unset", "kind": "generic", "token_env": "HB_TOKEN_NOT_SET"},
]
HEARTBEATS = [
    {"name": "alertmanager", "interval": "5m", "grace": "2m", "integration": "am", "group": "network",
     "priority": "P1"},
    {"name": "watchdog", "interval": "5m", "grace": "1m", "integration": "am", "labels": {"alertname": "Watchdog"}},
    {"name": "backup", "interval": "1d", "grace": "1h", "mail_from": r"^cron@example\.org$",
     "mail_subject": r"^backup (done|ok)"},
    {"name": "unset", "interval": "5m", "integration": "unset"},
]  # fmt: skip


class Inlet:
    def __init__(self, service: Service, clock: FixedClock):
        self.service, self.clock, self.config = service, clock, service.config
        web = next(c for c in service.components if c.name == "web")
        self.url = f"http://127.0.0.1:{web.port}"
        self.http = requests.Session()
        self.timer = HeartbeatTimer(lambda: self.config, clock)

    def ping(self, name="alertmanager", integration="am", *, method="GET", token=TOKEN, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = f"{self.url}/hooks/{integration}/heartbeat/{name}"
        return self.http.request(method, url, headers=headers, timeout=30, **kwargs)

    def tick(self, name="alertmanager") -> int:
        """The timers' look at the heartbeats; how many expiries or recoveries of ``name`` it wrote."""
        before = self.written(name)
        self.timer.tick()
        self.settled()
        return self.written(name) - before

    def written(self, name) -> int:
        return Inbound.select().where(Inbound.integration == f"heartbeat:{name}").count()

    def settled(self):
        wait_for(lambda: Inbound.select().where(Inbound.status == PENDING).count() == 0, timeout=20)

    def state(self, name="alertmanager"):
        return next(s for s in statuses(self.config, self.clock.now()) if s.name == name)

    def incidents(self, name="alertmanager"):
        return list(Incident.select().where(Incident.integration == f"heartbeat:{name}").order_by(Incident.id))


@pytest.fixture
def inlet(store, monkeypatch):
    monkeypatch.setenv("HB_TOKEN", TOKEN)
    monkeypatch.setenv("HB_SECRET", SECRET)
    monkeypatch.delenv("HB_TOKEN_NOT_SET", raising=False)
    config = store.config(integration=INTEGRATIONS, heartbeat=HEARTBEATS)
    clock = FixedClock()
    db.close()
    service = Service(config, roles={"web", "worker"}, clock=clock)
    service.start()
    running = Inlet(service, clock)
    yield running
    running.http.close()
    service.stop()


def test_a_silent_source_opens_one_incident_and_its_next_beat_resolves_it(inlet):
    start = inlet.clock.now()
    assert inlet.tick() == 0
    assert inlet.state().state == WAITING
    answer = inlet.ping()  # cron + curl: GET with the token
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"heartbeat": "alertmanager", "beat_at": "2026-01-05T09:00:00.000Z"}
    assert inlet.state().state == OK
    assert inlet.state().due_at == start + timedelta(minutes=5)

    inlet.clock.advance(minutes=6)
    assert inlet.tick() == 0 and inlet.state().state == LATE
    inlet.clock.advance(minutes=2)
    assert inlet.tick() == 1
    assert inlet.state().state == EXPIRED
    for _ in range(3):  # every later look finds it expired already: nothing more is written
        inlet.clock.advance(minutes=10)
        assert inlet.tick() == 0
    (incident,) = inlet.incidents()
    assert incident.title == "alertmanager silent since 2026-01-05 09:00 UTC"
    assert (incident.group, incident.priority, incident.status) == ("network", "P1", "new")

    inlet.clock.advance(minutes=1)
    assert inlet.ping(method="POST").status_code == 202  # beats resume
    assert inlet.state().state == OK
    assert inlet.tick() == 1
    incident = Incident.get_by_id(incident.id)
    assert (incident.status, incident.resolution_code) == ("resolved", "auto-recovered")
    resolved = Event.get((Event.incident == incident) & (Event.type == "resolved"))
    assert resolved.actor == "heartbeat:alertmanager"
    assert inlet.tick() == 0 and len(inlet.incidents()) == 1

    # Silent again much later (past the reopen window): a new incident, again exactly one.
    inlet.clock.advance(hours=3)
    assert inlet.tick() == 1 and inlet.tick() == 0
    assert [i.status for i in inlet.incidents()] == ["resolved", "new"]
    assert inlet.incidents()[1].title == "alertmanager silent since 2026-01-05 09:39 UTC"


def test_a_heartbeat_that_never_beats_expires_from_when_inlet_began_to_watch_it(inlet):
    assert inlet.tick() == 0
    inlet.clock.advance(minutes=7, seconds=1)
    assert inlet.tick() == 1
    (incident,) = inlet.incidents()
    assert "silent since 2026-01-05 09:00 UTC" in incident.title
    assert "the last sign of life was at 2026-01-05 09:00 UTC" in incident.description


def test_pings_are_authenticated_limited_and_fail_closed(inlet):
    assert inlet.ping(token=None).status_code == 401
    assert inlet.ping(token="wrong").status_code == 403
    assert inlet.ping(name="nope").status_code == 404
    assert inlet.ping(integration="nope").status_code == 404
    assert inlet.ping(name="alertmanager", integration="signed").status_code == 404  # not its integration
    assert inlet.ping(name="unset", integration="unset").status_code == 503  # its token is not configured
    big = b"x" * (inlet.config.web.max_body_size + 1)
    assert inlet.ping(method="POST", data=big).status_code == 413
    assert HeartbeatState.get_or_none(HeartbeatState.name == "alertmanager") is None  # none of them was a beat
    answers = [inlet.ping().status_code for _ in range(6)]
    assert answers == [202] * 5 + [429]  # the integration's rate limit counts pings too
    assert HeartbeatState.get(HeartbeatState.name == "alertmanager").beats == 5


def test_the_watchdog_alert_is_a_beat_and_opens_no_incident(inlet):
    watchdog = {
        "version": "4",
        "groupKey": "{}:{}",
        "status": "firing",
        "receiver": "inlet",
        "alerts": [{"status": "firing", "labels": {"alertname": "Watchdog", "severity": "none"},
                    "annotations": {}, "startsAt": "2026-01-05T08:00:00Z", "fingerprint": "w1"}],
    }  # fmt: skip
    for _ in range(3):  # the same body each time, as Alertmanager repeats it: a repeat is a beat too
        answer = inlet.http.post(
            f"{inlet.url}/hooks/am", json=watchdog, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        assert answer.status_code == 202, answer.text
        inlet.settled()
        inlet.clock.advance(minutes=4)
    assert Incident.select().count() == 0
    assert inlet.state("watchdog").state == OK
    assert HeartbeatState.get(HeartbeatState.name == "watchdog").beats == 3
    (inbound,) = Inbound.select()
    assert inbound.status == "ignored" and "heartbeat watchdog" in inbound.reason


def _mail(sender: str, subject: str) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, "desk@example.org", subject
    message["Message-ID"] = f"<{abs(hash((sender, subject)))}@example.org>"
    message.set_content("all good")
    return bytes(message)


def test_mail_from_a_sender_and_subject_pattern_is_a_beat(inlet):
    with db.atomic():
        for sender, subject in (("cron@example.org", "Backup done: 3 GB"), ("someone@example.org", "backup done")):
            Inbound.create(source="smtp", received_at=inlet.clock.now(), raw=_mail(sender, subject),
                           envelope_from=sender, envelope_to=["desk@example.org"])  # fmt: skip
    inlet.settled()
    assert HeartbeatState.get(HeartbeatState.name == "backup").beats == 1
    assert inlet.state("backup").state == OK
    assert Incident.select().count() == 1  # the other sender's mail is an ordinary message


def test_a_hostile_subject_is_matched_in_linear_time(inlet):
    hostile = "backup " + "a" * 50_000 + "!"
    with db.atomic():
        Inbound.create(source="smtp", received_at=inlet.clock.now(), raw=_mail("cron@example.org", hostile),
                       envelope_from="cron@example.org", envelope_to=["desk@example.org"])  # fmt: skip
    inlet.settled()
    assert HeartbeatState.get_or_none(HeartbeatState.name == "backup") is None


def test_a_mailbox_with_silent_after_is_a_built_in_heartbeat(store):
    config = store.config(
        mailbox=[{"name": "support", "host": "127.0.0.1", "user": "desk", "password_env": "NOPE",
                  "silent_after": "10m", "silent_group": "network"}],
    )  # fmt: skip
    clock = FixedClock()
    timer = HeartbeatTimer(lambda: config, clock)
    box = config.mailbox[0]
    assert timer.tick() == 0
    polled(box, clock.now())  # what the poller calls after each successful scan
    clock.advance(minutes=11)
    assert timer.tick() == 1
    (status,) = statuses(config, clock.now())
    assert (status.name, status.state) == ("mailbox:support", EXPIRED)
    (inbound,) = Inbound.select().where(Inbound.source == "heartbeat")
    body = json.loads(bytes(inbound.raw))
    assert (body["heartbeat"], body["status"]) == ("mailbox:support", "firing")
    polled(box, clock.advance(minutes=1))
    assert timer.tick() == 1
    assert statuses(config, clock.now())[0].state == OK


def test_notifications_failing_too_long_open_one_incident_resolved_when_they_work_again(store):
    """The outbox is a built-in heartbeat: a beat is a moment notifications are not failing for longer than
    [notifications] failing_incident_after (as the queue's warning counts them)."""
    config = store.config(notifications={"failing_incident_after": "1h", "failing_incident_group": "network"})
    clock = FixedClock()
    timer = HeartbeatTimer(lambda: config, clock)
    service = Service(config, roles={"worker"}, clock=clock)
    service.start()
    try:
        assert timer.tick() == 0
        assert [(s.name, s.state) for s in statuses(config, clock.now())] == [("outbox:deliveries", OK)]
        failing = Notification.create(audience="group", template="created", targets=["json://127.0.0.1:9/"],
                                      attempts=2, next_attempt_at=clock.now(), created_at=clock.now(),
                                      last_error="connection refused")  # fmt: skip
        clock.advance(minutes=59)
        assert timer.tick() == 0  # failing, not yet for an hour (the queue does not warn either): a beat
        clock.advance(minutes=2)
        assert timer.tick() == 1 and timer.tick() == 0  # failing an hour, no beat for a minute: expired, once
        wait_for(lambda: Incident.select().where(Incident.integration == "heartbeat:outbox:deliveries").exists())
        (incident,) = Incident.select().where(Incident.integration == "heartbeat:outbox:deliveries")
        assert incident.group == "network" and incident.title.startswith("notifications failing since ")
        assert "not being told" in incident.description

        Notification.update(status="sent", sent_at=clock.now()).where(Notification.id == failing.id).execute()
        clock.advance(minutes=1)
        assert timer.tick() == 1  # delivered again: a beat, then the recovery
        wait_for(lambda: Incident.get_by_id(incident.id).status == "resolved")
        assert Incident.get_by_id(incident.id).resolution_code == "auto-recovered"
    finally:
        service.stop()


def test_the_outbox_heartbeat_is_off_unless_configured(store):
    assert statuses(store.config(), FixedClock().now()) == []


def _race(url: str, start_iso: str, barrier, results) -> None:
    """One timer process: open the database, wait for the other, look at the heartbeats."""
    from datetime import datetime

    from gateway.config.loader import config_from_dict
    from store.db import open_database
    from tests.conftest import base_config_dict

    config = config_from_dict(base_config_dict(url, integration=INTEGRATIONS[:1], heartbeat=HEARTBEATS[:1]))
    open_database(config)
    clock = FixedClock(datetime.fromisoformat(start_iso))
    timer = HeartbeatTimer(lambda: config, clock)
    barrier.wait(timeout=30)
    results.put(sum(timer.tick() for _ in range(20)))


def test_two_timer_processes_write_one_expiry(pg_store):
    config = pg_store.config(integration=INTEGRATIONS[:1], heartbeat=HEARTBEATS[:1])
    clock = FixedClock()
    assert HeartbeatTimer(lambda: config, clock).tick() == 0  # watched from 09:00
    later = clock.advance(minutes=8).isoformat()
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(2), spawn.Queue()
    procs = [spawn.Process(target=_race, args=(pg_store.url, later, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    written = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert sorted(written) == [0, 1]
    assert Inbound.select().where(Inbound.source == "heartbeat").count() == 1


def test_the_cli_the_api_the_page_and_metrics_show_each_heartbeat(inlet, store, capsys):
    from gateway import accounts
    from gateway.cli.main import main

    inlet.tick()
    assert inlet.ping().status_code == 202
    inlet.clock.advance(minutes=8)
    inlet.tick()  # alertmanager is expired now, with its incident
    inlet.ping(name="unset", integration="unset")  # refused: still waiting

    path = store.write_config(integration=INTEGRATIONS, heartbeat=HEARTBEATS)
    assert main(["-c", str(path), "heartbeat", "list", "--json"]) == 0
    listed = {h["name"]: h for h in json.loads(capsys.readouterr().out)}
    assert list(listed) == ["alertmanager", "watchdog", "backup", "unset"]
    assert listed["alertmanager"]["last_beat_at"] == "2026-01-05T09:00:00.000Z"
    assert listed["alertmanager"]["next_due_at"] == "2026-01-05T09:05:00.000Z"
    assert listed["alertmanager"]["state"] == "expired"  # the CLI reads the real clock: long past due
    assert main(["-c", str(path), "heartbeat", "list"]) == 0
    assert "alertmanager\texpired\tlast beat 2026-01-05 09:00 UTC\tnext due 2026-01-05 09:05 UTC" in (
        capsys.readouterr().out
    )

    for name, role in (("admin", "admin"), ("desk", "agent"), ("view", "viewer")):
        accounts.create_user(name, role, "a long password 123", email=f"{name}@example.org")
    tokens = {name: accounts.issue_api_token(name) for name in ("admin", "desk", "view")}

    def api(user):
        return inlet.http.get(f"{inlet.url}/api/v1/heartbeats", headers={"Authorization": f"Bearer {tokens[user]}"})

    assert api("view").status_code == 403
    found = {h["name"]: h for h in api("desk").json()["heartbeats"]}
    assert found["alertmanager"]["state"] == "expired"
    assert found["alertmanager"]["expired_at"] == "2026-01-05T09:08:00.000Z"
    assert [h["title"] for h in found["alertmanager"]["history"]] == ["alertmanager silent since 2026-01-05 09:00 UTC"]
    assert found["unset"]["state"] == "late"

    metrics = inlet.http.get(f"{inlet.url}/metrics", headers={"Authorization": f"Bearer {tokens['admin']}"}).text
    assert 'inlet_heartbeat_state{name="alertmanager",state="expired"} 1.0' in metrics
    assert 'inlet_heartbeat_state{name="alertmanager",state="ok"} 0.0' in metrics
    assert 'inlet_heartbeat_last_beat_timestamp_seconds{name="alertmanager"} 1.7676036e+09' in metrics


def test_a_mailbox_that_cannot_be_polled_opens_one_incident_and_resolves_when_polling_works(
    store,
    tmp_path,
    dovecot,  # noqa: F811 -- the fixture imported above
    monkeypatch,
):
    """The real Dovecot refuses the password: past silent_after one incident; the right password resolves it."""
    from gateway.intake.imap import MailboxPoller
    from tests.test_imap import PASSWORD, box

    monkeypatch.setenv("INLET_TEST_IMAP_PASSWORD", "wrong")
    monkeypatch.setenv("INLET_MESSAGE_ID_SECRET", "heartbeat-test-secret")
    config = store.config(
        inlet={"data_dir": str(tmp_path)},
        smtp={"enabled": False},
        address=[{"address": "support@example.org"}],
        mailbox=[box(dovecot, silent_after="10m", silent_group="network")],
    )
    clock = FixedClock()
    db.close()
    service = Service(config, roles={"worker"}, clock=clock)
    service.start()
    poller = MailboxPoller(config, config.mailbox[0], service.writer, clock=clock, backoff=(0.05, 0.2), timeout=10)
    poller.start()
    timer = HeartbeatTimer(lambda: config, clock)
    db.connect(reuse_if_open=True)
    try:
        timer.tick()
        wait_for(lambda: "cannot log in" in poller.last_error, message="the refused login")
        clock.advance(minutes=11)
        assert timer.tick() == 1 and timer.tick() == 0
        wait_for(lambda: Incident.select().count() == 1, message="the incident of the silent mailbox")
        incident = Incident.get()
        assert incident.title == "mailbox support not polled since 2026-01-05 09:00 UTC"
        assert incident.group == "network"

        monkeypatch.setenv("INLET_TEST_IMAP_PASSWORD", PASSWORD)  # the password is fixed: polling works again
        wait_for(
            lambda: (HeartbeatState.get_or_none(HeartbeatState.name == "mailbox:support") or HeartbeatState()).beats,
            message="a successful poll",
        )
        assert timer.tick() == 1
        wait_for(lambda: Incident.get().status == "resolved", message="the incident resolved")
        assert Incident.get().resolution_code == "auto-recovered"
    finally:
        poller.stop()
        service.stop()


BAD_HEARTBEATS = [
    ({"name": "x", "interval": "5m", "integration": "nope"}, "no [[integration]] named 'nope'"),
    ({"name": "x", "interval": "5m"}, "say what counts as a beat"),
    ({"name": "x", "interval": "0s", "integration": "am"}, "interval: must be longer than 0s"),
    ({"name": "x y", "interval": "5m", "integration": "am"}, "use letters, digits"),
    ({"name": "x", "interval": "5m", "mail_subject": "(a)\\1"}, "invalid regular expression"),
    ({"name": "x", "interval": "5m", "integration": "am", "priority": "P9"}, "unknown priority 'P9'"),
    ({"name": "x", "interval": "5m", "integration": "pd"}, "pings need an integration with auth = bearer or hmac"),
    ({"name": "x", "interval": "5m", "integration": "am", "group": "nobody"}, "no [[group]] named 'nobody'"),
]


@pytest.mark.parametrize(("entry", "message"), BAD_HEARTBEATS, ids=[m for _, m in BAD_HEARTBEATS])
def test_a_bad_heartbeat_is_a_load_error_naming_the_key(entry, message):
    from gateway.config.loader import config_from_dict
    from gateway.core.errors import ConfigError
    from tests.conftest import base_config_dict

    integrations = [INTEGRATIONS[0], {"name": "pd", "kind": "pagerduty", "auth": "routing_key", "routing_key_env": "X"}]
    with pytest.raises(ConfigError) as error:
        config_from_dict(base_config_dict("sqlite:///x.db", integration=integrations, heartbeat=[entry]))
    assert message in str(error.value) and "[[heartbeat]] 'x" in str(error.value)


def test_a_mailbox_heartbeat_must_outlast_its_poll_interval():
    from gateway.config.loader import config_from_dict
    from gateway.core.errors import ConfigError
    from tests.conftest import base_config_dict

    mailbox = {"name": "support", "host": "h", "user": "u", "password_env": "P", "silent_after": "1m"}
    with pytest.raises(ConfigError, match="silent_after: must be longer than poll_interval"):
        config_from_dict(base_config_dict("sqlite:///x.db", mailbox=[mailbox]))
