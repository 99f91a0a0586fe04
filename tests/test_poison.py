"""One bad input never stops the line, and no text that a store refuses gets in: real SMTP (smtplib
and raw sockets) and real HTTP to a running Service (smtp + web + pipeline worker), on both databases."""

from __future__ import annotations

import json
import smtplib
import socket
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
import requests

from gateway import accounts
from gateway.core.clock import FixedClock
from gateway.intake.writer import InboundRecord
from gateway.service import Service
from store.db import db
from store.models import FAILED, PENDING, PROCESSED, Event, Inbound, Incident, User
from tests.conftest import free_port, wait_for
from tests.test_web import PASSWORD, csrf_token

TOKEN = "t0ken-for-poison-tests"
SUPPORT = "support@example.org"


class Inlet:
    def __init__(self, service: Service):
        self.service = service
        web = next(c for c in service.components if c.name == "web")
        self.url = f"http://127.0.0.1:{web.port}"
        self.smtp_port = service.smtp.port

    def admin(self):
        """A Flask test client of the running app, signed in as an admin."""
        with db.connection_context():
            if User.get_or_none(User.name == "admin") is None:
                accounts.create_user("admin", "admin", PASSWORD, email="admin@example.org")
        client = self.service.app.test_client()
        token = csrf_token(client, "/login")
        assert (
            client.post("/login", data={"name": "admin", "password": PASSWORD, "csrf_token": token}).status_code == 302
        )
        return client

    def post(self, raw: bytes, name: str = "plain") -> requests.Response:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        return requests.post(f"{self.url}/hooks/{name}", data=raw, headers=headers, timeout=30)

    def send(self, raw: bytes, sender: str = "alice@customer.example") -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as client:
            client.ehlo("test.example")
            client.mail(sender)
            client.rcpt(SUPPORT)
            return client.data(raw)

    def session(self, *commands: bytes) -> list[bytes]:
        """A raw SMTP session: each command line sent as bytes, every reply line read back."""
        replies = []
        with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=10) as sock:
            reader = sock.makefile("rb")
            replies.append(_reply(reader))
            for command in commands:
                sock.sendall(command + b"\r\n")
                if command != b".":
                    if command.upper().startswith(b"DATA") or not _in_data(commands, command):
                        replies.append(_reply(reader))
                else:
                    replies.append(_reply(reader))
        return replies


def _in_data(commands, command) -> bool:
    """Whether ``command`` is a line of message content (between DATA and '.'), which gets no reply."""
    inside = False
    for line in commands:
        if line is command:
            return inside
        if line.upper().startswith(b"DATA"):
            inside = True
        elif line == b".":
            inside = False
    return False


def _reply(reader) -> bytes:
    lines = [reader.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(reader.readline())
    return b"".join(lines)


@pytest.fixture
def inlet(store, tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    monkeypatch.setenv("INLET_MESSAGE_ID_SECRET", "poison-test-secret")
    config = store.config(
        inlet={"data_dir": str(tmp_path)},
        smtp={"port": free_port()},
        address=[{"address": SUPPORT}, {"address": "@example.org"}],
        integration=[{"name": "plain", "kind": "generic", "token_env": "HOOK_TOKEN"}],
    )
    db.close()
    service = Service(config, roles={"smtp", "web", "worker"}, clock=FixedClock())
    service.start()
    yield Inlet(service)
    service.stop()


def message(subject: str, body: str = "Details follow.", charset: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@customer.example"
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="customer.example")
    msg.set_content(body)
    raw = msg.as_bytes()
    if charset:  # declare a charset whose decoder yields lone surrogates
        raw = raw.replace(b'charset="utf-8"', f'charset="{charset}"'.encode())
    return raw


def incident_titled(title: str):
    with db.connection_context():
        return Incident.get_or_none(Incident.title == title)


def test_poisoned_webhook_and_email_never_stop_the_line(inlet):
    """A webhook with a lone surrogate and an email whose charset decodes to one come first; a normal
    email after them still becomes an incident within seconds, and no stored text is unencodable."""
    poisoned_hook = inlet.post(b'{"title": "Disk \\ud800 full", "dedup_key": "d1"}')
    assert poisoned_hook.status_code == 400 and poisoned_hook.json()["field"] == "title"
    # UTF-7 '+2AA-' is U+D800 alone: the message decodes to text no database can store
    code, _ = inlet.send(message("Printer +2AA- jam", body="It says +2AA- on the panel.\n", charset="utf-7"))
    assert code == 250
    encoded_word = message("Scanner broken").replace(b"Subject: Scanner broken", b"Subject: =?utf-7?Q?Scanner_+2AA-?=")
    code, _ = inlet.send(encoded_word)
    assert code == 250
    code, _ = inlet.send(message("VPN down"))
    assert code == 250
    assert wait_for(lambda: incident_titled("VPN down"), timeout=10, message="the normal email's incident")
    wait_for(lambda: Inbound.select().where(Inbound.status == PENDING).count() == 0, message="the line clear")
    with db.connection_context():
        inbounds = list(Inbound.select().order_by(Inbound.id))
        assert [i.status for i in inbounds] == [PROCESSED] * 3
        descriptions = [i.description for i in Incident.select().order_by(Incident.id)]
    assert "It says \ufffd on the panel." in descriptions[0]


def test_a_failing_step_quarantines_after_its_attempts_and_the_next_input_goes_through(inlet):
    """Any exception in a step (not only a parse error): the input's work is rolled back, its attempts
    counted, it is quarantined with the error, and the worker goes on with the next input."""

    def explode(ctx):
        if ctx.signal.title == "Poison pill":
            raise RuntimeError("a bug in a step")

    for steps in inlet.service.pipeline.steps.values():  # after apply: its writes must go
        steps.steps.append(("explode", explode))
    assert inlet.send(message("Poison pill"))[0] == 250
    assert inlet.post(json.dumps({"title": "Poison pill", "dedup_key": "p"}).encode()).status_code == 202
    assert inlet.send(message("Mail server slow"))[0] == 250
    assert wait_for(lambda: incident_titled("Mail server slow"), timeout=10, message="the normal email's incident")

    def quarantined():
        with db.connection_context():
            rows = list(Inbound.select().where(Inbound.status == FAILED))
        return rows if len(rows) == 2 else None

    for row in wait_for(quarantined, timeout=20, message="both poisoned inputs quarantined"):
        assert row.attempts == inlet.service.config.serve.max_attempts
        assert "step 'explode' of signal 0: RuntimeError: a bug in a step" in row.reason
    with db.connection_context():
        assert incident_titled("Poison pill") is None  # rolled back: no incident, no event
        assert Event.select().join(Incident).where(Incident.title == "Poison pill").count() == 0

    # The quarantine shows them with the error; after the fix, reprocess gives each its attempts afresh.
    admin = inlet.admin()
    page = admin.get("/quarantine")
    assert page.status_code == 200 and page.text.count("RuntimeError: a bug in a step") == 2
    for steps in inlet.service.pipeline.steps.values():
        steps.steps.remove(("explode", explode))
    with db.connection_context():
        failed = list(Inbound.select().where(Inbound.status == FAILED))
    for row in failed:
        token = csrf_token(admin, f"/quarantine/{row.id}")
        assert admin.post(f"/quarantine/{row.id}/reprocess", data={"csrf_token": token}).status_code == 303

    def reprocessed():
        with db.connection_context():
            return Incident.select().where(Incident.title == "Poison pill").count() == 2

    wait_for(reprocessed, message="both reprocessed into incidents")
    with db.connection_context():
        assert [r.attempts for r in Inbound.select().where(Inbound.status == PROCESSED)] == [1, 1, 1]


def test_an_email_whose_text_decodes_to_surrogates_shows_on_its_page(inlet):
    raw = message("Printer jam").replace(
        b'Content-Type: text/plain; charset="utf-8"', b"Content-Type: text/html; charset=utf-7"
    )
    raw = raw.replace(b"Details follow.", b"<p>Panel says +2AA- now</p>")
    assert inlet.send(raw)[0] == 250
    incident = wait_for(lambda: incident_titled("Printer jam"), timeout=10, message="the incident")
    page = inlet.admin().get(f"/incidents/{incident.ref}")
    assert page.status_code == 200 and "Panel says \ufffd now" in page.text


def test_envelope_addresses_that_are_not_utf8_are_stored_as_text(inlet):
    """MAIL FROM / RCPT TO with 8-bit bytes (SMTPUTF8): aiosmtpd keeps them as surrogate escapes,
    which no store can take; the message is stored (250) with the bytes replaced, not refused 451."""
    replies = inlet.session(
        b"EHLO test.example",
        b"MAIL FROM:<al\xffice@customer.example> SMTPUTF8",
        b"RCPT TO:<hel\xed\xa0\x80p@example.org>",
        b"DATA",
        b"Subject: 8-bit envelope",
        b"",
        b"Body.",
        b".",
        b"QUIT",
    )
    assert replies[-2].startswith(b"250 "), replies
    with db.connection_context():
        (row,) = Inbound.select()
    assert row.envelope_from == "al\ufffdice@customer.example"
    assert row.envelope_to[0].startswith("hel\ufffd") and row.envelope_to[0].endswith("p@example.org")


def test_a_record_with_unencodable_text_is_stored_not_refused(inlet):
    """The writer makes every text column storable, whichever edge handed the record over."""
    record = InboundRecord(source="imap", raw=b"Subject: x\r\n\r\nx", integration="box\ud800", peer="h\x00st")
    accepted = inlet.service.writer.store(record)
    with db.connection_context():
        row = Inbound.get_by_id(accepted.inbound_id)
    assert (row.integration, row.peer) == ("box\ufffd", "h\ufffdst")
