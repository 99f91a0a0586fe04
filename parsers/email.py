"""Email parser: RFC 5322 bytes in, one Signal out.

Pure: no I/O, no database, no clock. Everything read from the message is data:
headers may lie, charsets may be wrong, MIME may be broken. The parser reads
what it can and raises :class:`ParseError` only when nothing at all is
readable; it never raises anything else (DESIGN.md §2.2: the raw message is
kept and can be reprocessed after a fix).
"""

from __future__ import annotations

import codecs
import email
import email.charset
import email.header
import email.message
import email.utils
import functools
import hashlib
import hmac
import html as html_lib
import itertools
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.headerregistry import HeaderRegistry
from email.parser import BytesHeaderParser
from html.parser import HTMLParser

import html2text
from mailparser_reply import EmailReplyParser

from gateway.errors import ParseError
from parsers.signal import Part, Signal

HUMAN = "human"
AUTO_REPLY = "auto-reply"
BOUNCE = "bounce"
BULK = "bulk"
OWN_LOOP = "own-loop"

_MAX_REFERENCES = 100  # ids kept from References/In-Reply-To: the first and the latest (RFC 5322 §3.6.4)
_MAX_FIELD_CHARS = 16_384  # a header value read for display or matching (a subject, an id)
_MAX_ADDRESSES = 200  # addresses read from one To or Cc
_MAX_HTML_TO_TEXT = 512 * 1024  # html2text costs ~25 µs per tag: beyond these, a linear tag stripper reads it
_MAX_HTML_TO_TEXT_TAGS = 4000


class _RememberingRegistry(HeaderRegistry):
    """policy.default's header registry, remembering the headers it parsed.

    The stdlib parses a header again on every fetch: ``get_content_type``,
    ``get_param``, ``get_filename`` … parse one part's Content-Type about six times,
    and the header registry was a quarter of the time to process an email
    (bench/smtp_intake.py). Header objects are immutable; the cache is bounded.
    """

    def __init__(self, size: int = 4096):
        super().__init__()
        self._remembered = functools.lru_cache(maxsize=size)(super().__call__)

    def __call__(self, name, value):
        try:
            return self._remembered(name, value)
        except TypeError:  # an unhashable value: parse it as the stdlib would
            return super().__call__(name, value)


# policy.default in all but the remembering header registry
_POLICY = policy.default.clone(header_factory=_RememberingRegistry())
_MAX_REPLY_PARSE_CHARS = 16_384  # mail-parser-reply runs on this head of the text only (~5 µs per char)
_MAX_FILENAME_BYTES = 180
_TOKEN_HEX_CHARS = 24  # 96 bits of HMAC: unguessable, still short enough for a header
_REPLY_LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "sv", "da", "pl", "pt")

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Every leading reply/forward prefix in one pass; possessive, so a failed try never backtracks (linear time).
_SUBJECT_PREFIXES = re.compile(
    r"^(?:\s*+(?:re|aw|antw|fwd?|fw|wg|sv|vs|tr|rif|r)\s*+(?:\[\d++\]|\(\d++\))?+\s*+[:：])++\s*+", re.IGNORECASE
)
_FORWARD_PREFIX = re.compile(r"^\s*(?:fwd?|fw|wg|tr)\s*[:：]", re.IGNORECASE)
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(?:automatic reply|auto[- ]?reply|auto[- ]?response|out of (?:the )?office|"
    r"automatische antwort|abwesenheitsnotiz|r[ée]ponse automatique)\b",
    re.IGNORECASE,
)
_ANGLE_ID = re.compile(r"<([^<>]*)>")
_MESSAGE_ID_LINE = re.compile(r"^\s*message-id:\s*<([^<>\s]+)>", re.IGNORECASE | re.MULTILINE)
_SAFE_ID_PART = re.compile(r"^[A-Za-z0-9_\-]+$")
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


@dataclass(frozen=True)
class EmailOptions:
    """What the email parser needs to know about this Inlet installation.

    ``own_addresses`` holds lowercase addresses (``inlet@example.org``) and
    domains (``example.org`` or ``@example.org``: every address at exactly
    that domain) that Inlet sends from or receives at.
    """

    ref_prefix: str = "INC"
    own_addresses: tuple[str, ...] = ()
    loop_token: str = ""
    message_id_secret: bytes = b""
    message_id_domain: str = "inlet.invalid"
    max_attachment_size: int = 25 * 1024 * 1024
    max_header_fields: int = 1000
    max_header_bytes: int = 256 * 1024
    max_mime_containers: int = 100
    max_mime_parts: int = 1000


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


def _clean_header_text(value: str) -> str:
    # compat32 and broken headers can carry surrogate-escaped 8-bit bytes: read them as text.
    if _has_raw_8bit(value):
        raw = value.encode("utf-8", "surrogateescape")
        value = _decode_bytes(raw, None)
    value = _CONTROL_CHARS.sub(" ", value)
    return " ".join(value.split())


def _decode_encoded_words(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:
        return value


def _raw_values(msg: email.message.Message, name: str) -> list[str]:
    wanted = name.lower()
    try:
        return [str(v) for k, v in msg.raw_items() if str(k).lower() == wanted]
    except Exception:
        return []


def _has_raw_8bit(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _header(msg: email.message.Message, name: str) -> str | None:
    """The first ``name`` header as clean decoded text; None when absent. Never raises."""
    raw = _raw_values(msg, name)
    if not raw:
        return None
    if len(raw[0]) > _MAX_FIELD_CHARS:  # the structured parser costs ~4 µs per char: read a bounded head
        return _clean_header_text(_decode_encoded_words(_clean_header_text(raw[0][:_MAX_FIELD_CHARS])))
    # Undeclared 8-bit bytes: policy.default would turn them into U+FFFD; guess their charset instead.
    if _has_raw_8bit(raw[0]) or isinstance(msg.policy, email.policy.Compat32):
        return _clean_header_text(_decode_encoded_words(_clean_header_text(raw[0])))
    try:
        return _clean_header_text(str(msg[name]))
    except Exception:
        return _clean_header_text(_decode_encoded_words(raw[0]))


def _headers(msg: email.message.Message, name: str) -> list[str]:
    """Every ``name`` header as clean decoded text. Never raises."""
    try:
        return [_clean_header_text(str(v)) for v in (msg.get_all(name) or [])]
    except Exception:
        return [_clean_header_text(_decode_encoded_words(v)) for v in _raw_values(msg, name)]


def _addresses(msg: email.message.Message, name: str) -> list[tuple[str, str]]:
    """(display name, lowercase address) pairs of an address header. Never raises."""
    pairs: list[tuple[str, str]] = []
    try:
        for value in msg.get_all(name) or []:
            for address in getattr(value, "addresses", ()):
                pairs.append((_clean_header_text(address.display_name or ""), address.addr_spec))
            if not hasattr(value, "addresses"):  # compat32: plain strings
                for display, addr in email.utils.getaddresses([str(value)]):
                    pairs.append((_clean_header_text(_decode_encoded_words(display)), addr))
    except Exception:
        pairs = []
        try:
            for display, addr in email.utils.getaddresses(_raw_values(msg, name)):
                pairs.append((_clean_header_text(_decode_encoded_words(display)), addr))
        except Exception:
            return []
    cleaned = []
    for display, addr in pairs:
        addr = _clean_header_text(addr).strip("<>").lower()
        if addr:
            cleaned.append((display, addr))
    return cleaned


def _content_type(part: email.message.Message) -> str:
    try:
        ctype = part.get_content_type().lower()
    except Exception:
        return "application/octet-stream"
    return ctype if re.fullmatch(r"[a-z0-9!#$&^_.+\-]+/[a-z0-9!#$&^_.+\-]+", ctype) else "application/octet-stream"


def _param(part: email.message.Message, name: str, header: str = "content-type") -> str | None:
    try:
        value = part.get_param(name, header=header)
    except Exception:
        return None
    if value is None:
        return None
    if isinstance(value, tuple):
        value = email.utils.collapse_rfc2231_value(value)
    return _clean_header_text(str(value))


# --------------------------------------------------------------------------- decoding


def _charset_codec(charset: str | None) -> str | None:
    if not charset:
        return None
    name = charset.strip().strip("\"'").lower()
    name = email.charset.ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return None


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Text from bytes in the declared charset; on failure utf-8, then cp1252, then latin-1. Never raises."""
    codec = _charset_codec(charset)
    if codec == "iso8859-1":  # senders label Windows-1252 as Latin-1; decode its superset (as browsers do)
        codec = "cp1252"
    for candidate in (codec, "utf-8"):
        if candidate:
            try:
                return data.decode(candidate)
            except (LookupError, ValueError, TypeError):  # wrong charset, or not a text codec (e.g. "zlib")
                continue
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL_CHARS.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


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


def _part_text(part: email.message.Message) -> str:
    return _clean_text(_decode_bytes(_payload_bytes(part), _param(part, "charset")))


class _TextCollector(HTMLParser):
    """Last-resort HTML to text when html2text fails on hostile markup."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("br", "p", "div", "tr", "li"):
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.chunks.append(data)


def html_to_text(html: str) -> str:
    """Readable plain text from an HTML body (html2text, Markdown-ish). Never raises."""
    if len(html) > _MAX_HTML_TO_TEXT or html.count("<") > _MAX_HTML_TO_TEXT_TAGS:
        return _strip_tags(html)
    try:
        converter = html2text.HTML2Text()
        converter.body_width = 0
        converter.ignore_images = True
        converter.unicode_snob = True
        return _clean_text(converter.handle(html))
    except Exception:
        return _collect_text(html)


_BLOCK_TAG = re.compile(r"<(?:br|p|div|tr|li|h[1-6]|table|ul|ol)\b[^<>]*>", re.IGNORECASE)
_ANY_TAG = re.compile(r"<[/!?]?[a-zA-Z][^<>]*>|<!--[^<>]*>")  # "a < b" stays text, as in a browser
_SCRIPT_OR_STYLE = re.compile(r"<(script|style)\b[^<>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_MAX_SCRIPT_BLOCKS = 50  # each unclosed one costs a scan to the end: beyond this, their text stays


def _strip_tags(html: str) -> str:
    """Text of HTML too large or too tag-heavy for html2text (~25 µs per tag): a few linear regex passes."""
    lowered = html.lower()
    if lowered.count("<script") + lowered.count("<style") <= _MAX_SCRIPT_BLOCKS:
        html = _SCRIPT_OR_STYLE.sub("", html)
    text = _ANY_TAG.sub("", _BLOCK_TAG.sub("\n", html))
    return _clean_text(html_lib.unescape(text))


_TAG_NAME = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)[^<>]*?(/?)>")
_VOID_TAGS = frozenset(
    ("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr")
)


def html_depth(html: str) -> int:
    """How deeply the elements of ``html`` nest (an estimate from its tags, in one linear pass).

    HTML sanitisers build a tree, and some cost quadratic time in its depth
    (nh3: 20,000 nested <div> take 2.5 s): callers bound it first.
    """
    depth = deepest = 0
    for tag in _TAG_NAME.finditer(html):
        closing, name, empty = tag.groups()
        if closing:
            depth = max(depth - 1, 0)
        elif not empty and name.lower() not in _VOID_TAGS:
            depth += 1
            deepest = max(deepest, depth)
    return deepest


def _collect_text(html: str) -> str:
    try:
        collector = _TextCollector()
        collector.feed(html)
        collector.close()
        return _clean_text("".join(collector.chunks))
    except Exception:
        return ""


def split_reply(text: str) -> str:
    """The new words of a reply: quoted text, reply headers and signature removed (mail-parser-reply).

    Returns ``text`` unchanged when stripping would leave nothing. Never raises.
    """
    if not text:
        return text
    # The new words of a reply come first: the parser reads a bounded head, so its cost is bounded too.
    head = text[:_MAX_REPLY_PARSE_CHARS]
    try:
        parsed = EmailReplyParser(languages=list(_REPLY_LANGUAGES)).read(head)
        latest = parsed.replies[0].body if parsed.replies else ""
    except Exception:
        return text
    latest = _clean_text(_drop_trailing_quote(latest))
    if len(head) < len(text) and latest == _clean_text(head):
        return text  # nothing quoted in the head: the rest may be new words too
    return latest or text


def _drop_trailing_quote(text: str) -> str:
    """A bottom-posted quote without an attribution line ("> …" lines at the end) is not new words."""
    lines = text.rstrip().splitlines()
    while lines and (lines[-1].startswith(">") or not lines[-1].strip()):
        lines.pop()
    return "\n".join(lines)


# --------------------------------------------------------------------------- filenames and parts


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
    try:
        disposition = part.get_content_disposition()
    except Exception:
        disposition = None

    if ctype in ("message/rfc822", "message/global"):
        _walk_forwarded(part, body, options, depth)
        return
    if ctype == "message/delivery-status":
        _read_delivery_status(part, body)
        return
    if ctype == "text/rfc822-headers":
        _read_original_headers(_payload_bytes(part), body)
        _attach(part, ctype, disposition, body, options)
        return
    if ctype.startswith("multipart/") and not part.is_multipart():
        _walk_unsplit_multipart(part, body, options, depth, html_as_text)
        return
    if ctype == "multipart/report":
        body.in_report = True
    if part.is_multipart():
        try:
            children = [c for c in part.get_payload() if isinstance(c, email.message.Message)]
        except Exception:
            children = []
        if ctype == "multipart/alternative":
            _walk_alternative(children, body, options, depth, html_as_text)
        else:
            for child in children:
                _walk(child, body, options, depth + 1, html_as_text)
        return

    try:
        filename = part.get_filename()
    except Exception:
        filename = None
    if ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename:
        text = _part_text(part)
        if ctype == "text/plain":
            if text:
                body.texts.append(text)
        else:
            body.htmls.append(text)
            if html_as_text:
                converted = html_to_text(text)
                if converted:
                    body.texts.append(converted)
        return
    _attach(part, ctype, disposition, body, options, filename)


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


def _is_own_address(address: str, own: tuple[str, ...]) -> bool:
    address = address.lower()
    domain = address.rpartition("@")[2]
    for entry in own:
        entry = entry.lower().strip()
        if not entry:
            continue
        if "@" in entry and not entry.startswith("@"):
            if address == entry:
                return True
        elif domain == entry.lstrip("@"):
            return True
    return False


def suppresses_autoreply(msg: email.message.Message) -> bool:
    """True when ``X-Auto-Response-Suppress`` asks for no automatic replies (any value but None)."""
    values = [v.strip().lower() for v in _headers(msg, "x-auto-response-suppress")]
    return any(v and v != "none" for v in values)


def classify_mail(
    msg: email.message.Message, options: EmailOptions, envelope_from: str | None = None
) -> tuple[str, str]:
    """Return ``(mail class, reason)`` for a parsed message (DESIGN.md §2.6).

    Classes, first match wins: own-loop, bounce, auto-reply, bulk, human. The
    reason names the header that decided. ``envelope_from`` is the SMTP
    MAIL FROM (``""`` is the null reverse-path ``<>``; None when unknown).
    A null reverse-path alone makes a bounce only when the message carries
    no auto-reply marker: RFC 3834 §3.3 asks auto-replies to use it too.
    Works on messages parsed with any policy; never raises.
    """
    try:
        return _classify(msg, options, envelope_from)
    except Exception as exc:  # classification must never cost the message
        return HUMAN, f"not classified ({type(exc).__name__})"


def _classify(msg: email.message.Message, options: EmailOptions, envelope_from: str | None) -> tuple[str, str]:
    senders = _addresses(msg, "from")
    from_addr = senders[0][1] if senders else ""

    # own loop
    if from_addr and _is_own_address(from_addr, options.own_addresses):
        return OWN_LOOP, f"From: {from_addr} is an Inlet address"
    if options.loop_token:
        for value in _headers(msg, "x-loop"):
            if options.loop_token.lower() in value.lower():
                return OWN_LOOP, f"X-Loop: {value}"
    message_id = _header(msg, "message-id")
    ref = verify_message_id(message_id, options) if message_id else None
    if ref:
        return OWN_LOOP, f"Message-ID: generated by Inlet for {ref}"

    # bounce, strong markers
    ctype = _content_type(msg)
    if ctype == "multipart/report" and (_param(msg, "report-type") or "").lower() == "delivery-status":
        return BOUNCE, "Content-Type: multipart/report; report-type=delivery-status"
    failed = _header(msg, "x-failed-recipients")
    if failed:
        return BOUNCE, f"X-Failed-Recipients: {failed}"
    local = from_addr.partition("@")[0]
    if local in ("mailer-daemon", "postmaster"):
        return BOUNCE, f"From: {from_addr}"
    if envelope_from and envelope_from.strip("<> ").lower().partition("@")[0] in ("mailer-daemon", "postmaster"):
        return BOUNCE, f"envelope sender {envelope_from}"

    auto = _auto_reply_marker(msg)
    if auto:
        return AUTO_REPLY, auto

    # bounce, weak markers (auto-replies share them)
    if envelope_from is not None and envelope_from.strip() in ("", "<>"):
        return BOUNCE, "null reverse-path (MAIL FROM:<>)"
    for value in _headers(msg, "return-path"):
        if value.replace(" ", "") in ("<>", ""):
            return BOUNCE, "Return-Path: <>"

    precedence = (_header(msg, "precedence") or "").lower()
    if precedence in ("bulk", "junk", "list"):
        return BULK, f"Precedence: {precedence}"
    list_id = _header(msg, "list-id")
    if list_id:
        return BULK, f"List-Id: {list_id}"
    if _header(msg, "list-unsubscribe") is not None:
        return BULK, "List-Unsubscribe present"
    return HUMAN, "no automation markers"


def _auto_reply_marker(msg: email.message.Message) -> str | None:
    for value in _headers(msg, "auto-submitted"):
        keyword = value.split(";", 1)[0].strip().lower()
        if keyword and keyword != "no":
            return f"Auto-Submitted: {value}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Reply"):
        value = _header(msg, name)
        if value is not None and value.lower() not in ("no", "false", "0"):
            return f"{name}: {value}" if value else f"{name} present"
    precedence = (_header(msg, "precedence") or "").lower()
    if precedence in ("auto_reply", "auto-reply"):
        return f"Precedence: {precedence}"
    if _header(msg, "x-ms-exchange-inbox-rules-loop") is not None:
        return "X-MS-Exchange-Inbox-Rules-Loop present (Exchange inbox rule / out of office)"
    subject = _header(msg, "subject") or ""
    if _AUTO_REPLY_SUBJECT.match(subject):
        return f"Subject: {subject[:60]}"
    return None


# --------------------------------------------------------------------------- subject


def subject_ref(subject: str, prefix: str = "INC") -> str | None:
    """The incident ref in a subject (``[INC-42]`` preferred, else an ``INC-42`` token), upper-case."""
    if not prefix:
        return None
    escaped = re.escape(prefix)
    for pattern in (rf"\[\s*({escaped}-\d{{1,12}})\s*\]", rf"(?<![\w-])({escaped}-\d{{1,12}})(?![\w-])"):
        found = re.search(pattern, subject, re.IGNORECASE)
        if found:
            return found.group(1).upper()
    return None


def clean_title(subject: str, prefix: str = "INC") -> str:
    """The subject without reply/forward prefixes and the ``[INC-42]`` tag; "(no subject)" when empty."""
    title = " ".join(_CONTROL_CHARS.sub(" ", subject).split())
    if prefix:
        title = re.sub(rf"\[\s*{re.escape(prefix)}-\d{{1,12}}\s*\]", " ", title, flags=re.IGNORECASE)
    title = _SUBJECT_PREFIXES.sub("", " ".join(title.split()), count=1)
    return " ".join(title.split()) or "(no subject)"


# --------------------------------------------------------------------------- public entry points


_MESSAGE_ID_FIELD = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)


def dedup_key(raw: bytes) -> str:
    """The duplicate-detection key of a message, cheaply (intake computes it for every message).

    ``mid:<Message-ID>`` (normalised, as :func:`parse_headers_only` reads it), or
    ``sha256:<hash of the bytes>`` when there is none. Never raises.
    """
    raw = bytes(raw or b"")
    found = _MESSAGE_ID_FIELD.search(raw, 0, _header_end(raw)[0])
    message_id = _normalise_id(found.group(1).decode("latin-1")) if found else ""
    if message_id and message_id.isascii() and message_id.isprintable():
        return f"mid:{message_id}"
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


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
        try:
            return _read_plainly(bytes(raw), options, envelope_from, exc)
        except Exception:  # nothing readable: keep it in the quarantine, never crash intake
            raise ParseError(f"cannot parse email: {type(exc).__name__}: {exc}") from exc


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


_KNOWN_HEADERS = ("from", "to", "cc", "subject", "date", "message-id", "in-reply-to", "references", "sender")


_CONTAINER = re.compile(rb"^content-type[ \t]*:\s*\"?(?:multipart|message)/", re.IGNORECASE | re.MULTILINE)
_BOUNDARY_PARAM = re.compile(rb"boundary\s*=\s*(?:\"([^\"\r\n]{1,200})\"|([^\s;\"]{1,200}))", re.IGNORECASE)
_DELIMITER_LINE = re.compile(rb"^--([^\r\n]{1,200}?)(?:--)?[ \t]*\r?$", re.MULTILINE)
_HEADER_FIELD_START = re.compile(rb"^[^ \t\r\n]", re.MULTILINE)


def _header_end(raw: bytes) -> tuple[int, int]:
    """(end of the header block, start of the body): the first empty line, found by byte search."""
    ends = [(i, i + len(sep)) for sep in (b"\r\n\r\n", b"\r\n\n", b"\n\r\n", b"\n\n") if (i := raw.find(sep)) >= 0]
    return min(ends) if ends else (len(raw), len(raw))


def over_limits(raw: bytes, options: EmailOptions) -> str | None:
    """Why this message is too costly to parse structurally (None when it is not), in one linear pass.

    The stdlib's MIME parser nests one generator per MIME level, so each line
    costs as much as the nesting is deep (2,000 levels: ~30 s), and every part
    and header costs parse time: the counts are bounded before parsing.
    Containers (multipart/* and message/* declarations) bound the depth.
    """
    header_block = raw[: _header_end(raw)[0]]
    if len(header_block) > options.max_header_bytes:
        return f"header block of {len(header_block)} bytes (limit {options.max_header_bytes})"
    fields = sum(1 for _ in _HEADER_FIELD_START.finditer(header_block))
    if fields > options.max_header_fields:
        return f"{fields} header fields (limit {options.max_header_fields})"
    containers = sum(1 for _ in _CONTAINER.finditer(raw))
    if containers > options.max_mime_containers:
        return f"{containers} multipart/message containers (limit {options.max_mime_containers})"
    if containers:
        boundaries = {a or b for a, b in _BOUNDARY_PARAM.findall(raw)}
        parts = sum(1 for m in _DELIMITER_LINE.finditer(raw) if m.group(1) in boundaries)
        if parts > options.max_mime_parts:
            return f"{parts} MIME parts (limit {options.max_mime_parts})"
    return None


def _bounded_headers(raw: bytes, options: EmailOptions) -> email.message.Message:
    """The first max_header_fields fields of the header block (at most max_header_bytes), compat32-parsed."""
    head = raw[: _header_end(raw)[0]][: options.max_header_bytes]
    starts = [m.start() for m in itertools.islice(_HEADER_FIELD_START.finditer(head), options.max_header_fields + 1)]
    if len(starts) > options.max_header_fields:
        head = head[: starts[options.max_header_fields]]
    return BytesHeaderParser(policy=policy.compat32).parsebytes(head + b"\r\n\r\n")


def _read_as_text(raw: bytes, options: EmailOptions, envelope_from: str | None, why: str) -> Signal:
    """A message over a parse limit: its first header fields parsed, the rest of it kept as text.

    Nothing is lost: the raw message stays on its Inbound row; threading,
    sender and class still work from the headers.
    """
    msg = _bounded_headers(raw, options)
    body = raw[_header_end(raw)[1] :]
    subject = _header(msg, "subject") or ""
    senders = _addresses(msg, "from")
    reporter_name, reporter_email = senders[0] if senders else (None, None)
    mid = _header(msg, "message-id")
    references = _bounded_ids([*_raw_header_ids(msg, "references"), *_raw_header_ids(msg, "in-reply-to")])
    mail_class, reason = classify_mail(msg, options, envelope_from)
    return Signal(
        source="email",
        title=clean_title(subject, options.ref_prefix),
        text=_clean_text(_decode_bytes(body, None)),
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
        details={"parse_limit": f"read as plain text: {why}"},
    )


def _parse(raw: bytes, options: EmailOptions, envelope_from: str | None) -> Signal:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ParseError(f"email must be bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if not raw.strip():
        raise ParseError("empty message: no headers and no body")
    too_costly = over_limits(raw, options)
    if too_costly:
        return _read_as_text(raw, options, envelope_from, too_costly)
    msg = email.message_from_bytes(raw, policy=_POLICY)

    has_headers = any(str(name).lower() in _KNOWN_HEADERS for name, _ in msg.raw_items())
    body = _Body()
    _walk(msg, body, options, 0, html_as_text=True)
    full_text = "\n\n".join(body.texts)
    if not has_headers and not body.parts:  # "Error: disk full" on line one is text, not a header
        full_text = _clean_text(_decode_bytes(raw, None))
    if not has_headers and not body.parts and not body.forwarded and (_looks_binary(raw) or not full_text):
        raise ParseError("no headers and no readable text: not an email message")

    subject = _header(msg, "subject") or ""
    senders = _addresses(msg, "from")
    reporter_name, reporter_email = senders[0] if senders else (None, None)
    mid = _header(msg, "message-id")
    message_id = _normalise_id(mid) if mid else None

    references = _bounded_ids([*_raw_header_ids(msg, "references"), *_raw_header_ids(msg, "in-reply-to")])

    mail_class, reason = classify_mail(msg, options, envelope_from)
    details: dict = {}
    if mail_class == BOUNCE:
        original = body.original_ids or _MESSAGE_ID_LINE.findall(full_text)
        references = _bounded_ids([*references, *(v for v in original if v != message_id)])
        failed = dict.fromkeys(body.failed_recipients)
        for value in _headers(msg, "x-failed-recipients"):
            for address in value.split(","):
                address = address.strip().strip("<>").lower()
                if address:
                    failed[address] = None
        details["failed_recipients"] = list(failed)[:_MAX_ADDRESSES]
        if original:
            details["original_message_id"] = original[0]

    forwarding = bool(_FORWARD_PREFIX.match(subject))
    new_words = full_text if forwarding else split_reply(full_text)
    if body.forwarded:
        full_text = "\n\n".join([t for t in (full_text, *body.forwarded) if t])
        new_words = "\n\n".join([t for t in (new_words, *body.forwarded) if t])

    return Signal(
        source="email",
        title=clean_title(subject, options.ref_prefix),
        text=new_words,
        html=body.htmls[0] if body.htmls else None,
        full_text=full_text,
        reporter_email=reporter_email,
        reporter_name=reporter_name or None,
        recipients=tuple(_address_list(msg, "to")),
        cc=tuple(_address_list(msg, "cc")),
        message_id=message_id or None,
        references=tuple(references),
        subject_ref=subject_ref(subject, options.ref_prefix),
        occurred_at=_date(msg),
        attachments=tuple(body.parts),
        mail_class=mail_class,
        mail_class_reason=reason,
        suppress_autoreply=suppresses_autoreply(msg),
        details=details,
    )


def _raw_header_ids(msg: email.message.Message, name: str) -> list[str]:
    ids: list[str] = []
    for value in _raw_values(msg, name):
        ids.extend(_id_list(_clean_header_text(value)))
    return ids


def _bounded_ids(ids: list[str]) -> list[str]:
    """Unique ids in order, at most _MAX_REFERENCES: the first (the thread's root) and the latest."""
    unique = list(dict.fromkeys(i for i in ids if i))
    if len(unique) <= _MAX_REFERENCES:
        return unique
    return unique[:1] + unique[-(_MAX_REFERENCES - 1) :]


def _address_list(msg: email.message.Message, name: str) -> list[str]:
    """Unique lowercase addresses of To or Cc, at most _MAX_ADDRESSES, read from the raw header
    (the structured parser costs ~300 µs per address; only the addresses are needed here)."""
    found: dict[str, None] = {}
    values = []
    for value in _raw_values(msg, name):  # a bounded head of each, cut after an address
        values.append(value if len(value) <= _MAX_FIELD_CHARS else value[: value.rfind(",", 0, _MAX_FIELD_CHARS) + 1])
    try:
        pairs = email.utils.getaddresses([_clean_header_text(v) for v in values])
    except Exception:
        return []
    for _display, addr in pairs:
        addr = addr.strip().strip("<>").lower()
        if addr and "@" in addr and addr.isprintable():
            found[addr] = None
            if len(found) >= _MAX_ADDRESSES:
                break
    return list(found)


_CONTROL_BYTES = bytes(b for b in range(0x20) if b not in (0x09, 0x0A, 0x0D)) + b"\x7f"


def _looks_binary(raw: bytes) -> bool:
    """Whether bytes are binary junk rather than text: text in any charset has hardly any control bytes."""
    controls = len(raw) - len(raw.translate(None, _CONTROL_BYTES))  # in C: a Python loop costs ~50 ns a byte
    return controls > len(raw) * 0.05


def _date(msg: email.message.Message) -> datetime | None:
    try:
        value = msg.get("date")
        when = getattr(value, "datetime", None)
    except Exception:
        when = None
    if when is None:
        raw = _raw_values(msg, "date")
        try:
            when = email.utils.parsedate_to_datetime(raw[0]) if raw else None
        except Exception:
            return None
    if when is None:
        return None
    try:
        if when.tzinfo is None:  # "-0000": time zone unknown, read as UTC (RFC 5322 §3.3)
            when = when.replace(tzinfo=UTC)
        return when.astimezone(UTC)
    except Exception:
        return None
