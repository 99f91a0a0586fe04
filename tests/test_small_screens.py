"""Small screens in a real browser (Playwright + Debian's chromium) at a phone's 390×844: no page scrolls
sideways, the nav folds behind "Menu", wide tables scroll inside their own box, the sign-in form is centred."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from gateway.service import Service
from tests.conftest import _fresh_database, _migrated, free_port
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_web import PASSWORD, Web
from tests.test_words import page_paths, seed

PHONE = {"width": 390, "height": 844}

# How far the page reaches past the window: 0 when nothing scrolls sideways.
OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
# The elements that stick out past the window's right edge (to name them when the check fails).
STICKING_OUT = """() => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .filter(e => !e.closest('table, .table-wrap'))
  .slice(0, 5).map(e => e.tagName + '.' + e.className + ': ' + (e.textContent || '').trim().slice(0, 40))"""


@pytest.fixture
def desk(tmp_path):
    """The seeded fixture of tests/test_words.py served by ``inlet serve``'s web role on loopback."""
    with _fresh_database("sqlite", tmp_path) as fresh, _migrated(fresh) as store:
        web = seed(Web(store, web={"host": "127.0.0.1", "port": free_port()}))
        # a long unbroken title and a wide table are the usual culprits
        web.lifecycle.create(title="Disk-full-on-" + "x" * 120, actor="test", group="service-desk")
        service = Service(web.config, roles={"web"})
        service.start()
        web.base_url = f"http://127.0.0.1:{web.config.web.port}"
        try:
            yield web
        finally:
            service.stop()


@pytest.fixture
def phone(desk):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=desk.base_url, viewport=PHONE)
        page = context.new_page()
        page.set_default_timeout(10_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


def sign_in(page, name: str = "admin") -> None:
    page.goto("/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/incidents**")


def test_the_sign_in_form_is_centred(phone, desk):
    for viewport in (PHONE, {"width": 1280, "height": 900}):
        phone.set_viewport_size(viewport)
        phone.goto("/login")
        box = phone.locator("article.login").bounding_box()
        left, right = box["x"], viewport["width"] - (box["x"] + box["width"])
        assert abs(left - right) <= 2, (viewport, left, right)
        assert phone.evaluate(OVERFLOW) <= 0


def test_the_nav_folds_behind_a_menu_on_a_phone(phone, desk):
    sign_in(phone)
    users = phone.get_by_role("link", name="Users")
    expect(users).to_be_hidden()
    phone.get_by_text("Menu", exact=True).click()
    expect(users).to_be_visible()
    users.click()
    expect(phone.get_by_role("heading", name="Users")).to_be_visible()
    phone.set_viewport_size({"width": 1280, "height": 900})
    expect(phone.get_by_text("Menu", exact=True)).to_be_hidden()  # a wide screen shows the links
    expect(phone.get_by_role("link", name="Queue")).to_be_visible()


def test_no_page_scrolls_sideways_on_a_phone(phone, desk):
    for path in ("/login", "/status"):  # signed out
        phone.goto(path)
        assert phone.evaluate(OVERFLOW) <= 0, (path, phone.evaluate(STICKING_OUT))
    sign_in(phone)
    checked = []
    for path in page_paths(desk):
        if path.startswith(("/attachments/", "/metrics")) or path.endswith(".csv"):
            continue  # downloads and machine formats, not pages
        response = phone.goto(path)
        if response is None or response.status != 200 or "text/html" not in response.headers.get("content-type", ""):
            continue
        checked.append(path)
        assert phone.evaluate(OVERFLOW) <= 0, (path, phone.evaluate(STICKING_OUT))
    assert {"/incidents", "/incidents/new", "/users", "/configuration", "/reports", "/problems"} <= set(checked)
    assert sum(p.startswith("/incidents/INC-") for p in checked) >= 5


def test_a_wide_table_scrolls_inside_its_box(phone, desk):
    sign_in(phone)
    phone.goto(f"/incidents/{desk.incidents['busy'].ref}")
    table = phone.locator("table").first
    scrolls = table.evaluate("t => getComputedStyle(t).overflowX === 'auto' && t.scrollWidth >= t.clientWidth")
    assert scrolls
    assert table.evaluate("t => t.getBoundingClientRect().right") <= PHONE["width"]
    assert phone.evaluate(OVERFLOW) <= 0
