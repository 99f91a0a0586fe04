"""Email intake end to end: real SMTP (smtplib) to Inlet's aiosmtpd server on loopback,
the pipeline worker, and the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import smtplib
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.mail_settings import email_options
from gateway.core.clock import FixedClock
from gateway.service import Service
from parsers.email import make_message_id, parse_email
from store.db import db
from store.models import (
    FAILED,
    IGNORED,
    PENDING,
    PROCESSED,
    Attachment,
    Contact,
    CorrelationKey,
    Event,
    Inbound,
    Incident,
)
from tests.conftest import free_port, wait_for

DATA = Path(__file__).parent / "data" / "email"
SECRET = "test-secret-not-for-production"
SUPPORT = "support@example.org"


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


class Inlet:
    """A running ``inlet serve`` (roles smtp + worker) and what its hooks saw."""

    def __init__(self, service: Service, clock: FixedClock):
        self.service, self.clock, self.changes = service, clock, []
        self.port = service.smtp.port
        service.lifecycle.hooks.append(self.changes.append)

    def send(self, raw: bytes, *, sender="alice@customer.example", to=(SUPPORT,), as_is=False):
        """Send one message (with CRLF line ends, as an MTA does, unless ``as_is``); return the reply to DATA."""
        if not as_is:
            raw = re.sub(rb"\r?\n", b"\r\n", raw)
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
            client.ehlo("test.example")
            client.mail(sender)
            for address in to:
                client.rcpt(address)
            return client.data(raw)

    def deliver(self, raw: bytes, **kwargs) -> Inbound:
        """Send a message and wait until the pipeline has processed it."""
        code, text = self.send(raw, **kwargs)
        assert code == 250, text
        inbound_id = int(text.decode().rsplit(" ", 1)[1])
        return wait_for(lambda: _processed(inbound_id), message=f"inbound {inbound_id} processed")

    def options(self):
        return email_options(self.service.config)

    def acknowledge_flags(self, incident: Incident) -> list:
        return [c.context.get("acknowledge_reporter", True) for c in self.changes if c.incident.id == incident.id]


def _processed(inbound_id: int):
    with db.connection_context():
        row = Inbound.get_by_id(inbound_id)
    return row if row.status != PENDING else None


@pytest.fixture
def inlet(store, tmp_path, monkeypatch):
    monkeypatch.setenv("INLET_MESSAGE_ID_SECRET", SECRET)
    clock = FixedClock()
    config = store.config(
        inlet={"data_dir": str(tmp_path)},
        smtp={"port": free_port(), "max_message_size": 100_000, "max_recipients": 3},
        mail={"own_addresses": ["inlet@example.org"], "throttle_count": 3, "max_attachment_size": 1024},
        address=[
            {"address": SUPPORT},
            {"address": "network@example.org", "group": "network", "category": "network"},
            {"address": "security@example.org", "group": "security", "security": True},
            {"address": "lists@example.org", "accept_lists": True},
        ],
    )
    service = Service(config, roles={"smtp", "worker"}, clock=clock)
    service.start()
    yield Inlet(service, clock)
    service.stop()


def message(subject="Printer broken", body="The printer on floor 2 is broken.", sender="alice@customer.example", **hdr):
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="customer.example")
    for name, value in hdr.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def only_incident() -> Incident:
    (incident,) = Incident.select()
    return incident


# --------------------------------------------------------------------------- receiving


def test_plain_text_becomes_an_incident_with_every_decision_recorded(inlet):
    inbound = inlet.deliver(fixture("plain.eml"))
    assert inbound.status == PROCESSED and inbound.mail_class == "human"
    assert (inbound.envelope_from, inbound.envelope_to, inbound.peer) == (
        "alice@customer.example",
        [SUPPORT],
        "127.0.0.1",
    )
    assert inbound.raw == re.sub(rb"\r?\n", b"\r\n", fixture("plain.eml"))  # as received on the wire
    incident = only_incident()
    assert incident.title == "VPN gateway unreachable from Berlin office"
    assert "TLS handshake timeout" in incident.description
    assert incident.reporter.email == "alice@customer.example" and incident.source == "email"
    steps = [d["step"] for d in inbound.decisions]
    assert steps[:3] == ["mail-class", "recipient", "parse"] and "apply" in steps
    assert inlet.acknowledge_flags(incident) == [True]


@pytest.mark.parametrize(
    "name",
    [
        "html_only.eml",
        "alternative.eml",
        "charset_iso8859_1.eml",
        "charset_windows1252.eml",
        "charset_shift_jis.eml",
        "charset_koi8r.eml",
        "charset_utf8.eml",
        "undeclared_8bit_latin1.eml",
        "forwarded.eml",
        "broken_boundary.eml",
        "no_body.eml",
    ],
)
def test_each_format_and_charset_becomes_an_incident_with_its_decoded_title(inlet, name):
    raw = fixture(name)
    inlet.deliver(raw)
    expected = parse_email(raw, inlet.options())
    incident = only_incident()
    assert incident.title == expected.title and incident.description == expected.text
    assert "\ufffd" not in incident.title


def test_encoded_word_sender_name_is_decoded(inlet):
    raw = message(sender='"=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?=" <jm@customer.example>')
    inlet.deliver(raw, sender="jm@customer.example")
    assert only_incident().reporter.name == "Jürgen Müller"


def test_attachments_and_inline_parts_are_stored_and_oversized_ones_recorded_as_skipped(inlet):
    inbound = inlet.deliver(fixture("attachments.eml"))
    incident = only_incident()
    parts = list(Attachment.select().where(Attachment.incident == incident))
    expected = parse_email(fixture("attachments.eml"), inlet.options()).attachments
    assert len(parts) == len(expected) >= 2
    assert any(p.inline for p in parts)
    skipped = [p for p in parts if p.skipped]
    assert skipped and all(p.data is None and p.size > 1024 for p in skipped)
    assert all(p.data is not None and len(p.data) == p.size for p in parts if not p.skipped)
    assert all(p.inbound_id == inbound.id and p.event_id is not None for p in parts)


def test_recipient_address_gives_its_defaults(inlet):
    inlet.deliver(message("Switch down"), to=("network@example.org",))
    incident = only_incident()
    assert (incident.group, incident.category) == ("network", "network")
    inlet.deliver(message("Phishing mail", sender="bob@customer.example"), to=("security@example.org",))
    assert Incident.get(Incident.title == "Phishing mail").security is True


def test_unknown_recipient_is_refused_and_never_relayed(inlet):
    with smtplib.SMTP("127.0.0.1", inlet.port, timeout=10) as client:
        client.ehlo("test.example")
        client.mail("alice@customer.example")
        code, text = client.rcpt("someone@elsewhere.example")
        assert (code, text[:5]) == (550, b"5.1.1")
        assert client.rcpt("nobody@example.org")[0] == 550
    with pytest.raises(smtplib.SMTPRecipientsRefused), smtplib.SMTP("127.0.0.1", inlet.port, timeout=10) as client:
        client.sendmail("alice@customer.example", ["victim@gmail.example"], message())
    assert Inbound.select().count() == 0


def test_several_inlet_recipients_make_one_inbound(inlet):
    inbound = inlet.deliver(message(), to=(SUPPORT, "network@example.org", "stranger@elsewhere.example"))
    assert sorted(inbound.envelope_to) == ["network@example.org", SUPPORT]
    assert Inbound.select().count() == 1 and Incident.select().count() == 1


def test_recipient_limit(inlet):
    with smtplib.SMTP("127.0.0.1", inlet.port, timeout=10) as client:
        client.ehlo("test.example")
        client.mail("alice@customer.example")
        codes = [client.rcpt(SUPPORT)[0] for _ in range(4)]
    assert codes == [250, 250, 250, 452]


def test_message_over_the_size_limit_gets_552(inlet):
    raw = message(body=("x" * 75 + "\n") * 2000)
    with smtplib.SMTP("127.0.0.1", inlet.port, timeout=10) as client:
        client.ehlo("test.example")
        client.esmtp_features.pop("size", None)  # send it anyway, without announcing the size
        client.mail("alice@customer.example")
        client.rcpt(SUPPORT)
        code, text = client.data(raw.replace(b"\n", b"\r\n"))
        assert (code, text[:5]) == (552, b"5.3.4")
        assert client.noop()[0] == 250  # the session goes on
    # announced size: refused at MAIL FROM
    with pytest.raises(smtplib.SMTPSenderRefused) as refused, smtplib.SMTP("127.0.0.1", inlet.port) as client:
        client.sendmail("alice@customer.example", [SUPPORT], raw)
    assert refused.value.smtp_code == 552 and refused.value.smtp_error.startswith(b"5.3.4")
    assert Inbound.select().count() == 0


def test_store_unavailable_gets_451_and_nothing_is_half_written(inlet, store):
    db.execute_sql("ALTER TABLE inbound RENAME TO inbound_away")
    try:
        code, text = inlet.send(message())
        assert (code, text[:5]) == (451, b"4.3.0")
    finally:
        db.execute_sql("ALTER TABLE inbound_away RENAME TO inbound")
    assert Inbound.select().count() == 0
    inlet.deliver(message())  # the sender retries: stored now
    assert Incident.select().count() == 1


def test_the_same_message_delivered_twice_is_one_incident(inlet):
    first = inlet.deliver(fixture("plain.eml"))
    code, text = inlet.send(fixture("plain.eml"))
    assert code == 250 and b"already stored" in text
    assert Inbound.select().count() == 1 and Incident.select().count() == 1 and first.status == PROCESSED


def test_malformed_message_is_kept_and_the_server_keeps_answering(inlet):
    inbound = inlet.deliver(fixture("binary_junk.eml"))
    assert inbound.status in (FAILED, PROCESSED)
    if inbound.status == FAILED:
        assert inbound.reason.startswith("parse error")
    assert inlet.deliver(message()).status == PROCESSED


# --------------------------------------------------------------------------- threading


def reply_to(incident: Incident, sender="alice@customer.example", text="It works again, thanks.", **hdr):
    return message(f"Re: [{incident.ref}] {incident.title}", text, sender=sender, **hdr)


def test_reply_with_subject_tag_is_a_reply_with_the_reporters_words(inlet):
    inlet.deliver(message())
    incident = only_incident()
    inbound = inlet.deliver(reply_to(incident, text="Now it prints only blank pages.\n\n> quoted old text"))
    assert Incident.select().count() == 1
    update = Event.get((Event.incident == incident) & (Event.type == "reply"))
    assert update.visibility == "reporter" and update.body.startswith("Now it prints only blank pages.")
    assert update.actor == "alice@customer.example" and update.inbound_id == inbound.id
    assert any(d.get("by") == f"subject tag [{incident.ref}]" for d in inbound.decisions)
    # the thread step applied it and finished the signal: no generic step ran, the after step did
    assert inbound.decisions[-1]["ran"] == ["mail-heartbeat", "mail-screen", "mail-thread", "mail-record"]


def test_reply_by_in_reply_to_a_stored_message(inlet):
    inlet.deliver(fixture("plain.eml"))
    incident = only_incident()
    reply = message(
        "Re: VPN", "Still down.", sender="bob@customer.example", In_Reply_To="<CAF3k2jd83=ab@mail.customer.example>"
    )
    inlet.deliver(reply, sender="bob@customer.example")
    assert Incident.select().count() == 1
    assert Event.get((Event.incident == incident) & (Event.type == "reply")).body == "Still down."
    # a reply to that reply threads too
    inlet.deliver(message("Re: Re: VPN", "And again.", In_Reply_To=reply_id(reply)))
    assert Event.select().where((Event.incident == incident) & (Event.type == "reply")).count() == 2


def reply_id(raw: bytes) -> str:
    from parsers.email import parse_headers_only

    return f"<{parse_headers_only(raw)['message_id']}>"


def test_reply_to_a_message_inlet_sent_attaches_from_another_address_but_only_for_the_agents(inlet):
    inlet.deliver(message())
    incident = only_incident()
    inlet.service.lifecycle.resolve(incident.ref, "agent", code="fixed", notes="Done.", cause="hardware")
    sent = make_message_id(incident.ref, inlet.options(), "ack1")
    inlet.deliver(
        message(
            "Re: your ticket",
            "From my other address.",
            sender="a.example@home.example",
            In_Reply_To=sent,
            Cc="carol@elsewhere.example",
        )
    )
    assert Incident.select().count() == 1  # Inlet's signed Message-ID attaches whoever replies to its mail …
    note = Event.get((Event.incident == incident) & (Event.type == "note"))
    assert note.visibility == "internal" and note.actor == "a.example@home.example"
    assert "From my other address." in note.body
    # … but a non-participant neither reopens nor makes news, and their Cc does not join
    assert Incident.get_by_id(incident.id).status == "resolved"
    assert (
        not Event.select()
        .where((Event.incident == incident) & (Event.type.in_(["update", "reply", "reopened"])))
        .exists()
    )
    assert not CorrelationKey.select().where(CorrelationKey.value == "carol@elsewhere.example").exists()


def test_subject_tag_from_a_stranger_opens_a_new_linked_incident(inlet):
    inlet.deliver(message())
    first = only_incident()
    inbound = inlet.deliver(reply_to(first, sender="mallory@evil.example", text="Please close this."))
    assert Incident.select().count() == 2
    assert Event.select().where((Event.incident == first) & (Event.type == "reply")).count() == 0
    new = Incident.get(Incident.id != first.id)
    assert new.reporter.email == "mallory@evil.example"
    assert Event.get((Event.incident == new) & (Event.type == "linked")).new == first.ref
    assert any("not a participant" in d.get("why", "") for d in inbound.decisions)


def test_cc_participant_may_reply_by_subject_tag(inlet):
    raw = message(Cc="bob@customer.example")
    inlet.deliver(raw)
    incident = only_incident()
    inlet.deliver(reply_to(incident, sender="bob@customer.example"), sender="bob@customer.example")
    assert Incident.select().count() == 1


def test_reply_to_resolved_reopens_within_the_window_and_opens_a_linked_one_after(inlet):
    lc = inlet.service.lifecycle
    inlet.deliver(message())
    incident = only_incident()
    lc.resolve(incident.ref, "agent", code="fixed", notes="Replaced the fuser.", cause="hardware")
    inlet.deliver(reply_to(incident, text="Broken again."))
    incident = Incident.get_by_id(incident.id)
    assert (incident.status, incident.reopen_count, Incident.select().count()) == ("in_progress", 1, 1)
    lc.resolve(incident.ref, "agent", code="fixed", notes="Replaced it again.", cause="hardware")
    inlet.clock.advance(days=8)
    inlet.deliver(reply_to(incident, text="And again!"))
    assert Incident.get_by_id(incident.id).status == "resolved"
    new = Incident.get(Incident.id != incident.id)
    assert Event.get((Event.incident == new) & (Event.type == "linked")).new == incident.ref


def test_reply_to_closed_opens_a_new_incident_linked_to_the_old_one(inlet):
    lc = inlet.service.lifecycle
    inlet.deliver(message())
    incident = only_incident()
    lc.resolve(incident.ref, "agent", code="fixed", notes="Done.", cause="hardware")
    lc.close(incident.ref, "agent")
    # the reporter answers the "Closed" mail: the follow-up is titled as the original, not "Re: … Closed: …"
    inlet.deliver(message(f"Re: [{incident.ref}] Closed: {incident.title}", "Hm, again."))
    new = Incident.get(Incident.id != incident.id)
    assert new.status == "new"
    assert new.title == incident.title
    link = Event.get((Event.incident == new) & (Event.type == "linked"))
    assert (link.field, link.new) == ("related", incident.ref)
    closed_events = Event.select().where(Event.incident == incident).count()
    inlet.deliver(reply_to(incident, text="And again."))  # the closed incident stays as it was closed
    assert Event.select().where(Event.incident == incident).count() == closed_events


# --------------------------------------------------------------------------- loops and noise


def test_auto_reply_is_never_an_incident_nor_acknowledged(inlet):
    inlet.deliver(message(Cc="frank@customer.example"))
    incident = only_incident()
    oof = fixture("auto_reply_exchange.eml").replace(b"[INC-42]", f"[{incident.ref}]".encode())
    stranger = inlet.deliver(oof.replace(b"frank@", b"mallory@").replace(b"oof-1", b"oof-0"))
    assert (stranger.status, Incident.select().count()) == (IGNORED, 1)  # the tag alone is not enough for him
    assert not Event.select().where((Event.incident == incident) & (Event.type == "note")).exists()
    inbound = inlet.deliver(oof, sender="frank@customer.example")
    assert inbound.mail_class == "auto-reply" and Incident.select().count() == 1
    note = Event.get((Event.incident == incident) & (Event.type == "note"))
    assert note.visibility == "internal" and note.inbound_id == inbound.id
    assert inlet.acknowledge_flags(incident) == [True, False]
    unthreaded = inlet.deliver(
        fixture("auto_reply_exchange.eml").replace(b"[INC-42] ", b"").replace(b"oof-1", b"oof-2")
    )
    assert (unthreaded.status, Incident.select().count()) == (IGNORED, 1)
    assert unthreaded.reason.startswith("auto-reply")


def test_auto_submitted_no_is_a_human_message(inlet):
    inbound = inlet.deliver(message(Auto_Submitted="no"))
    assert inbound.mail_class == "human" and Incident.select().count() == 1


def test_x_auto_response_suppress_opens_an_incident_without_acknowledgement(inlet):
    inbound = inlet.deliver(message(X_Auto_Response_Suppress="All"))
    incident = only_incident()
    assert inbound.mail_class == "human"
    assert inlet.acknowledge_flags(incident) == [False]
    change = next(c for c in inlet.changes if c.action == "create")
    assert "X-Auto-Response-Suppress" in change.context["why"]


def test_bounce_is_filed_on_its_incident_and_the_address_marked_undeliverable(inlet):
    inlet.deliver(message())
    incident = only_incident()
    sent = make_message_id(incident.ref, inlet.options(), "ack1")
    bounce = fixture("bounce_dsn.eml").replace(
        b"<inlet.INC-42.7f3a.0123456789abcdef01234567@example.org>", sent.encode()
    )
    Contact.insert(email="nobody@customer.example", created_at=inlet.clock.now()).execute()
    inbound = inlet.deliver(bounce, sender="")
    assert inbound.mail_class == "bounce" and Incident.select().count() == 1
    note = Event.get((Event.incident == incident) & (Event.type == "note"))
    assert note.visibility == "internal" and note.body.startswith("Delivery failed")
    until = Contact.get(Contact.email == "nobody@customer.example").undeliverable_until
    assert until == inlet.clock.now() + inlet.service.config.mail.undeliverable_for
    assert inlet.acknowledge_flags(incident) == [True, False]


def test_a_forged_bounce_cannot_silence_a_reporter_nor_write_on_the_incident(inlet):
    raw = message()
    inlet.deliver(raw)
    incident = only_incident()
    # Anyone can write a "bounce": this one points at the reporter's own (learnable) Message-ID.
    forged = (
        fixture("bounce_dsn.eml")
        .replace(b"<inlet.INC-42.7f3a.0123456789abcdef01234567@example.org>", reply_id(raw).encode())
        .replace(b"nobody@customer.example", b"alice@customer.example")
    )
    inbound = inlet.deliver(forged, sender="")
    assert (inbound.status, inbound.mail_class) == (IGNORED, "bounce")
    assert "not about a message Inlet sent" in inbound.reason
    assert Contact.get(Contact.email == "alice@customer.example").undeliverable_until is None
    assert not Event.select().where((Event.incident == incident) & (Event.type == "note")).exists()


def test_bounce_with_no_incident_is_ignored(inlet):
    inbound = inlet.deliver(fixture("bounce_exim.eml"), sender="")
    assert (inbound.status, inbound.mail_class, Incident.select().count()) == (IGNORED, "bounce", 0)


@pytest.mark.parametrize(
    "marker",
    [
        b"List-Id: Vendor security announcements <security-announce.lists.vendor.example>\n",
        b"List-Unsubscribe: <mailto:security-announce-leave@lists.vendor.example>\n",
        b"Precedence: list\n",
    ],
)
def test_list_message_never_opens_an_incident(inlet, marker):
    raw = fixture("list_mail.eml")
    for line in re.findall(rb"^(?:List-Id|List-Unsubscribe|Precedence):.*\n", raw, re.M):
        raw = raw.replace(line, b"")
    raw = raw.replace(b"Content-Type:", marker + b"Content-Type:", 1)
    inbound = inlet.deliver(raw, sender="security-announce-bounces@lists.vendor.example")
    assert (inbound.status, inbound.mail_class, Incident.select().count()) == (IGNORED, "bulk", 0)
    assert inbound.reason.startswith("list or bulk mail: ") and "accept_lists is off" in inbound.reason


def test_list_message_opens_an_incident_without_acknowledgement_where_accepted(inlet):
    inbound = inlet.deliver(
        fixture("list_mail.eml"), sender="security-announce-bounces@lists.vendor.example", to=("lists@example.org",)
    )
    incident = only_incident()
    assert inbound.mail_class == "bulk"
    assert inlet.acknowledge_flags(incident) == [False]


def test_own_loop_is_dropped(inlet):
    inbound = inlet.deliver(message(sender="inlet@example.org"))
    assert (inbound.status, inbound.mail_class) == (IGNORED, "own-loop")
    looped = inlet.deliver(message(subject="Another", X_Loop="inlet"))
    assert looped.status == IGNORED and Incident.select().count() == 0


def test_a_flood_from_one_sender_is_throttled(inlet):
    results = [inlet.deliver(message(f"Alert {i}")) for i in range(5)]
    assert [r.status for r in results] == [PROCESSED] * 3 + [IGNORED] * 2
    assert results[-1].reason.startswith("throttled: 3 new incidents from alice@customer.example within 1h")
    assert inlet.deliver(message("Other", sender="bob@customer.example")).status == PROCESSED
    inlet.clock.advance(hours=2)
    assert inlet.deliver(message("Later")).status == PROCESSED


# --------------------------------------------------------------------------- robustness


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(max_size=2000))
def test_arbitrary_bytes_never_break_the_server(inlet, junk):
    code, _text = inlet.send(junk + b"\r\n", as_is=True)
    assert code in (250, 500, 552)  # stored, line too long, too big: an answer, never a dropped session
    with smtplib.SMTP("127.0.0.1", inlet.port, timeout=10) as client:
        assert client.noop()[0] == 250


_ATOMS = st.text(alphabet='abcXYZ09.!#+-_=("@[]: ä', min_size=0, max_size=8)
_PATHS = st.builds(
    lambda lead, local, domain, trail, params: f"{lead}<{local}@{domain}>{trail}{params}",
    st.sampled_from(["", " ", "  ", "(c) "]),
    _ATOMS,
    _ATOMS,
    st.sampled_from(["", " ", "  ", " (note) ", "x", "\t"]),
    st.sampled_from(["", "SIZE=123", "SIZE=1 BODY=8BITMIME", "NOTIFY=NEVER"]),
)


@settings(max_examples=400, deadline=None)
@given(arg=st.one_of(_PATHS, st.text(max_size=40)))
def test_address_fast_path_answers_as_aiosmtpd_does(arg):
    from aiosmtpd.smtp import SMTP

    from gateway.intake.smtp import InletSMTP

    fast, reference = InletSMTP(object()), SMTP(object())
    try:
        expected = reference._getaddr(arg)
    except (IndexError, AttributeError):  # the stdlib parser crashes on some malformed paths ("a@"): refused
        expected = (None, None)
    assert fast._getaddr(arg) == expected


def test_a_path_the_stdlib_parser_chokes_on_is_refused_as_malformed(inlet):
    with smtplib.SMTP("127.0.0.1", inlet.port, timeout=10) as client:
        client.ehlo("test.example")
        code, _text = client.docmd("MAIL FROM:<a@>")
        assert code == 553  # malformed address, not a local error; the session goes on
        assert client.docmd("MAIL FROM:<alice@customer.example>")[0] == 250


def test_processing_keeps_up_with_no_pending_left(inlet):
    for i in range(10):
        inlet.send(message(f"Problem {i}", sender=f"user{i}@customer.example"))
    wait_for(lambda: Inbound.select().where(Inbound.status == PENDING).count() == 0)
    assert Incident.select().count() == 10
    assert timedelta(0) <= inlet.clock.now() - Incident.select().first().opened_at


# --------------------------------------------------------------------------- STARTTLS and AUTH


@pytest.fixture
def tls_inlet(store, tmp_path, monkeypatch):
    """Inlet requiring STARTTLS and AUTH (a self-signed certificate made with openssl)."""
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("INLET_MESSAGE_ID_SECRET", SECRET)
    monkeypatch.setenv("INLET_TEST_SMTP_PASSWORD", "s3cret")
    config = store.config(
        inlet={"data_dir": str(tmp_path)},
        smtp={
            "port": free_port(),
            "tls_cert": str(cert),
            "tls_key": str(key),
            "require_tls": True,
            "auth_required": True,
            "users": [{"name": "monitoring", "password_env": "INLET_TEST_SMTP_PASSWORD"}],
        },
        address=[{"address": SUPPORT}],
    )
    service = Service(config, roles={"smtp", "worker"})
    service.start()
    yield service.smtp.port
    service.stop()


def test_starttls_and_auth_for_trusted_submitters(tls_inlet):
    import ssl

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", tls_inlet, timeout=10) as client:
        client.ehlo("test.example")
        assert "auth" not in client.esmtp_features  # never offered in clear text
        assert client.mail("alice@customer.example")[0] == 530  # TLS first
        client.starttls(context=context)
        client.ehlo("test.example")
        assert client.mail("alice@customer.example")[0] == 530  # then authentication
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("monitoring", "wrong")
        assert refused.value.smtp_code == 535
        client.login("monitoring", "s3cret")
        client.sendmail("alice@customer.example", [SUPPORT], message())
    wait_for(lambda: Incident.select().count() == 1, message="incident from the authenticated submitter")
