"""Walking the MIME tree: the texts, HTML, attachments, forwarded messages and bounce reports of a message."""

from __future__ import annotations

import email
import email.message
import re
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesHeaderParser

from parsers.email.attachments import _EXTENSIONS, _make_part, _message_bytes, _payload_bytes, safe_filename
from parsers.email.headers import _POLICY, _clean_header_text, _content_type, _decode_encoded_words, _header, _param
from parsers.email.message_ids import _normalise_id
from parsers.email.options import EmailOptions
from parsers.email.text import _clean_text, _decode_bytes, html_to_text
from parsers.signal import Part


def _part_text(part: email.message.Message) -> str:
    return _clean_text(_decode_bytes(_payload_bytes(part), _param(part, "charset")))


@dataclass
class _Body:
    """What a walk over one message's MIME tree collects."""

    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    forwarded: list[str] = field(default_factory=list)
    original_ids: list[str] = field(default_factory=list)  # Message-IDs of bounced originals
    failed_recipients: list[str] = field(default_factory=list)
    in_report: bool = False  # inside multipart/report: a message/rfc822 part is the bounced original


def _walk(part: email.message.Message, body: _Body, options: EmailOptions, depth: int, html_as_text: bool) -> None:
    if depth > options.max_mime_containers:  # over_limits bounds the depth first; this guards the recursion
        return
    ctype = _content_type(part)
    if ctype in ("message/rfc822", "message/global"):
        _walk_forwarded(part, body, options, depth)
    elif ctype == "message/delivery-status":
        _read_delivery_status(part, body)
    elif ctype == "text/rfc822-headers":
        _read_original_headers(_payload_bytes(part), body)
        _attach(part, ctype, _disposition(part), body, options)
    elif ctype.startswith("multipart/") and not part.is_multipart():
        _walk_unsplit_multipart(part, body, options, depth, html_as_text)
    elif part.is_multipart():
        _walk_children(part, ctype, body, options, depth, html_as_text)
    else:
        _read_leaf(part, ctype, body, options, html_as_text)


def _disposition(part: email.message.Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:
        return None


def _walk_children(
    part: email.message.Message, ctype: str, body: _Body, options: EmailOptions, depth: int, html_as_text: bool
) -> None:
    if ctype == "multipart/report":
        body.in_report = True
    try:
        children = [c for c in part.get_payload() if isinstance(c, email.message.Message)]
    except Exception:
        children = []
    if ctype == "multipart/alternative":
        _walk_alternative(children, body, options, depth, html_as_text)
    else:
        for child in children:
            _walk(child, body, options, depth + 1, html_as_text)


def _read_leaf(part: email.message.Message, ctype: str, body: _Body, options: EmailOptions, html_as_text: bool) -> None:
    """A part that is not a container: body text or HTML, else an attachment."""
    disposition = _disposition(part)
    try:
        filename = part.get_filename()
    except Exception:
        filename = None
    if ctype not in ("text/plain", "text/html") or disposition == "attachment" or filename:
        _attach(part, ctype, disposition, body, options, filename)
        return
    text = _part_text(part)
    if ctype == "text/plain":
        if text:
            body.texts.append(text)
        return
    body.htmls.append(text)
    if html_as_text:
        converted = html_to_text(text)
        if converted:
            body.texts.append(converted)


def _walk_unsplit_multipart(
    part: email.message.Message, body: _Body, options: EmailOptions, depth: int, html_as_text: bool
) -> None:
    """A multipart whose declared boundary never occurs: retry with the boundary its body uses, else read it as text."""
    data = _payload_bytes(part)
    found = re.search(rb"^--([\x21-\x7e]{1,70}?)(?:--)?[ \t]*\r?$", data, re.MULTILINE)
    if found and found.group(1) != (_param(part, "boundary") or "").encode():
        boundary = found.group(1).decode("ascii")
        header = f'Content-Type: {_content_type(part)}; boundary="{boundary}"\r\n\r\n'.encode()
        try:
            recovered = email.message_from_bytes(header + data, policy=_POLICY)
        except Exception:
            recovered = None
        if recovered is not None and recovered.is_multipart():
            _walk(recovered, body, options, depth + 1, html_as_text)
            return
    text = _clean_text(_decode_bytes(data, None))
    if text:
        body.texts.append(text)


def _walk_alternative(
    children: list[email.message.Message], body: _Body, options: EmailOptions, depth: int, html_as_text: bool
) -> None:
    plain = [c for c in children if _content_type(c) == "text/plain" and _part_text(c)]
    if not plain:
        for child in children:
            _walk(child, body, options, depth + 1, html_as_text)
        return
    _walk(plain[0], body, options, depth + 1, html_as_text)
    for child in children:
        if child is not plain[0] and _content_type(child) != "text/plain":
            # the richer alternative: keep its HTML and inline images, not its text twice
            _walk(child, body, options, depth + 1, html_as_text=False)


def _attach(
    part: email.message.Message,
    ctype: str,
    disposition: str | None,
    body: _Body,
    options: EmailOptions,
    filename: str | None = None,
) -> None:
    content_id = None
    try:
        raw_cid = part.get("content-id")
        if raw_cid:
            content_id = _normalise_id(str(raw_cid)) or None
    except Exception:
        content_id = None
    inline = disposition == "inline" or (disposition is None and content_id is not None)
    fallback = f"attachment-{len(body.parts) + 1}{_EXTENSIONS.get(ctype, '.bin')}"
    if filename is None:
        try:
            filename = part.get_filename()
        except Exception:
            filename = None
        if filename is None:
            filename = _param(part, "name")
    if filename and "=?" in filename:
        filename = _decode_encoded_words(filename)
    body.parts.append(
        _make_part(_payload_bytes(part), safe_filename(filename, fallback), ctype, options, inline, content_id)
    )


def _walk_forwarded(part: email.message.Message, body: _Body, options: EmailOptions, depth: int) -> None:
    try:
        payload = part.get_payload()
    except Exception:
        payload = None
    inner = payload[0] if isinstance(payload, list) and payload else None
    if not isinstance(inner, email.message.Message):
        _attach(part, "message/rfc822", "attachment", body, options)
        return
    subject = _header(inner, "subject") or ""
    inner_id = _header(inner, "message-id")
    if inner_id and _normalise_id(inner_id):
        body.original_ids.append(_normalise_id(inner_id))
    try:
        filename = part.get_filename()
    except Exception:
        filename = None
    filename = safe_filename(filename or (f"{subject}.eml" if subject else None), "forwarded.eml")
    body.parts.append(_make_part(_message_bytes(inner), filename, "message/rfc822", options))
    if body.in_report:  # the bounced original: its id matters, its text is ours
        return

    inner_body = _Body()
    _walk(inner, inner_body, options, depth + 1, html_as_text=True)
    body.parts.extend(inner_body.parts)
    body.original_ids.extend(inner_body.original_ids)
    lines = ["---------- Forwarded message ----------"]
    for name in ("From", "Date", "Subject", "To"):
        value = _header(inner, name)
        if value:
            lines.append(f"{name}: {value}")
    text = "\n\n".join(inner_body.texts + inner_body.forwarded)
    body.forwarded.append("\n".join(lines) + ("\n\n" + text if text else ""))


def _read_delivery_status(part: email.message.Message, body: _Body) -> None:
    try:
        blocks = part.get_payload()
    except Exception:
        return
    if not isinstance(blocks, list):
        return
    for block in blocks:
        if not isinstance(block, email.message.Message):
            continue
        action = (_header(block, "action") or "failed").lower()
        recipient = _header(block, "final-recipient") or _header(block, "original-recipient")
        if recipient and action == "failed":
            address = recipient.split(";", 1)[-1].strip().strip("<>").lower()
            if address and address not in body.failed_recipients:
                body.failed_recipients.append(address)


def _read_original_headers(data: bytes, body: _Body) -> None:
    try:
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(data)
        mid = headers.get("message-id")
    except Exception:
        return
    if mid and _normalise_id(_clean_header_text(str(mid))):
        body.original_ids.append(_normalise_id(_clean_header_text(str(mid))))


# --------------------------------------------------------------------------- classification
