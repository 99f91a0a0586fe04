"""Search and similar incidents in real Chromium: the queue's search box finds a closed incident by a word of
its update, and the incident page lists earlier look-alikes with their resolution — never a security one."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.test_browser import browser, page, running, screenshot, sign_in, sqlite_store  # noqa: F401


def test_search_box_and_similar_incidents(running, page):  # noqa: F811
    life = running.lifecycle
    old = life.create(
        title="Tape library jammed",
        actor="test",
        group="service-desk",
        reporter_email="tom@example.org",
        keys=[("fingerprint", "fp-tape")],
    )
    life.note(old.ref, "test", "robot arm stuck on slot nineteen")
    life.resolve(old.ref, "test", code="fixed", notes="cleared the gripper", cause="hardware", fix="permanent")
    life.close(old.ref, "test")
    hidden = life.create(
        title="Tape library tampered", actor="test", group="security", security=True, reporter_email="tom@example.org"
    )
    new = life.create(title="Tape library jammed again", actor="test", group="service-desk")

    sign_in(page)
    page.get_by_label("Search").fill("nineteen gripp")  # a word of an update and a prefix of the resolution
    page.get_by_label("Search").press("Enter")
    # the queue browses open incidents: the page says a closed one matches, one click away
    expect(page.get_by_role("status").filter(has_text="more incident")).to_contain_text(
        "1 more incident matches this search outside the status"
    )
    page.get_by_role("link", name="show every status").click()
    rows = page.locator("#rows table.queue tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(old.ref)
    expect(rows.first).to_contain_text("closed")

    page.goto(f"/incidents/{new.ref}")
    similar = page.get_by_label("Similar incidents")
    expect(similar.locator("li")).to_have_count(1)
    expect(similar).to_contain_text(old.ref)
    expect(similar).to_contain_text("cleared the gripper")
    expect(similar).to_contain_text("cause hardware")
    expect(similar).not_to_contain_text(hidden.ref)
    screenshot(page, "similar-incidents")
    similar.get_by_role("link", name=old.ref).click()
    expect(page).to_have_url(re.compile(f"/incidents/{old.ref}$"))
