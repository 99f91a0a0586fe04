"""Flask application factory: ``create_app(config, services)``.

One blueprint per area (web/auth.py, incidents.py, quarantine.py,
notifications.py, users.py, status.py, api.py, metrics.py). Every form is
CSRF-protected (Flask-WTF); the token-authenticated API and the webhook
blueprint (``hooks``) are exempt. Every response carries the security headers.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import peewee
from flask import Flask, jsonify, render_template, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from playhouse.pool import MaxConnectionsExceeded

from gateway.config.loader import Config
from gateway.core.errors import SchemaOutdated, StoreUnavailable
from gateway.core.keys import local_secret
from gateway.intake import mailbox_status
from store.db import db
from store.migrations import require_latest
from web import (
    api,
    auth,
    configuration,
    heartbeat_page,
    hooks,
    incidents,
    metrics,
    notifications,
    oncall,
    problems,
    quarantine,
    reporter,
    reports,
    status,
    users,
)
from web.api import error
from web.filters import init_app as init_render

# No inline scripts or styles anywhere: every script and stylesheet is a static file.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

csrf = CSRFProtect()
log = logging.getLogger("inlet.web")


def create_app(config: Config, services) -> Flask:
    """Build the app for ``config`` on the ``services`` of its process (gateway/service.py ``build_services``:
    the lifecycle, the intake writer, the pipeline worker); the app builds none of them itself."""
    app = Flask(__name__)
    app.wsgi_app = SecurityHeaders(app.wsgi_app)
    app.session_interface = SessionInterface()
    app.config["INLET"] = config
    app.config["SERVICES"] = services
    app.config.update(
        MAX_CONTENT_LENGTH=config.web.max_body_size,
        SECRET_KEY=secret_key(config),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.web.secure_cookies,
        SESSION_COOKIE_NAME="inlet_session",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=config.web.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
    )

    @app.before_request
    def _connect():
        # Webhook intake stores through the writer thread: no connection (≈1 ms on SQLite) per request.
        if request.blueprint != "hooks" and request.endpoint != "readyz":  # /readyz says itself what fails
            db.connect(reuse_if_open=True)

    @app.teardown_request
    def _close(exc):
        if not db.is_closed():
            db.close()

    # Webhooks: machines authenticated per request by token or signature, not browser sessions.
    hooks.init_app(app, services)

    @app.get("/healthz")
    def healthz():
        db.execute_sql("SELECT 1")
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz():
        """200 when the database answers and its schema is the one this Inlet needs; 503 saying what fails.

        The state of each ``[[mailbox]]`` poller is reported (``mailboxes``, and ``warnings`` in words) but does
        not fail readiness: this process can serve while an IMAP server is down, and a restart would not help."""
        checks = readiness()
        ready = all(value == "ok" for value in checks.values())
        body = {"status": "ready" if ready else "not ready", "checks": checks, "mailboxes": [], "warnings": []}
        if checks["database"] == "ok":
            config = app.config["INLET"]
            try:
                found = mailbox_status.states(config)
            except (peewee.PeeweeException, MaxConnectionsExceeded, StoreUnavailable) as exc:
                log.warning("readyz: mailbox states unreadable: %s", exc)
                found = []
            body["mailboxes"] = [s.as_json() for s in found]
            body["warnings"] = [f"mailbox {s.name}: {s.summary()}" for s in found if s.status == mailbox_status.FAILING]
        response = jsonify(body)
        response.status_code = 200 if ready else 503
        return response

    csrf.init_app(app)
    init_render(app)
    auth.init_app(app)
    for module in (
        auth,
        incidents,
        problems,
        quarantine,
        notifications,
        users,
        configuration,
        oncall,
        heartbeat_page,
        status,
        metrics,
        api,
        reports,
        reporter,
    ):
        app.register_blueprint(module.bp)
    csrf.exempt(api.bp)
    csrf.exempt(hooks.bp)  # the webhook blueprint authenticates each request itself

    @app.errorhandler(CSRFError)
    def _csrf_error(exc):
        return render_template(
            "error.html", code=400, message=f"The form expired or was forged: {exc.description}"
        ), 400

    errors = ((400, "Bad request."), (403, "You may not do this."), (404, "Not found."), (405, "Method not allowed."))
    errors += ((500, "Something went wrong on our side; it has been logged."),)
    for code, message in errors:
        app.register_error_handler(code, _page_error(code, message))
    return app


def readiness() -> dict[str, str]:
    """``{"database": …, "schema": …}``, each "ok" or what is wrong (no host, user or password: the answer is
    public; the log has the driver's message)."""
    checks = {"database": "ok", "schema": "ok"}
    try:
        require_latest()
    except SchemaOutdated as exc:
        checks["schema"] = str(exc)
    except (peewee.PeeweeException, MaxConnectionsExceeded, StoreUnavailable) as exc:
        log.warning("readyz: database unreachable: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
        checks["database"] = f"unreachable ({type(exc).__name__})"
        checks["schema"] = "unknown: the database is unreachable"
    return checks


class SecurityHeaders:
    """WSGI middleware: every response carries SECURITY_HEADERS, and all but static files ``no-store``.

    Appended to the raw header list as the response starts: on the webhook path, werkzeug's
    per-header ``setdefault`` in an ``after_request`` cost as much as authenticating the request.
    """

    _page = tuple(SECURITY_HEADERS.items()) + (("Cache-Control", "no-store"),)
    _static = tuple(SECURITY_HEADERS.items())

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        defaults = self._static if environ.get("PATH_INFO", "").startswith("/static/") else self._page

        def start(status, headers, exc_info=None):
            present = {name.lower() for name, _value in headers}
            headers.extend(header for header in defaults if header[0].lower() not in present)
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


class SessionInterface(SecureCookieSessionInterface):
    """Signed-cookie sessions for people; none for machines on ``/hooks/``, which authenticate each request.

    The signing serializer is built once per key, not per request.
    """

    def __init__(self):
        self._serializer = (None, None)  # (key, serializer) of the last key seen

    def get_signing_serializer(self, app):
        key = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        known, serializer = self._serializer
        if known != key:
            serializer = super().get_signing_serializer(app)
            self._serializer = (key, serializer)
        return serializer

    def open_session(self, app, request):
        if request.path.startswith("/hooks/"):
            return None  # Flask then uses a null session, and saves nothing
        return super().open_session(app, request)


def _page_error(code: int, message: str):
    def handler(exc):
        if request.path.startswith(("/api/", "/hooks/")):
            codes = {400: "invalid", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 500: "internal"}
            return error(code, codes[code], message)
        return render_template("error.html", code=code, message=message), code

    return handler


def secret_key(config: Config) -> str:
    """The session signing key: from the configured environment variable, else generated once into data_dir."""
    return local_secret(config, config.web.secret_key_env, "secret_key")
