"""Users (admin): add, change role, disable or enable, issue an API token (shown once), set a user's paging
channels; and every signed-in user's own paging channels (on their account page, web/templates/password.html).

Channels are Apprise URLs, which may hold tokens: the Users page shows them only masked
(:func:`notifiers.apprise_adapter.masked`); unmasked only to their owner and to an admin on the form editing them.
"""

from __future__ import annotations

import secrets

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from gateway import accounts
from gateway.core.errors import InletError
from notifiers.apprise_adapter import masked
from store.db import db
from store.models import ROLES, User
from web.auth import role_required

bp = Blueprint("users", __name__)


@bp.get("/users")
@role_required("admin")
def index():
    config = current_app.config["INLET"]
    groups = {}
    for g in config.group:
        for member in g.members:
            groups.setdefault(member, []).append(g.name)
    users = list(User.select().order_by(User.name))
    return render_template("users.html", users=users, roles=ROLES, groups=groups, token=None, masked=masked)


@bp.post("/users")
@role_required("admin")
def add():
    form = request.form
    password = form.get("password", "")
    generated = not password
    if generated:
        password = secrets.token_urlsafe(12)
    try:  # the password rule is the core's (accounts.check_password), the same for the CLI
        user = accounts.create_user(form.get("name", ""), form.get("role", ""), password, email=form.get("email", ""))
    except InletError as exc:
        flash(str(exc), "error")
        return redirect(url_for("users.index"), 303)
    if generated:
        flash(f"Created {user.name}; their password is {password} (shown once).", "ok")
    else:
        flash(f"Created {user.name}.", "ok")
    return redirect(url_for("users.index"), 303)


def _user(user_id: int) -> User:
    user = User.get_or_none(User.id == user_id)
    if user is None:
        abort(404)
    return user


@bp.post("/users/<int:user_id>/role")
@role_required("admin")
def role(user_id: int):
    user = _user(user_id)
    new_role = request.form.get("role", "")
    if new_role not in ROLES:
        flash(f"role must be one of {', '.join(ROLES)}", "error")
    elif user.name == current_user.name and new_role != "admin":
        flash("You cannot take away your own admin role.", "error")
    else:
        with db.atomic():
            User.update(role=new_role).where(User.id == user.id).execute()
        flash(f"{user.name} is now {new_role}.", "ok")
    return redirect(url_for("users.index"), 303)


@bp.post("/users/<int:user_id>/active")
@role_required("admin")
def active(user_id: int):
    user = _user(user_id)
    enable = request.form.get("active") == "1"
    if user.name == current_user.name and not enable:
        flash("You cannot disable yourself.", "error")
    else:
        with db.atomic():
            User.update(active=enable).where(User.id == user.id).execute()
        flash(f"{user.name} {'enabled' if enable else 'disabled'}.", "ok")
    return redirect(url_for("users.index"), 303)


@bp.post("/users/<int:user_id>/password")
@role_required("admin")
def set_password(user_id: int):
    """A new password for the user (empty: generated, shown once); their sessions end."""
    user = _user(user_id)
    password = request.form.get("password", "")
    generated = not password
    if generated:
        password = secrets.token_urlsafe(12)
    try:
        accounts.set_password(user.name, password)
    except InletError as exc:
        flash(str(exc), "error")
    else:
        shown = f"; their password is {password} (shown once)" if generated else ""
        flash(f"New password for {user.name}{shown}. Their sessions are signed out.", "ok")
    return redirect(url_for("users.index"), 303)


@bp.post("/users/<int:user_id>/token")
@role_required("admin")
def token(user_id: int):
    """A new API token for the user, shown once on this page (only its hash is kept)."""
    user = _user(user_id)
    with db.atomic():
        value = accounts.issue_api_token(user.name)
    config = current_app.config["INLET"]
    groups = {}
    for g in config.group:
        for member in g.members:
            groups.setdefault(member, []).append(g.name)
    users = list(User.select().order_by(User.name))
    return render_template(
        "users.html", users=users, roles=ROLES, groups=groups, token=(user.name, value), masked=masked
    )


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
            accounts.set_channels(user.name, _lines(text))
        except InletError as exc:
            flash(str(exc), "error")
            status = 400
        else:
            flash(f"Channels of {user.name} saved.", "ok")
            return redirect(url_for("users.index"), 303)
    return render_template("user_channels.html", user=user, text=text), status


@bp.post("/account/channels")
@login_required
def own_channels():
    """Every signed-in user sets their own paging channels (account page); an invalid URL is refused with why."""
    text = request.form.get("channels", "")
    try:
        accounts.set_channels(current_user.name, _lines(text))
    except InletError as exc:
        flash(str(exc), "error")
        return render_template("password.html", channels_text=text), 400
    flash("Your paging channels are saved.", "ok")
    return redirect(url_for("auth.password"), 303)
