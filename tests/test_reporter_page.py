"""The reporter's page over real HTTP, on both databases: mail in through SMTP, the link out through the
outbox to a loopback mail server, the page through ``inlet``'s own web server; time moved by the clock."""

from __future__ import annotations

import re
import smtplib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr

import pytest
import requests

from gateway import accounts
from gateway.core.clock import FixedClock
from gateway.service import Service
from store.db import db
from store.models import Event, Incident
from tests.conftest import free_port, in_db, wait_for

DESK = "desk@inlet.example.org"
LINK = re.compile(r"(http://127\.0\.0\.1:\d+/r/[A-Za-z0-9._-]+)")


@pytest.fixture
def desk(store, reporter_mailbox):
    """A running Inlet (web, SMTP intake, pipeline, delivery) on a clock that stands still."""
    port = free_port()
    config = store.config(
        inlet={"base_url": f"http://127.0.0.1:{port}", "name": "Example help desk"},
        web={"host": "127.0.0.1", "port": port, "reporter_link_lifetime": "14d"},
        smtp={"host": "127.0.0.1", "port": free_port()},
        address=[{"address": DESK, "group": "service-desk"}],
        group=[{"name": "service-desk", "members": ["alice"]}, {"name": "security"}],
        notifications={"from_address": DESK, "smtp_port": reporter_mailbox.port, "apprise_throttle": "0s"},
        mail={"reopen_window": "7d"},
    )
    accounts.create_user("alice", "agent", "a long test password", email="alice@example.org")
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    service = Service(config, roles={"web", "smtp", "worker", "notify"}, clock=clock)
    service.start()
    service.mailbox, service.url = reporter_mailbox, f"http://127.0.0.1:{port}"
    try:
        yield service
    finally:
        service.stop()
        db.connect(reuse_if_open=True)


def mail_in(desk, sender: str, subject: str, text: str = "Details follow.", reply_to: str = "") -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, DESK, subject
    message["Message-ID"] = make_msgid(domain="customer.example")
    if reply_to:
        message["In-Reply-To"] = message["References"] = reply_to
    message.set_content(text)
    with smtplib.SMTP("127.0.0.1", desk.smtp.port, timeout=10) as client:
        client.send_message(message)


def mail_to(desk, address: str, subject_has: str, count: int = 1):
    """The ``count``-th message to ``address`` whose subject has ``subject_has``, once delivered."""

    def delivered():
        found = [m for _f, to, m in desk.mailbox.messages if address in to and subject_has in m["Subject"]]
        return found[count - 1] if len(found) >= count else None

    return wait_for(delivered, timeout=20, message=f"mail {subject_has!r} to {address}")


def reported(desk, sender: str, subject: str) -> tuple[str, str, EmailMessage]:
    """Mail a report in; its reference, the link in the acknowledgement, and the acknowledgement."""
    mail_in(desk, sender, subject)
    ack = mail_to(desk, parseaddr(sender)[1], subject)
    ref = re.search(r"\[([A-Z]+-\d+)\]", ack["Subject"]).group(1)
    (link,) = set(LINK.findall(ack.get_body(("plain",)).get_content()))
    assert link in ack.get_body(("html",)).get_content()
    return ref, link, ack


def csrf(session: requests.Session, link: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', session.get(link, timeout=10).text).group(1)


def timeline(ref: str) -> list[tuple[str, str, str]]:
    def rows():
        incident = Incident.get(Incident.ref == ref)
        return [(e.type, e.visibility, e.actor) for e in incident.events.order_by(Event.id)]

    return in_db(rows)


def test_the_link_in_reporter_mail_opens_that_incident_and_nothing_else(desk):
    ref, link, _ack = reported(desk, "Rita <rita@example.org>", "Printer jams on floor 3")
    other, other_link, _ = reported(desk, "bob@example.org", "Laptop will not boot")

    page = requests.get(link, timeout=10)
    assert page.status_code == 200
    assert ref in page.text and "Printer jams on floor 3" in page.text
    assert other not in page.text and "Laptop will not boot" not in page.text
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"

    # the token names its incident and reporter under the signature: pointing it at another is refused
    incident_id, contact_id, expires, mac = link.rsplit("/", 1)[1].split(".")
    other_id = in_db(lambda: Incident.get(Incident.ref == other).id)
    forged = f"{desk.url}/r/{other_id}.{contact_id}.{expires}.{mac}"
    refused = requests.get(forged, timeout=10)
    assert refused.status_code == 403 and "not valid" in refused.text and "Laptop" not in refused.text
    assert refused.headers["Referrer-Policy"] == "no-referrer"
    # ... and it opens nothing of the agents' side: no session, no API
    session = requests.Session()
    session.get(link, timeout=10)
    agent_page = session.get(f"{desk.url}/incidents/{ref}", timeout=10, allow_redirects=False)
    assert agent_page.status_code == 302 and "/login" in agent_page.headers["Location"]
    assert session.get(f"{desk.url}/incidents", timeout=10, allow_redirects=False).status_code == 302
    assert session.get(f"{desk.url}/api/v1/incidents/{ref}", timeout=10).status_code == 401
    # the other reporter's link still opens theirs only
    assert "Laptop will not boot" in requests.get(other_link, timeout=10).text


def test_an_expired_or_altered_link_is_refused_with_a_clear_page(desk):
    ref, link, _ack = reported(desk, "rita@example.org", "Scanner offline")
    assert requests.get(link, timeout=10).status_code == 200

    token = link.rsplit("/", 1)[1]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (flipped, token.replace(".", "x", 1), token + "0", "1.1.9999999999.x", "%00", "a" * 5000):
        answer = requests.get(f"{desk.url}/r/{bad}", timeout=10)
        assert answer.status_code in (403, 404), (bad[:40], answer.status_code)
        assert "Scanner offline" not in answer.text
    answer = requests.get(f"{desk.url}/r/{flipped}", timeout=10)
    assert answer.status_code == 403 and "This link is not valid" in answer.text

    session = requests.Session()
    form_token = csrf(session, link)
    desk.clock.advance(days=14, seconds=1)  # [web] reporter_link_lifetime = 14d
    expired = requests.get(link, timeout=10)
    assert expired.status_code == 410 and "This link has expired" in expired.text and "Scanner" not in expired.text
    posted = session.post(f"{link}/reply", data={"body": "hello?", "csrf_token": form_token}, timeout=10)
    assert posted.status_code == 410
    assert [t for t, _v, _a in timeline(ref)].count("reply") == 0


def test_internal_notes_and_agent_names_never_appear(desk):
    ref, link, _ack = reported(desk, "rita@example.org", "VPN drops")
    lc = desk.lifecycle
    lc.assign(ref, "alice", assignee="alice", reason="mine")
    lc.start(ref, "alice")
    lc.note(ref, "alice", "INTERNAL-NOTE: the VPN box belongs to Dave, password in the safe")
    lc.note(ref, "alice", "PUBLIC-UPDATE: we are on it", public=True)
    lc.reply(ref, "alice", "AGENT-REPLY: which office are you in?")
    lc.hold(ref, "alice", "HOLD-REASON: waiting for the supplier contract")
    lc.resume(ref, "alice", "RESUME-NOTE internal")
    lc.escalate(ref, "alice", "hierarchical", "ESCALATION-REASON internal")
    lc.resolve(ref, "alice", code="config", notes="RESOLUTION-NOTES: raised the timeout", cause="CAUSE-CODE-X")

    page = requests.get(link, timeout=10).text
    for shown in ("PUBLIC-UPDATE", "AGENT-REPLY", "RESOLUTION-NOTES", "Example help desk", "On hold", "Resolved"):
        assert shown in page, shown
    for hidden in ("INTERNAL-NOTE", "HOLD-REASON", "RESUME-NOTE", "ESCALATION-REASON", "CAUSE-CODE-X", "alice"):
        assert hidden not in page, hidden
    assert "service-desk" not in page  # nor the group's name


def test_a_reply_from_the_page_threads_like_a_mail_reply(desk):
    ref, link, ack = reported(desk, "rita@example.org", "Wifi slow in room 12")
    mail_in(desk, "rita@example.org", f"Re: [{ref}] Wifi slow", "By mail: also room 14.", reply_to=ack["Message-ID"])
    wait_for(lambda: [t for t, _v, _a in timeline(ref)].count("reply") == 1, message="the mail reply")

    session = requests.Session()
    missing = session.post(f"{link}/reply", data={"body": "no token"}, timeout=10)
    assert missing.status_code == 400  # CSRF
    token = csrf(session, link)
    empty = session.post(f"{link}/reply", data={"body": "  ", "csrf_token": token}, timeout=10)
    assert empty.status_code == 400 and "Please write something first" in empty.text
    sent = session.post(f"{link}/reply", data={"body": "By page: room 16 too.", "csrf_token": token}, timeout=10)
    assert sent.status_code == 200 and "Your message has been added" in sent.text and "By page: room 16" in sent.text

    by_mail, by_page = [row for row in timeline(ref) if row[0] == "reply"]
    assert by_mail == by_page == ("reply", "reporter", "rita@example.org")

    # resolved: a reply reopens, from the page as by mail
    desk.lifecycle.resolve(ref, "alice", code="fixed", notes="New access point.", cause="hardware")
    session.post(f"{link}/reply", data={"body": "Still slow in 16.", "csrf_token": token}, timeout=10)
    assert in_db(lambda: Incident.get(Incident.ref == ref).status) == "in_progress"
    assert timeline(ref)[-2:] == [
        ("reopened", "internal", "rita@example.org"),
        ("reply", "reporter", "rita@example.org"),
    ]
    # the reporter is not mailed their own words; the reply box stays a reply, not a new incident
    assert in_db(lambda: Incident.select().count()) == 1


def test_this_fixed_it_closes_and_still_broken_reopens_within_the_window(desk):
    ref, link, _ack = reported(desk, "rita@example.org", "Projector flickers")
    session = requests.Session()
    page = session.get(link, timeout=10).text
    assert "This fixed it" not in page and "Still broken" not in page  # only offered while resolved
    token = csrf(session, link)
    early = session.post(f"{link}/close", data={"csrf_token": token}, timeout=10)
    assert early.status_code == 400 and "not resolved" in early.text
    assert in_db(lambda: Incident.get(Incident.ref == ref).status) == "new"

    desk.lifecycle.resolve(ref, "alice", code="fixed", notes="New cable.", cause="hardware")
    page = session.get(link, timeout=10).text
    assert "This fixed it" in page and "Still broken" in page and "New cable." in page
    typed = session.post(f"{link}/reopen", data={"reason": " ", "csrf_token": token}, timeout=10)
    assert typed.status_code == 400
    reopened = session.post(f"{link}/reopen", data={"reason": "Flickers again", "csrf_token": token}, timeout=10)
    assert reopened.status_code == 200 and "reopened" in reopened.text
    assert timeline(ref)[-1] == ("reopened", "internal", "rita@example.org")

    desk.lifecycle.resolve(ref, "alice", code="fixed", notes="Replaced the projector.", cause="hardware")
    closed = session.post(f"{link}/close", data={"csrf_token": token}, timeout=10)
    assert closed.status_code == 200 and "the incident is closed" in closed.text
    incident = in_db(lambda: Incident.get(Incident.ref == ref))
    assert (incident.status, incident.closed_by) == ("closed", "reporter")
    assert timeline(ref)[-1] == ("closed", "internal", "rita@example.org")
    page = session.get(link, timeout=10).text
    assert "Add information" not in page and DESK in page  # closed: no reply box, where to write instead


def test_still_broken_is_refused_after_the_reopen_window(desk):
    ref, link, _ack = reported(desk, "rita@example.org", "Phone line crackles")
    desk.lifecycle.resolve(ref, "alice", code="fixed", notes="New handset.", cause="hardware")
    desk.clock.advance(days=7, seconds=1)  # [mail] reopen_window = 7d
    session = requests.Session()
    page = session.get(link, timeout=10).text
    assert "Still broken" not in page and "Add information" not in page and "This fixed it" in page
    token = csrf(session, link)
    late = session.post(f"{link}/reopen", data={"reason": "crackles", "csrf_token": token}, timeout=10)
    assert late.status_code == 400 and "too long ago" in late.text
    late_reply = session.post(f"{link}/reply", data={"body": "still there", "csrf_token": token}, timeout=10)
    assert late_reply.status_code == 400
    assert in_db(lambda: Incident.get(Incident.ref == ref).status) == "resolved"


def test_every_mail_to_the_reporter_carries_a_link_that_opens_the_page(desk):
    ref, _link, _ack = reported(desk, "rita@example.org", "Badge reader dead")
    desk.lifecycle.note(ref, "alice", "Technician on the way.", public=True)
    desk.lifecycle.resolve(ref, "alice", code="fixed", notes="New reader.", cause="hardware")
    for subject in ("Update", "Resolved"):
        message = mail_to(desk, "rita@example.org", f"[{ref}] {subject}")
        (link,) = set(LINK.findall(message.get_body(("plain",)).get_content()))
        assert "Badge reader dead" in requests.get(link, timeout=10).text
    assert timedelta(days=14) == desk.config.web.reporter_link_lifetime
