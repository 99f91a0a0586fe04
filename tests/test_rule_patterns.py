"""Rule regexes run in linear time: a catastrophic pattern against a crafted sender costs milliseconds,
and a pattern the linear-time engine cannot run is refused by `inlet check` with the key and the reason.

Through the real interfaces: mail in through smtplib to a running Service (SQLite and PostgreSQL), and
`inlet check` as a subprocess. The exact cost is measured in bench/rule_regex.py.
"""

from __future__ import annotations

import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage

import pytest
import tomli_w

from store.db import db
from store.models import Incident
from tests.conftest import base_config_dict, free_port, service_running, wait_for

DESK = "desk@inlet.example.org"
# Nested quantifiers: Python's backtracking `re` doubles its work with each character of a sender that
# almost matches (26 letters ≈ 15 s on this machine; bench/rule_regex.py prints the figures).
CATASTROPHIC = r"^([a-z0-9]+[._-]?)+@partner\.example$"
CRAFTED_SENDER = "a" * 26 + "@partner.example.org"


def partner_rule() -> dict:
    return {"name": "partner", "sender": {"regex": CATASTROPHIC}, "category": "partner", "group": "network"}


@pytest.fixture
def service(store):
    config = store.config(
        smtp={"host": "127.0.0.1", "port": free_port()},
        address=[{"address": DESK, "group": "service-desk"}],
        mail={"loop_token": DESK, "message_id_domain": "inlet.example.org"},
        rule=[partner_rule()],
    )
    with service_running(config, {"smtp", "worker"}) as running:
        yield running


def send(service, sender: str, subject: str) -> None:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = DESK
    message["Subject"] = subject
    message.set_content("Please look at this.")
    with smtplib.SMTP("127.0.0.1", service.smtp.port, timeout=10) as client:
        client.send_message(message, from_addr=sender, to_addrs=[DESK])


def incident_titled(title: str):
    with db.connection_context():
        return Incident.get_or_none(Incident.title == title)


def test_a_catastrophic_rule_against_a_crafted_sender_costs_milliseconds(service):
    started = time.monotonic()
    send(service, CRAFTED_SENDER, "crafted sender")
    # Generous bound for a shared machine; with a backtracking engine this takes ~15 s (and doubles per letter).
    crafted = wait_for(lambda: incident_titled("crafted sender"), timeout=5, message="the crafted sender's incident")
    assert time.monotonic() - started < 5
    assert crafted.category != "partner"  # the rule does not match it

    send(service, "ann.smith@partner.example", "partner sender")
    partner = wait_for(lambda: incident_titled("partner sender"), timeout=5, message="the partner's incident")
    assert (partner.category, partner.group) == ("partner", "network")  # the same rule still works


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(\w+) \1", r"invalid escape sequence: \1"),  # a backreference
        (r"^(?!test).*", "invalid perl operator: (?!"),  # look-ahead
        (r"(?<=ERR-)\d+", "invalid perl operator: (?<"),  # look-behind
        (r"down\Z", r"invalid escape sequence: \Z"),  # Python's \Z is RE2's \z
        ("(unclosed", "missing )"),
    ],
)
def test_inlet_check_refuses_a_pattern_the_linear_engine_cannot_run(tmp_path, pattern, reason):
    rule = {"name": "bad", "subject": {"regex": pattern}, "category": "app"}
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(base_config_dict(f"sqlite:///{tmp_path / 'inlet.db'}", rule=[rule])))
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "[[rule]] 'bad' → subject → regex: invalid regular expression" in done.stderr
    assert reason in done.stderr and "RE2" in done.stderr
    assert "Traceback" not in done.stderr
