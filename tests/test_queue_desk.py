"""The queue that keeps up: columns, sort orders, the breached view, "N new", bulk actions with their
permission checks; through the web app on both databases (the browser side is in test_queue_browser.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from gateway.core.clock import FixedClock
from gateway.service import build_lifecycle
from store.models import Incident
from tests.test_web import Web, post


@pytest.fixture
def web(store):
    return Web(store)


def rows_of(html: str) -> list[str]:
    """The refs of the queue's rows, in order."""
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    return re.findall(r'<td><a href="/incidents/([A-Z]+-[0-9]+)"', body)


def ref_row(html: str, ref: str) -> str:
    """The queue row of ``ref``, from its <tr> to its </tr>."""
    (row,) = [r for r in re.findall(r"<tr[ >].*?</tr>", html, re.S) if f'<a href="/incidents/{ref}"' in r]
    return row


def test_queue_columns_reporter_updated_sla_due_and_escalated_badge(web):
    web.lifecycle.escalate(web.net.ref, "admin", "hierarchical", "customers are calling")
    html = web.client("admin").get("/incidents").text
    assert re.search(r"<th>Reporter</th><th>SLA due</th><th>Updated</th><th>Opened</th>", html)
    desk = ref_row(html, web.desk.ref)
    assert 'title="rita@example.org">rita@example.org</bdi>' in desk
    assert desk.count("<time datetime=") == 2 and 'class="sla sla-' in desk  # updated, opened; SLA due
    assert '<span class="tag tag-escalated">escalated</span>' in ref_row(html, web.net.ref)
    assert "escalated" not in desk


def test_queue_sorts_by_sla_due_updated_and_opened_with_keyset_pages(web):
    past = build_lifecycle(web.config, clock=FixedClock(datetime.now(UTC) - timedelta(days=3)))
    late = [past.create(title=f"late {n}", actor="t", group="network", impact="low") for n in range(3)]
    for n in range(55):
        web.lifecycle.create(title=f"bulk {n}", actor="t", group="network", impact="low", urgency="low")
    web.lifecycle.note(web.desk.ref, "admin", "still burning")  # the most recently updated
    client = web.client("admin")

    by_sla = rows_of(client.get("/incidents?sort=sla").text)
    assert by_sla[:3] == [i.ref for i in late]  # overdue first, then the soonest due
    due = {i.ref: (i.respond_by if i.acknowledged_at is None else i.resolve_by) for i in Incident.select()}
    assert [due[r] for r in by_sla] == sorted(due[r] for r in by_sla)

    assert rows_of(client.get("/incidents?sort=updated").text)[0] == web.desk.ref
    assert rows_of(client.get("/incidents?sort=oldest").text)[0] == web.desk.ref
    assert rows_of(client.get("/incidents?sort=newest").text)[0] == "INC-61"

    for sort in ("sla", "updated", "priority", "newest"):
        seen, path = [], f"/incidents?sort={sort}"
        while path:
            page = client.get(path).text
            seen += rows_of(page)
            after = re.search(r'href="(/incidents\?[^"]*after=[^"]+)"', page)
            path = after.group(1).replace("&amp;", "&") if after else None
        assert len(seen) == len(set(seen)) == Incident.select().count(), sort  # an admin sees every one
    # a cursor of another sort order gives this one's first page; one past every due time, an empty page
    assert rows_of(client.get("/incidents?sort=sla&after=P3.5").text) == by_sla[:50]
    assert rows_of(client.get("/incidents?sort=sla&after=T999999999999999999.5").text) == []

    api = client.get("/api/v1/openapi.json").json
    (sort,) = [p for p in api["paths"]["/api/v1/incidents"]["get"]["parameters"] if p["name"] == "sort"]
    assert sort["schema"]["enum"] == ["priority", "sla", "updated", "newest", "oldest", "relevance"]


def test_breached_view_lists_the_open_incidents_past_their_sla(web):
    past = build_lifecycle(web.config, clock=FixedClock(datetime.now(UTC) - timedelta(days=3)))
    late = past.create(title="Overdue thing", actor="t", group="service-desk")
    done = past.create(title="Overdue but resolved", actor="t", group="service-desk")
    past.resolve(done.ref, "admin", code="fixed", notes="n", cause="software")
    html = web.client("desk").get("/incidents?view=breached").text
    assert rows_of(html) == [late.ref]
    assert 'aria-current="page">Breached</a>' in html


def test_queue_says_how_many_are_new_since_the_page_was_loaded(web):
    client = web.client("admin")
    seen = int(re.search(r'<div id="rows" data-seen="([0-9]+)"', client.get("/incidents").text).group(1))
    assert 'hx-trigger="every 10s"' in client.get("/incidents").text
    fresh = [web.lifecycle.create(title=f"fresh {n}", actor="t", group="network") for n in range(2)]
    web.lifecycle.create(title="elsewhere", actor="t", group="service-desk")
    rows = client.get(f"/incidents?seen={seen}&group=network", headers={"HX-Request": "true"}).text
    assert ">2 new</a>" in rows
    for incident in fresh:
        assert ref_row(rows, incident.ref).startswith('<tr class="is-new">')
    assert f'data-seen="{seen}"' in rows  # the poll keeps the page's mark
    assert " new</a>" not in client.get("/incidents?group=network").text  # a fresh page starts a new mark


def test_bulk_acknowledge_assign_and_link_as_children(web):
    a, b = (web.lifecycle.create(title=f"Mail down {n}", actor="t", group="service-desk") for n in range(2))
    major = web.lifecycle.create(title="Everything is down", actor="t", group="service-desk", major=True)
    client = web.client("desk")
    assert re.search(rf'<option value="{major.ref}">', client.get("/incidents").text)  # offered as a parent

    answer = post(client, "/incidents/bulk", {"action": "acknowledge", "ref": [a.ref, b.ref], "back": "/incidents"})
    assert answer.status_code == 303 and answer.headers["Location"] == "/incidents"
    assert {Incident.get_by_id(i.id).status for i in (a, b)} == {"acknowledged"}
    assert f"Acknowledge: done for {a.ref}, {b.ref}." in client.get("/incidents").text

    post(client, "/incidents/bulk", {"action": "assign", "ref": [a.ref, b.ref], "assignee": "desk"})
    assert {Incident.get_by_id(i.id).assignee.name for i in (a, b)} == {"desk"}

    answer = post(client, "/incidents/bulk", {"action": "link", "ref": [a.ref, b.ref], "parent": major.ref.lower()})
    assert answer.status_code == 303
    assert {Incident.get_by_id(i.id).parent_id for i in (a, b)} == {major.id}

    # a state the action does not apply to skips that incident only, and names it
    c = web.lifecycle.create(title="Mail down again", actor="t", group="service-desk")
    answer = post(client, "/incidents/bulk", {"action": "acknowledge", "ref": [a.ref, c.ref], "back": "/incidents"})
    page = client.get("/incidents").text
    assert Incident.get_by_id(c.id).status == "acknowledged"
    assert f"Acknowledge: done for {c.ref}." in page and f"not done for {a.ref} (" in page


def test_bulk_action_with_one_incident_the_user_may_not_act_on_does_nothing_and_names_it(web):
    mine = web.lifecycle.create(title="Mine to fix", actor="t", group="service-desk")
    client = web.client("desk")  # an agent of service-desk: sees network's incidents, may not change them
    page = client.get("/incidents").text
    assert 'aria-label="Select ' + mine.ref + '"' in page
    assert f'aria-label="{web.net.ref}: not yours to act on"' in page  # not offered for selection

    answer = post(client, "/incidents/bulk", {"action": "acknowledge", "ref": [mine.ref, web.net.ref]})
    assert answer.status_code == 403
    assert f"Nothing done: you may not act on {web.net.ref}." in answer.text
    assert Incident.get_by_id(mine.id).status == "new" and Incident.get_by_id(web.net.id).status == "new"

    # a hidden (security) incident is refused like one that does not exist: its existence is not revealed
    for ref in (web.secret.ref, "INC-99999"):
        answer = post(client, "/incidents/bulk", {"action": "assign", "ref": [mine.ref, ref], "assignee": "desk"})
        assert answer.status_code == 403 and f"no incident {ref} that you can see" in answer.text
        assert "Phishing" not in answer.text
    assert Incident.get_by_id(mine.id).assignee_id is None

    # the parent is an incident the action touches too
    answer = post(client, "/incidents/bulk", {"action": "link", "ref": [mine.ref], "parent": web.net.ref})
    assert answer.status_code == 403 and f"you may not act on {web.net.ref}" in answer.text
    assert Incident.get_by_id(mine.id).parent_id is None

    viewer = web.client("view")
    answer = post(viewer, "/incidents/bulk", {"action": "acknowledge", "ref": [mine.ref]})
    assert answer.status_code == 403 and Incident.get_by_id(mine.id).status == "new"
    assert 'id="bulk"' not in viewer.get("/incidents").text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"action": "acknowledge"}, "select at least one incident"),
        ({"action": "explode", "ref": ["INC-1"]}, "action must be one of acknowledge, assign, link"),
        ({"action": "acknowledge", "ref": ["<script>"]}, "is not an incident reference"),
        ({"action": "assign", "ref": ["INC-1"]}, "give a group, an assignee or both"),
        ({"action": "link", "ref": ["INC-1"]}, "parent is required"),
        ({"action": "link", "ref": ["INC-1"], "parent": "inc-1"}, "INC-1 cannot be its own parent"),
    ],
)
def test_bulk_action_bad_input_is_a_400_with_a_message(web, fields, message):
    answer = post(web.client("admin"), "/incidents/bulk", fields)
    assert answer.status_code == 400 and message in answer.text
    assert "&lt;script&gt;" in answer.text or "<script>" not in answer.text.split("<main", 1)[1]


def test_bulk_action_needs_the_csrf_token_and_goes_back_only_to_the_queue(web):
    client = web.client("admin")
    answer = client.post("/incidents/bulk", data={"action": "acknowledge", "ref": [web.desk.ref]})
    assert answer.status_code == 400 and Incident.get_by_id(web.desk.id).status == "new"
    for back in ("https://evil.example/incidents", "//evil.example/incidents", "/users"):
        answer = post(client, "/incidents/bulk", {"action": "acknowledge", "ref": [web.desk.ref], "back": back})
        assert answer.headers["Location"] == "/incidents"
    answer = post(
        client, "/incidents/bulk", {"action": "acknowledge", "ref": [web.net.ref], "back": "/incidents?view=mine"}
    )
    assert answer.headers["Location"] == "/incidents?view=mine"
