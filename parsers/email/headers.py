"""Header access that never raises: decoded text, addresses, ids, the date; and the header block's bounds."""

from __future__ import annotations

import email
import email.header
import email.message
import email.utils
import functools
import hashlib
import itertools
import re
from datetime import UTC, datetime
from email import policy
from email.headerregistry import HeaderRegistry, MessageIDHeader, UnstructuredHeader
from email.parser import BytesHeaderParser

from parsers.email.message_ids import _id_list, _normalise_id
from parsers.email.options import EmailOptions
from parsers.email.text import _CONTROL_CHARS, _decode_bytes

_MAX_FIELD_CHARS = 16_384  # a header value read for display or matching (a subject, an id)
_MAX_ADDRESSES = 200  # addresses read from one To or Cc


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
        # the stdlib creates a new header class for every header it parses (~27 µs): one per name will do
        self._classes = functools.lru_cache(maxsize=256)(super().__getitem__)

    def __getitem__(self, name):
        return self._classes(name)

    def __call__(self, name, value):
        try:
            return self._remembered(name, value)
        except TypeError:  # an unhashable value: parse it as the stdlib would
            return super().__call__(name, value)


# policy.default in all but the remembering header registry
_POLICY = policy.default.clone(header_factory=_RememberingRegistry())


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


_RAW_8BIT = re.compile("[\udc80-\udcff]")  # 8-bit bytes the parser kept as surrogate escapes


def _has_raw_8bit(value: str) -> bool:
    return _RAW_8BIT.search(value) is not None


_LINE_BREAKS = re.compile(r"\n|\r")  # what policy.default removes from a header value before parsing it
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_MESSAGE_ID = re.compile(rf"[ \t]*<{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*>[ \t]*")


@functools.lru_cache(maxsize=256)
def _kind(name: str) -> str:
    """How policy.default parses a header: "unstructured", "message-id" or "structured"."""
    factory = _POLICY.header_factory[name]
    if issubclass(factory, UnstructuredHeader):
        return "unstructured"
    return "message-id" if issubclass(factory, MessageIDHeader) else "structured"


def _plain_value(name: str, value: str) -> str | None:
    """The text policy.default would give for ``value``, without building the header object; None
    when only the header parser can tell.

    Its unstructured parser returns ASCII without encoded words unchanged, and so does its
    Message-ID parser for a plain ``<local@domain>``; building the object costs more than the
    rest of reading the value (tests/test_email_parser.py checks both against the stdlib).
    """
    if not value.isascii() or "=?" in value:
        return None
    kind = _kind(name.lower())
    unfolded = _LINE_BREAKS.sub("", value)
    if kind == "unstructured" or (kind == "message-id" and _PLAIN_MESSAGE_ID.fullmatch(unfolded)):
        return unfolded
    return None


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
    plain = _plain_value(name, raw[0])
    if plain is not None:
        return _clean_header_text(plain)
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


def _raw_header_ids(msg: email.message.Message, name: str) -> list[str]:
    ids: list[str] = []
    for value in _raw_values(msg, name):
        ids.extend(_id_list(_clean_header_text(value)))
    return ids


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


def _date(msg: email.message.Message) -> datetime | None:
    raw = _raw_values(msg, "date")
    if not raw:
        return None
    # What policy.default's DateHeader reads (the unfolded value), else the raw value: parsed directly,
    # without the header object (which formats the date and parses that text again).
    compat32 = isinstance(msg.policy, email.policy.Compat32)
    when = None if compat32 else _parsed_date(_LINE_BREAKS.sub("", raw[0]))
    when = when or _parsed_date(raw[0])
    if when is None:
        return None
    try:
        if when.tzinfo is None:  # "-0000": time zone unknown, read as UTC (RFC 5322 §3.3)
            when = when.replace(tzinfo=UTC)
        return when.astimezone(UTC)
    except Exception:
        return None


def _parsed_date(value: str) -> datetime | None:
    try:
        return email.utils.parsedate_to_datetime(value)
    except Exception:
        return None
