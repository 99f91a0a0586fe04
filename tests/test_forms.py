"""Forms that cannot surprise (issue 19 §6), through the real interfaces on both databases: the web UI and
the API over HTTP from ``inlet``'s own web server, the CLI as a subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import requests

from gateway import accounts
from gateway.service import Service
from store.db import db
from store.models import Event, Incident, Timer
from tests.conftest import ROOT, free_port, in_db

PASSWORD = "a long test password"
PROCEDURES = {"categories": ["outage", "breach", "printer"], "major_categories": ["outage"],
              "security_categories": ["breach"]}  # fmt: skip
GROUPS = [
    {"name": "service-desk", "members": ["desk"], "escalation": "default"},
    {"name": "network", "members": ["neto"], "escalation": "default"},
    {"name": "security", "members": ["sec"]},
]


class Desk:
    """``inlet``'s web role on a free port, users of each role, HTTP sessions signed in through the form."""

    def __init__(self, store):
        port = free_port()
        self.config = store.config(
            web={"host": "127.0.0.1", "port": port}, group=GROUPS, procedures=PROCEDURES, inlet={"name": "Desk"}
        )
        self.config_path = store.write_config(
            web={"host": "127.0.0.1", "port": port}, group=GROUPS, procedures=PROCEDURES
        )
        for name, role in (("desk", "agent"), ("neto", "agent"), ("view", "viewer"), ("admin", "admin")):
            accounts.create_user(name, role, PASSWORD, email=f"{name}@example.org")
        self.token = accounts.issue_api_token("desk")
        self.service = Service(self.config, roles={"web"})
        self.lifecycle = self.service.lifecycle
        self.url = f"http://127.0.0.1:{port}"

    def session(self, user: str) -> requests.Session:
        session = requests.Session()
        answer = session.post(
            f"{self.url}/login", data={"name": user, "password": PASSWORD, "csrf_token": self.csrf(session, "/login")}
        )
        assert answer.status_code == 200 and "Sign out" in answer.text, answer.text[:500]
        return session

    def csrf(self, session, path: str) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', session.get(f"{self.url}{path}").text).group(1)

    def post(self, session, path: str, data: dict) -> requests.Response:
        token = self.csrf(session, "/incidents")
        return session.post(f"{self.url}{path}", data={**data, "csrf_token": token}, allow_redirects=False)

    def api(self, method: str, path: str, body: dict | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return requests.request(method, f"{self.url}/api/v1{path}", json=body, headers=headers, timeout=10)

    def cli(self, *args: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "-c", str(self.config_path), *args],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return json.loads(done.stdout)


@pytest.fixture
def desk(store):
    running = Desk(store)
    running.service.start()
    try:
        yield running
    finally:
        running.service.stop()
        db.connect(reuse_if_open=True)


def stored(ref: str) -> Incident:
    return in_db(lambda: Incident.get(Incident.ref == ref))


def test_a_major_category_makes_the_incident_major_however_it_was_set(desk):
    by_cli = desk.cli("incident", "create", "--title", "Mail is down", "--category", "outage", "--json")
    assert (by_cli["major"], by_cli["procedure"]) == (True, "major")
    by_api = desk.api("POST", "/incidents", {"title": "VPN is down", "category": "outage"}).json()
    assert (by_api["major"], by_api["procedure"]) == (True, "major")
    session = desk.session("desk")
    form = desk.post(session, "/incidents/new", {"title": "Wiki is down", "category": "outage", "channel": "phone"})
    assert form.status_code == 303
    ref = form.headers["Location"].rsplit("/", 1)[1]
    assert (stored(ref).major, stored(ref).procedure) == (True, "major")
    breach = desk.api("POST", "/incidents", {"title": "Laptop stolen", "category": "breach"}).json()
    assert (breach["security"], breach["procedure"]) == (True, "security")

    # changing the category later takes the same path, and starts the major procedure
    plain = desk.api("POST", "/incidents", {"title": "Intranet slow", "category": "printer"}).json()
    assert (plain["major"], plain["procedure"]) == (False, "standard")
    changed = desk.api(
        "POST", f"/incidents/{plain['ref']}/actions/update", {"category": "outage", "reason": "whole site"}
    ).json()
    assert (changed["major"], changed["procedure"], changed["status_page"]) == (True, "major", "investigating")
    incident = stored(plain["ref"])
    assert in_db(lambda: Timer.select().where((Timer.incident == incident) & (Timer.kind == "major_reminder")).count())
    fields = in_db(lambda: [e.field for e in Event.select().where(Event.incident == incident, Event.type == "changed")])
    assert {"category", "major", "procedure"} <= set(fields)


def test_an_agent_marks_an_incident_major_or_security_from_the_page(desk):
    incident = desk.lifecycle.create(title="Printers offline", actor="t", group="service-desk")
    session = desk.session("desk")
    page = session.get(f"{desk.url}/incidents/{incident.ref}").text
    assert "Mark major or security" in page

    refused = desk.post(session, f"/incidents/{incident.ref}/declare", {"procedure": "major", "reason": " "})
    assert refused.status_code == 422 and "reason is required" in refused.text
    assert re.search(r'<option value="major" selected>', refused.text)  # what was chosen is kept
    assert not stored(incident.ref).major

    assert desk.post(session, f"/incidents/{incident.ref}/declare", {"procedure": ""}).status_code == 422
    done = desk.post(session, f"/incidents/{incident.ref}/declare", {"procedure": "major", "reason": "all floors"})
    assert done.status_code == 303
    major = stored(incident.ref)
    assert (major.major, major.procedure, major.status_page) == (True, "major", "investigating")
    page = session.get(f"{desk.url}/incidents/{incident.ref}").text
    assert '<option value="major"' not in page and '<option value="security"' in page  # only what is left
    assert "needs its commander" in page and ">Acknowledge<" not in page  # not offered: it would be refused

    # permission: a viewer, or an agent of another group, may not
    for user in ("view", "neto"):
        answer = desk.post(desk.session(user), f"/incidents/{incident.ref}/declare", {"procedure": "security",
                                                                                      "reason": "x"})  # fmt: skip
        assert answer.status_code == 403, user
    assert not stored(incident.ref).security
    api = desk.api("POST", f"/incidents/{incident.ref}/actions/declare", {"procedure": "security", "reason": "leak"})
    assert api.status_code == 200 and api.json()["security"] is True


def test_fix_and_link_kind_must_be_chosen_and_children_are_not_resolved_unless_asked(desk):
    parent = desk.lifecycle.create(title="Floor 3 network", actor="t", group="service-desk")
    child = desk.lifecycle.create(title="Floor 3 printer", actor="t", group="service-desk")
    session = desk.session("desk")

    no_kind = desk.post(session, f"/incidents/{child.ref}/link", {"other": parent.ref})
    assert no_kind.status_code == 422 and "choose kind" in no_kind.text and f'value="{parent.ref}"' in no_kind.text
    assert desk.api("POST", f"/incidents/{child.ref}/actions/link", {"other": parent.ref}).status_code in (400, 422)
    assert stored(child.ref).parent_id is None
    linked = desk.post(session, f"/incidents/{child.ref}/link", {"other": parent.ref, "kind": "parent"})
    assert linked.status_code == 303

    page = session.get(f"{desk.url}/incidents/{parent.ref}").text
    assert '<option value="">choose…</option><option>workaround</option>' in page  # nothing chosen for you
    assert re.search(r'<input type="checkbox" name="cascade" value="on"> Also resolve its 1 open child', page)
    typed = {"code": "fixed", "notes": "Replaced the switch.", "cause": "hardware", "cause_text": "PSU died"}
    no_fix = desk.post(session, f"/incidents/{parent.ref}/resolve", typed)
    assert no_fix.status_code == 422 and "choose fix" in no_fix.text
    for value in ('value="fixed"', "Replaced the switch.</textarea>", 'value="hardware"', "PSU died</textarea>"):
        assert value in no_fix.text, value  # the form comes back as it was typed
    assert desk.api("POST", f"/incidents/{parent.ref}/actions/resolve", typed).status_code in (400, 422)
    assert stored(parent.ref).status == "new"

    assert desk.post(session, f"/incidents/{parent.ref}/resolve", {**typed, "fix": "permanent"}).status_code == 303
    assert (stored(parent.ref).status, stored(child.ref).status) == ("resolved", "new")  # no cascade by default

    desk.lifecycle.reopen(parent.ref, "t", "again")
    answer = desk.post(session, f"/incidents/{parent.ref}/resolve", {**typed, "fix": "workaround", "cascade": "on"})
    assert answer.status_code == 303
    assert (stored(parent.ref).status, stored(child.ref).status) == ("resolved", "resolved")


def test_review_due_dates_are_stored_shown_and_in_cli_and_api(desk):
    incident = desk.lifecycle.create(title="Data centre power", actor="t", group="service-desk", major=True)
    session = desk.session("desk")
    bad = {"cause": "UPS battery aged", "actions": "Replace batteries; desk; next week"}
    refused = desk.post(session, f"/incidents/{incident.ref}/review", bad)
    assert refused.status_code == 422 and "is not a date" in refused.text
    assert "Replace batteries; desk; next week</textarea>" in refused.text
    assert "UPS battery aged</textarea>" in refused.text
    good = {"cause": "UPS battery aged", "actions": "Replace batteries; desk; 2026-02-01\nTest the UPS monthly; neto"}
    assert desk.post(session, f"/incidents/{incident.ref}/review", good).status_code == 303

    review = stored(incident.ref).review
    assert review["actions"] == [
        {"what": "Replace batteries", "owner": "desk", "due": "2026-02-01"},
        {"what": "Test the UPS monthly", "owner": "neto", "due": None},
    ]
    page = session.get(f"{desk.url}/incidents/{incident.ref}").text
    assert "Replace batteries — desk (due 2026-02-01)" in page
    shown = desk.cli("incident", "show", incident.ref, "--json")
    assert shown["review"]["cause"] == "UPS battery aged" and shown["review"]["actions"][0]["due"] == "2026-02-01"
    assert desk.api("GET", f"/incidents/{incident.ref}").json()["review"] == shown["review"]
    plain = desk.api("POST", "/incidents", {"title": "no review yet"}).json()
    assert plain["review"] is None


def test_only_actions_the_state_allows_are_offered(desk):
    session = desk.session("desk")
    lc = desk.lifecycle

    def offered(ref):
        page = session.get(f"{desk.url}/incidents/{ref}").text
        return {name for name in re.findall(r'action="/incidents/[^/]+/(\w+)"', page)}

    fresh = lc.create(title="Fresh", actor="t", group="service-desk")
    assert {"acknowledge", "start", "take", "resolve", "cancel", "escalate", "declare"} <= offered(fresh.ref)
    assert not {"close", "reopen", "resume", "hold", "review"} & offered(fresh.ref)

    lc.resolve(fresh.ref, "t", code="fixed", notes="n", cause="c")
    after = offered(fresh.ref)
    assert {"close", "reopen"} <= after
    assert not {"resolve", "cancel", "escalate", "acknowledge", "start", "hold"} & after

    major = lc.create(title="Major", actor="t", group="service-desk", major=True)
    lc.assign(major.ref, "t", assignee="desk")
    lc.resolve(major.ref, "desk", code="fixed", notes="n", cause="c")
    assert "close" not in offered(major.ref) and "review" in offered(major.ref)  # close needs the review first

    lc.close(fresh.ref, "t")
    assert offered(fresh.ref) == set()  # closed is read-only
    viewer = desk.session("view")
    assert not re.findall(r'action="/incidents/[^/]+/\w+"', viewer.get(f"{desk.url}/incidents/{major.ref}").text)
