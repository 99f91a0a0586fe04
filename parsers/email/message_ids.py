"""Message-IDs: the ones Inlet makes (and verifies), and reading ids from References / In-Reply-To."""

from __future__ import annotations

import hashlib
import hmac
import re

from parsers.email.options import EmailOptions

_MAX_REFERENCES = 100  # ids kept from References/In-Reply-To: the first and the latest (RFC 5322 §3.6.4)

_TOKEN_HEX_CHARS = 24  # 96 bits of HMAC: unguessable, still short enough for a header

_ANGLE_ID = re.compile(r"<([^<>]*)>")
_MESSAGE_ID_LINE = re.compile(r"^\s*message-id:\s*<([^<>\s]+)>", re.IGNORECASE | re.MULTILINE)
_SAFE_ID_PART = re.compile(r"^[A-Za-z0-9_\-]+$")

# --------------------------------------------------------------------------- Message-IDs


def _message_id_token(ref: str, unique: str, secret: bytes) -> str:
    return hmac.new(secret, f"{ref}.{unique}".encode(), hashlib.sha256).hexdigest()[:_TOKEN_HEX_CHARS]


def make_message_id(ref: str, options: EmailOptions, unique: str) -> str:
    """Return ``<inlet.{ref}.{unique}.{token}@{domain}>`` for a message Inlet sends.

    ``token`` is a truncated HMAC-SHA256 of ref and unique under
    ``options.message_id_secret``, so :func:`verify_message_id` can tell a
    reply to Inlet (or Inlet's own mail coming back) from a forgery. ``ref``
    and ``unique`` must be letters, digits, ``-`` and ``_`` only; raises
    ValueError otherwise, or when no secret is configured.
    """
    if not options.message_id_secret:
        raise ValueError("message_id_secret is empty: Inlet's Message-IDs could be forged")
    for name, value in (("ref", ref), ("unique", unique)):
        if not _SAFE_ID_PART.match(value):
            raise ValueError(f"{name} {value!r} may hold only letters, digits, '-' and '_'")
    token = _message_id_token(ref, unique, options.message_id_secret)
    return f"<inlet.{ref}.{unique}.{token}@{options.message_id_domain}>"


def verify_message_id(mid: str | None, options: EmailOptions) -> str | None:
    """Return the incident ref of a Message-ID made by :func:`make_message_id`, or None.

    Accepts the id with or without angle brackets. None when the id is not
    Inlet's, is malformed, or its token does not check out (constant-time).
    """
    if not mid or not options.message_id_secret or not isinstance(mid, str):
        return None
    local, _, _domain = _normalise_id(mid).rpartition("@")
    pieces = local.split(".")
    if len(pieces) != 4 or pieces[0] != "inlet":
        return None
    _, ref, unique, token = pieces
    if not (_SAFE_ID_PART.match(ref) and _SAFE_ID_PART.match(unique)):
        return None
    expected = _message_id_token(ref, unique, options.message_id_secret)
    return ref if hmac.compare_digest(expected, token.lower()) else None


def _normalise_id(value: str) -> str:
    """A Message-ID without brackets or whitespace; the first ``<…>`` when there is one."""
    found = _ANGLE_ID.search(value)
    inner = found.group(1) if found else value
    return "".join(inner.split())


def _id_list(value: str) -> list[str]:
    """All message ids in a References / In-Reply-To value (junk text between them ignored)."""
    found = _ANGLE_ID.findall(value)
    ids = found if found else value.split()
    return [normalised for normalised in ("".join(i.split()) for i in ids) if normalised]


# --------------------------------------------------------------------------- header access


def _bounded_ids(ids: list[str]) -> list[str]:
    """Unique ids in order, at most _MAX_REFERENCES: the first (the thread's root) and the latest."""
    unique = list(dict.fromkeys(i for i in ids if i))
    if len(unique) <= _MAX_REFERENCES:
        return unique
    return unique[:1] + unique[-(_MAX_REFERENCES - 1) :]
