"""The queue in a real browser (Playwright driving Debian's chromium) against a running Service: rows that
refresh themselves without losing the agent's filters, selection, scroll or open menus; "N new"; bulk actions.

Conditions are polled from Python (page.wait_for_function evaluates a string in the page: the CSP forbids it).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from gateway import accounts
from gateway.service import Service
from store.db import db
from store.models import Incident
from tests.conftest import free_port, wait_for
from tests.test_browser import AGENT, PASSWORD, browser, screenshot, sign_in, sqlite_store  # noqa: F401


@pytest.fixture
def desk(sqlite_store):  # noqa: F811
    """start(refresh) -> a started Service (web + worker) whose queue refreshes every ``refresh``."""
    started = []

    def start(refresh: str) -> Service:
        config = sqlite_store.config(
            web={"host": "127.0.0.1", "port": free_port(), "queue_refresh": refresh},
            inlet={"data_dir": str(sqlite_store.tmp_path), "name": "Inlet test desk"},
            group=[
                {"name": "service-desk", "members": [AGENT], "escalation": "default"},
                {"name": "network", "escalation": "default"},
            ],
        )
        service = Service(config, roles={"web", "worker"})
        accounts.create_user(AGENT, "agent", PASSWORD, email="alice@example.org")
        service.start()
        service.base_url = f"http://127.0.0.1:{config.web.port}"
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def page_on(browser):  # noqa: F811
    """page_on(service) -> a chromium page on it; the test fails on any console error (e.g. a CSP violation)
    but those it names in ``page_on.expected``."""
    contexts, errors = [], []

    def open_page(service, width=1280, height=700):
        context = browser.new_context(base_url=service.base_url, viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.set_default_timeout(10_000)
        return page

    open_page.expected = []
    yield open_page
    for context in contexts:
        context.close()
    assert errors == open_page.expected, errors


def create(service, title: str, group: str = "service-desk", **fields) -> Incident:
    with db.connection_context():
        return service.lifecycle.create(title=title, actor="monitoring", group=group, **fields)


def status_of(ref: str) -> str:
    with db.connection_context():
        return Incident.get(Incident.ref == ref).status


def test_queue_refreshes_itself_and_keeps_filters_selection_scroll_and_open_menus(desk, page_on):
    service = desk("1s")
    incidents = [create(service, f"Printer {n} jammed") for n in range(30)]
    create(service, "Router flapping", group="network")
    page = page_on(service)
    sign_in(page)
    page.get_by_label("Group", exact=True).select_option("service-desk")  # the filter form swaps the rows (htmx)
    expect(page).to_have_url(re.compile(r"group=service-desk"))
    expect(page.get_by_role("row").filter(has_text="Router flapping")).to_have_count(0)

    first, second = incidents[3].ref, incidents[7].ref
    page.get_by_label(f"Select {first}").check()
    page.get_by_label(f"Select {second}").check()
    expect(page.locator("#bulk-count")).to_have_text("2")
    page.locator("#bulk-assign summary").click()
    page.locator("#bulk-assign").get_by_label("Reason").fill("half typed")
    page.get_by_label("Search").fill("half typed")  # focus stays in the box: not applied (no change event)
    page.mouse.wheel(0, 600)
    wait_for(lambda: page.evaluate("window.scrollY") > 0, message="the page to scroll")
    scrolled = page.evaluate("window.scrollY")
    rows = page.locator("#rows")
    before = rows.element_handle()

    create(service, "Scanner jammed")  # matches the filter: new
    create(service, "Switch port dead", group="network")  # does not: not counted
    expect(page.get_by_role("status").filter(has_text="new")).to_have_text("1 new", timeout=15_000)
    wait_for(lambda: not before.evaluate("old => old.isConnected"), message="a refresh")  # the rows were swapped
    expect(page.get_by_role("row").filter(has_text="Scanner jammed")).to_have_count(1)
    expect(page.get_by_role("row").filter(has_text="Switch port dead")).to_have_count(0)

    expect(page.get_by_label(f"Select {first}")).to_be_checked()
    expect(page.get_by_label(f"Select {second}")).to_be_checked()
    expect(page.get_by_label(f"Select {incidents[4].ref}")).not_to_be_checked()
    expect(page.locator("#bulk-count")).to_have_text("2")
    expect(page.locator("#bulk-assign")).to_have_attribute("open", "")
    expect(page.locator("#bulk-assign").get_by_label("Reason")).to_have_value("half typed")
    expect(page.get_by_label("Group", exact=True)).to_have_value("service-desk")
    expect(page.get_by_label("Search")).to_have_value("half typed")
    expect(page.get_by_label("Search")).to_be_focused()
    assert page.evaluate("window.scrollY") == scrolled
    expect(page).to_have_url(re.compile(r"group=service-desk"))
    screenshot(page, "queue-refreshed")

    # a second refresh comes and goes: the count stays, nothing the agent set is lost
    again = rows.element_handle()
    wait_for(lambda: not again.evaluate("old => old.isConnected"), timeout=15, message="a second refresh")
    expect(page.get_by_label(f"Select {first}")).to_be_checked()
    expect(page.get_by_role("status").filter(has_text="new")).to_have_text("1 new")


def test_bulk_acknowledge_and_link_as_children_in_the_browser(desk, page_on):
    service = desk("0s")
    major = create(service, "Office network down", major=True)
    a, b, c = (create(service, f"No network on floor {n}") for n in (1, 2, 3))
    page = page_on(service)
    sign_in(page)
    expect(page.locator("#rows")).not_to_have_attribute("hx-trigger", re.compile("every"))  # 0s: never

    page.get_by_label(f"Select {a.ref}").check()
    page.get_by_label(f"Select {b.ref}").check()
    page.get_by_role("button", name="Acknowledge", exact=True).click()
    expect(page.get_by_text(f"Acknowledge: done for {a.ref}, {b.ref}.")).to_be_visible()
    assert (status_of(a.ref), status_of(b.ref), status_of(c.ref)) == ("acknowledged", "acknowledged", "new")

    page.get_by_label(f"Select {b.ref}").check()
    page.get_by_label(f"Select {c.ref}").check()
    page.locator("#bulk-link summary").click()
    page.get_by_label("Of the incident").fill(major.ref)
    page.get_by_role("button", name="Link selected").click()
    expect(page.get_by_text(f"Link: done for {b.ref}, {c.ref}.")).to_be_visible()
    page.goto(f"/incidents/{major.ref}")
    expect(page.get_by_role("link", name=b.ref)).to_be_visible()
    expect(page.get_by_role("link", name=c.ref)).to_be_visible()


def test_bulk_action_refused_for_one_incident_does_nothing_and_names_it(desk, page_on):
    service = desk("0s")
    a, b = (create(service, f"Laptop {n} will not boot") for n in (1, 2))
    network = create(service, "Core router down", group="network")
    page = page_on(service)
    sign_in(page)
    expect(page.get_by_label(f"{network.ref}: not yours to act on")).to_be_disabled()
    page.get_by_label(f"Select {a.ref}").check()
    page.get_by_label(f"Select {b.ref}").check()
    with db.connection_context():  # meanwhile a colleague moves one of them to a group the agent is not in
        service.lifecycle.assign(b.ref, "neto", group="network")
    page.get_by_role("button", name="Acknowledge", exact=True).click()
    expect(page.get_by_role("alert")).to_have_text(f"Nothing done: you may not act on {b.ref}.")
    page_on.expected = ["Failed to load resource: the server responded with a status of 403 (FORBIDDEN)"]
    assert (status_of(a.ref), status_of(b.ref)) == ("new", "new")
