"""Users (admin): the list and each user's page — add, change role, groups, disable or enable, set a password,
issue an API token (shown once), set a user's paging channels, and the log of changes to the account; and every
signed-in user's own paging channels (on their account page, web/templates/password.html).

Channels are Apprise URLs, which may hold tokens: the Users page shows them only masked
(:func:`notifiers.apprise_adapter.masked`); unmasked only to their owner and to an admin on the form editing them.
"""

from __future__ import annotations

import secrets

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from gateway import accounts, membership
from gateway.core.errors import InletError
from notifiers.apprise_adapter import masked
from store.models import ROLES, User
from web.auth import role_required

bp = Blueprint("users", __name__)
CHANGE_LABELS = {  # gateway/accounts.py record() actions, as the user's page words them
    "created": "account created",
    "role": "role changed",
    "password": "password set",
    "disabled": "disabled",
    "enabled": "enabled",
    "group-added": "joined group",
    "group-removed": "left group",
    "token": "API token",
    "channels": "paging channels",
}


@bp.get("/users")
@role_required("admin")
def index():
    groups: dict[str, list[str]] = {}
    for group, rows in membership.table().items():
        for row in rows:
            groups.setdefault(row.user, []).append(group)
    users = list(User.select().order_by(User.name))
    return render_template("users.html", users=users, roles=ROLES, groups=groups, masked=masked)


@bp.post("/users")
@role_required("admin")
def add():
    form = request.form
    password = form.get("password", "")
    generated = not password
    if generated:
        password = secrets.token_urlsafe(12)
    try:  # the password rule is the core's (accounts.check_password), the same for the CLI
        user = accounts.create_user(
            form.get("name", ""), form.get("role", ""), password, email=form.get("email", ""), actor=current_user.name
        )
    except InletError as exc:
        flash(str(exc), "error")
        return redirect(url_for("users.index"), 303)
    if generated:
        flash(f"Created {user.name}; their password is {password} (shown once).", "ok")
    else:
        flash(f"Created {user.name}.", "ok")
    return redirect(url_for("users.show", user_id=user.id), 303)


def _user(user_id: int) -> User:
    user = User.get_or_none(User.id == user_id)
    if user is None:
        abort(404)
    return user


@bp.get("/users/<int:user_id>")
@role_required("admin")
def show(user_id: int, token: str | None = None):
    """One user: role, state, groups, password, API token, channels, and the log of changes to the account."""
    user = _user(user_id)
    config = current_app.config["INLET"]
    rows = {r.group: r for rows in membership.table().values() for r in rows if r.user == user.name}
    return render_template(
        "user.html",
        user=user,
        roles=ROLES,
        groups=config.group,
        memberships=rows,
        history=accounts.history(user.name),
        labels=CHANGE_LABELS,
        token=token,
        masked=masked,
        config_path=config.path,
    )


def _change(user: User, done: str, change) -> object:
    """Run ``change`` (a call into gateway/accounts.py or membership.py); flash what happened or why not."""
    try:
        change()
    except InletError as exc:
        flash(str(exc), "error")
    else:
        flash(done, "ok")
    return redirect(url_for("users.show", user_id=user.id), 303)


@bp.post("/users/<int:user_id>/role")
@role_required("admin")
def role(user_id: int):
    user = _user(user_id)
    new_role = request.form.get("role", "")
    return _change(
        user, f"{user.name} is now {new_role}.", lambda: accounts.set_role(user.name, new_role, current_user.name)
    )


@bp.post("/users/<int:user_id>/active")
@role_required("admin")
def active(user_id: int):
    user = _user(user_id)
    enable = request.form.get("active") == "1"
    done = (
        f"{user.name} enabled." if enable else f"{user.name} disabled: their sessions ended, their API token refused."
    )
    return _change(user, done, lambda: accounts.set_active(user.name, enable, current_user.name))


@bp.post("/users/<int:user_id>/groups")
@role_required("admin")
def groups(user_id: int):
    """Add the user to a group or remove them (``action`` add|remove): counts at their next request."""
    user = _user(user_id)
    config, group = current_app.config["INLET"], request.form.get("group", "")
    if request.form.get("action") == "remove":
        return _change(
            user,
            f"{user.name} left {group}.",
            lambda: membership.remove_member(config, group, user.name, current_user.name),
        )
    return _change(
        user, f"{user.name} joined {group}.", lambda: membership.add_member(config, group, user.name, current_user.name)
    )


@bp.post("/users/<int:user_id>/password")
@role_required("admin")
def set_password(user_id: int):
    """A new password for the user (empty: generated, shown once); their sessions end."""
    user = _user(user_id)
    password = request.form.get("password", "")
    generated = not password
    if generated:
        password = secrets.token_urlsafe(12)
    shown = f"; their password is {password} (shown once)" if generated else ""
    return _change(
        user,
        f"New password for {user.name}{shown}. Their sessions are signed out.",
        lambda: accounts.set_password(user.name, password, current_user.name),
    )


@bp.post("/users/<int:user_id>/token")
@role_required("admin")
def token(user_id: int):
    """A new API token for the user, shown once on their page (only its hash is kept)."""
    user = _user(user_id)
    value = accounts.issue_api_token(user.name, current_user.name)
    return show(user.id, token=value)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@bp.route("/users/<int:user_id>/channels", methods=["GET", "POST"])
@role_required("admin")
def channels(user_id: int):
    """An admin edits a user's paging channels (the form shows them unmasked, to the admin editing them)."""
    user = _user(user_id)
    text, status = "\n".join(user.channels or []), 200
    if request.method == "POST":
        text = request.form.get("channels", "")
        try:
            accounts.set_channels(user.name, _lines(text), current_user.name)
        except InletError as exc:
            flash(str(exc), "error")
            status = 400
        else:
            flash(f"Channels of {user.name} saved.", "ok")
            return redirect(url_for("users.show", user_id=user.id), 303)
    return render_template("user_channels.html", user=user, text=text), status


@bp.post("/account/channels")
@login_required
def own_channels():
    """Every signed-in user sets their own paging channels (account page); an invalid URL is refused with why."""
    text = request.form.get("channels", "")
    try:
        accounts.set_channels(current_user.name, _lines(text), current_user.name)
    except InletError as exc:
        flash(str(exc), "error")
        return render_template("password.html", channels_text=text), 400
    flash("Your paging channels are saved.", "ok")
    return redirect(url_for("auth.password"), 303)
