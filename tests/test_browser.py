"""A real browser (Playwright driving Debian's chromium) against ``inlet serve``'s web role on loopback.

Fixtures: ``running`` is a started Service (web + pipeline worker) on a free
port with an agent signed up; ``page`` is a chromium page whose base URL is
that service. Further intake (SMTP, webhooks) and sinks can be added as
fixtures next to these, and the flow test extended step by step.
"""

from __future__ import annotations

import re
import smtplib
from email.message import EmailMessage
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from gateway import accounts
from gateway.service import Service
from store.db import db
from store.models import Event, Incident
from tests.conftest import ROOT, _fresh_database, _migrated, free_port, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OUTPUT = ROOT / "test-output" / "browser"
AGENT, PASSWORD = "alice", "a long test password"
DESK = "desk@inlet.example.org"


@pytest.fixture
def sqlite_store(tmp_path):
    """The browser flow runs once, on the embedded default (the API and pages run on both backends elsewhere)."""
    with _fresh_database("sqlite", tmp_path) as fresh, _migrated(fresh) as ready:
        yield ready


@pytest.fixture
def running(sqlite_store, reporter_mailbox):
    """A started Service (web, SMTP intake, pipeline worker, notification delivery) on free loopback ports."""
    config = sqlite_store.config(
        web={"host": "127.0.0.1", "port": free_port()},
        inlet={"data_dir": str(sqlite_store.tmp_path), "name": "Inlet test desk"},
        group=[
            {"name": "service-desk", "members": [AGENT], "escalation": "default"},
            {"name": "network", "escalation": "default"},
            {"name": "security"},
        ],
        smtp={"host": "127.0.0.1", "port": free_port()},
        address=[{"address": DESK, "group": "service-desk"}],
        notifications={"from_address": DESK, "smtp_port": reporter_mailbox.port, "apprise_throttle": "0s"},
    )
    service = Service(config, roles={"web", "worker", "smtp", "notify"})
    accounts.create_user(AGENT, "agent", PASSWORD, email="alice@example.org")
    service.start()
    service.base_url = f"http://127.0.0.1:{config.web.port}"
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, running):
    """A page on the running service; fails the test on any console error (e.g. a CSP violation)."""
    context = browser.new_context(base_url=running.base_url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(10_000)
    yield page
    context.close()
    assert errors == [], errors


def sign_in(page, name: str = AGENT, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Queue")).to_be_visible()


def screenshot(page, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def report_by_email(running) -> str:
    """Rita emails the service desk through the SMTP intake; the reference of the incident it became."""
    message = EmailMessage()
    message["From"] = "Rita Reporter <rita@example.org>"
    message["To"] = DESK
    message["Subject"] = "VPN drops every ten minutes"
    message.set_content("Since this morning the VPN disconnects every ten minutes for the whole sales team.")
    with smtplib.SMTP("127.0.0.1", running.smtp.port, timeout=10) as client:
        client.send_message(message)

    def registered():
        with db.connection_context():
            incident = Incident.get_or_none(Incident.title == "VPN drops every ten minutes")
            return incident.ref if incident else None

    return wait_for(registered, timeout=20, message="the email to become an incident")


def test_agent_works_an_incident_from_queue_to_closed(running, page, reporter_mailbox):
    ref = report_by_email(running)

    sign_in(page)
    row = page.get_by_role("row").filter(has_text="VPN drops every ten minutes")
    expect(row).to_contain_text(ref)
    expect(row.locator(".sla")).to_contain_text(re.compile(r"left|overdue"))
    expect(row.locator("time[data-relative]").first).to_have_text(re.compile(r"ago|just now"))  # inlet.js ran
    row.get_by_role("link", name=ref).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(ref)

    page.get_by_role("button", name="Acknowledge").click()
    expect(page.locator(".flash-ok")).to_contain_text("acknowledge done")
    expect(page.locator(".incident-head .status")).to_have_text("acknowledged")

    page.get_by_label("Text the reporter receives").fill("We are looking into the VPN gateway now.")
    page.get_by_role("button", name="Send public update").click()
    expect(page.locator(".timeline")).to_contain_text("We are looking into the VPN gateway now.")
    screenshot(page, "incident-open")

    def update_delivered():  # through the outbox, to the reporter's mail server
        return [
            m
            for _f, to, m in reporter_mailbox.messages
            if "We are looking into" in m.get_body(("plain",)).get_content()
        ]

    (update,) = wait_for(update_delivered, timeout=20, message="the public update in the reporter's mailbox")
    assert f"[{ref}]" in update["Subject"] and update["To"] == "rita@example.org"

    page.locator("summary", has_text="Resolve").click()
    page.get_by_label("Resolution code").fill("config-change")
    page.get_by_label("Notes (public)").fill("Raised the idle timeout on the VPN gateway.")
    page.get_by_label("Cause code").fill("configuration")
    page.get_by_label("Fix").select_option("permanent")  # no default: a workaround and a fix differ
    page.get_by_role("button", name="Resolve", exact=True).click()
    expect(page.locator(".incident-head .status")).to_have_text("resolved")

    page.get_by_role("button", name="Close").click()
    expect(page.locator(".incident-head .status")).to_have_text("closed")
    expect(page.locator(".actions")).to_have_count(0)  # closed is read-only

    with db.connection_context():
        stored = Incident.get(Incident.ref == ref)
        types = [e.type for e in Event.select().where(Event.incident == stored).order_by(Event.id)]
    assert (stored.status, stored.resolution_code, stored.closed_by) == ("closed", "config-change", "agent")
    assert types == ["created", "acknowledged", "update", "resolved", "closed"]
    assert screenshot(page, "incident").stat().st_size > 10_000


def test_anonymous_visitor_sees_the_status_page_and_the_login(running, page):
    running.lifecycle.create(
        title="Email delivery delayed", actor="t", group="service-desk", service="email", major=True
    )
    page.goto("/status")
    expect(page.get_by_role("heading", name="email")).to_be_visible()
    expect(page.locator(".status-incident")).to_contain_text("investigating")
    page.goto("/incidents")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    screenshot(page, "login")


def test_queue_filters_with_htmx_and_keyboard(running, page):
    for title, urgency in (("Printer jam on floor 2", "low"), ("Payroll export fails", "high")):
        running.lifecycle.create(title=title, actor="t", group="service-desk", urgency=urgency)
    sign_in(page)
    page.get_by_label("Search").fill("payroll")
    page.keyboard.press("Enter")
    expect(page.locator("#rows")).to_contain_text("Payroll export fails")
    expect(page.locator("#rows")).not_to_contain_text("Printer jam")
    expect(page).to_have_url(re.compile(r"q=payroll"))
    page.keyboard.press("Tab")  # focus moves on to the next filter: the form is keyboard usable
    expect(page.get_by_label("Status")).to_be_focused()
    screenshot(page, "queue")


def test_admin_pages_render_without_console_errors(running, page):
    """Every admin page under the real CSP: a blocked inline script or style would be a console error."""
    accounts.create_user("root", "admin", PASSWORD)
    running.lifecycle.create(title="Mail relay queue growing", actor="t", group="network", security=True)
    sign_in(page, "root")
    for path, heading in (
        ("/incidents/new", "Register an incident"),
        ("/quarantine", "Quarantine"),
        ("/notifications", "Failed notifications"),
        ("/users", "Users"),
        ("/configuration", "Configuration"),
        ("/status", "Service status"),
    ):
        page.goto(path)
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        screenshot(page, path.strip("/").replace("/", "-"))
    page.goto("/incidents")
    page.keyboard.press("Tab")  # the skip link comes first
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
