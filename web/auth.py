"""Sign-in (Flask-Login sessions), the login rate limit, roles and who may see or change what.

Roles: ``admin`` (everything), ``agent`` (works the incidents of the groups
that list them in ``[[group]] members``), ``viewer`` (reads). Security
incidents are visible only to admins and members of ``web.security_group``;
every list, count, search, export and API answer goes through
:func:`visible`, so none can leak one.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from functools import wraps
from urllib.parse import urlsplit

import flask_login
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from gateway import accounts
from store.models import Incident, User

bp = Blueprint("auth", __name__)
login_manager = flask_login.LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please sign in."
login_manager.session_protection = "strong"


class SessionUser(flask_login.UserMixin):
    """The signed-in user as the web layer sees it: the row plus its groups from the configuration."""

    def __init__(self, user: User, config):
        self.row = user
        self.id = str(user.id)
        self.name = user.name
        self.role = user.role
        self.groups = frozenset(g.name for g in config.group if user.name in g.members)
        self.sees_security = user.role == "admin" or config.web.security_group in self.groups

    @property
    def is_active(self) -> bool:
        return self.row.active

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def can_act(self, incident: Incident) -> bool:
        """May change this incident: admins always, agents on their groups' incidents."""
        if self.role == "admin":
            return True
        return self.role == "agent" and incident.group in self.groups and self.can_see(incident)

    def can_create(self) -> bool:
        return self.role in ("admin", "agent")

    def can_see(self, incident: Incident) -> bool:
        return self.sees_security or not incident.security


def init_app(app) -> None:
    login_manager.init_app(app)


@login_manager.user_loader
def _load(user_id: str):
    user = User.get_or_none(User.id == int(user_id)) if user_id.isdigit() else None
    if user is None or not user.active:
        return None
    return SessionUser(user, current_app.config["INLET"])


def visible(query, user: SessionUser):
    """``query`` over Incident restricted to what ``user`` may see."""
    if user.sees_security:
        return query
    return query.where(Incident.security == False)  # noqa: E712


def role_required(*roles: str):
    """A view for signed-in users with one of ``roles``; others get 403, anonymous users the login page."""

    def decorate(view):
        @wraps(view)
        @flask_login.login_required
        def wrapped(*args, **kwargs):
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorate


class LoginLimiter:
    """At most ``attempts`` failures per key within ``window`` seconds (in memory, per process)."""

    def __init__(self, attempts: int, window: float, clock=time.monotonic):
        self.attempts, self.window, self.clock = attempts, window, clock
        self._failures: dict[str, deque] = {}
        self._lock = threading.Lock()

    def blocked(self, *keys: str) -> bool:
        now = self.clock()
        with self._lock:
            return any(len(self._recent(key, now)) >= self.attempts for key in keys)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> deque:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures


def _limiter() -> LoginLimiter:
    app = current_app
    limiter = app.extensions.get("inlet_login_limiter")
    if limiter is None:
        web = app.config["INLET"].web
        limiter = app.extensions["inlet_login_limiter"] = LoginLimiter(
            web.login_attempts, web.login_window.total_seconds()
        )
    return limiter


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("incidents.queue"))
    status = 200
    if request.method == "POST":
        name = request.form.get("name", "").replace("\x00", "").strip()[:100]
        keys = (f"addr:{request.remote_addr}", f"name:{name.lower()}")
        limiter = _limiter()
        if limiter.blocked(*keys):
            flash("Too many failed sign-ins; wait a few minutes and try again.", "error")
            return render_template("login.html", name=name), 429
        user = accounts.authenticate(name, request.form.get("password", ""))
        if user is None:
            limiter.failed(*keys)
            flash("Wrong user name or password.", "error")
            status = 401
        else:
            limiter.succeeded(*keys)
            login_user(SessionUser(user, current_app.config["INLET"]))
            return redirect(_safe_next(request.args.get("next")))
        return render_template("login.html", name=name), status
    return render_template("login.html", name="")


@bp.post("/logout")
def logout():
    logout_user()
    return redirect(url_for("auth.login"))


def _safe_next(target: str | None) -> str:
    """Only a local path: never redirect a signed-in user to another site."""
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and not urlsplit(target).netloc
    ):
        return target
    return url_for("incidents.queue")
