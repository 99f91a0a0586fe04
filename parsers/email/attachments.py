"""Attachments: safe filenames, Parts with size limits, a MIME part's decoded bytes."""

from __future__ import annotations

import email.message
import hashlib
import re
import unicodedata
from email import policy

from parsers.email.options import EmailOptions
from parsers.signal import Part

_MAX_FILENAME_BYTES = 180

_WINDOWS_RESERVED = re.compile(r"^(?:con|prn|aux|nul|com\d|lpt\d)(?:\.|$)", re.IGNORECASE)
_EXTENSIONS = {
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "application/json": ".json",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/svg+xml": ".svg",
    "message/rfc822": ".eml",
    "text/calendar": ".ics",
    "text/csv": ".csv",
    "text/html": ".html",
    "text/plain": ".txt",
    "text/rfc822-headers": ".txt",
}


def _payload_bytes(part: email.message.Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    try:
        payload = part.get_payload()
        return payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    except Exception:
        return b""


def safe_filename(name: str | None, fallback: str = "attachment.bin") -> str:
    """A filename that is data, never a path: last component only, no control or
    markup characters, no leading dots, at most 180 UTF-8 bytes (extension kept)."""
    if name:
        name = unicodedata.normalize("NFC", name)
        name = name.replace("\\", "/").rsplit("/", 1)[-1]
        name = "".join(
            "_" if ch in '<>:"|?*' else ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co")
        )
        name = " ".join(name.split())
        name = name.lstrip(". ").rstrip(". ")
    if not name or not name.strip("_"):
        name = fallback
    if _WINDOWS_RESERVED.match(name):
        name = "_" + name
    if len(name.encode("utf-8")) > _MAX_FILENAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if not dot or len(ext) > 16 or not stem:
            stem, ext = name, ""
        suffix = f".{ext}" if ext else ""
        budget = _MAX_FILENAME_BYTES - len(suffix.encode("utf-8"))
        stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(". ")
        name = (stem or "attachment") + suffix
    return name


def _make_part(
    data: bytes,
    filename: str,
    content_type: str,
    options: EmailOptions,
    inline: bool = False,
    content_id: str | None = None,
) -> Part:
    size = len(data)
    limit = options.max_attachment_size
    over = size > limit
    return Part(
        filename=filename,
        content_type=content_type,
        size=size,
        sha256=hashlib.sha256(data).hexdigest(),
        data=None if over else bytes(data),
        inline=inline,
        content_id=content_id,
        skipped=f"over size limit ({size} bytes > {limit})" if over else None,
    )


def _message_bytes(msg: email.message.Message) -> bytes:
    try:
        return msg.as_bytes()
    except Exception:  # policy.default refolds headers and can choke on broken ones; compat32 does not
        try:
            return msg.as_bytes(policy=policy.compat32)
        except Exception:
            return b""


# --------------------------------------------------------------------------- walking the MIME tree
