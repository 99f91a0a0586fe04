"""Invisible text is made visible: bidi controls and zero-width characters from a reporter never reach
an outward surface — the incident page and the queue (HTML), the CSV export, the acknowledgement mail
in the reporter's mailbox, and a json:// notification channel.

One mail through real SMTP with U+202E (right-to-left override) and U+200B (zero-width space) in the
sender's name, the subject, the body and an attachment's filename. Both databases.
"""

from __future__ import annotations

import re
import smtplib
from email.message import EmailMessage

import pytest

from gateway import accounts
from store.db import db
from store.models import Incident
from tests.conftest import free_port, service_running, wait_for
from tests.sinks import HttpSink

DESK = "desk@inlet.example.org"
RLO, ZWSP = "\u202e", "\u200b"
INVISIBLE = re.compile("[\u202e\u200b]")
PASSWORD = "correct horse battery staple"


@pytest.fixture
def http():
    sink = HttpSink(free_port()).start()
    yield sink
    sink.stop()


@pytest.fixture
def service(store, reporter_mailbox, http):
    config = store.config(
        smtp={"host": "127.0.0.1", "port": free_port()},
        address=[{"address": DESK, "group": "service-desk"}],
        notifications={"from_address": DESK, "smtp_port": reporter_mailbox.port, "apprise_throttle": "0s"},
        mail={"loop_token": DESK, "message_id_domain": "inlet.example.org"},
        group=[
            {"name": "service-desk", "escalation": "default", "channels": [f"json://{http.url}"]},
            {"name": "network", "escalation": "default"},
            {"name": "security"},
        ],
    )
    with db.connection_context():
        accounts.create_user("admin", "admin", PASSWORD)
    with service_running(config, {"smtp", "worker", "notify", "web"}) as running:
        yield running


def logged_in(app):
    client = app.test_client()
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post("/login", data={"name": "admin", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302, response.text
    return client


def test_bidi_and_zero_width_characters_reach_no_outward_surface(service, reporter_mailbox, http):
    message = EmailMessage()
    message["From"] = f"Mal{RLO}lory{ZWSP} <mallory@example.org>"
    message["To"] = DESK
    message["Subject"] = f"Invoice {RLO}fdp.exe{ZWSP} is overdue"
    message.set_content(f"Please open the attached invoice{RLO}fdp.exe today.{ZWSP}")
    message.add_attachment(b"MZ", maintype="application", subtype="octet-stream", filename=f"invoice{RLO}fdp.exe")
    with smtplib.SMTP("127.0.0.1", service.smtp.port, timeout=10) as client:
        client.send_message(message)

    def incident():
        with db.connection_context():
            return Incident.get_or_none()

    stored = wait_for(incident, timeout=20, message="the incident")
    assert RLO in stored.title  # the data is kept as received; only what is shown or sent loses them
    ack = wait_for(lambda: reporter_mailbox.messages, timeout=20, message="the acknowledgement")[0][2]
    sent = wait_for(http.json, timeout=20, message="the group's json:// notification")[0]

    # The reporter's mail: every header, and the text and HTML bodies.
    for name, value in ack.items():
        assert not INVISIBLE.search(str(value)), (name, value)
    assert "Invoice fdp.exe is overdue" in ack["Subject"]
    for part in ("plain", "html"):
        assert not INVISIBLE.search(ack.get_body((part,)).get_content()), part

    # The json:// channel: title and message.
    assert not INVISIBLE.search(sent["title"]) and not INVISIBLE.search(sent["message"]), sent
    assert "Invoice fdp.exe is overdue" in sent["title"]

    # The pages: the incident (title, reporter, mail head, body, attachment name), the queue, the export.
    web = logged_in(service.app)
    page = web.get(f"/incidents/{stored.ref}")
    assert page.status_code == 200
    assert not INVISIBLE.search(page.text)
    assert "<bdi>Invoice fdp.exe is overdue</bdi>" in page.text
    assert "<bdi>invoicefdp.exe</bdi>" in page.text
    assert "<bdi>Mallory</bdi>" in page.text
    queue = web.get("/incidents")
    assert queue.status_code == 200 and "<bdi>Invoice fdp.exe is overdue</bdi>" in queue.text
    assert not INVISIBLE.search(queue.text)
    export = web.get("/incidents/export.csv?status=any")
    assert export.status_code == 200 and "Invoice fdp.exe is overdue" in export.text
    assert not INVISIBLE.search(export.text)
    download = web.get(re.search(r'href="(/attachments/\d+)"', page.text).group(1))
    assert download.status_code == 200
    assert not INVISIBLE.search(download.headers["Content-Disposition"])
