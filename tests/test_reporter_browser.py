"""The reporter's page on a phone (390×844) in a real browser: from the link in the acknowledgement to
"this fixed it", through Inlet's SMTP intake, outbox and web server (fixtures of tests/test_browser.py)."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from store.db import db
from store.models import Event, Incident
from tests.conftest import wait_for
from tests.test_browser import browser, report_by_email, running, screenshot, sqlite_store  # noqa: F401 (fixtures)

LINK = re.compile(r"(http://127\.0\.0\.1:\d+/r/[A-Za-z0-9._-]+)")


def link_for(reporter_mailbox, ref: str, subject: str) -> str:
    def delivered():
        for _f, _to, message in reporter_mailbox.messages:
            if f"[{ref}] {subject}" in message["Subject"]:
                return LINK.search(message.get_body(("plain",)).get_content()).group(1)
        return None

    return wait_for(delivered, timeout=20, message=f"the {subject!r} mail")


def no_sideways_scroll(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"


def test_a_reporter_follows_the_link_on_a_phone(browser, running, reporter_mailbox):  # noqa: F811
    ref = report_by_email(running)
    # the fixture's [inlet] base_url is the default; the page is served where the test's web role listens
    link = running.base_url + "/r/" + link_for(reporter_mailbox, ref, "Received").rsplit("/r/", 1)[1]
    running.lifecycle.note(ref, "alice", "Internal: probably the idle timeout on vpn-gw-2")
    running.lifecycle.note(ref, "alice", "We are looking at the VPN gateway.", public=True)

    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(10_000)
    try:
        answer = page.goto(link)
        assert answer.status == 200 and answer.headers["referrer-policy"] == "no-referrer"
        expect(page.get_by_role("heading", level=1)).to_contain_text(ref)
        expect(page.locator(".timeline")).to_contain_text("We are looking at the VPN gateway.")
        expect(page.locator("body")).not_to_contain_text("idle timeout on vpn-gw-2")
        expect(page.locator("body")).not_to_contain_text("alice")
        expect(page.get_by_role("button", name="This fixed it")).to_have_count(0)  # not resolved yet
        no_sideways_scroll(page)

        page.get_by_label("Your message to Inlet test desk").fill("It also drops on the guest wifi.")
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".flash-ok")).to_contain_text("Your message has been added")
        expect(page.locator(".timeline li").first).to_contain_text("It also drops on the guest wifi.")
        expect(page.locator(".timeline li").first).to_contain_text("You")
        screenshot(page, "reporter-phone-open")

        running.lifecycle.resolve(ref, "alice", code="config", notes="Raised the idle timeout.", cause="configuration")
        page.reload()
        expect(page.locator(".resolution")).to_contain_text("Raised the idle timeout.")
        expect(page.get_by_role("button", name="Still broken")).to_be_visible()
        no_sideways_scroll(page)
        screenshot(page, "reporter-phone-resolved")
        page.get_by_role("button", name="This fixed it").click()
        expect(page.locator(".flash-ok")).to_contain_text("closed")
        expect(page.locator(".incident-head .status")).to_have_text("closed")
        expect(page.get_by_role("button", name="Send")).to_have_count(0)
        no_sideways_scroll(page)
        assert errors == [], errors  # (the refused link below is a 403 the console reports)

        refused = page.goto(link[:-2] + ("xx" if not link.endswith("xx") else "yy"))
        assert refused.status == 403
        expect(page.get_by_role("heading", level=1)).to_have_text("This link does not open anything")
        no_sideways_scroll(page)
    finally:
        context.close()

    with db.connection_context():
        incident = Incident.get(Incident.ref == ref)
        mine = [(e.type, e.visibility) for e in Event.select().where(Event.incident == incident,
                                                                      Event.actor == "rita@example.org")]  # fmt: skip
    assert (incident.status, incident.closed_by) == ("closed", "reporter")
    assert ("reply", "reporter") in mine and ("closed", "internal") in mine
