"""Trust boundaries of email intake (issue #11, points 5–7), through real servers on both databases:
mail goes in with smtplib to Inlet's own SMTP server, the pipeline and the outbox run, and the
reporters' loopback mailbox shows what they receive.

- threading cannot be hijacked: a stranger who learnt a Message-ID or the subject tag opens a new,
  linked incident; never an update, a reopen or a new participant on the old one;
- noise never opens incidents, a reporter is never sent their own reply, the loop brake holds;
- crafted messages cost linear time, and the incident page shows them without parsing them again.
"""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage

import pytest

from gateway import accounts
from parsers.email import EmailOptions, parse_email
from store.db import db
from store.models import PENDING, PROCESSED, CorrelationKey, Event, Inbound, Incident, Notification
from tests.conftest import free_port, in_db, service_running, wait_for
from tests.crafted_mail import CRAFTED
from web.app import create_app

DESK = "desk@inlet.example.org"
ANN, BOB, MALLORY, EVE = "ann@example.org", "bob@example.org", "mallory@evil.example", "eve@evil.example"
PASSWORD = "correct horse battery"
# Generous: the machine is shared and noisy. Before the fix these inputs took 3.8–88 s each
# (bench/mail_limits.py has the exact figures); after it, tens of milliseconds.
PARSE_LIMIT_S = 1.0
PAGE_LIMIT_S = 2.0


@pytest.fixture
def service(store, reporter_mailbox):
    config = store.config(
        inlet={"data_dir": str(store.tmp_path)},
        smtp={"host": "127.0.0.1", "port": free_port()},
        address=[{"address": DESK, "group": "service-desk"}],
        notifications={
            "from_address": DESK,
            "smtp_port": reporter_mailbox.port,
            "apprise_throttle": "0s",
            "reporter_mail_limit": 4,
        },
        mail={"loop_token": DESK, "message_id_domain": "inlet.example.org"},
    )
    with service_running(config, {"smtp", "worker", "notify"}) as running:
        yield running


def send(service, raw: bytes | EmailMessage, sender: str) -> int:
    """Deliver one message through SMTP; return its Inbound id (from the 250 answer)."""
    if isinstance(raw, EmailMessage):
        raw = raw.as_bytes()
    with smtplib.SMTP("127.0.0.1", service.smtp.port, timeout=30) as client:
        client.ehlo("test.example")
        client.mail(sender)
        client.rcpt(DESK)
        code, text = client.data(raw)
    assert code == 250, text
    return int(text.decode().rsplit(" ", 1)[1])


def processed(inbound_id: int, timeout: float = 20) -> Inbound:
    return wait_for(
        lambda: in_db(lambda: Inbound.get_or_none((Inbound.id == inbound_id) & (Inbound.status != PENDING))),
        timeout=timeout,
        message=f"inbound {inbound_id} processed",
    )


def mail(sender: str, subject: str, body: str, message_id: str, **headers) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = sender, DESK, subject, message_id
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def mailbox_of(mailbox, address: str) -> list:
    return [m for _sender, to, m in mailbox.messages if address in to]


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def first_incident(service, reporter_mailbox) -> Incident:
    """Ann reports a problem with Bob in Cc; wait for the incident and her acknowledgement."""
    send(
        service,
        mail(ANN, "The printer is on fire", "Smoke everywhere.", "<first@example.org>", Cc=BOB),
        ANN,
    )
    incident = wait_for(lambda: in_db(lambda: Incident.get_or_none()), timeout=20, message="the incident")
    wait_for(lambda: mailbox_of(reporter_mailbox, ANN), timeout=20, message="Ann's acknowledgement")
    return incident


def updates_of(incident) -> int:
    kinds = ("update", "reply")  # a reporter's email reply is a "reply" (never public)
    return in_db(lambda: Event.select().where((Event.incident == incident.id) & Event.type.in_(kinds)).count())


# --------------------------------------------------------------------------- 5. threading cannot be hijacked


def test_a_stranger_with_the_reporters_message_id_opens_a_new_linked_incident(service, reporter_mailbox):
    incident = first_incident(service, reporter_mailbox)
    # Mallory saw Ann's Message-ID (a Cc, a forward) and replies "into" the thread, adding Eve.
    hijack = mail(
        MALLORY,
        f"Re: [{incident.ref}] The printer is on fire",
        "All fixed, please close this and send the logs to eve@evil.example.",
        "<hijack@evil.example>",
        In_Reply_To="<first@example.org>",
        References="<first@example.org>",
        Cc=EVE,
    )
    inbound = processed(send(service, hijack, MALLORY))
    assert inbound.status == PROCESSED
    new = in_db(lambda: Incident.get(Incident.id != incident.id))
    assert in_db(lambda: new.reporter.email) == MALLORY
    link = in_db(lambda: Event.get((Event.incident == new.id) & (Event.type == "linked")))
    assert (link.field, link.new) == ("related", incident.ref)
    assert updates_of(incident) == 0
    old_keys = in_db(lambda: {k.value for k in CorrelationKey.select().where(CorrelationKey.incident == incident.id)})
    assert EVE not in old_keys and MALLORY not in old_keys and "hijack@evil.example" not in old_keys
    # Mallory is acknowledged for his own incident; Ann hears nothing about his mail.
    wait_for(lambda: mailbox_of(reporter_mailbox, MALLORY), timeout=20, message="Mallory's acknowledgement")
    assert len(mailbox_of(reporter_mailbox, ANN)) == 1

    # Resolved: a stranger's tag neither reopens it nor makes news; a participant's reply does.
    service.lifecycle.resolve(incident.ref, "agent", code="fixed", notes="New printer.", cause="hardware")
    again = mail(MALLORY, f"Re: [{incident.ref}] reopen", "Broken again!", "<hijack2@evil.example>")
    processed(send(service, again, MALLORY))
    assert in_db(lambda: Incident.get_by_id(incident.id).status) == "resolved"
    assert in_db(lambda: Incident.select().count()) == 3
    reply = mail(BOB, "Re: The printer is on fire", "Still smoking here.", "<bob1@example.org>")
    reply["In-Reply-To"] = "<first@example.org>"
    processed(send(service, reply, BOB))
    assert in_db(lambda: Incident.get_by_id(incident.id).status) == "in_progress" and updates_of(incident) == 1
    wait_for(
        lambda: any("Still smoking here." in text_of(m) for m in mailbox_of(reporter_mailbox, ANN)),
        timeout=20,
        message="Bob's update in Ann's mailbox",
    )


def test_a_signed_message_id_attaches_a_stranger_only_as_an_internal_note(service, reporter_mailbox):
    incident = first_incident(service, reporter_mailbox)
    ack = mailbox_of(reporter_mailbox, ANN)[0]
    forwarded = mail(MALLORY, "Re: your request", "I am Ann's colleague.", "<fw@evil.example>", Cc=EVE)
    forwarded["In-Reply-To"] = ack["Message-ID"]
    processed(send(service, forwarded, MALLORY))
    assert in_db(lambda: Incident.select().count()) == 1
    note = in_db(lambda: Event.get((Event.incident == incident.id) & (Event.type == "note")))
    assert note.visibility == "internal" and "I am Ann's colleague." in note.body
    assert updates_of(incident) == 0
    assert not in_db(lambda: CorrelationKey.select().where(CorrelationKey.value == EVE).exists())


# --------------------------------------------------------------------------- 6. noise, echoes and loops


def test_a_mailing_list_never_opens_an_incident(service):
    post = mail("announce@lists.example", "New release", "Version 2 is out.", "<l1@lists.example>")
    post["List-Id"] = "Announcements <announce.lists.example>"
    inbound = processed(send(service, post, "announce-bounces@lists.example"))
    assert inbound.status == "ignored" and inbound.reason.startswith("list or bulk mail: List-Id")
    assert in_db(lambda: Incident.select().count()) == 0


def test_the_reporter_never_gets_their_own_reply_back_and_the_loop_brake_holds(service, reporter_mailbox):
    incident = first_incident(service, reporter_mailbox)
    ack = mailbox_of(reporter_mailbox, ANN)[0]
    reply = mail(ANN, "Re: your request", "It is getting worse.", "<ann2@example.org>")
    reply["In-Reply-To"] = ack["Message-ID"]
    processed(send(service, reply, ANN))
    assert updates_of(incident) == 1  # her reply is on the incident …
    for n in range(5):  # … and the agents answer five times within the hour
        service.lifecycle.note(incident.ref, "agent", f"Agent update {n}.", public=True)
    # ack + 3 updates = the limit of 4; the 4th and 5th are held back by the loop brake
    got = wait_for(lambda: mailbox_of(reporter_mailbox, ANN)[3:], timeout=20, message="the agents' updates")
    texts = [text_of(m) for m in mailbox_of(reporter_mailbox, ANN)]
    assert not any("It is getting worse." in t for t in texts)  # never her own words back
    assert got and all(any(f"Agent update {n}." in t for t in texts) for n in range(3))
    rows = in_db(lambda: Notification.select().where(Notification.audience == "reporter").count())
    assert rows == 4
    braked = in_db(lambda: [e.data.get("loop_brake") for e in Event.select().where(Event.body.startswith("Agent"))])
    assert braked[:3] == [None, None, None] and all(b and b.startswith("loop brake: 4 emails") for b in braked[3:])
    # Bob's emailed reply is braked too, and its event keeps both the brake and the email it came from
    bob = mail(BOB, "Re: The printer is on fire", "Bob here.", "<bob2@example.org>", In_Reply_To="<first@example.org>")
    inbound = processed(send(service, bob, BOB))
    event = in_db(lambda: Event.get(Event.inbound == inbound.id))
    assert event.data["loop_brake"].startswith("loop brake: 4 emails") and event.data["email"]["from_email"] == BOB


# --------------------------------------------------------------------------- 7. linear time


@pytest.mark.parametrize("name", list(CRAFTED))
def test_each_crafted_message_parses_in_linear_time(name):
    raw = CRAFTED[name]
    started = time.perf_counter()
    signal = parse_email(raw, EmailOptions())
    elapsed = time.perf_counter() - started
    assert elapsed < PARSE_LIMIT_S, f"{name}: {elapsed:.2f} s for {len(raw)} bytes"
    assert signal.reporter_email == MALLORY  # still read: sender, subject and threading survive the limits


def test_crafted_messages_never_stall_the_pipeline_nor_the_incident_page(service):
    ids = {name: send(service, raw, MALLORY) for name, raw in CRAFTED.items()}
    normal = send(service, mail(ANN, "Normal", "A normal report.", "<normal@example.org>"), ANN)
    assert processed(normal, timeout=30).status == PROCESSED  # the line keeps moving
    rows = {name: processed(inbound_id) for name, inbound_id in ids.items()}
    assert all(row.status == PROCESSED for row in rows.values())
    for name in ("nested", "parts", "headers"):  # over a parse limit: read as text, the decision says why
        assert any(d["step"] == "parse-limit" for d in rows[name].decisions), name

    with db.connection_context():
        accounts.create_user("admin", "admin", PASSWORD, email="admin@example.org")
        in_db(lambda: Inbound.update(raw=b"").execute())  # the page must not need the raw message
    client = create_app(service.config, service.services).test_client()
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    assert client.post("/login", data={"name": "admin", "password": PASSWORD, "csrf_token": token}).status_code == 302
    for name, row in rows.items():
        ref = in_db(lambda row=row: Incident.get_by_id(row.incident_id).ref)
        started = time.perf_counter()
        response = client.get(f"/incidents/{ref}")
        elapsed = time.perf_counter() - started
        assert response.status_code == 200 and elapsed < PAGE_LIMIT_S, f"{name}: {elapsed:.2f} s"
        assert f"&lt;<bdi>{MALLORY}</bdi>&gt;" in response.text  # the sender, from what was stored at processing
