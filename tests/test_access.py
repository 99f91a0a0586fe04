"""Trust boundaries of the web UI and the API (issue 11: points 3, 4, 9; issue 18: point 8).

The other end of every relation, what is public, sessions and the login limit,
numbers in query strings, attachment caching, how channel URLs and stored
webhook bodies are shown, and the one password rule — all through the real
interface (Flask's test client, a real waitress server, the CLI, the outbox
delivering to a loopback sink), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
import requests
from playhouse.migrate import SchemaMigrator, migrate

from gateway import accounts
from gateway.cli.main import main
from gateway.core.errors import InletError
from gateway.web_server import WebServer
from notifiers.apprise_adapter import masked
from notifiers.delivery import Delivery
from store.db import db
from store.migrations import LATEST, current_version, upgrade
from store.models import Attachment, Event, Inbound, Incident, Notification, NotificationAttempt, SchemaVersion, User
from tests.conftest import free_port
from tests.sinks import HttpSink
from tests.test_api import Api
from tests.test_web import PASSWORD, Web, csrf_token, post
from web.auth import LoginLimiter


@pytest.fixture
def web(store):
    return Web(store)


@pytest.fixture
def api(web):
    return Api(web)


def _same_page(text: str, ref: str) -> str:
    """A page with its per-request parts (CSRF tokens, the reference asked for) taken out."""
    text = re.sub(r'name="csrf_token" value="[^"]+"', "", text)
    return text.replace(ref, "REF")


# ---------------------------------------------------------------- 11.3: the other end of every relation


@pytest.mark.parametrize("kind", ["parent", "child", "related"])
def test_link_to_a_hidden_incident_answers_like_a_missing_one(web, api, kind):
    hidden = api.call("POST", "/api/v1/incidents/INC-1/actions/link", "desk", json={"other": "INC-3", "kind": kind})
    missing = api.call("POST", "/api/v1/incidents/INC-1/actions/link", "desk", json={"other": "INC-99", "kind": kind})
    assert hidden.status_code == missing.status_code == 404
    assert hidden.get_json() == {"error": {"code": "not_found", "message": "no incident 'INC-3'"}}
    assert missing.get_json() == {"error": {"code": "not_found", "message": "no incident 'INC-99'"}}

    client = web.client("desk")
    pages = {ref: post(client, "/incidents/INC-1/link", {"other": ref, "kind": kind}) for ref in ("INC-3", "INC-99")}
    assert pages["INC-3"].status_code == pages["INC-99"].status_code == 404
    assert "no incident &#39;INC-3&#39;" in pages["INC-3"].text and "Phishing" not in pages["INC-3"].text
    assert _same_page(pages["INC-3"].text, "INC-3") == _same_page(pages["INC-99"].text, "INC-99")

    assert Incident.get(Incident.ref == "INC-1").parent_id is None
    assert Incident.get(Incident.ref == "INC-3").parent_id is None
    assert Event.select().where(Event.type == "linked").count() == 0


def test_a_hidden_incident_in_a_final_state_answers_like_a_missing_one_too(web, api):
    web.lifecycle.cancel("INC-3", "sec", "false alarm")  # a related link to a closed one is recorded on one side
    body = {"other": "INC-3", "kind": "related"}
    hidden = api.call("POST", "/api/v1/incidents/INC-1/actions/link", "desk", json=body)
    assert hidden.status_code == 404 and hidden.get_json()["error"]["message"] == "no incident 'INC-3'"
    assert Event.select().where(Event.type == "linked").count() == 0


@pytest.mark.parametrize("kind", ["parent", "child", "related"])
def test_link_to_an_incident_the_actor_may_not_change_is_403(web, api, kind):
    response = api.call("POST", "/api/v1/incidents/INC-1/actions/link", "desk", json={"other": "INC-2", "kind": kind})
    assert response.status_code == 403
    assert response.get_json() == {"error": {"code": "forbidden", "message": "you may not change INC-2"}}
    page = post(web.client("desk"), "/incidents/INC-1/link", {"other": "INC-2", "kind": kind})
    assert page.status_code == 403 and "you may not change INC-2" in page.text
    assert Incident.get(Incident.ref == "INC-2").parent_id is None
    assert Event.select().where(Event.type == "linked").count() == 0
    # the admin may change both ends
    ok = api.call("POST", "/api/v1/incidents/INC-1/actions/link", "admin", json={"other": "INC-2", "kind": kind})
    assert ok.status_code == 200


def test_resolve_cascades_only_to_children_the_actor_may_change(web, api):
    parent = web.lifecycle.create(title="Floor 3 printers", actor="t", group="service-desk")
    own = web.lifecycle.create(title="Printer 3a", actor="t", group="service-desk")
    for child in (own.ref, web.net.ref, web.secret.ref):  # the admin links a child of each kind
        assert api.call("POST", f"/api/v1/incidents/{child}/actions/link", json={"other": parent.ref, "kind": "parent"})
    assert Incident.select().where(Incident.parent == parent.id).count() == 3
    body = {"code": "fixed", "notes": "new fuser", "cause": "hardware", "fix": "permanent", "cascade": True}
    response = api.call("POST", f"/api/v1/incidents/{parent.ref}/actions/resolve", "desk", json=body)
    assert response.status_code == 200 and response.get_json()["status"] == "resolved"
    status = {i.ref: i.status for i in Incident.select()}
    assert status[own.ref] == "resolved"
    assert status[web.net.ref] == "new" and status[web.secret.ref] == "new"  # not desk's to change
    [note] = Event.select().where((Event.incident == parent.id) & (Event.type == "note"))
    assert note.body.startswith("1 open child incident(s) not resolved")  # the hidden one is not even counted
    assert web.secret.ref not in note.body and web.net.ref not in note.body


def test_incident_page_and_api_do_not_name_a_hidden_parent_or_child(web):
    web.lifecycle.link(web.desk.ref, "admin", web.secret.ref, "parent")  # Inlet itself (no access): both ends
    page = web.client("desk").get(f"/incidents/{web.desk.ref}").text
    assert web.secret.ref not in page and "Phishing" not in page and "(restricted)" in page
    assert web.secret.ref in web.client("sec").get(f"/incidents/{web.desk.ref}").text
    api = Api(web)
    doc = api.call("GET", f"/api/v1/incidents/{web.desk.ref}", "desk").get_json()
    timeline = api.call("GET", f"/api/v1/incidents/{web.desk.ref}/timeline", "desk").get_json()
    assert doc["parent"] == "(restricted)" and web.secret.ref not in json.dumps(timeline)
    assert api.call("GET", f"/api/v1/incidents/{web.desk.ref}", "sec").get_json()["parent"] == web.secret.ref


# ---------------------------------------------------------------- 11.4: public means published


def test_status_page_and_stakeholders_get_only_published_updates(store):
    sink = HttpSink(free_port()).start()
    try:
        board = {"name": "board", "notify": [f"json://{sink.url}"], "procedures": ["major"]}
        web = Web(store, stakeholder=[board], notifications={"apprise_throttle": "0s"})
        major = web.lifecycle.create(
            title="Email is down", actor="t", group="service-desk", service="email", major=True, procedure="major",
            reporter_email="rita@example.org",
        )  # fmt: skip
        web.lifecycle.reply(major.ref, "desk", "Rita, did you restart Outlook? Your ticket PIN is 4711.")
        raw = b"From: rita@example.org\r\nSubject: Re: email\r\n\r\nMy password is hunter2, does that help?"
        inbound = Inbound.create(source="smtp", received_at=datetime.now(UTC), status="processed", raw=raw)
        web.lifecycle.reply(major.ref, "rita@example.org", "My password is hunter2, does that help?", inbound=inbound)
        web.lifecycle.note(major.ref, "desk", "We found the cause and are fixing it.", public=True)
        accounts.create_user("cmdr", "admin", PASSWORD)
        web.lifecycle.assign(major.ref, "desk", assignee="cmdr")
        web.lifecycle.resolve(major.ref, "cmdr", code="fixed", notes="Rita's mailbox quota raised", cause="capacity")

        page = web.client().get("/status").text
        assert "We found the cause" in page
        assert "4711" not in page and "hunter2" not in page and "quota" not in page

        delivery = Delivery(web.config, worker_id="t")
        try:
            while delivery.tick():
                pass
        finally:
            delivery.pool.shutdown()
        told = json.dumps(sink.json())
        assert "We found the cause" in told
        assert "4711" not in told and "hunter2" not in told
        rows = Notification.select().where(Notification.audience == "reporter")
        assert "hunter2" not in json.dumps([r.context for r in rows])  # nor is the reporter sent her own words
        assert any("4711" in json.dumps(r.context) for r in rows)  # the agent's reply does reach her
    finally:
        sink.stop()


def test_an_agents_reply_is_for_the_reporter_not_the_public(web, api):
    response = api.call("POST", "/api/v1/incidents/INC-1/actions/reply", "desk", json={"body": "Try the other tray."})
    assert response.status_code == 201
    assert (response.get_json()["type"], response.get_json()["visibility"]) == ("reply", "reporter")


# ---------------------------------------------------------------- 11.9: sessions


def _cookie(client) -> str:
    return client.get_cookie("inlet_session").value


def _replay(web, cookie: str):
    client = web.app.test_client()
    client.set_cookie("inlet_session", cookie)
    return client.get("/incidents")


def _signed_out(response) -> bool:
    return response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_session_cookie_replayed_after_logout_gets_the_login_page(web):
    client = web.client("desk")
    cookie = _cookie(client)
    assert _replay(web, cookie).status_code == 200
    assert post(client, "/logout").status_code == 302
    assert _signed_out(_replay(web, cookie))


def test_a_password_change_ends_every_other_session(web):
    laptop, phone = web.client("desk"), web.client("desk")
    stolen = _cookie(phone)
    new = "a brand new passphrase"
    response = post(laptop, "/password", {"current": PASSWORD, "new": new, "repeat": new})
    assert response.status_code == 303
    assert laptop.get("/incidents").status_code == 200  # the session that changed it signs in anew
    assert _signed_out(phone.get("/incidents")) and _signed_out(_replay(web, stolen))
    # an admin setting a password ends the user's sessions too
    laptop_cookie = _cookie(laptop)
    desk = User.get(User.name == "desk")
    assert post(web.client("admin"), f"/users/{desk.id}/password", {"password": "yet another passphrase"})
    assert _signed_out(_replay(web, laptop_cookie))
    assert accounts.authenticate("desk", "yet another passphrase") is not None


def test_password_change_asks_for_the_current_password(web):
    client = web.client("desk")
    response = post(client, "/password", {"current": "wrong", "new": "a brand new passphrase", "repeat": "x"})
    assert response.status_code == 400 and accounts.authenticate("desk", PASSWORD) is not None


# ---------------------------------------------------------------- 11.9: the login limiter


def _login(web, name: str, password: str, addr: str) -> int:
    client = web.app.test_client()
    token = csrf_token(client, "/login")
    data = {"name": name, "password": password, "csrf_token": token}
    return client.post("/login", data=data, environ_base={"REMOTE_ADDR": addr}).status_code


def test_login_limiter_keys_name_and_address_apart_and_a_success_clears_only_the_name(store):
    web = Web(store, web={"login_attempts": 3})
    # an address: two wrong guesses, then its owner's own good sign-in must not wipe the address's count
    assert _login(web, "x1", "guess", "10.0.0.1") == 401
    assert _login(web, "x2", "guess", "10.0.0.1") == 401
    assert _login(web, "desk", PASSWORD, "10.0.0.1") == 302
    assert _login(web, "x3", "guess", "10.0.0.1") == 401
    assert _login(web, "desk", PASSWORD, "10.0.0.1") == 429  # three failures from this address
    assert _login(web, "desk", PASSWORD, "10.0.0.2") == 302  # the name itself is fine
    # a name: guessed from three addresses, it is held everywhere; other names are not
    for n in range(3):
        assert _login(web, "neto", "guess", f"10.0.1.{n}") == 401
    assert _login(web, "neto", PASSWORD, "10.0.2.1") == 429
    assert _login(web, "admin", PASSWORD, "10.0.2.1") == 302


@pytest.mark.parametrize("trusted", [True, False])
def test_the_client_address_comes_from_the_trusted_proxy_only(store, trusted):
    web = Web(store, web={"login_attempts": 2, "port": 0, "trusted_proxy": "127.0.0.1" if trusted else ""})
    server = WebServer(web.config, web.app)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"

        def login(client_addr: str, name: str, password: str) -> int:
            with requests.Session() as s:
                token = re.search(r'name="csrf_token" value="([^"]+)"', s.get(f"{base}/login").text).group(1)
                data = {"name": name, "password": password, "csrf_token": token}
                headers = {"X-Forwarded-For": client_addr}
                return s.post(
                    f"{base}/login", data=data, headers=headers, allow_redirects=False, timeout=10
                ).status_code

        assert login("203.0.113.1", "x1", "guess") == 401
        assert login("203.0.113.1", "x2", "guess") == 401
        assert login("203.0.113.1", "desk", PASSWORD) == 429
        # behind the trusted proxy another client is another address; without it, the header means nothing
        assert login("203.0.113.2", "desk", PASSWORD) == (302 if trusted else 429)
    finally:
        server.stop()


# ---------------------------------------------------------------- 11.9: numbers, caching


@pytest.mark.parametrize("value", ["²", "١", "٣", "𝟗", "1" * 40, "-1", " 5"])
def test_non_ascii_or_huge_digits_are_400_not_500(web, api, value):
    response = api.call("GET", "/api/v1/incidents", query_string={"limit": value})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid"
    admin = web.client("admin")
    for path in ("/quarantine", "/notifications"):
        assert admin.get(path, query_string={"before": value}).status_code == 200


def test_attachments_are_never_cached(web):
    row = Attachment.create(incident=web.desk, filename="a.txt", content_type="text/plain", size=3, sha256="0" * 64,
                            data=b"abc")  # fmt: skip
    response = web.client("desk").get(f"/attachments/{row.id}")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"


# ---------------------------------------------------------------- 11.9: URLs and secrets on screen

SECRET_URL = "json://{}?+Authorization=Bearer%20s3cr3t-header&-X-Token=t0k3n-param"


def test_channel_urls_are_shown_as_scheme_and_host_only(store):
    sink = HttpSink(free_port()).start()
    sink.status = 500
    try:
        url = SECRET_URL.format(sink.url.replace("127.0.0.1", "localhost"))
        groups = [{"name": "service-desk", "members": ["desk"], "channels": [url]}, {"name": "security"}]
        web = Web(store, groups=groups, notifications={"apprise_throttle": "0s", "max_attempts": 1})
        delivery = Delivery(web.config, worker_id="t")
        try:
            delivery.tick()
        finally:
            delivery.pool.shutdown()
        assert sink.requests  # it was tried, and failed
        shown = [a.url for a in NotificationAttempt.select()] + [a.detail for a in NotificationAttempt.select()]
        shown += [n.last_error or "" for n in Notification.select()] + [
            json.dumps(n.results) for n in Notification.select()
        ]
        shown += [e.body for e in Event.select().where(Event.type == "notification_failed")]
        assert "json://localhost" in " ".join(shown)
        pages = [
            web.client("admin").get(p).text for p in ("/notifications", f"/incidents/{web.desk.ref}", "/configuration")
        ]
        for text in shown + pages:
            assert "s3cr3t" not in text and "t0k3n" not in text and "/hook" not in text, text
    finally:
        sink.stop()


def test_delivery_errors_written_before_the_rule_are_shown_masked_too(web, api):
    old = "json://hook.example/p?method=POST&%2BAuthorization=Bearer%20s3cr3t-header: failure: HTTP 500"
    Notification.update(last_error=old).execute()
    Event.create(incident=web.desk, at=datetime.now(UTC), type="notification_failed", actor="inlet", body=old)
    admin = web.client("admin")
    texts = [admin.get(p).text for p in ("/notifications", f"/incidents/{web.desk.ref}")]
    texts.append(json.dumps(api.call("GET", f"/api/v1/incidents/{web.desk.ref}/timeline").get_json()))
    for text in texts:
        assert "json://hook.example" in text and "s3cr3t" not in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("json://user:pw@hook.example:8080/p?+Authorization=Bearer%20x", "json://hook.example"),
        ("mailto://bob:pw@mail.example.org?to=a@b.example", "mailto://mail.example.org"),
        ("slack://TOKENAAAAAAA/TOKENBBBBBB/TOKENCCCCCCCCCCCCC", "slack://…"),  # a token where the host is
        ("tgram://123456789:ABCdefSECRET/chatid", "tgram://…"),
        ("nosuchscheme://secret@x/y", "nosuchscheme://…"),
        ("service-desk", "service-desk"),  # a group name, not a URL
    ],
)
def test_masked_channel_url(url, shown):
    assert masked(url) == shown


def test_credentials_in_a_stored_webhook_body_are_masked_in_the_quarantine_view(web):
    details = {"api_key": "k3y", "X-Auth-Token": "t0k"}
    body = {"routing_key": "R0UTINGKEY0123456789abcdef", "event_action": "trigger", "dedup_key": "disk-1",
            "payload": {"summary": "disk full", "custom_details": details}}  # fmt: skip
    inbound = Inbound.create(
        source="webhook", integration="pagerduty", received_at=datetime.now(UTC), status="failed",
        reason="boom", raw=json.dumps(body).encode(),
    )  # fmt: skip
    page = web.client("admin").get(f"/quarantine/{inbound.id}").text
    assert "R0UTINGKEY" not in page and "k3y" not in page and "t0k" not in page
    assert "routing_key" in page and "disk-1" in page and "disk full" in page


# ---------------------------------------------------------------- 18.8: one password rule


@pytest.mark.parametrize(
    "password", ["short", "password123!", "Qwertyuiop12", "1234567890123", "aaaaaaaaaaaa", "Password2026!"]
)
def test_the_password_rule_holds_in_the_core_and_the_ui(web, password):
    with pytest.raises(InletError):
        accounts.create_user("newbie", "agent", password)
    with pytest.raises(InletError):
        accounts.set_password("desk", password)
    admin = web.client("admin")
    response = post(admin, "/users", {"name": "newbie", "role": "agent", "password": password})
    assert "password" in admin.get(response.headers["Location"]).text.lower()
    desk = User.get(User.name == "desk")
    post(admin, f"/users/{desk.id}/password", {"password": password})
    client = web.client("desk")
    assert post(client, "/password", {"current": PASSWORD, "new": password, "repeat": password}).status_code == 400
    assert User.get_or_none(User.name == "newbie") is None
    assert accounts.authenticate("desk", PASSWORD) is not None


def test_the_cli_applies_the_password_rule(store, monkeypatch, capsys):
    path = store.write_config()
    monkeypatch.setenv("NEW_PW", "password1234")
    assert main(["-c", str(path), "user", "add", "weak", "--role", "agent", "--password-env", "NEW_PW"]) != 0
    assert "too common" in capsys.readouterr().err
    monkeypatch.setenv("NEW_PW", "a fine long passphrase")
    assert main(["-c", str(path), "user", "add", "fine", "--role", "agent", "--password-env", "NEW_PW"]) == 0
    monkeypatch.setenv("NEW_PW", "short")
    assert main(["-c", str(path), "user", "password", "fine", "--password-env", "NEW_PW"]) != 0
    assert "at least 10 characters" in capsys.readouterr().err
    monkeypatch.setenv("NEW_PW", "another fine passphrase")
    assert main(["-c", str(path), "user", "password", "fine", "--password-env", "NEW_PW"]) == 0
    assert accounts.authenticate("fine", "another fine passphrase") is not None


def test_migration_2_adds_the_session_version_to_a_version_1_database(store):
    accounts.create_user("old", "agent", PASSWORD)
    with db.atomic():  # back to what version 1 made before the column existed
        migrate(SchemaMigrator.from_database(db.obj).drop_column("user", "session_version"))
        SchemaVersion.delete().where(SchemaVersion.version >= 2).execute()
    assert current_version() == 1
    assert [v for v, _ in upgrade()] == list(range(2, LATEST + 1)) and current_version() == LATEST
    assert User.get(User.name == "old").session_version == 0


def test_login_limiter_memory_is_bounded_under_a_flood_of_names():
    now = [0.0]
    limiter = LoginLimiter(3, 10.0, clock=lambda: now[0])
    for n in range(LoginLimiter.MAX_KEYS + 1):
        limiter.failed(f"name:guess{n}")
    now[0] = 20.0  # the window has passed for all of them
    limiter.failed("name:late")
    assert len(limiter._failures) == 1 and limiter.blocked("name:late") is False
