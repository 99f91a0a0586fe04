"""Email parser: RFC 5322 bytes in, one Signal out.

Pure: no I/O, no database, no clock. Everything read from the message is data:
headers may lie, charsets may be wrong, MIME may be broken. The parser reads
what it can and raises :class:`ParseError` only when nothing at all is
readable; it never raises anything else (DESIGN.md §2.2: the raw message is
kept and can be reprocessed after a fix).

The flow, one module each: :mod:`.headers` (header access that never raises,
the header block's bounds and limits) → :mod:`.classification` (the mail
class, from headers only) → :mod:`.body` (the MIME walk: texts, HTML,
forwarded and bounced messages) with :mod:`.attachments` and :mod:`.text`
(charsets, HTML to text, reply stripping) → :mod:`.message` (the entry
points). :mod:`.message_ids` makes and verifies Inlet's Message-IDs;
:mod:`.subject` reads the subject line.
"""

from parsers.email.attachments import safe_filename
from parsers.email.classification import (
    AUTO_REPLY,
    BOUNCE,
    BULK,
    HUMAN,
    OWN_LOOP,
    classify_mail,
    suppresses_autoreply,
)
from parsers.email.headers import dedup_key, over_limits
from parsers.email.message import EmailReading, parse_email, parse_headers_only, read_email
from parsers.email.message_ids import make_message_id, verify_message_id
from parsers.email.options import EmailOptions
from parsers.email.subject import clean_title, subject_ref
from parsers.email.text import html_depth, html_to_text, split_reply

__all__ = [
    "AUTO_REPLY",
    "BOUNCE",
    "BULK",
    "HUMAN",
    "OWN_LOOP",
    "EmailOptions",
    "EmailReading",
    "classify_mail",
    "clean_title",
    "dedup_key",
    "html_depth",
    "html_to_text",
    "make_message_id",
    "over_limits",
    "parse_email",
    "parse_headers_only",
    "read_email",
    "safe_filename",
    "split_reply",
    "subject_ref",
    "suppresses_autoreply",
    "verify_message_id",
]
