"""Signal: one normalised report of a problem, or of progress on it.

Every parser returns Signals; everything after the parse step reads Signals
only, whatever the source was (DESIGN.md §1).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import datetime

FIRING = "firing"
RESOLVED = "resolved"
ACKNOWLEDGED = "acknowledged"


@dataclass(frozen=True)
class Part:
    """An attachment or inline part of a message, or a skipped one.

    ``data`` is None when the part was skipped (``skipped`` says why); size and
    sha256 are always those of the part as received.
    """

    filename: str
    content_type: str
    size: int
    sha256: str
    data: bytes | None
    inline: bool = False
    content_id: str | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class Signal:
    """One report from one source, in plain values.

    Correlation keys: ``message_id`` / ``references`` (email threading),
    ``subject_ref`` (an ``INC-42`` tag in the subject), ``fingerprint`` (alert
    or dedup key: the same problem while open), ``group_key`` (signals that
    belong to one incident, e.g. an Alertmanager group).
    """

    source: str  # "email", "alertmanager", "grafana", "pagerduty", "generic", "manual"
    title: str
    text: str = ""
    html: str | None = None
    full_text: str | None = None  # the text before quotes/signature were stripped
    reporter_email: str | None = None
    reporter_name: str | None = None
    recipients: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    message_id: str | None = None
    references: tuple[str, ...] = ()
    subject_ref: str | None = None
    fingerprint: str | None = None
    group_key: str | None = None
    status: str = FIRING  # FIRING, RESOLVED or ACKNOWLEDGED
    severity: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    links: tuple[str, ...] = ()
    occurred_at: datetime | None = None
    attachments: tuple[Part, ...] = ()
    mail_class: str | None = None  # human, auto-reply, bounce, bulk, own-loop
    mail_class_reason: str | None = None
    suppress_autoreply: bool = False
    details: dict = field(default_factory=dict)  # source-specific extras, kept for display


# Text no store can keep: lone surrogates (a charset such as UTF-7 decodes to them; the database
# drivers refuse to encode them) and NUL (PostgreSQL refuses it in text columns).
_NOT_PLAIN = re.compile("[\ud800-\udfff\x00]")


def is_plain_text(value: str) -> bool:
    """Whether ``value`` can be encoded and stored as text everywhere (no lone surrogate, no NUL)."""
    return _NOT_PLAIN.search(value) is None


def plain_text(value: str) -> str:
    """``value`` with lone surrogates and NUL replaced by U+FFFD, so that any store can keep it."""
    return _NOT_PLAIN.sub("\ufffd", value) if _NOT_PLAIN.search(value) else value


def plain_signal(signal: Signal) -> Signal:
    """``signal`` with every text in it storable: lone surrogates and NUL become U+FFFD.

    The pipeline applies it to what every parser returns, so no input's text can make a
    store write fail; the same signal is returned when there is nothing to replace.
    """
    return plain_value(signal)


def plain_value(value):
    """``value`` (text, or lists, tuples, dicts and dataclasses of it) with :func:`plain_text` applied throughout."""
    if isinstance(value, str):
        return plain_text(value)
    if isinstance(value, tuple | list):
        items = [plain_value(v) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return type(value)(items)
    if isinstance(value, dict):
        pairs = [(plain_value(k), plain_value(v)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(pairs, value.items(), strict=True)):
            return value
        return dict(pairs)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for f in dataclasses.fields(value):
            old = getattr(value, f.name)
            new = plain_value(old)
            if new is not old:
                changes[f.name] = new
        return dataclasses.replace(value, **changes) if changes else value
    return value
