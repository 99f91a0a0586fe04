"""Plain words everywhere: every page and every mail template, rendered with a rich fixture, shows no
Python value (``None``, ``True``, ``0:15:00``, ``in_progress``, ``b'…'``, ``{'…``, ``datetime.…``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from gateway.core.clock import Clock
from gateway.incidents.heartbeats import record_beat
from gateway.intake.mailbox_status import Reporter
from gateway.pipeline.mail_steps import store_email_view
from gateway.problem_records import Problems
from notifiers import words
from notifiers.render import BUILTIN, RESTRICTED_TITLE, Renderer, incident_values
from notifiers.reporter_links import ReporterLinks
from parsers.email import EmailOptions, parse_email
from store.models import Attachment, Event, HeartbeatState, Inbound, Incident, Notification, Problem, User
from tests.test_web import Web

# What Python writes when a value reaches a person unconverted.
REPR = re.compile(
    r"\bNone\b(?! [a-z])|\bTrue\b|\bFalse\b|(?<![\d:])\d{1,2}:\d\d:\d\d(?![\d:])|\b[a-z]+_[a-z_]+\b"
    r"|\bb'|\bb\"|\{'|\[\]|datetime\.|timedelta\(|object at 0x|<[a-z_.]+ object"
)
# Names that are the user's data or a fixed technical identifier, not Python leaking through.
ALLOWED = {"service_desk", "known_error", "generatorURL", "csrf_token"}


class _Text(HTMLParser):
    """The text a person reads (not tags, attributes, scripts or styles)."""

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        for name, value in attrs:  # what a person reads in attributes: tooltips, labels, placeholders
            if name in ("title", "aria-label", "placeholder", "alt") and value:
                self.parts.append(value)

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def reprs(text: str, *, html: bool = True) -> list[str]:
    """The repr-like pieces of what a person reads on a page (html) or in a message."""
    if html:
        parser = _Text()
        parser.feed(text)
        text = "\n".join(parser.parts)
    return [text[max(m.start() - 40, 0) : m.end() + 20] for m in REPR.finditer(text) if m.group(0) not in ALLOWED]


# ---------------------------------------------------------------- the filters


def test_durations_flags_and_empty_values_are_words():
    assert [words.duration(s) for s in (45, 900, 3600, 5400, 86400 * 2 + 3 * 3600)] == [
        "45 s", "15 min", "1 h", "1 h 30 min", "2 d 3 h",
    ]  # fmt: skip
    assert words.duration(timedelta(minutes=15)) == "15 min"
    assert (words.yesno(True), words.yesno("False"), words.label("in_progress"), words.label(None)) == (
        "yes", "no", "in progress", "—",
    )  # fmt: skip
    # a change as stored (Event.old/new keep str(value))
    assert [words.change(v) for v in ("False", "True", None, "None", "0:15:00", "1 day, 2:00:00")] == [
        "no", "yes", "—", "—", "15 min", "1 d 2 h",
    ]  # fmt: skip
    assert words.change("in_progress", "status") == "in progress"
    assert words.plain({"a": None, "b": [True, b"x"]}) == "a=—, b=yes, x"


def test_the_check_sees_what_it_must():
    """The scanner itself: each repr is found in text, none in markup a person does not read."""
    for bad in ("None", "False → True", "0:15:00", "in_progress", "b'x'", "{'a': 1}", "datetime.datetime(2026"):
        assert reprs(f"<p>{bad}</p>"), bad
    assert not reprs('<p class="status-in_progress" data-x="None">in progress · 15 min · yes</p>')


# ---------------------------------------------------------------- a rich fixture


MAILBOXES = [
    {"name": name, "host": "imap.example.org", "user": name, "password_env": "INLET_TEST_IMAP_PASSWORD"}
    for name in ("support", "alerts", "new")
]
HEARTBEATS = [  # the Heartbeats page in each state: ok (a beat), expired (silent, with its incident), waiting
    {"name": "watchdog", "interval": "5m", "grace": "1m", "labels": {"alertname": "Watchdog"}},
    {"name": "nightly-backup", "interval": "1d", "grace": "1h", "mail_subject": "^backup done"},
    {"name": "cron", "interval": "1h", "mail_from": "^cron@"},
]


@pytest.fixture
def rich(store):
    web = seed(Web(store, mailbox=MAILBOXES, heartbeat=HEARTBEATS))
    now = datetime.now(UTC)
    record_beat("watchdog", now)
    HeartbeatState.create(name="nightly-backup", started_at=now - timedelta(days=3), expired_at=now)
    web.lifecycle.create(title="nightly-backup silent since yesterday", actor="heartbeat:nightly-backup",
                         group="service-desk", integration="heartbeat:nightly-backup")  # fmt: skip
    return web


def seed(web: Web) -> Web:
    """Incidents in every state with every kind of timeline entry, a mail, an attachment, a problem; mailboxes
    failing, read, and not started (as their pollers report them: gateway/intake/mailbox_status.py)."""
    failing, read = Reporter("support", Clock()), Reporter("alerts", Clock())
    failing.failed("cannot log in", "the server refused the login: Authentication failed")
    read.failed("connection lost", "the server closed the connection")
    read.connected()
    read.polled()
    lc = web.lifecycle
    busy = web.desk
    lc.acknowledge(busy.ref, "desk")
    lc.start(busy.ref, "desk")
    lc.note(busy.ref, "desk", "Checked the toner.")
    lc.note(busy.ref, "desk", "Printer replaced; watching it.", public=True)
    lc.reply(busy.ref, "desk", "Could you send a photo?")
    lc.update(busy.ref, "admin", reason="wider impact", impact="high", major=True, category="hardware")
    lc.escalate(busy.ref, "admin", "hierarchical", "needs a decision")
    lc.escalate(busy.ref, "admin", "functional", "network side", group="network")
    lc.assign(busy.ref, "admin", assignee="neto", reason="on shift")
    email = (
        b"From: Rita <rita@example.org>\r\nTo: desk@example.org\r\nSubject: Re: printer\r\n"
        b"Message-ID: <r1@example.org>\r\nContent-Type: text/plain\r\n\r\nStill smoking.\r\n"
    )
    inbound = Inbound.create(source="smtp", received_at=datetime.now(UTC), status="processed", raw=email)
    event = lc.reply(busy.ref, "rita@example.org", "Still smoking.", inbound=inbound)
    store_email_view(event, parse_email(email, EmailOptions()))
    Attachment.create(
        incident=busy,
        event=event,
        filename="smoke.txt",
        content_type="text/plain",
        size=5,
        sha256="0" * 64,
        data=b"smoke",
    )

    held = lc.create(title="Supplier owes a part", actor="test", group="service-desk", reporter_email="bo@example.org")
    lc.acknowledge(held.ref, "desk")
    lc.hold(held.ref, "desk", "supplier")

    done = lc.create(title="Mail queue stuck", actor="test", group="service-desk", reporter_email="cy@example.org")
    lc.acknowledge(done.ref, "desk")
    lc.resolve(done.ref, "desk", code="fixed", notes="Flushed the queue.", cause="software", fix="permanent")
    closed = lc.create(title="VPN slow", actor="test", group="service-desk")
    lc.resolve(closed.ref, "desk", code="fixed", notes="Rebooted.", cause="hardware", fix="workaround")
    lc.close(closed.ref, "desk")
    cancelled = lc.create(title="Duplicate report", actor="test", group="service-desk")
    lc.cancel(cancelled.ref, "desk", "duplicate")
    lc.link(done.ref, "desk", closed.ref, "related")

    problems = Problems(lc)
    problems.create(title="Printers overheat", actor="admin", incident_ref=busy.ref, workaround="Open the lid")
    for status, error in (("sent", ""), ("failed", "SMTP 550 no such user"), ("pending", "")):
        Notification.create(
            incident=busy,
            audience="group",
            template="escalation",
            status=status,
            last_error=error,
            next_attempt_at=datetime.now(UTC),
            created_at=datetime.now(UTC),
        )
    web.incidents = {"busy": busy, "held": held, "done": done, "closed": closed, "cancelled": cancelled}
    return web


def _fill(rule, web) -> list[str]:
    """The paths of a GET rule, its arguments taken from the fixture (one path per incident for <ref>)."""
    path = rule.rule
    if "<" not in path:
        return [path]
    links = ReporterLinks.for_config(web.config)
    values = {
        "ref": [i.ref for i in web.incidents.values()] + [web.secret.ref],
        "inbound_id": [web.inbound.id],
        "attachment_id": [Attachment.get().id],
        "user_id": [User.get(User.name == "desk").id],
        "name": ["service-desk"],
        # the reporter's page (web/reporter.py): a link of each incident that has a reporter
        "token": [links.token(i, datetime.now(UTC)) for i in web.incidents.values() if i.reporter_id],
    }
    assert values["token"], "the fixture has incidents with a reporter"
    if "/problems/" in path:
        values["ref"] = [p.ref for p in Problem.select()]
    [arg] = rule.arguments
    return [re.sub(r"<[^>]+>", str(v), path) for v in values[arg]]


def page_paths(web: Web) -> list[str]:
    """Every page of the app (each GET route, its arguments from the seeded fixture)."""
    paths = []
    for rule in web.app.url_map.iter_rules():
        if "GET" in rule.methods and not rule.rule.startswith(("/api/", "/static", "/hooks/")):
            paths.extend(_fill(rule, web))
    return sorted(paths)


def test_every_page_speaks_plain_words(rich):
    client = rich.client("admin")
    seen = []
    extra = {"/incidents": ["?status=any", "?view=mine"], "/quarantine": ["?status=all"], "/problems": ["?status=any"]}
    for path in page_paths(rich):
        for query in ["", *extra.get(path, [])]:
            response = client.get(path + query)
            if response.status_code != 200 or not response.content_type.startswith("text/html"):
                continue
            seen.append(path + query)
            found = reprs(response.text)
            assert not found, f"{path}{query} shows {found}"
    # the pages a person works in were all rendered
    must_see = (
        "/incidents",
        "/incidents/new",
        "/problems",
        "/oncall",
        "/users",
        "/configuration",
        "/status",
        "/heartbeats",
    )
    for must in must_see:
        assert must in seen
    configuration, queue = client.get("/configuration").text, client.get("/incidents").text
    assert "cannot log in since" in configuration and "not polled yet" in configuration
    assert "connected, waiting for mail since" in configuration
    assert "mailbox support: cannot log in since" in queue and "mailbox alerts" not in queue
    for incident in rich.incidents.values():
        assert f"/incidents/{incident.ref}" in seen


def test_timeline_entries_read_as_words(rich):
    html = rich.client("admin").get(f"/incidents/{rich.incidents['busy'].ref}").text
    assert "major: no → yes" in html
    assert "status: acknowledged → in progress" in html
    assert "category: — → hardware" in html
    # one entry per escalation, no separate "escalated: False → True"
    busy = rich.incidents["busy"]
    assert Event.select().where(Event.incident == busy.id, Event.type == "escalated").count() == 2
    assert Event.select().where(Event.incident == busy.id, Event.field == "escalated").count() == 0
    assert (
        Event.select().where(Event.incident == busy.id, Event.type == "assigned", Event.field == "group").count() == 0
    )
    assert "group: service-desk → network" in html


def test_the_reporters_own_mail_is_not_labelled_internal(rich):
    html = rich.client("admin").get(f"/incidents/{rich.incidents['busy'].ref}").text
    entry = html[html.index("Still smoking.") - 1500 : html.index("Still smoking.")]
    last = entry[entry.rindex('<li class="event') :]
    assert '<span class="vis">email</span>' in last, last
    assert '<span class="vis">internal</span>' not in last


def test_sla_words_only_while_the_target_applies(rich):
    client = rich.client("admin")
    for name in ("done", "closed", "cancelled"):
        page = client.get(f"/incidents/{rich.incidents[name].ref}").text
        facts = page[page.index('<div class="facts">') : page.index("</div>", page.index('<div class="facts">'))]
        assert not re.search(r"\b(left|overdue|met|missed)\b", facts), (name, facts)
    held = client.get(f"/incidents/{rich.incidents['held'].ref}").text
    facts = held[held.index('<div class="facts">') :]
    assert "paused" in facts[:3000] and " left<" not in facts[:3000]


# ---------------------------------------------------------------- mail


def _templates() -> list[str]:
    return sorted(p.stem for p in BUILTIN.glob("*.j2"))


def test_every_mail_template_speaks_plain_words(rich):
    incident = Incident.get_by_id(rich.incidents["held"].id)
    context = {
        "body": "Line one.",
        "previous_group": None,
        "step": 1,
        "condition": "not acknowledged",
        "target": "respond",
        "due": datetime(2026, 12, 3, 15, 0, tzinfo=UTC),
        "after": timedelta(minutes=15),
        "items": [{"subject": "[INC-1] New", "link": "http://x/incidents/INC-1"}],
        "report": "weekly",
        "every": "week",
        "since": datetime(2026, 11, 26, tzinfo=UTC).date(),
        "until": datetime(2026, 12, 3, tzinfo=UTC).date(),
        "filters": None,
        "figures": [("Opened", 12), ("Breached", None), ("Major", True)],
        "report_link": "http://x/reports",
        "restricted": False,
    }
    renderer = Renderer()
    for template in _templates():
        for audience in ("reporter", "group", "stakeholder"):
            values = incident_values(incident, base_url="http://x", desk="Desk", audience=audience, context=context)
            rendered = renderer.render(template, values)
            for fmt, text in (("subject", rendered.subject), ("text", rendered.text), ("md", rendered.markdown)):
                assert not reprs(text, html=False), (template, audience, fmt, reprs(text, html=False))
            assert not reprs(rendered.html), (template, audience, "html", reprs(rendered.html))
            assert "Status:    on hold" in rendered.text


def test_every_mail_to_a_reporter_about_a_security_incident_names_it_neutrally(rich):
    incident = Incident.get_by_id(rich.secret.id)
    renderer = Renderer()
    for template in _templates():
        for restricted in (False, True):
            context = {"body": "We fixed it.", "restricted": restricted}
            values = incident_values(incident, base_url="http://x", desk="Desk", audience="reporter", context=context)
            rendered = renderer.render(template, values)
            assert "Phishing" not in rendered.subject + rendered.text + rendered.html, (template, restricted)
            assert RESTRICTED_TITLE in rendered.text, template


def test_the_queue_warns_when_notifications_have_been_failing_for_long(store):
    web = Web(store, notifications={"failing_warning_after": "15m"})
    client = web.client("desk")
    Notification.delete().execute()
    assert 'id="delivery-trouble"' not in client.get("/incidents").text
    now = datetime.now(UTC)
    row = Notification.create(
        incident=web.desk,
        audience="reporter",
        template="acknowledgement",
        attempts=3,
        last_error="ConnectionRefusedError: [Errno 111] Connection refused",
        next_attempt_at=now,
        created_at=now - timedelta(minutes=5),
    )
    assert 'id="delivery-trouble"' not in client.get("/incidents").text  # a hiccup, not yet a trouble
    Notification.update(created_at=now - timedelta(minutes=20)).where(Notification.id == row.id).execute()
    page = client.get("/incidents").text
    assert 'id="delivery-trouble"' in page
    assert "Notifications have been failing for more than 15 min: ConnectionRefusedError" in page
    Notification.update(status="sent").where(Notification.id == row.id).execute()
    assert 'id="delivery-trouble"' not in client.get("/incidents").text
