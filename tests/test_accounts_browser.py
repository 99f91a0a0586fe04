"""Accounts in a real browser (Playwright + Debian's chromium): an admin manages a user on their page, and an
agent changes their own password. Fixtures are tests/test_browser.py's (a started Service on loopback)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from gateway import accounts
from store.models import User
from tests import test_browser
from tests.conftest import in_db
from tests.test_browser import AGENT, PASSWORD, screenshot, sign_in

ADMIN = "root"
sqlite_store, running, browser = test_browser.sqlite_store, test_browser.running, test_browser.browser


@pytest.fixture
def page(browser, running):
    """As tests/test_browser.py's page, but a refused form (400, with its message) is not a console error here:
    refusing is what these tests check."""
    context = browser.new_context(base_url=running.base_url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "status of 400" not in m.text else None,
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(10_000)
    yield page
    context.close()
    assert errors == [], errors


def test_an_admin_creates_a_user_and_manages_them_on_their_page(page, running):
    accounts.create_user(ADMIN, "admin", PASSWORD)
    sign_in(page, ADMIN)
    page.get_by_role("link", name="Users").click()
    page.get_by_label("Name").fill("nina")
    page.get_by_label("Role").select_option("agent")
    page.get_by_label("Password").fill("nina starts here today")
    page.get_by_role("button", name="Add user").click()
    expect(page.get_by_role("heading", name=re.compile("^nina"))).to_be_visible()
    expect(page.get_by_text("Created nina.")).to_be_visible()

    page.get_by_role("button", name="Add nina to network").click()
    expect(page.get_by_text("nina joined network.")).to_be_visible()
    expect(page.get_by_role("button", name="Remove nina from network")).to_be_visible()
    # alice is in service-desk by the configuration file: no button, the page says where to change it
    page.goto("/users")
    page.get_by_role("link", name=AGENT, exact=True).click()
    expect(page.get_by_text("remove it from members in the configuration file")).to_be_visible()

    page.goto("/users")
    page.get_by_role("link", name="nina", exact=True).click()
    page.get_by_label("Role of nina").select_option("viewer")
    page.get_by_role("button", name="Set role").click()
    expect(page.get_by_text("nina is now viewer.")).to_be_visible()
    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_text("nina disabled")).to_be_visible()
    page.get_by_role("button", name="Enable").click()
    page.get_by_label("New password of nina").fill("a reset by the admin")
    page.get_by_role("button", name="Reset password").click()
    expect(page.get_by_text("New password for nina. Their sessions are signed out.")).to_be_visible()

    rows = page.locator("#account-log tbody tr")
    expect(rows).to_have_count(6)
    texts = [re.sub(r"\s+", " ", t).strip() for t in rows.all_inner_texts()]
    assert [t.split(" ", 3)[3] for t in texts] == [  # newest first; the time (date, hour, UTC), then who and what
        "root password set set a new password",
        "root enabled",
        "root disabled",
        "root role changed agent → viewer",
        "root joined group network",
        "root account created role agent",
    ]
    screenshot(page, "user-page")
    nina = in_db(lambda: User.get(User.name == "nina"))
    assert nina.active and nina.role == "viewer" and accounts.authenticate("nina", "a reset by the admin")


def test_an_agent_changes_their_own_password(page, running):
    sign_in(page)
    page.get_by_role("link", name="Account").click()
    page.get_by_label("Current password").fill("not my password at all")
    page.get_by_label("New password", exact=True).fill("my own new passphrase")
    page.get_by_label("New password again").fill("my own new passphrase")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_text("The current password is wrong.")).to_be_visible()
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("Qwertyuiop2026")
    page.get_by_label("New password again").fill("Qwertyuiop2026")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_text("too common or too easy to guess")).to_be_visible()
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("my own new passphrase")
    page.get_by_label("New password again").fill("my own new passphrase")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_text("Password changed; your other sessions are signed out.")).to_be_visible()
    assert in_db(lambda: accounts.authenticate(AGENT, "my own new passphrase")) is not None
