"""A user's own paging channels (issue #16, point 1): Apprise URLs on the user, paged with their email when a
schedule they are on call for is paged. Set by the user (account page), by admins (Users page) and by
``inlet user channels``; validated with Apprise; shown masked to everyone but their owner and the admin editing them.

Every test runs on SQLite and PostgreSQL; paging reaches a real loopback HTTP sink (tests/sinks.py).
"""

from __future__ import annotations

import logging
import re

import pytest
from playhouse.migrate import SchemaMigrator, migrate
from playwright.sync_api import expect

from gateway import accounts
from gateway.cli.main import main
from gateway.core.clock import FixedClock
from gateway.core.errors import InletError, NotFound
from gateway.service import build_lifecycle, build_services
from notifiers.delivery import Delivery
from store.db import db
from store.migrations import LATEST, current_version, upgrade
from store.models import Event, Notification, SchemaVersion, User
from tests.conftest import free_port
from tests.sinks import HttpSink, SmtpSink
from tests.test_browser import browser, page, sign_in, sqlite_store  # noqa: F401 -- fixtures
from tests.test_oncall import BERLIN_DAILY, GROUPS, PASSWORD, POLICIES, running, utc  # noqa: F401 -- running
from web.app import create_app

SECRET = "s3cr3t-t0ken-9f8e"  # in every channel URL: must never show up masked-out places or in logs
SCHEDULE = {k: v for k, v in BERLIN_DAILY.items() if k != "channels"}  # no config map: the users' own channels


@pytest.fixture
def users(store):
    """Users without a usable password (hashing one costs ~0.5 s here): the tests that sign in set one."""
    made = {}
    for name, role in (("ann", "agent"), ("bob", "agent"), ("carol", "agent"), ("root", "admin")):
        made[name] = User.create(
            name=name, role=role, email=f"{name}@example.org", password_hash="!", created_at=utc(2026, 1, 1)
        )
    return made


@pytest.fixture
def sinks():
    http, smtp = HttpSink(free_port()).start(), SmtpSink(free_port()).start()
    yield http, smtp
    http.stop()
    smtp.stop()


def drain(delivery) -> int:
    total = 0
    while n := delivery.tick():
        total += n
    return total


# --------------------------------------------------------------------------- paging


def test_paging_a_schedule_reaches_the_on_call_users_own_channel(store, users, sinks, caplog):
    http, smtp = sinks
    own = f"json://{http.url}/{SECRET}"
    accounts.set_channels("bob", [own])
    fallback = {"carol": [f"json://{http.url}/carol-from-config"], "bob": ["json://127.0.0.1:9/never"]}
    config = store.config(
        group=GROUPS,
        escalation=POLICIES,
        schedule=[{**SCHEDULE, "channels": fallback}],
        notifications={"from_address": "desk@inlet.example.org", "smtp_port": smtp.port, "apprise_throttle": "0s"},
        mail={"loop_token": "desk@inlet.example.org"},
    )
    clock = FixedClock(utc(2026, 3, 28, 9, 0))  # bob's turn (10:00 in Berlin)
    lc = build_lifecycle(config, clock)
    delivery = Delivery(config, clock=clock, worker_id="w1")
    caplog.set_level(logging.INFO)
    try:
        incident = lc.create(actor="inlet", title="Core switch down", group="network")
        row = Notification.get((Notification.incident == incident.id) & (Notification.audience == "group"))
        assert row.targets == ["email:bob@example.org", own]  # bob's own URL, not the config's entry for him
        created = Event.get((Event.incident == incident.id) & (Event.type == "created"))
        assert created.data["paged"] == [{"schedule": "net", "user": "bob", "channels": 2, "source": "layer 1"}]
        assert drain(delivery) >= 1
        (request,) = http.requests
        assert request["path"] == f"/hook/{SECRET}"
        assert incident.ref in http.json()[0]["title"]
        assert [rcpts for _, rcpts, _ in smtp.messages] == [["bob@example.org"]]

        clock.advance(hours=24)  # carol's turn: she has no channels of her own, the config map is the fallback
        second = lc.create(actor="inlet", title="Router flapping", group="network")
        row = Notification.get((Notification.incident == second.id) & (Notification.audience == "group"))
        assert row.targets == ["email:carol@example.org", f"json://{http.url}/carol-from-config"]
        drain(delivery)
        assert [r["path"] for r in http.requests] == [f"/hook/{SECRET}", "/hook/carol-from-config"]

        User.update(active=False).where(User.name == "carol").execute()  # a disabled user is paged nowhere
        third = lc.create(actor="inlet", title="Router flapping again", group="network")
        created = Event.get((Event.incident == third.id) & (Event.type == "created"))
        assert created.data["paged"][0]["channels"] == 0 and "disabled" in created.data["paged"][0]["why"]
    finally:
        delivery.pool.shutdown()
    assert SECRET not in caplog.text  # paging and delivery never log the URL


def test_migration_7_gives_users_of_a_version_6_database_empty_channels(store, users):
    with db.atomic():  # back to what version 6 had
        migrate(SchemaMigrator.from_database(db.obj).drop_column(User._meta.table_name, "channels"))
        SchemaVersion.delete().where(SchemaVersion.version >= 7).execute()
    assert current_version() == 6
    assert upgrade()[0] == (7, "user channels") and current_version() == LATEST
    assert User.get(User.name == "ann").channels == []
    assert accounts.set_channels("ann", ["ntfy://ntfy.sh/ann-pager"]).channels == ["ntfy://ntfy.sh/ann-pager"]


def test_channels_are_validated_with_apprise_and_the_error_shows_them_masked(store, users):
    user = accounts.set_channels(
        "ann", [" ntfy://ntfy.sh/a ", "", "ntfy://ntfy.sh/a", f"json://hooks.example.org/{SECRET}"]
    )
    assert user.channels == ["ntfy://ntfy.sh/a", f"json://hooks.example.org/{SECRET}"]  # stripped, no blanks or repeats
    for bad, shown in (
        (f"nosuchplugin://{SECRET}@example.org", "nosuchplugin://…"),
        (f"{SECRET}", "(no scheme://)"),
        (f"json://host.example.org/{SECRET} x", "json://"),
    ):
        with pytest.raises(InletError, match=r"channel 2 \(.*\) is not an Apprise URL") as caught:
            accounts.set_channels("ann", ["ntfy://ntfy.sh/a", bad])
        assert shown in str(caught.value) and SECRET not in str(caught.value)
    assert User.get(User.name == "ann").channels == user.channels  # a refused change keeps the old channels
    with pytest.raises(InletError, match="at most 10 channels"):
        accounts.set_channels("ann", [f"ntfy://ntfy.sh/t{i}" for i in range(11)])
    with pytest.raises(NotFound):
        accounts.set_channels("nobody", [])
    assert accounts.set_channels("ann", []).channels == []


# --------------------------------------------------------------------------- web UI


def _client(app, name):
    accounts.set_password(name, PASSWORD)
    client = app.test_client()
    token = _csrf(client, "/login")
    assert client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token}).status_code == 302
    return client


def _csrf(client, path):
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def test_a_user_sets_their_own_channels_on_the_account_page(store, users):
    config = store.config(group=GROUPS, escalation=POLICIES, schedule=[SCHEDULE])
    app = create_app(config, build_services(config))
    bob = _client(app, "bob")
    url = f"json://hooks.example.org/{SECRET}"
    assert bob.post("/account/channels", data={"channels": url}).status_code == 400  # no CSRF token: refused
    assert User.get(User.name == "bob").channels == []
    bad = bob.post("/account/channels", data={"channels": f"{url}\nbogus://x", "csrf_token": _csrf(bob, "/password")})
    assert bad.status_code == 400
    assert "channel 2 (bogus://…) is not an Apprise URL" in bad.text
    assert User.get(User.name == "bob").channels == []
    saved = bob.post("/account/channels", data={"channels": f"{url}\r\n\r\n", "csrf_token": _csrf(bob, "/password")})
    assert saved.status_code == 303
    assert User.get(User.name == "bob").channels == [url]
    account = bob.get("/password").text
    assert "Your paging channels are saved." in account and url in account  # the owner sees their own URL
    assert bob.get("/users").status_code == 403 and bob.get(f"/users/{users['ann'].id}/channels").status_code == 403
    forged = bob.post(
        f"/users/{users['ann'].id}/channels", data={"channels": url, "csrf_token": _csrf(bob, "/password")}
    )
    assert forged.status_code == 403 and User.get(User.name == "ann").channels == []


def test_admins_see_channels_masked_and_edit_them_on_the_users_page(store, users):
    config = store.config(group=GROUPS, escalation=POLICIES, schedule=[SCHEDULE])
    app = create_app(config, build_services(config))
    accounts.set_channels("bob", [f"json://hooks.example.org/{SECRET}", f"pover://{SECRET}@{SECRET}"])
    root = _client(app, "root")
    listing = root.get("/users").text
    assert "<code>json://hooks.example.org</code>" in listing and "<code>pover://…</code>" in listing
    assert SECRET not in listing
    assert SECRET not in root.get("/password").text  # an admin's own account page: their channels, not bob's
    edit = f"/users/{users['bob'].id}/channels"
    assert SECRET in root.get(edit).text  # the admin editing them sees them whole
    bad = root.post(edit, data={"channels": "ntfy://ntfy.sh/ok\nnope", "csrf_token": _csrf(root, edit)})
    assert bad.status_code == 400 and "channel 2 ((no scheme://)) is not an Apprise URL" in bad.text
    saved = root.post(edit, data={"channels": "ntfy://ntfy.sh/bob-pager", "csrf_token": _csrf(root, edit)})
    assert saved.status_code == 303 and User.get(User.name == "bob").channels == ["ntfy://ntfy.sh/bob-pager"]
    cleared = root.post(edit, data={"channels": "", "csrf_token": _csrf(root, edit)}, follow_redirects=True)
    assert "Channels of bob saved." in cleared.text and User.get(User.name == "bob").channels == []
    assert root.get("/users/9999/channels").status_code == 404


# --------------------------------------------------------------------------- CLI


def test_inlet_user_channels_sets_shows_masked_and_clears(store, users, capsys, caplog):
    path = store.write_config(group=GROUPS, escalation=POLICIES, schedule=[SCHEDULE])
    url = f"json://hooks.example.org/{SECRET}"
    assert main(["-c", str(path), "user", "channels", "bob", url, "ntfy://ntfy.sh/bob"]) == 0
    out = capsys.readouterr().out
    assert out == "bob: 2 channel(s)\n  json://hooks.example.org\n  ntfy://ntfy.sh\n"
    assert User.get(User.name == "bob").channels == [url, "ntfy://ntfy.sh/bob"]
    assert main(["-c", str(path), "user", "channels", "bob"]) == 0
    assert capsys.readouterr().out == out and SECRET not in out
    assert main(["-c", str(path), "user", "channels", "bob", f"bogus://{SECRET}"]) == 1
    err = capsys.readouterr().err
    assert "channel 1 (bogus://…) is not an Apprise URL" in err and SECRET not in err
    assert main(["-c", str(path), "user", "channels", "bob", url, "--clear"]) == 1
    assert "not both" in capsys.readouterr().err
    assert main(["-c", str(path), "user", "channels", "bob", "--clear"]) == 0
    assert capsys.readouterr().out == "bob: 0 channel(s)\n" and User.get(User.name == "bob").channels == []
    assert main(["-c", str(path), "user", "channels", "nobody"]) == 1
    assert "no user 'nobody'" in capsys.readouterr().err
    assert "bogus" not in caplog.text  # Apprise does not log the refused URL, not even partly hidden


# --------------------------------------------------------------------------- the account page in a real browser


def test_a_user_saves_their_channels_on_the_account_page_in_a_browser(running, page):  # noqa: F811 -- the fixtures
    sign_in(page, "ann", PASSWORD)
    page.get_by_role("link", name="Account").click()
    # (an invalid URL answers 400 with the message: the test-client test above; here it would be a console error)
    page.get_by_label("Channels").fill("ntfy://ntfy.sh/ann-pager\n\njson://hooks.example.org/ann")
    page.get_by_role("button", name="Save channels").click()
    expect(page.get_by_text("Your paging channels are saved.")).to_be_visible()
    expect(page.get_by_label("Channels")).to_have_value("ntfy://ntfy.sh/ann-pager\njson://hooks.example.org/ann")
    assert User.get(User.name == "ann").channels == ["ntfy://ntfy.sh/ann-pager", "json://hooks.example.org/ann"]
