"""Users (admin): add, change role, disable or enable, issue an API token (shown once)."""

from __future__ import annotations

import secrets

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from gateway import accounts
from gateway.errors import InletError
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
    return render_template("users.html", users=users, roles=ROLES, groups=groups, token=None)


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
    return render_template("users.html", users=users, roles=ROLES, groups=groups, token=(user.name, value))
