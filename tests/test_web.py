"""The web UI through Flask's test client: every route × role, visibility, CSRF, headers, XSS, quarantine, users."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta

import pytest

from gateway import accounts, membership
from gateway.pipeline.mail_steps import store_email_view
from gateway.service import build_lifecycle, build_services
from parsers.email import EmailOptions, parse_email
from store.models import Attachment, Event, Inbound, Incident, Notification, User
from web.app import create_app

GROUPS = [
    {"name": "service-desk", "members": ["desk"], "escalation": "default"},
    {"name": "network", "members": ["neto"], "escalation": "default"},
    {"name": "security", "members": ["sec"]},
]
USERS = {"admin": "admin", "desk": "agent", "neto": "agent", "sec": "agent", "view": "viewer"}
PASSWORD = "correct horse battery"


class Web:
    """An app on a fresh store, with users of every role and a few incidents."""

    def __init__(self, store, groups=GROUPS, **sections):
        self.config = store.config(group=groups, inlet={"data_dir": str(store.tmp_path)}, **sections)
        membership.sync_config(self.config)  # as `inlet serve` does when it starts: the database holds membership
        self.services = build_services(self.config)
        self.app = create_app(self.config, self.services)
        self.lifecycle = self.services.lifecycle
        for name, role in USERS.items():
            accounts.create_user(name, role, PASSWORD, email=f"{name}@example.org")
        self.desk = self.lifecycle.create(
            title="Printer on fire", actor="test", group="service-desk", reporter_email="rita@example.org"
        )
        self.net = self.lifecycle.create(title="Core switch down", actor="test", group="network", impact="high")
        self.secret = self.lifecycle.create(
            title="Phishing wave hits finance", actor="test", group="security", security=True
        )
        self.inbound = Inbound.create(
            source="smtp",
            received_at=datetime.now(UTC),
            status="failed",
            reason="ParseError: boom",
            raw=b"Subject: broken\r\n\r\n<script>alert(1)</script>",
        )
        self.notification = Notification.create(
            incident=self.desk,
            audience="reporter",
            template="acknowledgement",
            status="failed",
            last_error="SMTP 550 <b>mailbox unavailable</b>",
            next_attempt_at=datetime.now(UTC),
            created_at=datetime.now(UTC),
        )

    def client(self, user: str | None = None):
        client = self.app.test_client()
        if user is not None:
            token = csrf_token(client, "/login")
            response = client.post("/login", data={"name": user, "password": PASSWORD, "csrf_token": token})
            assert response.status_code == 302, response.text
        return client


def csrf_token(client, path: str) -> str:
    page = client.get(path)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, f"no CSRF token on {path}: {page.status_code}"
    return match.group(1)


def post(client, path: str, data: dict | None = None):
    """A form POST with a valid CSRF token (taken from a page the user can open)."""
    return client.post(path, data={**(data or {}), "csrf_token": _token_any(client)})


def _token_any(client) -> str:
    for path in ("/incidents", "/login"):
        page = client.get(path)
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if match:
            return match.group(1)
    raise AssertionError("no page with a CSRF token")


@pytest.fixture
def web(store):
    return Web(store)


# ---------------------------------------------------------------- route × role

# path template -> expected status for anonymous, viewer, agent (desk), admin
PAGES = {
    "/status": (200, 200, 200, 200),
    "/login": (200, 302, 302, 302),
    "/healthz": (200, 200, 200, 200),
    "/readyz": (200, 200, 200, 200),
    "/problems": (302, 200, 200, 200),
    "/problems?status=known_error": (302, 200, 200, 200),
    "/": (302, 302, 302, 302),
    "/incidents": (302, 200, 200, 200),
    "/incidents?view=mine&sort=newest&status=any": (302, 200, 200, 200),
    "/incidents/new": (302, 403, 200, 200),
    "/incidents/{desk}": (302, 200, 200, 200),
    "/incidents/export.csv?status=any": (302, 200, 200, 200),
    "/incidents/{secret}": (302, 404, 404, 200),
    "/quarantine": (302, 403, 403, 200),
    "/quarantine?status=all": (302, 403, 403, 200),
    "/quarantine/{inbound}": (302, 403, 403, 200),
    "/notifications": (302, 403, 403, 200),
    "/users": (302, 403, 403, 200),
    "/configuration": (302, 403, 403, 200),
    "/heartbeats": (302, 403, 200, 200),
    "/metrics": (401, 403, 403, 200),
    "/api/v1/incidents": (401, 401, 401, 401),  # tokens only, never the session
    "/api/v1/openapi.json": (200, 200, 200, 200),
}


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_for_every_role(web, path):
    url = path.format(desk=web.desk.ref, secret=web.secret.ref, inbound=web.inbound.id)
    for index, user in enumerate((None, "view", "desk", "admin")):
        response = web.client(user).get(url)
        assert response.status_code == PAGES[path][index], (url, user, response.status_code)
        if response.status_code == 302 and user is None and path not in ("/",):
            assert "/login" in response.headers["Location"]


def test_anonymous_sees_only_status_and_login(web):
    client = web.client()
    rules = [r for r in web.app.url_map.iter_rules() if "GET" in r.methods and not r.arguments]
    open_paths = {"/status", "/login", "/healthz", "/readyz", "/api/v1/openapi.json"}
    for rule in rules:
        if rule.endpoint == "static":
            continue
        response = client.get(rule.rule)
        if rule.rule in open_paths:
            assert response.status_code == 200, rule.rule
        else:
            assert response.status_code in (302, 401), (rule.rule, response.status_code)
            assert web.desk.title not in response.text


# every action form: (action, fields)
ACTION_FORMS = [
    ("acknowledge", {}),
    ("start", {}),
    ("take", {}),
    ("assign", {"assignee": "desk"}),
    ("update", {"urgency": "high", "reason": "more users"}),
    ("note", {"body": "checked the cable"}),
    ("update_public", {"body": "we are on it"}),
    ("hold", {"reason": "waiting for the supplier"}),
    ("cancel", {"reason": "duplicate"}),
    ("link", {"other": "INC-2", "kind": "related"}),
]


@pytest.mark.parametrize(("action", "fields"), ACTION_FORMS)
def test_viewer_cannot_act(web, action, fields):
    client = web.client("view")
    response = post(client, f"/incidents/{web.desk.ref}/{action}", fields)
    assert response.status_code == 403
    assert Event.select().where(Event.incident == web.desk).count() == 1  # only "created"


def test_agent_acts_on_own_group_only(web):
    client = web.client("desk")
    assert post(client, f"/incidents/{web.desk.ref}/acknowledge").status_code == 303
    assert Incident.get_by_id(web.desk.id).status == "acknowledged"
    assert post(client, f"/incidents/{web.net.ref}/acknowledge").status_code == 403
    assert Incident.get_by_id(web.net.id).status == "new"
    assert post(client, f"/incidents/{web.secret.ref}/acknowledge").status_code == 404


def test_admin_runs_every_action_through_the_lifecycle(web):
    client = web.client("admin")
    ref = web.desk.ref
    for action, fields in ACTION_FORMS[:-2]:
        response = post(client, f"/incidents/{ref}/{action}", fields)
        assert response.status_code == 303, action
        page = client.get(response.headers["Location"]).text
        assert "done." in page, (action, re.findall(r'class="flash[^"]*"[^>]*>([^<]*)', page))
    post(client, f"/incidents/{ref}/resume")
    post(
        client,
        f"/incidents/{ref}/resolve",
        {"code": "fixed", "notes": "replaced", "cause": "hardware", "fix": "permanent"},
    )
    post(client, f"/incidents/{ref}/close")
    incident = Incident.get_by_id(web.desk.id)
    assert incident.status == "closed" and incident.priority == "P2" and incident.assignee.name == "desk"
    types = [e.type for e in Event.select().where(Event.incident == incident).order_by(Event.id)]
    assert types[:3] == ["created", "acknowledged", "started"]
    assert {"note", "update", "held", "resumed", "resolved", "closed", "changed", "assigned"} <= set(types)


def test_refused_transition_is_shown_not_applied(web):
    client = web.client("admin")
    response = post(client, f"/incidents/{web.desk.ref}/close")
    page = response.text  # the page again (422), with the forms as they were typed
    assert response.status_code == 422
    assert "cannot close from &#39;new&#39;" in page or "cannot close from 'new'" in page
    assert Incident.get_by_id(web.desk.id).status == "new"
    response = post(client, f"/incidents/{web.desk.ref}/resolve", {"code": "", "notes": "", "cause": ""})
    assert response.status_code == 422 and "code is required" in response.text


def test_unknown_action_is_refused(web):
    client = web.client("admin")
    response = post(client, f"/incidents/{web.desk.ref}/explode")
    assert response.status_code == 422 and "unknown action" in response.text


def test_new_incident_by_hand(web):
    client = web.client("desk")
    response = post(
        client,
        "/incidents/new",
        {
            "title": "Caller cannot log in",
            "description": "Phoned at 9:12",
            "reporter_email": "Caller@Example.org",
            "reporter_name": "Cal Ler",
            "category": "access",
            "impact": "low",
            "urgency": "high",
            "channel": "phone",
            "group": "",
        },
    )
    assert response.status_code == 303
    incident = Incident.get(Incident.title == "Caller cannot log in")
    assert (incident.source, incident.group, incident.priority) == ("phone", "service-desk", "P3")
    assert incident.reporter.email == "caller@example.org"
    assert post(client, "/incidents/new", {"title": " "}).status_code == 400
    assert post(client, "/incidents/new", {"title": "x", "group": "nope"}).status_code == 400


# ---------------------------------------------------------------- visibility of security incidents


def test_security_incidents_hidden_in_lists_search_counts_and_api(web):
    for user, sees in (("view", False), ("desk", False), ("neto", False), ("sec", True), ("admin", True)):
        client = web.client(user)
        queue = client.get("/incidents?status=any").text
        assert ("Phishing wave" in queue) is sees, user
        search = client.get("/incidents?q=phishing&status=any").text
        assert ("Phishing wave" in search) is sees, user
        by_ref = client.get(f"/incidents?q={web.secret.ref}&status=any").text
        assert ("Phishing wave" in by_ref) is sees, user
        new_count = re.search(r"new <strong>(\d+)</strong>", queue).group(1)
        assert int(new_count) == (3 if sees else 2), user
        token = accounts.issue_api_token(user)
        headers = {"Authorization": f"Bearer {token}"}
        listed = client.get("/api/v1/incidents?status=any", headers=headers).get_json()["incidents"]
        assert (web.secret.ref in [i["ref"] for i in listed]) is sees, user
        assert client.get(f"/api/v1/incidents/{web.secret.ref}", headers=headers).status_code == (200 if sees else 404)
        timeline = client.get(f"/api/v1/incidents/{web.secret.ref}/timeline", headers=headers)
        assert timeline.status_code == (200 if sees else 404)


# ---------------------------------------------------------------- CSRF, cookies, headers, login limit


def test_form_without_csrf_token_is_refused(web):
    client = web.client("admin")
    for path in (
        f"/incidents/{web.desk.ref}/acknowledge",
        "/incidents/new",
        f"/quarantine/{web.inbound.id}/discard",
        "/users",
        "/logout",
    ):
        response = client.post(path, data={"title": "x", "name": "y", "role": "agent"})
        assert response.status_code == 400, path
        assert "form expired or was forged" in response.text
    assert Incident.get_by_id(web.desk.id).status == "new"
    assert Inbound.get_or_none(Inbound.id == web.inbound.id) is not None
    response = web.client().post("/login", data={"name": "admin", "password": PASSWORD})
    assert response.status_code == 400


def test_session_cookie_flags(store):
    web = Web(store, web={"host": "127.0.0.1", "port": 0, "secure_cookies": True})
    client = web.app.test_client()
    token = csrf_token(client, "/login")
    response = client.post("/login", data={"name": "admin", "password": PASSWORD, "csrf_token": token})
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("inlet_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


def test_security_headers_on_every_response(web):
    for client, path in ((web.client(), "/status"), (web.client("admin"), f"/incidents/{web.desk.ref}")):
        headers = client.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "same-origin"


def test_static_files_are_cacheable_and_carry_the_security_headers(web):
    response = web.client().get("/static/inlet.css")
    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" not in response.headers.get("Cache-Control", "")
    response.close()
    page = web.client().get("/status")
    assert page.headers["Cache-Control"] == "no-store"
    assert len(page.headers.getlist("Content-Security-Policy")) == 1  # a header a view set is not repeated


def test_pages_have_no_inline_scripts_or_styles(web):
    client = web.client("admin")
    for path in ("/incidents", f"/incidents/{web.desk.ref}", "/users", "/quarantine", "/notifications", "/status"):
        html = client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert "<style" not in html and " style=" not in html, path
        assert not re.search(r"\son[a-z]+=", html), path


def test_login_is_rate_limited(web):
    client = web.app.test_client()
    token = csrf_token(client, "/login")
    for _ in range(web.config.web.login_attempts):
        response = client.post("/login", data={"name": "admin", "password": "wrong", "csrf_token": token})
        assert response.status_code == 401
    response = client.post("/login", data={"name": "admin", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.text


def test_disabled_user_loses_the_session(web):
    client = web.client("desk")
    assert client.get("/incidents").status_code == 200
    User.update(active=False).where(User.name == "desk").execute()
    assert client.get("/incidents").status_code == 302


def test_login_redirects_only_to_local_paths(web):
    cases = [("/incidents/new", "/incidents/new")]
    cases += [(target, "/incidents") for target in ("//evil.example", "https://evil.example/", "/\\evil.example")]
    for target, expected in cases:
        client = web.app.test_client()
        token = csrf_token(client, "/login")
        response = client.post(
            "/login", query_string={"next": target}, data={"name": "desk", "password": PASSWORD, "csrf_token": token}
        )
        assert response.headers["Location"] == expected


def test_secret_key_is_generated_once_and_kept(store, monkeypatch):
    monkeypatch.delenv("INLET_SECRET_KEY", raising=False)
    config = store.config(inlet={"data_dir": str(store.tmp_path / "data")})
    first = create_app(config, build_services(config)).config["SECRET_KEY"]
    assert create_app(config, build_services(config)).config["SECRET_KEY"] == first and len(first) >= 32
    assert (store.tmp_path / "data" / "secret_key").stat().st_mode & 0o077 == 0
    monkeypatch.setenv("INLET_SECRET_KEY", "from-the-environment")
    assert create_app(config, build_services(config)).config["SECRET_KEY"] == "from-the-environment"


# ---------------------------------------------------------------- XSS: outside text renders inert

XSS = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'
JS_LINK = '<a href="javascript:alert(3)">click</a>'


def test_outside_text_renders_inert(web):
    email = (
        'From: "<script>alert(4)</script> Mallory" <mallory@example.org>\r\n'
        "To: desk@example.org\r\n"
        f"Subject: {XSS} subject\r\n"
        "Message-ID: <x1@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nplain body\r\n"
        f"--b\r\nContent-Type: text/html\r\n\r\n<p>hello</p>{XSS}{IMG}{JS_LINK}"
        '<a href="https://ok.example/">fine</a><div style="background:url(x)">styled</div>\r\n--b--\r\n'
    ).encode()
    incident = web.lifecycle.create(
        title=f"{XSS} title",
        description=f"{IMG} description",
        actor="test",
        group="service-desk",
        reporter_email="mallory@example.org",
        reporter_name=f"{XSS} Mallory",
        labels={"alertname": XSS, "instance": JS_LINK, IMG: "value"},
        source="webhook",
    )
    inbound = Inbound.create(source="smtp", received_at=datetime.now(UTC), status="processed", raw=email)
    event = web.lifecycle.note(incident.ref, f"{XSS} <mallory@example.org>", f"{XSS} body {IMG}", inbound=inbound)
    store_email_view(event, parse_email(email, EmailOptions()))  # as the mail pipeline does
    Attachment.create(
        incident=incident,
        event=event,
        filename=f'"><img src=x onerror=alert(5)>{XSS}.html',
        content_type='text/html"><script>alert(6)</script>',
        size=5,
        sha256="0" * 64,
        data=b"<script>alert(7)</script>",
    )
    client = web.client("admin")
    html = client.get(f"/incidents/{incident.ref}").text
    for page in (html, client.get("/incidents").text):
        assert "<script>alert" not in page
        assert "onerror=" not in page.replace("onerror=&#34;", "").replace("onerror=alert(5)&gt;", "")
        assert 'href="javascript:' not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; title" in html  # shown as text, not dropped
    assert "&lt;script&gt;alert(4)&lt;/script&gt; Mallory" in html  # sender name from the email
    assert "<p>hello</p>" in html and 'href="https://ok.example/"' in html  # sanitised HTML keeps structure
    assert "styled" in html and "background:url" not in html
    assert "alertname=&lt;script&gt;" in html  # alert labels
    download = client.get(f"/attachments/{Attachment.get().id}")
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert "<" not in download.headers["Content-Disposition"]
    assert "sandbox" in download.headers["Content-Security-Policy"]


def test_attachment_of_hidden_incident_is_not_served(web):
    row = Attachment.create(
        incident=web.secret,
        filename="evidence.eml",
        content_type="message/rfc822",
        size=3,
        sha256="0" * 64,
        data=b"abc",
    )
    assert web.client("desk").get(f"/attachments/{row.id}").status_code == 404
    assert web.client("sec").get(f"/attachments/{row.id}").data == b"abc"


# ---------------------------------------------------------------- quarantine, notifications, users, status, metrics


class Woken:
    def __init__(self):
        self.count = 0

    def wake(self):
        self.count += 1


def test_quarantine_shows_raw_as_text_reprocesses_and_discards(store):
    web = Web(store)
    services = dataclasses.replace(web.services, pipeline_worker=Woken())  # counts the wakes a reprocess makes
    web.app = create_app(web.config, services)
    client = web.client("admin")
    listing = client.get("/quarantine").text
    assert "ParseError: boom" in listing
    raw = client.get(f"/quarantine/{web.inbound.id}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw and "<script>alert" not in raw
    assert post(client, f"/quarantine/{web.inbound.id}/reprocess").status_code == 303
    assert Inbound.get_by_id(web.inbound.id).status == "pending" and services.pipeline_worker.count == 1
    assert post(client, f"/quarantine/{web.inbound.id}/discard").status_code == 404  # pending: not quarantined
    Inbound.update(status="ignored", reason="auto-reply").where(Inbound.id == web.inbound.id).execute()
    assert "auto-reply" in client.get("/quarantine?status=ignored").text
    assert post(client, f"/quarantine/{web.inbound.id}/discard").status_code == 303
    assert Inbound.get_or_none(Inbound.id == web.inbound.id) is None


def test_failed_notifications_show_errors_and_retry(web):
    client = web.client("admin")
    page = client.get("/notifications").text
    assert "SMTP 550 &lt;b&gt;mailbox unavailable&lt;/b&gt;" in page and web.desk.ref in page
    assert post(client, f"/notifications/{web.notification.id}/retry").status_code == 303
    assert Notification.get_by_id(web.notification.id).status == "pending"
    assert post(client, f"/notifications/{web.notification.id}/retry").status_code == 404
    incident_page = client.get(f"/incidents/{web.desk.ref}").text
    assert "delivery-pending" in incident_page


def test_admin_manages_users(web):
    client = web.client("admin")
    assert post(client, "/users", {"name": "newbie", "role": "viewer", "password": "long enough pw"}).status_code == 303
    newbie = User.get(User.name == "newbie")
    assert newbie.role == "viewer"
    post(client, f"/users/{newbie.id}/role", {"role": "agent"})
    assert User.get_by_id(newbie.id).role == "agent"
    page = post(client, f"/users/{newbie.id}/token").text
    token = re.search(r"<pre>(inl_[^<]+)</pre>", page).group(1)
    assert accounts.user_for_token(token).name == "newbie"
    post(client, f"/users/{newbie.id}/active", {"active": "0"})
    assert not User.get_by_id(newbie.id).active and accounts.user_for_token(token) is None
    admin = User.get(User.name == "admin")
    post(client, f"/users/{admin.id}/active", {"active": "0"})
    assert User.get_by_id(admin.id).active  # not yourself
    response = post(client, "/users", {"name": "gen", "role": "agent"})
    flashed = client.get(response.headers["Location"]).text
    password = re.search(r"their password is (\S+) \(shown once\)", flashed).group(1)
    assert accounts.authenticate("gen", password) is not None
    assert post(web.client("desk"), "/users", {"name": "x", "role": "admin"}).status_code == 403


def test_status_page_shows_public_updates_of_major_incidents_only(web):
    major = web.lifecycle.create(title="Email is down", actor="t", group="service-desk", service="email", major=True)
    web.lifecycle.note(major.ref, "desk", "Internal: the DB admin is on holiday")
    web.lifecycle.note(major.ref, "desk", "We found the cause and are fixing it.", public=True)
    web.lifecycle.assign(major.ref, "desk", assignee="desk")  # the commander
    web.lifecycle.start(major.ref, "desk")
    web.lifecycle.create(title="Hidden breach", actor="t", group="security", service="vpn", major=True, security=True)
    page = web.client().get("/status").text
    assert "email" in page and "Email is down" in page and "identified" in page
    assert "We found the cause" in page
    assert "holiday" not in page and "Hidden breach" not in page and "Printer" not in page
    assert "desk" not in page.replace("service-desk", "")  # no agent names


def test_metrics_in_prometheus_format(web):
    web.lifecycle.acknowledge(web.desk.ref, "desk")
    web.lifecycle.create(title="[DRILL] synthetic", actor="drill", group="service-desk", drill=True)  # never counted
    client = web.client("admin")
    text = client.get("/metrics").text
    assert 'inlet_incidents{priority="P3",status="new"} 1.0' in text
    assert 'inlet_incidents{priority="P3",status="acknowledged"} 1.0' in text
    assert 'inlet_inbound{status="failed"} 1.0' in text
    assert 'inlet_notifications{status="failed"} 1.0' in text
    mtta = float(re.search(r"^inlet_mtta_seconds (\S+)$", text, re.M).group(1))
    assert mtta >= 0.0 and "inlet_mttr_seconds 0.0" in text
    token = accounts.issue_api_token("admin")
    assert web.client().get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_metrics_means(store):
    from gateway.core.clock import FixedClock

    web = Web(store)
    clock = FixedClock(datetime.now(UTC) - timedelta(days=1))  # the means are over the last 30 days
    lifecycle = build_lifecycle(web.config, clock)
    for minutes in (10, 30):
        incident = lifecycle.create(title="t", actor="t")
        clock.advance(minutes=minutes)
        lifecycle.acknowledge(incident.ref, "t")
        clock.advance(hours=1)
        lifecycle.resolve(incident.ref, "t", code="fixed", notes="n", cause="c")
    text = web.client("admin").get("/metrics").text
    assert "inlet_mtta_seconds 1200.0" in text
    assert "inlet_mttr_seconds 4800.0" in text


# ---------------------------------------------------------------- queue


def test_queue_filters_sort_views_and_keyset_pages(web):
    client = web.client("admin")
    for n in range(60):
        web.lifecycle.create(title=f"bulk {n}", actor="t", group="network", impact="low", urgency="low")
    web.lifecycle.assign(web.desk.ref, "admin", assignee="admin")
    first = client.get("/incidents?status=any&sort=newest").text
    assert "bulk 59" in first and "bulk 10" in first and "bulk 9<" not in first
    after = re.search(r'href="(/incidents\?[^"]*after=[^"]+)"', first).group(1).replace("&amp;", "&")
    second = client.get(after).text
    assert "bulk 9<" in second and "bulk 59" not in second and "Printer on fire" in second
    by_priority = client.get("/incidents").text
    assert by_priority.index("Core switch down") < by_priority.index("Printer on fire") < by_priority.index("bulk 59<")
    assert "Printer on fire" in client.get("/incidents?view=mine").text
    assert "Core switch" not in client.get("/incidents?view=mine").text
    assert "Printer on fire" not in client.get("/incidents?view=unassigned").text
    assert "Core switch" not in client.get("/incidents?group=service-desk").text
    assert "Printer on fire" in client.get("/incidents?assignee=admin").text
    assert "Core switch" in client.get("/incidents?priority=P2").text
    assert "No incidents match" in client.get("/incidents?q=nothing%25like_this").text
    assert "Core switch" in client.get("/incidents?q=SWITCH").text
    rows = client.get("/incidents", headers={"HX-Request": "true"})
    assert rows.text.lstrip().startswith('<div id="rows"') and "HX-Request" in rows.headers["Vary"]
    restore = client.get("/incidents", headers={"HX-Request": "true", "HX-History-Restore-Request": "true"})
    assert restore.text.startswith("<!doctype html>")
    assert client.get("/incidents?sort=sideways").status_code == 302
    assert client.get("/incidents?sort=priority&after=bogus").status_code == 302


def test_queue_shows_sla_time_left_and_priority_colours(web):
    html = web.client("admin").get("/incidents").text
    assert 'class="prio prio-P2"' in html and 'class="prio prio-P3"' in html
    assert re.search(
        r'class="sla sla-(ok|soon|overdue)" datetime="[^"]+Z" title="due [^"]+">[^<]+ (left|overdue)', html
    )


def test_export_csv_follows_filters_and_visibility(web):
    web.lifecycle.create(title='=HYPERLINK("http://evil.example")', actor="t", group="network")
    for user, sees in (("desk", False), ("sec", True)):
        response = web.client(user).get("/incidents/export.csv?status=any&sort=oldest")
        assert response.headers["Content-Disposition"] == "attachment; filename=incidents.csv"
        lines = response.text.splitlines()
        assert lines[0].startswith("ref,title,status,priority")
        assert lines[1].startswith("INC-1,Printer on fire,new,P3")
        assert ("Phishing wave" in response.text) is sees
        assert "'=HYPERLINK" in response.text  # never a formula in a spreadsheet
    network = web.client("admin").get("/incidents/export.csv?group=network").text.splitlines()
    assert len(network) == 3 and all(",network," in line for line in network[1:])
    assert web.client("admin").get("/incidents/export.csv?sort=sideways").status_code == 400


def test_api_errors_are_json_outside_the_blueprint_too(web):
    client = web.client()
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    wrong = client.delete("/api/v1/openapi.json")
    assert wrong.status_code == 405 and wrong.get_json()["error"]["code"] == "method_not_allowed"


def test_configuration_view_hides_secrets(store):
    groups = [dict(GROUPS[0], channels=["slack://T0/B0/secret-token", "ops-tag"]), *GROUPS[1:]]
    web = Web(store, groups)
    page = web.client("admin").get("/configuration").text
    assert "slack://…" in page and "ops-tag" in page and "secret-token" not in page
    assert "desk" in page and "P1" in page


ADMIN_POSTS = [
    "/quarantine/{inbound}/reprocess",
    "/quarantine/{inbound}/discard",
    "/notifications/{notification}/retry",
    "/users",
    "/users/{user}/role",
    "/users/{user}/active",
    "/users/{user}/token",
    "/users/{user}/groups",
    "/users/{user}/password",
]


@pytest.mark.parametrize("path", ADMIN_POSTS)
def test_admin_forms_are_refused_to_everyone_else(web, path):
    url = path.format(inbound=web.inbound.id, notification=web.notification.id, user=User.get(User.name == "view").id)
    data = {"role": "admin", "active": "0", "name": "intruder"}
    for user in ("view", "desk", "sec"):
        assert post(web.client(user), url, data).status_code == 403, (url, user)
    response = post(web.client(), url, data)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert User.get(User.name == "view").role == "viewer" and User.get_or_none(User.name == "intruder") is None
    assert Inbound.get_by_id(web.inbound.id).status == "failed"
    assert Notification.get_by_id(web.notification.id).status == "failed"
