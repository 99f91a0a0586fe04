"""Acting by email (issue #16, points 2 and 3), over real SMTP on both databases: mail goes in with
smtplib to Inlet's own SMTP server (AUTH as an Inlet user, or not), the pipeline and the outbox run,
and the loopback mailbox shows what the agents and reporters receive.

Commands are applied only when the message proves its sender (SMTP AUTH, or the topmost
Authentication-Results of the trusted MTA); a forged From changes nothing and is answered.
"""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage
from types import SimpleNamespace

import pytest
from aiosmtpd.smtp import LoginPassword, Session
from hypothesis import given
from hypothesis import strategies as st

from gateway import accounts
from gateway.commands import (
    Command,
    aligned,
    parse,
    parse_authentication_results,
    proves_from,
    trusted_results,
)
from gateway.intake.smtp import Authenticator
from store.models import PENDING, Event, Inbound, Incident
from tests.conftest import free_port, in_db, service_running, wait_for

DESK = "desk@inlet.example.org"
RITA, ANN, CAROL = "rita@example.org", "ann@example.org", "carol@example.org"
PASSWORD = "correct horse battery"
MTA = "mx.inlet.example"


@pytest.fixture
def service(store, reporter_mailbox):
    config = store.config(
        inlet={"data_dir": str(store.tmp_path)},
        smtp={"host": "127.0.0.1", "port": free_port(), "agent_auth": True},
        group=[
            {"name": "service-desk", "escalation": "default", "members": ["ann"]},
            {"name": "network", "escalation": "default", "members": ["carol"]},
            {"name": "security"},
        ],
        address=[{"address": DESK, "group": "service-desk"}],
        notifications={"from_address": DESK, "smtp_port": reporter_mailbox.port, "apprise_throttle": "0s"},
        mail={"loop_token": DESK, "message_id_domain": "inlet.example.org", "trusted_authserv_id": MTA},
    )
    accounts.create_user("ann", "agent", PASSWORD, email=ANN)
    accounts.create_user("carol", "agent", PASSWORD, email=CAROL)
    with service_running(config, {"smtp", "worker", "notify"}) as running:
        yield running


def send(service, msg: EmailMessage, sender: str, login: str | None = None) -> Inbound:
    """Deliver through Inlet's SMTP server (AUTH as ``login`` first if given); wait until processed."""
    with smtplib.SMTP("127.0.0.1", service.smtp.port, timeout=30) as client:
        client.ehlo("test.example")
        if login:
            client.login(login, PASSWORD)
        client.mail(sender)
        client.rcpt(DESK)
        code, text = client.data(msg.as_bytes())
    assert code == 250, text
    inbound_id = int(text.decode().rsplit(" ", 1)[1])
    return wait_for(
        lambda: in_db(lambda: Inbound.get_or_none((Inbound.id == inbound_id) & (Inbound.status != PENDING))),
        timeout=20,
        message=f"inbound {inbound_id} processed",
    )


def mail(sender: str, subject: str, body: str, message_id: str, headers=(), **more) -> EmailMessage:
    msg = EmailMessage()
    for name, value in headers:  # on top, as an MTA adds them
        msg[name] = value
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = sender, DESK, subject, message_id
    for name, value in more.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def mailbox_of(mailbox, address: str) -> list:
    return [m for _sender, to, m in mailbox.messages if address in to]


def reported(service, reporter_mailbox) -> tuple[Incident, str]:
    """Rita reports a problem; the incident and the Message-ID of her acknowledgement (to reply to)."""
    send(service, mail(RITA, "VPN is down", "Nobody can connect.", "<r1@example.org>"), RITA)
    incident = wait_for(lambda: in_db(lambda: Incident.get_or_none()), timeout=20, message="the incident")
    ack = wait_for(lambda: mailbox_of(reporter_mailbox, RITA), timeout=20, message="Rita's acknowledgement")[0]
    return incident, ack["Message-ID"]


def reply(sender, incident, in_reply_to, body, n, headers=()):
    return mail(
        sender, f"Re: [{incident.ref}] VPN is down", body, f"<c{n}@example.org>", headers, In_Reply_To=in_reply_to
    )


def fresh(incident) -> Incident:
    return in_db(lambda: Incident.get_by_id(incident.id))


def command_event(inbound) -> dict:
    return in_db(lambda: Event.get(Event.inbound == inbound.id)).data["email_commands"]


# --------------------------------------------------------------------------- agents


def test_an_authenticated_agent_acts_by_email(service, reporter_mailbox):
    incident, ack_id = reported(service, reporter_mailbox)
    body = "#ack\n#priority P2\n#assign me\n#note Checking the concentrator.\n\nThanks, Ann"
    inbound = send(service, reply(ANN, incident, ack_id, body, 1), ANN, login="ann")
    now = fresh(incident)
    assert (now.status, now.priority, now.assignee_id) == ("acknowledged", "P2", in_db(lambda: now.assignee.id))
    assert in_db(lambda: now.assignee.name) == "ann"
    done = command_event(inbound)
    assert done["proof"] == "SMTP AUTH as ann" and done["actor"] == "ann" and done["refused"] is None
    assert [r["applied"] for r in done["results"]] == [True] * 4
    actors = in_db(lambda: {e.type: e.actor for e in Event.select().where(Event.incident == incident.id)})
    assert actors["acknowledged"] == "ann" and actors["changed"] == "ann"
    note = in_db(lambda: Event.get((Event.incident == incident.id) & (Event.body == "Checking the concentrator.")))
    assert note.visibility == "internal" and note.actor == "ann"

    # #resolve, as the same user; the reporter hears of the resolution as from any agent
    inbound = send(
        service, reply(ANN, incident, ack_id, "#resolve fixed Restarted the VPN concentrator.", 2), ANN, "ann"
    )
    assert fresh(incident).status == "resolved" and fresh(incident).resolution_code == "fixed"
    assert command_event(inbound)["results"] == [{"command": "#resolve", "applied": True}]


def test_a_forged_from_changes_nothing_and_the_agent_is_told_why(service, reporter_mailbox):
    incident, ack_id = reported(service, reporter_mailbox)
    inbound = send(service, reply(ANN, incident, ack_id, "#resolve fixed Nothing to see.\n#assign mallory", 3), ANN)
    assert fresh(incident).status == "new" and fresh(incident).assignee_id is None
    refused = command_event(inbound)
    assert refused["refused"].startswith(f"this message does not prove that it comes from {ANN}")
    assert refused["actor"] is None and refused["proof"] is None and refused["results"] == []
    answer = wait_for(lambda: mailbox_of(reporter_mailbox, ANN), timeout=20, message="the answer to Ann")[0]
    assert answer["Subject"].startswith(f"[{incident.ref}] Your email command was not applied")
    assert "does not prove that it comes from" in answer.get_body(("plain",)).get_content()
    # An agent who proves who she is, but works in another group, may not act either.
    inbound = send(service, reply(CAROL, incident, ack_id, "#ack", 4), CAROL, login="carol")
    assert fresh(incident).status == "new"
    assert (
        command_event(inbound)["refused"] == f"carol may not change {incident.ref} (not an agent of group service-desk)"
    )


def test_authentication_results_count_only_from_the_trusted_mta_on_top(service, reporter_mailbox):
    incident, ack_id = reported(service, reporter_mailbox)
    outsider = [("Authentication-Results", "mx.evil.example; dmarc=pass header.from=example.org")]
    inbound = send(service, reply(ANN, incident, ack_id, "#ack", 5, outsider), ANN)
    assert fresh(incident).status == "new" and command_event(inbound)["refused"]
    # The trusted id, but below a field of another: the sender wrote it (only the top counts).
    below = [outsider[0], ("Authentication-Results", f"{MTA}; dmarc=pass header.from=example.org")]
    inbound = send(service, reply(ANN, incident, ack_id, "#ack", 6, below), ANN)
    assert fresh(incident).status == "new" and command_event(inbound)["refused"]
    # dkim=pass for another domain is not aligned with From.
    unaligned = [("Authentication-Results", f"{MTA}; dkim=pass header.d=evil.example; dmarc=fail")]
    inbound = send(service, reply(ANN, incident, ack_id, "#ack", 7, unaligned), ANN)
    assert fresh(incident).status == "new" and command_event(inbound)["refused"]
    # The trusted MTA's own field on top, with a comment and dkim aligned (a subdomain signer):
    trusted = [("Authentication-Results", f"{MTA} (Postfix); spf=pass; dkim=pass (good) header.d=mail.example.org")]
    inbound = send(service, reply(ANN, incident, ack_id, "#ack", 8, trusted), ANN)
    assert fresh(incident).status == "acknowledged"
    assert command_event(inbound)["proof"] == f"Authentication-Results from {MTA}: dkim=pass header.d=mail.example.org"


def test_smtp_auth_takes_only_active_agents_and_stops_guessing(service):
    accounts.create_user("vic", "viewer", PASSWORD, email="vic@example.org")

    def login(name, password):
        with smtplib.SMTP("127.0.0.1", service.smtp.port, timeout=30) as client:
            client.ehlo("test.example")
            client.login(name, password)

    with pytest.raises(smtplib.SMTPAuthenticationError) as viewer:
        login("vic", PASSWORD)  # a viewer cannot act, so cannot prove anything
    assert viewer.value.smtp_code == 535
    login("ann", PASSWORD)
    for _ in range(5):
        with pytest.raises(smtplib.SMTPAuthenticationError):
            login("ann", "not her password")
    with pytest.raises(smtplib.SMTPAuthenticationError) as locked:  # 5 failures a minute: refused unchecked
        login("ann", PASSWORD)
    assert locked.value.smtp_code == 535


def test_a_password_in_clear_text_is_taken_only_from_loopback(store):
    """The rule itself, on aiosmtpd's own Session and LoginPassword: a client elsewhere must STARTTLS first."""
    accounts.create_user("ann", "agent", PASSWORD, email=ANN)
    check = Authenticator([], agents=True)
    plain, tls = SimpleNamespace(_tls_protocol=None), SimpleNamespace(_tls_protocol=object())
    login = LoginPassword(b"ann", PASSWORD.encode())

    def session(host):
        made = Session(loop=None)
        made.peer = (host, 40000)
        return made

    refused = check(plain, session("192.0.2.7"), None, "PLAIN", login)
    assert (refused.success, refused.message) == (
        False,
        "538 5.7.11 Encryption required for requested authentication mechanism",
    )
    assert check(tls, session("192.0.2.7"), None, "PLAIN", login).auth_data.name == "ann"  # after STARTTLS
    assert check(plain, session("::1"), None, "PLAIN", login).success  # loopback


# --------------------------------------------------------------------------- reporters


def test_the_reporter_closes_or_reopens_a_resolved_incident_by_email(service, reporter_mailbox):
    incident, ack_id = reported(service, reporter_mailbox)
    early = send(service, reply(RITA, incident, ack_id, "#close", 9), RITA)
    assert fresh(incident).status == "new"  # only while resolved
    assert command_event(early)["results"][0]["error"] == f"{incident.ref} is new, not resolved"
    service.lifecycle.resolve(incident.ref, "ann", code="fixed", notes="Restarted.", cause="software")
    inbound = send(service, reply(RITA, incident, ack_id, "#reopen It dropped again at 10:05.", 10), RITA)
    assert fresh(incident).status == "in_progress" and fresh(incident).reopen_count == 1
    assert command_event(inbound)["proof"].startswith("the reporter's reply (references: a message Inlet sent")
    service.lifecycle.resolve(incident.ref, "ann", code="fixed", notes="Replaced.", cause="hardware")
    # Someone else (even an agent of another group, unproven) cannot close Rita's incident.
    send(service, reply(CAROL, incident, ack_id, "#close", 11), CAROL)
    assert fresh(incident).status == "resolved"
    send(service, reply(RITA, incident, ack_id, "#close\nWorks now, thanks!", 12), RITA)
    assert (fresh(incident).status, fresh(incident).closed_by) == ("closed", "reporter")


# --------------------------------------------------------------------------- the parsers


def test_commands_are_read_from_the_first_lines_only():
    assert parse("\n\n#ACK\n#priority p2\n#note on the line\nrest\n#resolve no") == (
        [Command("ack"), Command("priority", "p2"), Command("note", "on the line")],
        "rest\n#resolve no",
    )
    assert parse("Hi,\n#ack") == ([], "Hi,\n#ack")
    assert parse("#1 problem: the VPN") == ([], "#1 problem: the VPN")


def test_authentication_results_parse_per_rfc_8601():
    authserv, results = parse_authentication_results(
        'mx.example.org 1 (a comment; with ; inside) ; dkim = pass (sig ok) header.d=Example.org header.s="sel;1";'
        " dmarc=pass (p=reject) header.from=example.org; spf=none smtp.mailfrom=x@y"
    )
    assert authserv == "mx.example.org"
    assert [(r.method, r.result) for r in results] == [("dkim", "pass"), ("dmarc", "pass"), ("spf", "none")]
    assert results[0].properties == {"header.d": "example.org", "header.s": "sel;1"}
    assert parse_authentication_results("mx.example.org; none") == ("mx.example.org", [])
    assert proves_from(results, "example.org") == "dmarc=pass header.from=example.org"
    assert proves_from(results, "other.org") == ""
    assert aligned("mail.example.org", "example.org") and not aligned("example.org.evil", "example.org")
    fields = [("Received", "from x"), ("Authentication-Results", "mx.example.org; dmarc=pass")]
    assert trusted_results(fields, "MX.example.org") and not trusted_results(fields, "")
    assert not trusted_results([("Authentication-Results", "other; none"), *fields[1:]], "mx.example.org")


@given(st.text(alphabet=st.sampled_from(list('ab=;() "\\\t.@#\n')), max_size=400))
def test_the_parsers_never_fail_on_any_input(text):
    parse_authentication_results(text)
    commands, _rest = parse(text)
    assert len(commands) <= 10


def test_the_parsers_take_linear_time_on_hostile_input():
    for hostile in ("(" * 200_000, '"' + "\\" * 200_000, "a=b " * 50_000, "#note " + "x" * 200_000):
        started = time.perf_counter()
        parse_authentication_results(hostile)
        parse(hostile)
        assert time.perf_counter() - started < 1.0
