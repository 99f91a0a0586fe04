"""Users of the web UI and API: creation, the password rule, password and API-token checks, sessions,
roles, disabling, each user's own paging channels, who may be assigned an incident, and the account log.

Every surface that creates a user or changes one (CLI, web UI, API) calls the functions here; the
password rule lives in :func:`check_password` alone, so no surface can skip it. Every change is written
to the account log (:func:`record`, table ``account_event``: who, when, what), shown on the user's page.
A new password or disabling ends every session of the user; a disabled user's API token is refused.
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
from store.models import ROLES, AccountEvent, User

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


def create_user(name: str, role: str, password: str, *, email: str = "", actor: str = "cli") -> User:
    """Create a user with a hashed password; WeakPassword if it breaks the rule, Conflict if the name is taken."""
    name = name.strip()
    if not name or len(name) > 100 or any(c.isspace() for c in name):
        raise InletError(f"invalid user name {name!r}: 1-100 characters, no spaces")
    if role not in ROLES:
        raise InletError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
    check_password(password, name)
    try:
        with db.atomic():
            user = User.create(
                name=name,
                role=role,
                email=email,
                password_hash=generate_password_hash(password),
                created_at=datetime.now(UTC),
            )
            record(name, actor, "created", f"role {role}" + (f", email {email}" if email else ""))
            return user
    except peewee.IntegrityError:
        raise Conflict(f"user {name!r} exists already") from None


def set_password(name: str, password: str, actor: str = "cli") -> User:
    """Give the user a new password (the rule applies) and end every session they have."""
    user = _named(name)
    check_password(password, user.name)
    with db.atomic():
        User.update(password_hash=generate_password_hash(password), session_version=User.session_version + 1).where(
            User.id == user.id
        ).execute()
        record(user.name, actor, "password", "changed own password" if actor == user.name else "set a new password")
    return User.get_by_id(user.id)


def set_active(name: str, active: bool, actor: str = "cli") -> User:
    """Enable or disable the user. Disabling ends every session and stops their API token (both are checked
    against ``active`` on every request); enabling does not bring old sessions back."""
    user = _named(name)
    if user.name == actor and not active:
        raise InletError("you cannot disable yourself")
    if user.active == active:
        return user
    if not active and user.role == "admin" and not has_admin(besides=user.id):
        raise InletError(f"{user.name} is the last active admin: make another user admin first")
    with db.atomic():
        User.update(active=active, session_version=User.session_version + 1).where(User.id == user.id).execute()
        record(user.name, actor, "enabled" if active else "disabled")
    return User.get_by_id(user.id)


def set_role(name: str, role: str, actor: str = "cli") -> User:
    """Give the user another role (admin, agent, viewer); nobody takes away their own admin role."""
    user = _named(name)
    if role not in ROLES:
        raise InletError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
    if user.name == actor and role != "admin" and user.role == "admin":
        raise InletError("you cannot take away your own admin role")
    if user.role == role:
        return user
    if user.role == "admin" and user.active and not has_admin(besides=user.id):
        raise InletError(f"{user.name} is the last active admin: make another user admin first")
    with db.atomic():
        User.update(role=role).where(User.id == user.id).execute()
        record(user.name, actor, "role", f"{user.role} → {role}")
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


def set_channels(name: str, urls, actor: str = "cli") -> User:
    """Replace the user's own paging channels (an empty list clears them); see :func:`check_channels`."""
    user = _named(name)
    channels = check_channels(urls)
    with db.atomic():
        User.update(channels=channels).where(User.id == user.id).execute()
        if channels != (user.channels or []):
            record(user.name, actor, "channels", f"{len(channels)} paging channel(s)")
    return User.get_by_id(user.id)


def end_sessions(user_id: int) -> None:
    """Invalidate every signed-in session of the user (the session cookie names a session version)."""
    with db.atomic():
        User.update(session_version=User.session_version + 1).where(User.id == user_id).execute()


def has_admin(besides: int | None = None) -> bool:
    """Whether an active admin exists (other than the user with id ``besides``)."""
    query = User.select().where(User.role == "admin", User.active == True)  # noqa: E712
    if besides is not None:
        query = query.where(User.id != besides)
    return query.exists()


def authenticate(name: str, password: str) -> User | None:
    """The active user with this name and password, else None (same cost either way)."""
    user = User.get_or_none(User.name == name)
    if user is None or not user.active:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


def issue_api_token(name: str, actor: str = "cli") -> str:
    """A new API token for the user (only its hash is stored); replaces the old one."""
    user = _named(name)
    token = "inl_" + secrets.token_urlsafe(32)
    with db.atomic():
        replaced = bool(user.api_token_hash)
        user.api_token_hash = _token_hash(token)
        user.save()
        record(user.name, actor, "token", "replaced the API token" if replaced else "issued an API token")
    return token


def user_for_token(token: str) -> User | None:
    if not token:
        return None
    return User.get_or_none((User.api_token_hash == _token_hash(token)) & (User.active == True))  # noqa: E712


def record(user: str, actor: str, action: str, detail: str = "", at: datetime | None = None) -> None:
    """Write one change of ``user``'s account to the account log (in the caller's transaction)."""
    AccountEvent.create(user=user, actor=actor, action=action, detail=detail, at=at or datetime.now(UTC))


def history(user: str, limit: int = 200) -> list[AccountEvent]:
    """The latest changes to ``user``'s account, newest first."""
    query = AccountEvent.select().where(AccountEvent.user == user)
    return list(query.order_by(AccountEvent.at.desc(), AccountEvent.id.desc()).limit(limit))


def _named(name: str) -> User:
    user = User.get_or_none(User.name == name)
    if user is None:
        raise NotFound(f"no user {name!r}")
    return user


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_DUMMY_HASH = generate_password_hash("not a password")
