"""Users of the web UI and API: creation, password and API-token checks."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

import peewee
from werkzeug.security import check_password_hash, generate_password_hash

from gateway.errors import Conflict, InletError, NotFound
from store.db import db
from store.models import ROLES, User


def create_user(name: str, role: str, password: str, *, email: str = "") -> User:
    """Create a user with a hashed password; Conflict if the name is taken."""
    name = name.strip()
    if not name or len(name) > 100 or any(c.isspace() for c in name):
        raise InletError(f"invalid user name {name!r}: 1-100 characters, no spaces")
    if role not in ROLES:
        raise InletError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
    try:
        with db.atomic():
            return User.create(
                name=name,
                role=role,
                email=email,
                password_hash=generate_password_hash(password),
                created_at=datetime.now(UTC),
            )
    except peewee.IntegrityError:
        raise Conflict(f"user {name!r} exists already") from None


def has_admin() -> bool:
    return User.select().where(User.role == "admin", User.active == True).exists()  # noqa: E712


def authenticate(name: str, password: str) -> User | None:
    """The active user with this name and password, else None (same cost either way)."""
    user = User.get_or_none(User.name == name)
    if user is None or not user.active:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


def issue_api_token(name: str) -> str:
    """A new API token for the user (only its hash is stored); replaces the old one."""
    user = User.get_or_none(User.name == name)
    if user is None:
        raise NotFound(f"no user {name!r}")
    token = "inl_" + secrets.token_urlsafe(32)
    user.api_token_hash = _token_hash(token)
    user.save()
    return token


def user_for_token(token: str) -> User | None:
    if not token:
        return None
    return User.get_or_none((User.api_token_hash == _token_hash(token)) & (User.active == True))  # noqa: E712


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_DUMMY_HASH = generate_password_hash("not a password")
