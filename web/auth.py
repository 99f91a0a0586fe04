"""Sign-in (Flask-Login sessions), the login rate limit, roles and who may see or change what.

A session names the user *and* their session version (``"<id>.<version>"``);
logout and a new password raise the version, so every earlier session cookie,
even a copied one replayed later, is refused by the loader (the login page).

Roles: ``admin`` (everything), ``agent`` (works the incidents of the groups
they are a member of: gateway/membership.py), ``viewer`` (reads). Security
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

from gateway import accounts, membership
from gateway.core.errors import InletError
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
        self.id = f"{user.id}.{user.session_version}"  # what the session cookie holds (see the module doc)
        self.name = user.name
        self.role = user.role
        self.groups = membership.groups_of(user.name)  # the database: a membership counts at the next request
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
def _load(session_id: str):
    """The user of a session, if it is still valid: active and at the session version it was signed in at."""
    user_id, _, version = (session_id or "").partition(".")
    if not (_whole(user_id) and _whole(version)):
        return None
    user = User.get_or_none(User.id == int(user_id))
    if user is None or not user.active or user.session_version != int(version):
        return None
    return SessionUser(user, current_app.config["INLET"])


def _whole(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18


def visible(query, user: SessionUser):
    """``query`` over Incident restricted to what ``user`` may see."""
    if user.sees_security:
        return query
    return query.where(Incident.security == False)  # noqa: E712


RESTRICTED = "(restricted)"


def hidden_refs(events, user: SessionUser) -> set[str]:
    """The references that ``linked`` events name but ``user`` may not see (shown as RESTRICTED)."""
    refs = {e.new for e in events if e.type == "linked" and e.new}
    if not refs or user.sees_security:
        return set()
    hidden = Incident.select(Incident.ref).where(Incident.ref.in_(refs) & (Incident.security == True))  # noqa: E712
    return {i.ref for i in hidden}


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
    """At most ``attempts`` failures per key within ``window`` seconds (in memory, per process).

    Sign-in keys failures on the user name and on the client address separately:
    guessing one user's password from many addresses and guessing many users'
    passwords from one address are both stopped. A success clears only the
    user name's counter — never the address's, so a guesser who owns one
    account cannot reset the limit by signing in to it between guesses.
    """

    def __init__(self, attempts: int, window: float, clock=time.monotonic):
        self.attempts, self.window, self.clock = attempts, window, clock
        self._failures: dict[str, deque] = {}
        self._swept_at = float("-inf")
        self._lock = threading.Lock()

    def blocked(self, *keys: str) -> bool:
        now = self.clock()
        with self._lock:
            return any(len(self._recent(key, now)) >= self.attempts for key in keys)

    MAX_KEYS = 10_000  # beyond it, keys with no failure left in the window are dropped (a flood of names)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)
            if len(self._failures) > self.MAX_KEYS and now - self._swept_at > 1.0:  # at most once a second
                self._swept_at = now
                for key in [k for k in self._failures if not self._recent(k, now)]:
                    del self._failures[key]

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
        # request.remote_addr is the client address as the server decided it ([web] trusted_proxy)
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
            limiter.succeeded(keys[1])
            login_user(SessionUser(user, current_app.config["INLET"]))
            return redirect(_safe_next(request.args.get("next")))
        return render_template("login.html", name=name), status
    return render_template("login.html", name="")


@bp.post("/logout")
def logout():
    """Sign out: the user's session version moves on, so no copy of this session cookie works again."""
    if current_user.is_authenticated:
        accounts.end_sessions(current_user.row.id)
    logout_user()
    return redirect(url_for("auth.login"))


@bp.route("/password", methods=["GET", "POST"])
@flask_login.login_required
def password():
    """Change one's own password (the current one is asked again); every session ends, this one signs in anew."""
    status = 200
    if request.method == "POST":
        form = request.form
        limiter, key = _limiter(), f"name:{current_user.name.lower()}"
        if limiter.blocked(key):
            flash("Too many failed attempts; wait a few minutes and try again.", "error")
            return render_template("password.html"), 429
        if accounts.authenticate(current_user.name, form.get("current", "")) is None:
            limiter.failed(key)
            flash("The current password is wrong.", "error")
            return render_template("password.html"), 400
        if form.get("new", "") != form.get("repeat", ""):
            flash("The two new passwords differ.", "error")
            return render_template("password.html"), 400
        try:
            user = accounts.set_password(current_user.name, form.get("new", ""), current_user.name)
        except InletError as exc:
            flash(str(exc), "error")
            status = 400
        else:
            login_user(SessionUser(user, current_app.config["INLET"]))
            flash("Password changed; your other sessions are signed out.", "ok")
            return redirect(url_for("incidents.queue"), 303)
    return render_template("password.html"), status


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
