"""On-call schedules (issue #16, point 1): rotations in a time zone across DST, layers, overrides,
paging ``schedule:NAME`` from escalation steps and group channels, the API and ``inlet oncall``.

Every test runs on SQLite and PostgreSQL (overrides are rows); time is given, never read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from gateway import accounts, membership
from gateway import schedules as oncall
from gateway.cli.main import main
from gateway.core.clock import FixedClock
from gateway.core.errors import ConfigError, Forbidden
from gateway.service import Service, build_lifecycle, build_services, build_timer_worker
from store.db import db
from store.migrations import LATEST, current_version, upgrade
from store.models import Event, Notification, SchemaVersion, User
from tests.conftest import free_port
from tests.test_browser import browser, page, sign_in, sqlite_store  # noqa: F401 -- fixtures, with `running` below
from web.app import create_app

PASSWORD = "correct horse battery"
BERLIN_DAILY = {
    "name": "net",
    "group": "network",
    "timezone": "Europe/Berlin",
    "layer": [{"users": ["ann", "bob", "carol"], "rotation": "daily", "handoff": "09:00", "start": "2026-03-27"}],
    "channels": {"bob": ["json://127.0.0.1:9/bob"]},
}
GROUPS = [
    {"name": "service-desk", "escalation": "default"},
    {"name": "network", "escalation": "night", "members": ["ann", "bob"], "channels": ["schedule:net"]},
    {"name": "security"},
]
POLICIES = [
    {"name": "default", "steps": [{"after": "15m", "notify": ["json://127.0.0.1:9/"]}]},
    {"name": "night", "steps": [{"after": "5m", "when": "unacknowledged", "notify": ["schedule:net"]}]},
]


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def config_of(store, *schedules, **extra):
    config = store.config(group=GROUPS, escalation=POLICIES, schedule=list(schedules or [BERLIN_DAILY]), **extra)
    membership.sync_config(config)  # as `inlet serve` does when it starts: the database holds membership
    return config


@pytest.fixture
def users(store):
    """Users without a usable password (hashing one costs ~0.5 s here): the tests that sign in set one."""
    made = {}
    for name, role in (("ann", "agent"), ("bob", "agent"), ("carol", "agent"), ("dave", "agent"), ("vic", "viewer")):
        made[name] = User.create(
            name=name, role=role, email=f"{name}@example.org", password_hash="!", created_at=utc(2026, 1, 1)
        )
    return made


def who(config, at, name="network"):
    found = oncall.on_call(config, name, at)
    return found and found.user


# --------------------------------------------------------------------------- rotations and DST


def test_daily_handoff_stays_at_local_time_across_the_spring_dst_change(store, users):
    config = config_of(store)
    # Before the change (CET, UTC+1) the 09:00 hand-off is 08:00 UTC ...
    assert who(config, utc(2026, 3, 27, 7, 59)) == "carol"  # the turn of Mar 26 (index -1)
    assert who(config, utc(2026, 3, 27, 8, 0)) == "ann"
    assert who(config, utc(2026, 3, 28, 7, 59)) == "ann"
    assert who(config, utc(2026, 3, 28, 8, 0)) == "bob"
    # ... clocks go forward on Mar 29 at 02:00: the next 09:00 hand-off is at 07:00 UTC, a 23-hour turn.
    assert who(config, utc(2026, 3, 29, 6, 59)) == "bob"
    assert who(config, utc(2026, 3, 29, 7, 0)) == "carol"
    assert who(config, utc(2026, 3, 30, 7, 0)) == "ann"  # the rotation wraps


def test_weekly_handoff_across_the_autumn_dst_change_and_a_night_layer(store, users):
    schedule = {
        "name": "net",
        "group": "network",
        "timezone": "Europe/Berlin",
        "layer": [
            {"users": ["ann", "bob"], "rotation": "weekly", "handoff": "09:00", "start": "2026-10-19"},
            {
                "users": ["carol"],
                "rotation": "weekly",
                "handoff": "09:00",
                "start": "2026-10-19",
                "hours": "22:00-06:00",
            },
        ],
    }
    config = config_of(store, schedule)
    # Monday Oct 26 09:00 is CET (UTC+1) after the change of Sunday Oct 25: 08:00 UTC, not 07:00.
    assert who(config, utc(2026, 10, 26, 7, 30)) == "ann"
    assert who(config, utc(2026, 10, 26, 8, 0)) == "bob"
    # The night layer (22:00-06:00 local) wins over the day layer while it is active.
    assert oncall.on_call(config, "net", utc(2026, 10, 26, 21, 30)).source == "layer 2"
    assert who(config, utc(2026, 10, 26, 21, 30)) == "carol"  # 22:30 CET
    assert who(config, utc(2026, 10, 27, 5, 30)) == "bob"  # 06:30 CET
    # Next: carol at 22:00 local (21:00 UTC), then bob again at 06:00 (05:00 UTC).
    at, upcoming = oncall.next_on_call(config, "network", utc(2026, 10, 26, 12, 0))
    assert (at, upcoming.user) == (utc(2026, 10, 26, 21, 0), "carol")
    at, upcoming = oncall.next_on_call(config, "network", at)
    assert (at, upcoming.user) == (utc(2026, 10, 27, 5, 0), "bob")


# --------------------------------------------------------------------------- overrides


def test_overrides_win_latest_first_and_only_agents_of_the_group_add_them(store, users):
    config = config_of(store)
    now = utc(2026, 3, 28, 9, 0)  # bob's turn
    with pytest.raises(Forbidden):
        oncall.add_override(config, "net", users["vic"], "dave", now, now + timedelta(hours=4), now)
    with pytest.raises(Forbidden):  # carol is an agent, but not of group network
        oncall.add_override(config, "net", users["carol"], "dave", now, now + timedelta(hours=4), now)
    first = oncall.add_override(config, "net", users["ann"], "dave", now, now + timedelta(hours=4), now)
    assert who(config, now + timedelta(hours=1)) == "dave"
    assert oncall.on_call(config, "network", now).source == f"override #{first.id}"
    later = now + timedelta(minutes=1)
    oncall.add_override(config, "net", users["bob"], "carol", now + timedelta(hours=2), now + timedelta(hours=3), later)
    assert who(config, now + timedelta(hours=2, minutes=30)) == "carol"  # created later: wins
    assert who(config, now + timedelta(hours=3, minutes=30)) == "dave"
    assert who(config, now + timedelta(hours=4)) == "bob"  # the span ends: the rotation again
    # now and next (the group page, the API, the CLI): dave until carol's override begins
    assert oncall.summary(config, "network", now)["now"]["user"] == "dave"
    assert oncall.summary(config, "network", now)["next"] == {"user": "carol", "from": "2026-03-28T11:00:00.000Z"}
    oncall.remove_override(config, first.id, users["ann"])
    assert who(config, now + timedelta(hours=1)) == "bob"


def test_migration_3_adds_the_override_table_to_a_version_2_database(store, users):
    with db.atomic():  # back to what version 2 had
        db.execute_sql('DROP TABLE "oncall_override"')
        SchemaVersion.delete().where(SchemaVersion.version >= 3).execute()
    assert current_version() == 2
    assert upgrade()[0] == (3, "on-call overrides") and current_version() == LATEST
    config = config_of(store)
    at = utc(2026, 3, 28, 9, 0)
    oncall.add_override(config, "net", users["ann"], "dave", at, at + timedelta(hours=1), at)
    assert who(config, at) == "dave"


def test_schedule_references_and_zones_are_checked_at_load(store):
    with pytest.raises(
        ConfigError, match=r"\[\[escalation\]\] 'night' → steps\[0\] → notify: no \[\[schedule\]\] named 'net'"
    ):
        store.config(group=GROUPS[:1] + [{"name": "network", "escalation": "night"}, GROUPS[2]], escalation=POLICIES)
    bad_zone = {**BERLIN_DAILY, "timezone": "Europe/Atlantis"}
    with pytest.raises(ConfigError, match="timezone: unknown time zone 'Europe/Atlantis'"):
        config_of(store, bad_zone)
    bad_time = {**BERLIN_DAILY, "layer": [{**BERLIN_DAILY["layer"][0], "handoff": "25:00"}]}
    with pytest.raises(ConfigError, match="handoff: '25:00' is not a time HH:MM"):
        config_of(store, bad_time)


# --------------------------------------------------------------------------- paging


def test_group_channel_and_escalation_step_page_whoever_is_on_call(store, users):
    clock = FixedClock(utc(2026, 3, 28, 9, 0))  # bob's turn (10:00 in Berlin)
    lc = build_lifecycle(config_of(store), clock)
    incident = lc.create(actor="inlet", title="Core switch down", group="network")
    new = Notification.get((Notification.incident == incident.id) & (Notification.audience == "group"))
    assert new.targets == ["email:bob@example.org", "json://127.0.0.1:9/bob"]
    created = Event.get((Event.incident == incident.id) & (Event.type == "created"))
    assert created.data["paged"] == [{"schedule": "net", "user": "bob", "channels": 2, "source": "layer 1"}]

    clock.advance(hours=23, minutes=1)  # carol's turn now; the step fires for whoever it is now
    assert build_timer_worker(lc).tick() == 1
    paged = Notification.get((Notification.incident == incident.id) & (Notification.audience == "escalation"))
    assert paged.targets == ["email:carol@example.org"]
    escalated = Event.get((Event.incident == incident.id) & (Event.type == "escalated"))
    assert escalated.data["paged"][0]["user"] == "carol"


def test_a_major_incident_pages_the_on_call_user_at_once(store, users):
    lc = build_lifecycle(config_of(store), FixedClock(utc(2026, 3, 28, 9, 0)))  # bob's turn
    incident = lc.create(actor="inlet", title="Whole site offline", group="network", major=True)
    paged = Notification.get((Notification.incident == incident.id) & (Notification.audience == "escalation"))
    assert paged.targets == ["email:bob@example.org", "json://127.0.0.1:9/bob"]
    assert not Notification.select().where(Notification.targets.contains("schedule:")).exists()


def test_nobody_on_call_pages_nobody_and_says_so(store, users):
    schedule = {**BERLIN_DAILY, "layer": [{**BERLIN_DAILY["layer"][0], "hours": "18:00-08:00"}]}
    lc = build_lifecycle(config_of(store, schedule), FixedClock(utc(2026, 3, 28, 11, 0)))  # 12:00 in Berlin
    incident = lc.create(actor="inlet", title="Core switch down", group="network")
    assert not Notification.select().where(Notification.audience == "group").exists()
    created = Event.get((Event.incident == incident.id) & (Event.type == "created"))
    assert created.data["paged"] == [{"schedule": "net", "user": None, "channels": 0, "why": "nobody is on call"}]


# --------------------------------------------------------------------------- API, group page, CLI


def test_api_overrides_and_now_next(store, users):
    config = config_of(store)
    token = accounts.issue_api_token("ann")
    viewer = accounts.issue_api_token("vic")
    client = create_app(config, build_services(config)).test_client()
    auth = {"Authorization": f"Bearer {token}"}
    body = {"user": "dave", "starts": "2026-03-28T10:00+01:00", "ends": "2026-03-28T12:00+01:00", "reason": "swap"}
    refused = client.post("/api/v1/oncall/network/overrides", json=body, headers={"Authorization": f"Bearer {viewer}"})
    assert refused.status_code == 403 and "may not change" in refused.get_json()["error"]["message"]
    bad = client.post("/api/v1/oncall/network/overrides", json={**body, "ends": "yesterday"}, headers=auth)
    assert bad.status_code == 400 and "not a time" in bad.get_json()["error"]["message"]
    made = client.post("/api/v1/oncall/network/overrides", json=body, headers=auth)
    assert made.status_code == 201, made.get_json()
    answer = client.get("/api/v1/oncall/network?at=2026-03-28T09:30Z", headers=auth).get_json()
    assert answer["now"] == {"user": "dave", "source": f"override #{made.get_json()['id']}"}
    assert answer["next"] == {"user": "bob", "from": "2026-03-28T11:00:00.000Z"}
    assert client.get("/api/v1/oncall/nowhere", headers=auth).status_code == 404


def test_inlet_oncall_prints_now_and_next(store, users, capsys):
    path = store.write_config(group=GROUPS, escalation=POLICIES, schedule=[BERLIN_DAILY])
    assert main(["-c", str(path), "oncall", "network", "--at", "2026-03-29T06:59Z"]) == 0
    out = capsys.readouterr().out
    assert "net (group network, Europe/Berlin)" in out
    assert "now:  bob (layer 1)" in out
    assert "next: carol from 2026-03-29 09:00 CEST (2026-03-29T07:00:00.000Z)" in out
    assert main(["-c", str(path), "oncall", "--json", "--at", "2026-03-29T07:00Z"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["now"]["user"] == "carol"
    assert main(["-c", str(path), "oncall", "nowhere"]) == 1
    assert "no [[schedule]] named 'nowhere'" in capsys.readouterr().err
    assert User.select().count() == 5


def test_group_page_shows_now_and_next_and_agents_of_the_group_add_overrides(store, users):
    config = config_of(store)
    app = create_app(config, build_services(config, FixedClock(utc(2026, 3, 28, 9, 0))))  # bob's turn

    def signed_in(name):
        accounts.set_password(name, PASSWORD)
        client = app.test_client()
        login = client.get("/login")
        token = login.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        assert client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token}).status_code == 302
        return client

    def csrf(client, path):
        return client.get(path).text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]

    ann = signed_in("ann")
    html = ann.get("/oncall/network")
    assert html.status_code == 200
    assert "<strong>bob</strong> <small>(layer 1)</small>" in html.text
    assert "carol from Sun 2026-03-29 09:00 CEST" in html.text  # next, in the schedule's zone
    form = {"user": "dave", "starts": "2026-03-28T10:30", "ends": "2026-03-28T12:00", "reason": "<b>swap</b>"}
    added = ann.post("/oncall/network/overrides", data={**form, "csrf_token": csrf(ann, "/oncall/network")})
    assert added.status_code == 303
    html = ann.get("/oncall/network")
    assert "&lt;b&gt;swap&lt;/b&gt;" in html.text and "<b>swap</b>" not in html.text  # escaped
    assert "dave from Sat 2026-03-28 10:30 CET" in html.text
    assert ann.post("/oncall/network/overrides", data=form).status_code == 400  # no CSRF token: refused
    # A viewer sees the page but no form, and a forged post is refused with a message.
    vic = signed_in("vic")
    html = vic.get("/oncall")
    assert html.status_code == 200 and "Add override" not in html.text and ">net</a>" in html.text
    refused = vic.post(
        "/oncall/network/overrides", data={**form, "csrf_token": csrf(vic, "/oncall")}, follow_redirects=True
    )
    assert "vic may not change the schedule" in refused.text
    assert vic.get("/oncall/nowhere").status_code == 404


# --------------------------------------------------------------------------- the page in a real browser


@pytest.fixture
def running(sqlite_store):  # noqa: F811 -- the fixture of tests/test_browser.py
    """``inlet serve``'s web role with a schedule, for the browser fixtures of tests/test_browser.py."""
    config = sqlite_store.config(
        web={"host": "127.0.0.1", "port": free_port()},
        inlet={"data_dir": str(sqlite_store.tmp_path)},
        group=GROUPS,
        escalation=POLICIES,
        schedule=[{**BERLIN_DAILY, "layer": [{**BERLIN_DAILY["layer"][0], "users": ["bob"]}]}],  # bob, always
    )
    accounts.create_user("ann", "agent", PASSWORD, email="ann@example.org")
    service = Service(config, roles={"web"})
    service.start()
    service.base_url = f"http://127.0.0.1:{config.web.port}"
    try:
        yield service
    finally:
        service.stop()


def test_an_agent_adds_an_override_on_the_group_page_in_a_browser(running, page):  # noqa: F811 -- the fixture
    sign_in(page, "ann", PASSWORD)
    page.get_by_role("link", name="On call").click()
    page.get_by_role("link", name="net", exact=True).click()
    expect(page.get_by_role("heading", name="On call: group network")).to_be_visible()
    expect(page.locator("td.oncall-now")).to_contain_text("bob (layer 1)")
    starts = datetime.now(ZoneInfo("Europe/Berlin")) + timedelta(days=1)
    page.get_by_label("User who covers").fill("ann")
    page.get_by_label("From (Europe/Berlin)").fill(f"{starts:%Y-%m-%dT%H:%M}")
    page.get_by_label("Until").fill(f"{starts + timedelta(hours=2):%Y-%m-%dT%H:%M}")
    page.get_by_label("Reason").fill("covering for a dentist appointment")
    page.get_by_role("button", name="Add override").click()
    expect(page.get_by_text("covering for a dentist appointment")).to_be_visible()
    expect(page.locator("td.oncall-next")).to_contain_text(f"ann from {starts:%a %Y-%m-%d %H:%M}")
