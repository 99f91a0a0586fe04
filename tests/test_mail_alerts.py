"""Alert e-mails correlate like webhook alerts: [[mail_alert]] rules and the Nagios, Icinga 2, Monit and Zabbix presets.

Through the real interface: the tools' mails (tests/fixtures/mail/, origin noted there) sent with smtplib to
Inlet's own SMTP server of a running Service, on SQLite and PostgreSQL; `inlet check` as a subprocess. The
extraction itself with Hypothesis properties. The cost of a hostile subject is bounded by RE2 (linear time).
"""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli.main import main
from gateway.config.loader import config_from_dict
from gateway.core.errors import ConfigError, ParseError
from gateway.rules import compile_regex
from parsers.email import EmailOptions, parse_email
from parsers.email.monitoring import MAIL_PRESETS, alert_signal, read_groups
from parsers.signal import FIRING, RESOLVED, Signal
from store.db import db
from store.models import FAILED, IGNORED, Inbound, Incident, Notification
from tests.conftest import base_config_dict, free_port, service_running, wait_for

FIXTURES = Path(__file__).parent / "fixtures" / "mail"
ALERTS = "alerts@inlet.example.org"
DESK = "desk@inlet.example.org"
SENDERS = {
    "nagios": "nagios@monitor.example.org",
    "icinga2": "icinga@monitor.example.org",
    "monit": "@web01.example.org",
    "zabbix": "zabbix@monitor.example.org",
}
# Nested quantifiers: a backtracking engine doubles its work per character of a subject that almost matches.
CATASTROPHIC = r"^(?P<host>(a+)+)b (?P<state>\w+)$"


def mail_alerts() -> list[dict]:
    rules = [
        {"name": tool, "preset": tool, "senders": [sender], "group": "network"} for tool, sender in SENDERS.items()
    ]
    rules.append({"name": "cron", "addresses": [ALERTS], "subject": [CATASTROPHIC], "fingerprint": ["host"]})
    return rules


@pytest.fixture
def service(store):
    config = store.config(
        smtp={"host": "127.0.0.1", "port": free_port()},
        address=[{"address": DESK, "group": "service-desk"}, {"address": ALERTS, "group": "service-desk"}],
        mail={"loop_token": DESK, "message_id_domain": "inlet.example.org"},
        mail_alert=mail_alerts(),
    )
    with service_running(config, {"smtp", "worker"}) as running:
        yield running


def send_raw(service, raw: bytes, sender: str, to: str = ALERTS) -> None:
    with smtplib.SMTP("127.0.0.1", service.smtp.port, timeout=10) as client:
        client.sendmail(sender, [to], raw)


def send_fixture(service, name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    send_raw(service, raw, "monitor@monitor.example.org")


def send(service, sender: str, subject: str, body: str = "Please look at this.", to: str = ALERTS) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message.set_content(body)
    send_raw(service, message.as_bytes(), sender, to)


def all_done(count: int):
    def check():
        with db.connection_context():
            done = Inbound.select().where(Inbound.status != "pending").count()
        return done >= count

    return check


def incidents() -> list[Incident]:
    with db.connection_context():
        return list(Incident.select().order_by(Incident.id))


def test_a_problem_a_repeat_and_a_recovery_mail_are_one_incident_resolved(service):
    send_fixture(service, "nagios-problem.eml")
    wait_for(all_done(1), message="the PROBLEM mail processed")
    (opened,) = incidents()
    assert opened.title == "web01: HTTP is CRITICAL"
    assert (opened.source, opened.integration, opened.group, opened.status) == ("email", "nagios", "network", "new")
    assert (opened.impact, opened.urgency) == ("high", "high")  # CRITICAL, through the preset's severity map
    assert opened.labels["host"] == "web01" and opened.labels["check"] == "HTTP"

    # The repeat (Nagios re-notifies while the problem lasts) counts on the same incident.
    problem = (FIXTURES / "nagios-problem.eml").read_bytes().replace(b"<nagios-1@", b"<nagios-2@")
    send_raw(service, problem, "nagios@monitor.example.org")
    wait_for(all_done(2), message="the repeat processed")
    (repeated,) = incidents()
    assert repeated.id == opened.id and repeated.signal_count == 2 and repeated.status == "new"

    send_fixture(service, "nagios-recovery.eml")
    wait_for(all_done(3), message="the RECOVERY mail processed")
    (resolved,) = incidents()
    assert resolved.id == opened.id
    assert (resolved.status, resolved.resolution_code) == ("resolved", "auto-recovered")
    with db.connection_context():
        # No reporter: the monitoring sender gets no acknowledgement and no resolution mail.
        assert resolved.reporter_id is None
        assert not Notification.select().where(Notification.audience == "reporter").exists()
        assert [i.status for i in Inbound.select().order_by(Inbound.id)] == ["processed"] * 3

    # The problem again within the reopen window: the same incident reopens, counted as a flap.
    send_raw(service, problem.replace(b"<nagios-2@", b"<nagios-5@"), "nagios@monitor.example.org")
    wait_for(all_done(4), message="the second PROBLEM processed")
    (reopened,) = incidents()
    assert (reopened.id, reopened.status, reopened.reopen_count, reopened.flap_count) == (
        opened.id,
        "in_progress",
        1,
        1,
    )


def test_mail_no_rule_reads_still_opens_a_ticket_and_is_acknowledged(service):
    send(service, "ann@example.org", "** PROBLEM Service Alert: web01/HTTP is CRITICAL **", to=DESK)
    send(service, "nagios@monitor.example.org", "Nagios weekly report", to=DESK)  # the sender, not an alert
    wait_for(all_done(2), message="both mails processed")
    opened = incidents()
    assert [i.title for i in opened] == ["** PROBLEM Service Alert: web01/HTTP is CRITICAL **", "Nagios weekly report"]
    assert all(i.integration == "" and i.reporter_id is not None for i in opened)
    with db.connection_context():
        acknowledged = Notification.select().where(
            (Notification.audience == "reporter") & (Notification.template == "acknowledgement")
        )
        assert acknowledged.count() == 2


@pytest.mark.parametrize(
    ("tool", "problem", "recovery", "title"),
    [
        ("icinga2", "icinga2-problem.eml", "icinga2-recovery.eml", "web01.example.org: Disk / is CRITICAL"),
        ("monit", "monit-problem.eml", "monit-recovery.eml", "web01.example.org: nginx: Does not exist"),
        ("zabbix", "zabbix-problem.eml", "zabbix-resolved.eml", "web01: High CPU utilization (over 90% for 5m)"),
    ],
    ids=["icinga2", "monit", "zabbix"],
)
def test_each_tool_s_default_mail_opens_and_resolves_one_incident(service, tool, problem, recovery, title):
    send_fixture(service, problem)
    wait_for(all_done(1), message=f"the {tool} problem mail processed")
    send_fixture(service, recovery)
    wait_for(all_done(2), message=f"the {tool} recovery mail processed")
    (incident,) = incidents()
    assert (incident.integration, incident.title) == (tool, title)
    assert (incident.status, incident.resolution_code) == ("resolved", "auto-recovered")
    with db.connection_context():
        inputs = list(Inbound.select().order_by(Inbound.id))
    assert [i.status for i in inputs] == ["processed", "processed"]
    if tool == "zabbix":  # marked Auto-Submitted: without the rule, screened out as an auto-reply
        assert [i.mail_class for i in inputs] == ["auto-reply", "auto-reply"]


def test_a_state_word_that_means_ignore_is_stored_and_ignored_and_an_unknown_one_is_quarantined(service):
    send(service, "nagios@monitor.example.org", "** DOWNTIMESTART Service Alert: web01/HTTP is OK **")
    send(service, "nagios@monitor.example.org", "** SURPRISE Service Alert: web01/HTTP is OK **")
    wait_for(all_done(2), message="both mails processed")
    assert incidents() == []
    with db.connection_context():
        ignored, failed = Inbound.select().order_by(Inbound.id)
    assert ignored.status == IGNORED and "DOWNTIMESTART" in ignored.reason and "ignore" in ignored.reason
    assert failed.status == FAILED and "mail alert 'nagios': state 'SURPRISE' is not one" in failed.reason


def test_a_hostile_subject_costs_milliseconds(service):
    started = time.monotonic()
    send(service, "cron@host.example.org", "a" * 400 + " FIRING")  # almost matches the catastrophic pattern
    send(service, "cron@host.example.org", "aaab PROBLEM")
    wait_for(all_done(2), timeout=5, message="both mails processed")
    assert time.monotonic() - started < 5  # a backtracking engine would take longer than the universe lasts
    titles = [i.title for i in incidents()]
    assert titles == ["a" * 400 + " FIRING", "aaab PROBLEM"]  # the first is an ordinary ticket
    assert [i.integration for i in incidents()] == ["", "cron"]


# ---------------------------------------------------------------- `inlet classify`, `inlet check`


def test_inlet_classify_explains_an_alert_mail(tmp_path, capsys):
    rules = [{"name": "nagios", "preset": "nagios", "senders": [SENDERS["nagios"]], "group": "network"}]
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(base_config_dict(f"sqlite:///{tmp_path / 'inlet.db'}", mail_alert=rules)))
    code = main(["-c", str(path), "classify", "--json", str(FIXTURES / "nagios-problem.eml")])
    explained = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (explained["title"], explained["group"], explained["priority"]) == (
        "web01: HTTP is CRITICAL",
        "network",
        "P1",
    )
    assert explained["mail_alert"] == {
        "rule": "nagios",
        "groups": {"check": "HTTP", "host": "web01", "severity": "CRITICAL", "state": "PROBLEM"},
        "status": "firing",
        "fingerprint": "mail-alert:nagios:web01|HTTP",
    }
    assert main(["-c", str(path), "classify", str(FIXTURES / "nagios-recovery.eml")]) == 0
    assert "mail alert nagios: resolved (check: HTTP, host: web01, severity: OK, state: RECOVERY)" in (
        capsys.readouterr().out
    )


def check(tmp_path, **sections) -> subprocess.CompletedProcess:
    path = tmp_path / "config.toml"
    data = base_config_dict(f"sqlite:///{tmp_path / 'inlet.db'}", **sections)
    path.write_text(tomli_w.dumps(data))
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "check", str(path)], capture_output=True, text=True, timeout=60
    )


def test_inlet_check_refuses_a_pattern_without_the_groups_a_rule_needs(tmp_path):
    rule = {"name": "cron", "senders": ["cron@example.org"], "subject": [r"^(?P<host>\S+) failed$"]}
    done = check(tmp_path, mail_alert=[rule])
    assert done.returncode == 1
    assert "[[mail_alert]] 'cron' → subject[0]: the pattern has no named group 'state'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"subject": ["(?P<host>x) (?P<state>y)"]}, "give senders (the tool's From addresses) or addresses"),
        ({"senders": ["a@b"], "subject": ["(?P<state>y)"]}, "no named group 'host'"),
        ({"senders": ["a@b"], "subject": ["(?P<host>x)(?P<state>y)"], "fingerprint": ["check"]}, "'check'"),
        ({"senders": ["a@b"], "subject": [r"(?P<host>\w+) \1 (?P<state>y)"]}, "invalid regular expression"),
        ({"addresses": ["nobody@elsewhere.example"], "preset": "nagios"}, "no [[address]] accepts mail"),
        ({"senders": ["a@b"], "preset": "nagios", "states": {"UP": "fine"}}, "must be one of firing, resolved"),
        ({"senders": ["a@b"]}, "give a subject pattern (or a preset)"),
    ],
)
def test_a_bad_mail_alert_rule_is_refused_with_the_key_at_fault(tmp_path, rule, message):
    data = base_config_dict(f"sqlite:///{tmp_path / 'x.db'}", mail_alert=[{"name": "r", **rule}])
    with pytest.raises(ConfigError) as refused:
        config_from_dict(data)
    assert "[[mail_alert]] 'r'" in str(refused.value) and message in str(refused.value)


def test_every_preset_loads_and_a_maintenance_window_may_name_a_mail_alert_rule(tmp_path):
    """A body pattern may give what the subject lacks (Monit's host): such a preset is valid."""
    rules = [{"name": tool, "preset": tool, "senders": [sender]} for tool, sender in SENDERS.items()]
    window = {"name": "upgrade", "start": "2026-12-01T22:00:00+01:00", "end": "2026-12-02T02:00:00+01:00"}
    data = base_config_dict(
        f"sqlite:///{tmp_path / 'x.db'}", mail_alert=rules, maintenance=[{**window, "integrations": ["nagios"]}]
    )
    config = config_from_dict(data)
    assert [r.name for r in config.mail_alert] == list(SENDERS)
    assert config.maintenance[0].integrations == ["nagios"]


# ---------------------------------------------------------------- the extraction, as properties

NAGIOS = MAIL_PRESETS["nagios"]
_NAGIOS_SUBJECT = tuple(compile_regex(p, ("test",)) for p in NAGIOS.subject)
_WORD = st.text(st.characters(whitelist_categories=("L", "N")), min_size=1, max_size=30)
_NAME = st.text(
    st.characters(whitelist_categories=("L", "N", "Pd"), whitelist_characters=" "), min_size=1, max_size=40
).filter(lambda t: t.strip() == t and "  " not in t)


def mail(subject: str, body: str = "") -> Signal:
    return Signal(source="email", title=subject, text=body, reporter_email="nagios@monitor.example.org")


@given(
    host=_NAME, check=_NAME, kind=st.sampled_from(["PROBLEM", "RECOVERY"]), state=st.sampled_from(["OK", "CRITICAL"])
)
@settings(max_examples=200, deadline=None)
def test_a_nagios_service_subject_gives_back_its_host_and_check(host, check, kind, state):
    groups = read_groups(_NAGIOS_SUBJECT, (), f"** {kind} Service Alert: {host}/{check} is {state} **", "")
    assert groups is not None
    assert (groups["host"], groups["check"], groups["state"], groups["severity"]) == (host, check, kind, state)
    signal = alert_signal(mail("s"), "nagios", groups, states=NAGIOS.states, title=NAGIOS.title)
    assert signal.status == (FIRING if kind == "PROBLEM" else RESOLVED)
    assert signal.fingerprint == f"mail-alert:nagios:{host}|{check}"  # the same for the problem and its recovery
    assert signal.reporter_email is None and signal.labels["sender"] == "nagios@monitor.example.org"


def test_a_nagios_host_alert_is_its_own_alert_apart_from_the_host_s_services():
    raw = (FIXTURES / "nagios-host-problem.eml").read_bytes()
    groups = read_groups(_NAGIOS_SUBJECT, (), parse_email(raw, EmailOptions()).title, "")
    signal = alert_signal(mail("s"), "nagios", groups, states=NAGIOS.states, title=NAGIOS.title)
    assert (signal.title, signal.status, signal.severity) == ("db02 is DOWN", FIRING, "DOWN")
    assert signal.fingerprint == "mail-alert:nagios:db02|"  # no check: not any service's of db02


@given(subject=st.text(max_size=300), body=st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_text_gives_groups_with_host_and_state_or_nothing(subject, body):
    for preset in MAIL_PRESETS.values():
        patterns = tuple(compile_regex(p, ("t",)) for p in preset.subject)
        body_patterns = tuple(compile_regex(p, ("t",)) for p in preset.body)
        groups = read_groups(patterns, body_patterns, subject, body)
        if groups is None:
            continue
        assert groups["host"] and groups["state"]
        try:
            signal = alert_signal(mail(subject, body), preset.name, groups, states=preset.states, title=preset.title)
        except ParseError as refused:  # a state word the preset does not know: quarantined, named
            assert "is not one of the configured state words" in str(refused)
            continue
        assert signal is None or signal.fingerprint.startswith(f"mail-alert:{preset.name}:")


@given(host=_WORD, state=_WORD)
def test_a_body_pattern_fills_only_what_the_subject_did_not_give(host, state):
    subject = (compile_regex(r"^alert (?P<state>\S+) (?P<check>\S+)$", ("t",)),)
    body = (compile_regex(r"(?m)^Host: (?P<host>\S+)$\s*^Check: (?P<check>\S+)$", ("t",)),)
    groups = read_groups(subject, body, f"alert {state} disk", f"Host: {host}\nCheck: other")
    assert groups == {"state": state, "check": "disk", "host": host}
