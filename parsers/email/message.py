"""The entry points: RFC 5322 bytes in, one Signal out."""

from __future__ import annotations

import dataclasses
import email
import email.header
import email.message
import email.utils
from email import policy
from email.parser import BytesParser

from gateway.core.errors import ParseError
from parsers.email.body import _Body, _walk
from parsers.email.classification import BOUNCE, classify_mail, suppresses_autoreply
from parsers.email.headers import (
    _KNOWN_HEADERS,
    _MAX_ADDRESSES,
    _POLICY,
    _address_list,
    _addresses,
    _bounded_headers,
    _date,
    _header,
    _header_end,
    _headers,
    _raw_header_ids,
    dedup_key,
    over_limits,
)
from parsers.email.message_ids import _MESSAGE_ID_LINE, _bounded_ids, _normalise_id
from parsers.email.options import EmailOptions
from parsers.email.subject import _FORWARD_PREFIX, clean_title, subject_ref
from parsers.email.text import _clean_text, _decode_bytes, _looks_binary, split_reply
from parsers.signal import Signal


def parse_headers_only(raw: bytes) -> dict:
    """The headers intake needs before a full parse, cheaply (compat32 header parser).

    Returns ``{"message_id", "from", "subject", "dedup_key"}``: message_id is
    normalised (no ``<>``) or None, from is the lowercase address or None,
    subject is decoded text, dedup_key is ``mid:<id>`` or ``sha256:<hash of raw>``
    when the message has no Message-ID. Never raises.
    """
    raw = bytes(raw or b"")
    try:
        headers = _bounded_headers(raw, EmailOptions())
    except Exception:
        headers = email.message.Message()
    mid = _header(headers, "message-id")
    message_id = (_normalise_id(mid) if mid else None) or None
    senders = _addresses(headers, "from")
    sender = senders[0][1] if senders else None
    subject = _header(headers, "subject") or ""
    return {"message_id": message_id, "from": sender, "subject": subject, "dedup_key": dedup_key(raw)}


def parse_email(raw: bytes, options: EmailOptions, envelope_from: str | None = None) -> Signal:
    """Turn one RFC 5322 message into a Signal (source "email").

    ``envelope_from`` is the SMTP MAIL FROM (``""`` for the null reverse-path).
    Reads whatever is readable from malformed input; raises ParseError (and
    nothing else) only when nothing is readable at all.
    """
    try:
        return _parse(raw, options, envelope_from)
    except ParseError:
        raise
    except Exception as exc:  # e.g. the stdlib's header parser failing on a hostile MIME parameter
        return _plainly(bytes(raw), options, envelope_from, exc)


def _plainly(raw: bytes, options: EmailOptions, envelope_from: str | None, error: Exception) -> Signal:
    """The message read as plain text after the structured parser failed with ``error``; ParseError when
    even that reads nothing."""
    try:
        return _read_plainly(raw, options, envelope_from, error)
    except Exception:  # nothing readable: keep it in the quarantine, never crash intake
        raise ParseError(f"cannot parse email: {type(error).__name__}: {error}") from error


def _read_plainly(raw: bytes, options: EmailOptions, envelope_from: str | None, error: Exception) -> Signal:
    """What can be read without the structured header parser: subject, sender, ids, the body as text."""
    msg = email.message_from_bytes(raw, policy=policy.compat32)

    def text_of(name: str) -> str:
        value = msg.get(name)
        if value is None:
            return ""
        try:
            return str(email.header.make_header(email.header.decode_header(str(value))))
        except Exception:
            return str(value)

    name, address = email.utils.parseaddr(text_of("from"))
    subject = " ".join(text_of("subject").split())
    head, _sep, body = raw.partition(b"\r\n\r\n") if b"\r\n\r\n" in raw else raw.partition(b"\n\n")
    message_id = _normalise_id(text_of("message-id")) if msg.get("message-id") else None
    references = _bounded_ids(
        [_normalise_id(v) for v in (text_of("references") + " " + text_of("in-reply-to")).split()]
    )
    mail_class, why = classify_mail(msg, options, envelope_from)
    return Signal(
        source="email",
        title=clean_title(subject, options.ref_prefix),
        text=_clean_text(_decode_bytes(body, None)),
        reporter_email=address.lower() or None,
        reporter_name=name or None,
        message_id=message_id or None,
        references=tuple(references),
        subject_ref=subject_ref(subject, options.ref_prefix),
        mail_class=mail_class,
        mail_class_reason=why,
        details={"parse_error": f"read as plain text: {type(error).__name__} in the MIME structure: {error}"},
    )


def _read_as_text(raw: bytes, options: EmailOptions, envelope_from: str | None, why: str) -> Signal:
    """A message over a parse limit: its first header fields parsed, the rest of it kept as text.

    Nothing is lost: the raw message stays on its Inbound row; threading,
    sender and class still work from the headers.
    """
    headers = _header_signal(_bounded_headers(raw, options), options, envelope_from)
    body = raw[_header_end(raw)[1] :]
    return dataclasses.replace(
        headers, text=_clean_text(_decode_bytes(body, None)), details={"parse_limit": f"read as plain text: {why}"}
    )


def _header_signal(msg: email.message.Message, options: EmailOptions, envelope_from: str | None) -> Signal:
    """The Signal of a message's headers: sender, recipients, ids, subject, date, class; no body yet."""
    subject = _header(msg, "subject") or ""
    senders = _addresses(msg, "from")
    reporter_name, reporter_email = senders[0] if senders else (None, None)
    mid = _header(msg, "message-id")
    references = _bounded_ids([*_raw_header_ids(msg, "references"), *_raw_header_ids(msg, "in-reply-to")])
    mail_class, reason = classify_mail(msg, options, envelope_from)
    return Signal(
        source="email",
        title=clean_title(subject, options.ref_prefix),
        reporter_email=reporter_email,
        reporter_name=reporter_name or None,
        recipients=tuple(_address_list(msg, "to")),
        cc=tuple(_address_list(msg, "cc")),
        message_id=(_normalise_id(mid) if mid else None) or None,
        references=tuple(references),
        subject_ref=subject_ref(subject, options.ref_prefix),
        occurred_at=_date(msg),
        mail_class=mail_class,
        mail_class_reason=reason,
        suppress_autoreply=suppresses_autoreply(msg),
    )


def _checked(raw: bytes) -> bytes:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ParseError(f"email must be bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if not raw.strip():
        raise ParseError("empty message: no headers and no body")
    return raw


def _parse(raw: bytes, options: EmailOptions, envelope_from: str | None) -> Signal:
    raw = _checked(raw)
    too_costly = over_limits(raw, options)
    if too_costly:
        return _read_as_text(raw, options, envelope_from, too_costly)
    msg = email.message_from_bytes(raw, policy=_POLICY)
    return _with_body(raw, msg, _header_signal(msg, options, envelope_from), options)


def _with_body(raw: bytes, msg: email.message.Message, headers: Signal, options: EmailOptions) -> Signal:
    """``headers`` (the Signal of ``msg``'s headers) completed from the body of ``msg``, parsed from ``raw``."""
    has_headers = any(str(name).lower() in _KNOWN_HEADERS for name, _ in msg.raw_items())
    body = _Body()
    _walk(msg, body, options, 0, html_as_text=True)
    full_text = "\n\n".join(body.texts)
    if not has_headers and not body.parts:  # "Error: disk full" on line one is text, not a header
        full_text = _clean_text(_decode_bytes(raw, None))
    if not has_headers and not body.parts and not body.forwarded and (_looks_binary(raw) or not full_text):
        raise ParseError("no headers and no readable text: not an email message")

    references, details = headers.references, {}
    if headers.mail_class == BOUNCE:
        references, details = _bounce(msg, body, full_text, headers)

    subject = _header(msg, "subject") or ""
    new_words = full_text if _FORWARD_PREFIX.match(subject) else split_reply(full_text)
    if body.forwarded:
        full_text = "\n\n".join([t for t in (full_text, *body.forwarded) if t])
        new_words = "\n\n".join([t for t in (new_words, *body.forwarded) if t])
    return dataclasses.replace(
        headers,
        text=new_words,
        html=body.htmls[0] if body.htmls else None,
        full_text=full_text,
        references=references,
        attachments=tuple(body.parts),
        details=details,
    )


def _bounce(msg: email.message.Message, body: _Body, full_text: str, headers: Signal) -> tuple[tuple[str, ...], dict]:
    """The references (the bounced original's id added) and details (failed recipients) of a bounce."""
    original = body.original_ids or _MESSAGE_ID_LINE.findall(full_text)
    references = _bounded_ids([*headers.references, *(v for v in original if v != headers.message_id)])
    failed = dict.fromkeys(body.failed_recipients)
    for value in _headers(msg, "x-failed-recipients"):
        for address in value.split(","):
            address = address.strip().strip("<>").lower()
            if address:
                failed[address] = None
    details: dict = {"failed_recipients": list(failed)[:_MAX_ADDRESSES]}
    if original:
        details["original_message_id"] = original[0]
    return tuple(references), details


class EmailReading:
    """One message read in two stages: its headers at once, its body when :meth:`signal` is first called.

    For a pipeline that decides from the headers alone what to do with a message (an own loop
    is dropped, a list mail may be): ``headers`` is the Signal of the headers (sender,
    recipients, ids, subject tag, date, mail class; no text, HTML or attachments, and a
    bounce's references without its original's id); ``signal()`` is the whole Signal, equal
    to :func:`parse_email`'s for the same arguments, parsed once. Construction raises
    ParseError for input that is not bytes or empty; ``signal()`` raises it where
    :func:`parse_email` does.
    """

    def __init__(self, raw: bytes, options: EmailOptions, envelope_from: str | None = None):
        self._raw = _checked(raw)
        self._options, self._envelope_from = options, envelope_from
        self._signal: Signal | None = None
        too_costly = over_limits(self._raw, options)
        if too_costly:  # read as text at once: the text is the cheap part
            self._signal = _read_as_text(self._raw, options, envelope_from, too_costly)
        else:
            try:
                msg = BytesParser(policy=_POLICY).parsebytes(self._raw, headersonly=True)
                self.headers = _header_signal(msg, options, envelope_from)
            except Exception as exc:  # what parse_email reads then: the whole message, plainly
                self._signal = _plainly(self._raw, options, envelope_from, exc)
        if self._signal is not None:
            self.headers = self._signal

    def signal(self) -> Signal:
        """The whole Signal of the message (parsed on the first call). Raises ParseError as parse_email does."""
        if self._signal is None:
            try:
                msg = email.message_from_bytes(self._raw, policy=_POLICY)
                self._signal = _with_body(self._raw, msg, self.headers, self._options)
            except ParseError:
                raise
            except Exception as exc:
                self._signal = _plainly(self._raw, self._options, self._envelope_from, exc)
        return self._signal


def read_email(raw: bytes, options: EmailOptions, envelope_from: str | None = None) -> EmailReading:
    """The message's headers now, its body on demand: see :class:`EmailReading`."""
    return EmailReading(raw, options, envelope_from)
