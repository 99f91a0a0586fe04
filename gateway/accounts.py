"""Users of the web UI and API: creation, the password rule, password and API-token checks, sessions,
and each user's own paging channels.

Every surface that creates a user or sets a password (CLI, web UI, API)
calls :func:`create_user` or :func:`set_password`; the password rule lives in
:func:`check_password` alone, so no surface can skip it.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

import peewee
from werkzeug.security import check_password_hash, generate_password_hash

from gateway.core.errors import Conflict, InletError, NotFound
from notifiers.apprise_adapter import masked, sendable
from store.db import db
from store.models import ROLES, User

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1000  # hashing cost grows with the length
MAX_CHANNELS = 10  # a user's own paging channels
MAX_CHANNEL_LENGTH = 2000
# The most common passwords of breach lists that are long enough to pass the length rule, and the
# patterns people build them from; compared case-insensitively and without spaces, digits and marks.
_COMMON = frozenset(
    [
        "password",
        "passwords",
        "passw0rd",
        "letmein",
        "welcome",
        "iloveyou",
        "qwerty",
        "qwertyuiop",
        "qwertyuiopasdfghjkl",
        "asdfghjkl",
        "abcdefghij",
        "abcdefghijk",
        "abcdefghijkl",
        "zxcvbnm",
        "trustno",
        "football",
        "baseball",
        "basketball",
        "superman",
        "batman",
        "princess",
        "sunshine",
        "starwars",
        "dragon",
        "monkey",
        "shadow",
        "master",
        "michael",
        "jennifer",
        "jordan",
        "hunter",
        "changeme",
        "secret",
        "administrator",
        "admin",
        "root",
        "login",
        "default",
        "inlet",
        "incident",
        "helpdesk",
        "servicedesk",
        "summer",
        "winter",
        "spring",
        "autumn",
        "monday",
    ]
)


class WeakPassword(InletError):
    """A password the rule refuses; the message says why."""


def check_password(password: str, name: str = "") -> None:
    """Raise WeakPassword unless ``password`` follows the rule: 10–1000 characters, not a common password,
    not the user name with digits or marks around it, not just digits, at least 4 different characters."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    core = "".join(c for c in password.lower() if c.isalpha())
    if len(set(password)) < 4 or not core or core in _COMMON or core == name.lower():
        raise WeakPassword("this password is too common or too easy to guess (or is the user name)")


def create_user(name: str, role: str, password: str, *, email: str = "") -> User:
    """Create a user with a hashed password; WeakPassword if it breaks the rule, Conflict if the name is taken."""
    name = name.strip()
    if not name or len(name) > 100 or any(c.isspace() for c in name):
        raise InletError(f"invalid user name {name!r}: 1-100 characters, no spaces")
    if role not in ROLES:
        raise InletError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
    check_password(password, name)
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


def set_password(name: str, password: str) -> User:
    """Give the user a new password (the rule applies) and end every session they have."""
    user = User.get_or_none(User.name == name)
    if user is None:
        raise NotFound(f"no user {name!r}")
    check_password(password, user.name)
    with db.atomic():
        User.update(password_hash=generate_password_hash(password), session_version=User.session_version + 1).where(
            User.id == user.id
        ).execute()
    return User.get_by_id(user.id)


def check_channels(urls) -> list[str]:
    """A user's paging channels as they are stored: stripped, blanks and repeats dropped; InletError when one is
    not an Apprise URL this Inlet can send to. The message shows an URL only masked (it may hold a token)."""
    cleaned = []
    for position, url in enumerate((u.strip() for u in urls), 1):
        if not url or url in cleaned:
            continue
        if len(url) > MAX_CHANNEL_LENGTH or not sendable(url):
            shown = masked(url) if "://" in url else "(no scheme://)"
            raise InletError(
                f"channel {position} ({shown}) is not an Apprise URL Inlet can send to, "
                "e.g. ntfy://ntfy.sh/TOPIC or json://host/path"
            )
        cleaned.append(url)
    if len(cleaned) > MAX_CHANNELS:
        raise InletError(f"a user has at most {MAX_CHANNELS} channels")
    return cleaned


def set_channels(name: str, urls) -> User:
    """Replace the user's own paging channels (an empty list clears them); see :func:`check_channels`."""
    user = User.get_or_none(User.name == name)
    if user is None:
        raise NotFound(f"no user {name!r}")
    channels = check_channels(urls)
    with db.atomic():
        User.update(channels=channels).where(User.id == user.id).execute()
    return User.get_by_id(user.id)


def end_sessions(user_id: int) -> None:
    """Invalidate every signed-in session of the user (the session cookie names a session version)."""
    with db.atomic():
        User.update(session_version=User.session_version + 1).where(User.id == user_id).execute()


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
