"""Problem records: made from incidents, linked, moved open -> known error -> resolved -> closed, on both
databases, through the API and the web forms (CSRF, roles, security visibility), and in a real browser."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from store.db import db
from store.models import Event, Incident, Problem, ProblemEvent
from tests.test_api import Api
from tests.test_browser import browser, page, running, screenshot, sign_in, sqlite_store  # noqa: F401  (fixtures)
from tests.test_web import Web, post


@pytest.fixture
def api(store):
    return Api(Web(store))


# ---------------------------------------------------------------- the API (both databases)


def _incident_events(ref: str, type_: str = "problem") -> list[Event]:
    incident = Incident.get(Incident.ref == ref)
    return list(Event.select().where((Event.incident == incident) & (Event.type == type_)).order_by(Event.id))


def test_problem_from_incident_to_closed_through_the_api(api):
    lc = api.web.lifecycle
    lc.resolve("INC-1", "desk", code="fixed", notes="restarted the spooler", cause="spooler-leak")
    lc.review("INC-1", "desk", cause="the spooler leaks memory", actions=[{"what": "patch spooler", "owner": "desk"}])

    created = api.call("POST", "/api/v1/problems", "desk", json={"incident": "inc-1"})
    assert created.status_code == 201, created.get_json()
    doc = created.get_json()
    assert created.headers["Location"].endswith("/api/v1/problems/PRB-1")
    assert (doc["ref"], doc["title"], doc["status"], doc["cause_code"]) == (
        "PRB-1",
        "Printer on fire",
        "open",
        "spooler-leak",
    )
    assert [i["ref"] for i in doc["incidents"]] == ["INC-1"] and doc["restricted_incidents"] == 0
    assert doc["incidents"][0]["review"]["cause"] == "the spooler leaks memory"
    assert doc["actions"] == [{"incident": "INC-1", "what": "patch spooler", "owner": "desk", "due": None}]
    assert [e.new for e in _incident_events("INC-1")] == ["PRB-1"]

    # a known error needs its root cause and workaround: refused, nothing changes
    refused = api.call("POST", "/api/v1/problems/PRB-1/status", "desk", json={"status": "known_error"})
    assert refused.status_code == 409 and "root cause and workaround required" in refused.get_json()["error"]["message"]
    patch = {"owner": "desk", "workaround": "restart the spooler nightly", "root_cause": "leak in driver 4.2"}
    changed = api.call("PATCH", "/api/v1/problems/PRB-1", "desk", json=patch)
    assert changed.status_code == 200 and changed.get_json()["owner"] == "desk"
    known = api.call("POST", "/api/v1/problems/PRB-1/status", "desk", json={"status": "known_error"})
    assert known.status_code == 200 and known.get_json()["status"] == "known_error"
    news = _incident_events("INC-1")[-1]
    assert (news.old, news.new) == ("open", "known_error") and "restart the spooler nightly" in news.body

    for status in ("resolved", "closed"):
        answer = api.call("POST", "/api/v1/problems/PRB-1/status", "admin", json={"status": status})
        assert answer.status_code == 200 and answer.get_json()["status"] == status
    assert answer.get_json()["closed_at"] and answer.get_json()["resolved_at"]
    closed = api.call("PATCH", "/api/v1/problems/PRB-1", "admin", json={"title": "x"})
    assert closed.status_code == 409 and "read-only" in closed.get_json()["error"]["message"]

    timeline = api.call("GET", "/api/v1/problems/PRB-1/timeline", "view").get_json()
    assert [(e["type"], e["field"], e["new"]) for e in timeline["events"]] == [
        ("created", "status", "open"),
        ("linked", "incident", "INC-1"),
        ("changed", "workaround", "restart the spooler nightly"),
        ("changed", "root_cause", "leak in driver 4.2"),
        ("changed", "owner", "desk"),
        ("status", "status", "known_error"),
        ("status", "status", "resolved"),
        ("status", "status", "closed"),
    ]
    assert [e.new for e in _incident_events("INC-1")] == ["PRB-1", "known_error", "resolved", "closed"]
    listed = api.call("GET", "/api/v1/problems?status=closed", "view").get_json()["problems"]
    assert [(p["ref"], p["incident_count"]) for p in listed] == [("PRB-1", 1)]
    assert api.call("GET", "/api/v1/problems?status=open", "view").get_json()["problems"] == []


def test_every_incident_touched_is_checked(api):
    desk = api.call("POST", "/api/v1/problems", "desk", json={"title": "Printers keep failing"})
    assert desk.status_code == 201
    for user, ref, status in (
        ("view", "INC-1", 403),  # viewers read only
        ("desk", "INC-2", 403),  # another group's incident
        ("desk", "INC-3", 404),  # a security incident desk may not see: not even its existence
        ("desk", "INC-99", 404),
    ):
        linked = api.call("POST", "/api/v1/problems/PRB-1/incidents", user, json={"incident": ref})
        assert linked.status_code == status, (user, ref, linked.get_json())
        made = api.call("POST", "/api/v1/problems", user, json={"incident": ref})
        assert made.status_code == status, (user, ref, made.get_json())
    assert Problem.select().count() == 1 and _incident_events("INC-2") == [] and _incident_events("INC-3") == []

    assert api.call("POST", "/api/v1/problems/PRB-1/incidents", "desk", json={"incident": "INC-1"}).status_code == 201
    again = api.call("POST", "/api/v1/problems/PRB-1/incidents", "desk", json={"incident": "INC-1"})
    assert again.status_code == 409 and "linked already" in again.get_json()["error"]["message"]
    assert api.call("DELETE", "/api/v1/problems/PRB-1/incidents/INC-1", "neto").status_code == 403  # not neto's
    unlinked = api.call("DELETE", "/api/v1/problems/PRB-1/incidents/INC-1", "desk")
    assert unlinked.status_code == 200 and unlinked.get_json()["incidents"] == []
    assert [(e.old, e.new) for e in _incident_events("INC-1")] == [(None, "PRB-1"), ("PRB-1", None)]


def test_security_problems_and_incidents_stay_hidden(api):
    # made from a security incident: the problem itself is restricted
    secret = api.call("POST", "/api/v1/problems", "sec", json={"incident": "INC-3"})
    assert secret.status_code == 201 and secret.get_json()["security"] is True
    for user in ("desk", "view"):
        assert api.call("GET", "/api/v1/problems/PRB-1", user).status_code == 404
        assert api.call("GET", "/api/v1/problems/PRB-1/timeline", user).status_code == 404
        assert api.call("GET", "/api/v1/problems", user).get_json()["problems"] == []
    assert api.call("GET", "/api/v1/problems/PRB-1", "admin").status_code == 200
    # it may hold an incident that anyone sees: that incident's timeline names the problem, never its text
    assert api.call("POST", "/api/v1/problems/PRB-1/incidents", "admin", json={"incident": "INC-1"}).status_code == 201
    api.call("PATCH", "/api/v1/problems/PRB-1", "sec", json={"workaround": "block the sender", "root_cause": "x"})
    assert api.call("POST", "/api/v1/problems/PRB-1/status", "sec", json={"status": "known_error"}).status_code == 200
    shown = api.call("GET", "/api/v1/incidents/INC-1/timeline", "desk").get_json()["events"]
    assert [e["body"] for e in shown if e["type"] == "problem"] == ["linked to PRB-1", "PRB-1 is now known error"]
    assert "Phishing" not in str(shown) and "block the sender" not in str(shown)
    assert "PRB-1" not in api.web.client("desk").get("/incidents/INC-1").text.split("Timeline")[0]
    api.call("DELETE", "/api/v1/problems/PRB-1/incidents/INC-1", "admin")

    # an incident that becomes a security incident after it was linked: named to no one who may not see it
    api.call("POST", "/api/v1/problems", "admin", json={"incident": "INC-1"})
    api.web.lifecycle.update("INC-1", "admin", security=True, reason="it was a breach")
    doc = api.call("GET", "/api/v1/problems/PRB-2", "desk").get_json()
    assert doc["incidents"] == [] and doc["restricted_incidents"] == 1 and doc["actions"] == []
    events = api.call("GET", "/api/v1/problems/PRB-2/timeline", "desk").get_json()["events"]
    assert "INC-1" not in str(events) and any(e["new"] == "(restricted)" for e in events)
    assert api.call("GET", "/api/v1/problems?status=open", "desk").get_json()["problems"][0]["incident_count"] == 0
    full = api.call("GET", "/api/v1/problems/PRB-2", "sec").get_json()
    assert [i["ref"] for i in full["incidents"]] == ["INC-1"]


def test_incidents_sharing_a_cause_fingerprint_or_service_are_candidates(api):
    lc = api.web.lifecycle
    same_cause = lc.create(title="Printer jams again", actor="t", group="service-desk")
    lc.resolve(same_cause.ref, "t", code="fixed", notes="n", cause="spooler-leak")
    lc.resolve("INC-1", "t", code="fixed", notes="n", cause="spooler-leak")
    alert = lc.create(title="Disk full", actor="t", group="network", keys=[("fingerprint", "fp-disk")])
    repeat = lc.create(title="Disk full again", actor="t", group="network", keys=[("fingerprint", "fp-disk")])
    same_service = lc.create(title="Mail slow", actor="t", service="mail")
    drill = lc.create(title="[DRILL] mail", actor="t", service="mail", drill=True)
    lc.create(title="Unrelated", actor="t", service="web")

    from gateway.problem_records import Problems

    problems = Problems(lc)
    problem = problems.create(title="Spooler", actor="admin", incident_ref="INC-1")
    found = {c.incident.ref: c.shares for c in problems.candidates(problem)}
    assert found == {same_cause.ref: ("cause",)}
    problems.link(problem.ref, "admin", alert.ref)
    problem = problems.update(problem.ref, "admin", service="mail")
    found = {c.incident.ref: c.shares for c in problems.candidates(problem)}
    assert found == {same_cause.ref: ("cause",), repeat.ref: ("fingerprint",), same_service.ref: ("service",)}
    assert drill.ref not in found
    recurring = problems.recurring_causes()
    assert recurring == []  # INC-1 is in a problem: the other spooler-leak incident alone is no recurrence
    problems.unlink(problem.ref, "admin", "INC-1")
    assert problems.recurring_causes() == [{"cause": "spooler-leak", "incidents": 2, "latest": same_cause.ref}]


# ---------------------------------------------------------------- the web forms


def test_web_forms_create_link_and_change_with_csrf_and_roles(api):
    web = api.web
    web.lifecycle.resolve("INC-1", "desk", code="fixed", notes="n", cause="toner")
    desk = web.client("desk")
    shown = desk.get("/incidents/INC-1").text
    assert "Create problem from this incident" in shown and "Link to problem" not in shown  # no problem yet

    assert desk.post("/problems", data={"incident": "INC-1"}).status_code == 400  # no CSRF token
    made = post(desk, "/problems", {"incident": "INC-1", "title": "Toner runs out"})
    assert made.status_code == 303 and made.headers["Location"].endswith("/problems/PRB-1")
    shown = desk.get("/problems/PRB-1").text
    assert "Toner runs out" in shown and "INC-1" in shown and "Mark known error" in shown
    assert "Link to problem" in desk.get("/incidents/INC-1").text

    assert post(desk, "/incidents/INC-2/problem", {"problem": "PRB-1"}).status_code == 403  # network's incident
    assert post(desk, "/incidents/INC-3/problem", {"problem": "PRB-1"}).status_code == 404  # hidden from desk
    assert post(web.client("view"), "/problems/PRB-1/edit", {"workaround": "x"}).status_code == 403
    assert "Mark known error" not in web.client("view").get("/problems/PRB-1").text

    refused = post(desk, "/problems/PRB-1/status", {"status": "known_error"})
    assert refused.status_code == 303
    assert "root cause and workaround required" in desk.get("/problems/PRB-1").text
    post(desk, "/problems/PRB-1/edit", {"workaround": "<b>swap the cartridge</b>", "root_cause": "no stock"})
    post(desk, "/problems/PRB-1/status", {"status": "known_error"})
    shown = desk.get("/problems/PRB-1").text
    assert "&lt;b&gt;swap the cartridge&lt;/b&gt;" in shown and "<b>swap" not in shown
    assert re.search(r'id="problem-status">known error<', shown)
    assert "is now known error" in desk.get("/incidents/INC-1").text

    listed = desk.get("/problems").text
    assert "PRB-1" in listed and "Toner runs out" in listed
    assert web.client("desk").get("/problems/PRB-9").status_code == 404
    types = [(e.type, e.field) for e in ProblemEvent.select().order_by(ProblemEvent.id)]
    assert types == [
        ("created", "status"),
        ("linked", "incident"),
        ("changed", "workaround"),
        ("changed", "root_cause"),
        ("status", "status"),
    ]


# ---------------------------------------------------------------- the browser


def test_agent_makes_a_problem_of_recurring_incidents_in_the_browser(running, page):  # noqa: F811
    lifecycle = running.lifecycle
    with db.connection_context():
        first = lifecycle.create(title="VPN drops at noon", actor="t", group="service-desk", service="vpn")
        lifecycle.resolve(first.ref, "t", code="fixed", notes="restarted", cause="vpn-timeout")
        second = lifecycle.create(title="VPN drops again", actor="t", group="service-desk", service="vpn")
    sign_in(page)
    page.goto(f"/incidents/{first.ref}")
    page.get_by_role("button", name="Create problem from this incident").click()
    expect(page.get_by_role("heading", name=re.compile(r"PRB-1 · VPN drops at noon"))).to_be_visible()
    page.get_by_role("button", name=f"Link {second.ref}").click()
    expect(page.locator("#problem-incidents")).to_contain_text(second.ref)
    page.get_by_label("Known workaround").fill("Reconnect with the backup gateway")
    page.get_by_label("Root cause").fill("Idle timeout of 12 h on the concentrator")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("button", name="Mark known error").click()
    expect(page.locator("#problem-status")).to_have_text("known error")
    expect(page.locator("#problem-workaround")).to_have_text("Reconnect with the backup gateway")
    screenshot(page, "problem")
    page.get_by_role("link", name="Problems").first.click()
    expect(page.get_by_role("link", name="PRB-1")).to_be_visible()
    page.goto(f"/incidents/{second.ref}")
    expect(page.get_by_role("link", name="PRB-1")).to_be_visible()
    expect(page.locator(".timeline")).to_contain_text("Reconnect with the backup gateway")


# ---------------------------------------------------------------- migration 4


def test_migration_4_adds_problems_and_the_metrics_indexes_to_a_version_3_database(store):
    from store.migrations import LATEST, METRICS_INDEXES, current_version, upgrade
    from store.models import Counter, ProblemIncident, SchemaVersion

    with db.atomic():  # back to what version 3 had
        db.drop_tables([ProblemEvent, ProblemIncident, Problem])
        for name, _table, _columns in METRICS_INDEXES:
            db.execute_sql(f'DROP INDEX "{name}"')
        Counter.delete().where(Counter.name == "problem").execute()
        SchemaVersion.delete().where(SchemaVersion.version >= 4).execute()
    assert current_version() == 3 and not db.table_exists("problem")
    assert [v for v, _ in upgrade()][0] == 4 and current_version() == LATEST
    assert {"problem", "problem_incident", "problem_event"} <= set(db.get_tables())
    indexes = {
        i.name for table in ("inbound", "incident", "event", "notification_attempt") for i in db.get_indexes(table)
    }
    assert {name for name, _t, _c in METRICS_INDEXES} <= indexes
    assert Counter.get(Counter.name == "problem").value == 0
    assert upgrade() == []  # idempotent
