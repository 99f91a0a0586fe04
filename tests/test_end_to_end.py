"""The whole loop through real servers: SMTP intake → incident → acknowledgement in the reporter's
mailbox → the reporter replies to it → the reply threads back onto the same incident.

One ``Service`` with the smtp, worker, timers and notify roles; the reporter's mail
server is a loopback aiosmtpd sink; mail goes in through smtplib. Both databases.
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import pytest

from store.models import IGNORED, Event, Inbound, Incident, Notification
from tests.conftest import free_port, in_db, service_running, wait_for

DESK = "desk@inlet.example.org"


@pytest.fixture
def service(store, reporter_mailbox):
    config = store.config(
        smtp={"host": "127.0.0.1", "port": free_port()},
        address=[{"address": DESK, "group": "service-desk"}],
        notifications={"from_address": DESK, "smtp_port": reporter_mailbox.port, "apprise_throttle": "0s"},
        mail={"loop_token": DESK, "message_id_domain": "inlet.example.org"},
        inlet={"base_url": "https://desk.inlet.example.org/"},
    )
    with service_running(config, {"smtp", "worker", "timers", "notify"}) as running:
        yield running


def send(service, message: EmailMessage | bytes, sender: str = "ann@example.org", to: str = DESK) -> None:
    with smtplib.SMTP("127.0.0.1", service.smtp.port, timeout=10) as client:
        if isinstance(message, bytes):
            client.sendmail(sender, [to], message)
        else:
            client.send_message(message, from_addr=sender, to_addrs=[to])


def test_reply_to_the_acknowledgement_threads_back(service, reporter_mailbox):
    first = EmailMessage()
    first["From"] = "Ann Example <ann@example.org>"
    first["To"] = DESK
    first["Subject"] = "The printer on floor 3 is on fire"
    first["Message-ID"] = "<first@example.org>"
    first.set_content("Smoke is coming out of the printer. Please send someone.")
    send(service, first)

    incident = wait_for(lambda: in_db(lambda: Incident.get_or_none()), timeout=20, message="the incident")
    ack = wait_for(lambda: reporter_mailbox.messages, timeout=20, message="the acknowledgement")[0][2]
    assert f"[{incident.ref}]" in ack["Subject"]
    # it answers Ann's message (RFC 3834 section 5), and Inlet names itself by base_url's host
    assert ack["Auto-Submitted"] == "auto-replied" and ack["X-Auto-Response-Suppress"] == "All"
    assert reporter_mailbox.helo == ["desk.inlet.example.org"]

    reply = EmailMessage()
    reply["From"] = "Ann Example <ann@example.org>"
    reply["To"] = DESK
    reply["Subject"] = "Re: your request"  # no tag: only the References lead back
    reply["Message-ID"] = "<reply@example.org>"
    reply["In-Reply-To"] = ack["Message-ID"]
    reply["References"] = f"<first@example.org> {ack['Message-ID']}"
    reply.set_content("It is still smoking.\n\n> Smoke is coming out of the printer.")
    send(service, reply, to=ack["Reply-To"])  # what a mail client does: answer to the Reply-To

    update = wait_for(
        lambda: in_db(lambda: Event.get_or_none((Event.type == "reply") & (Event.incident == incident.id))),
        timeout=20,
        message="the reply for the agents",
    )
    assert "It is still smoking." in update.body and "Smoke is coming out" not in update.body
    assert in_db(lambda: Incident.select().count()) == 1
    acks = in_db(
        lambda: (
            Notification.select()
            .where((Notification.audience == "reporter") & (Notification.template == "acknowledgement"))
            .count()
        )
    )
    assert acks == 1  # a reply is not acknowledged again

    # Inlet's own acknowledgement coming back (a forwarding loop) is recognised and ignored.
    send(service, ack, sender=DESK)
    looped = wait_for(
        lambda: in_db(lambda: Inbound.get_or_none(Inbound.status == IGNORED)), timeout=20, message="the loop"
    )
    assert "loop" in looped.reason
    assert in_db(lambda: Incident.select().count()) == 1
