"""Body text: bytes in a declared (or wrong) charset to clean text, HTML to text, the new words of a reply."""

from __future__ import annotations

import codecs
import email.charset
import functools
import html as html_lib
import re
from html.parser import HTMLParser

import html2text
from mailparser_reply import EmailReplyParser
from mailparser_reply.parser import EmailMessage, EmailReply

_MAX_HTML_TO_TEXT = 512 * 1024  # html2text costs ~25 µs per tag: beyond these, a linear tag stripper reads it
_MAX_HTML_TO_TEXT_TAGS = 4000

_MAX_REPLY_PARSE_CHARS = 16_384  # mail-parser-reply runs on this head of the text only (~5 µs per char)

_REPLY_LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "sv", "da", "pl", "pt")

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


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
        latest = first_reply(head)
    except Exception:
        return text
    latest = _clean_text(_drop_trailing_quote(latest))
    if len(head) < len(text) and latest == _clean_text(head):
        return text  # nothing quoted in the head: the rest may be new words too
    return latest or text


@functools.cache
def _reply_patterns() -> tuple:
    """mail-parser-reply's header, signature and disclaimer patterns for our languages, built once.

    The library builds them again for every message it reads (a dozen alternations per language).
    """
    languages = EmailReplyParser(languages=list(_REPLY_LANGUAGES)).languages
    message = EmailMessage(text="", languages=list(languages))
    return languages, message.HEADER_REGEX, message.SIGNATURE_REGEX, message.DISCLAIMERS_REGEX


def first_reply(text: str) -> str:
    """``EmailReplyParser(languages=…).read(text).replies[0].body``, stopping at the first reply.

    The library splits the whole text into replies, running its signature and disclaimer
    patterns on each, and finds every quote header; only the first reply is the new words,
    so this reads the text up to the first non-empty reply, the same way (its ``read``,
    step by step) and with the same patterns. tests/test_email_parser.py checks it against
    the library's own result.
    """
    languages, header_regex, signature_regex, disclaimers_regex = _reply_patterns()
    message = EmailMessage(
        text=text,
        languages=list(languages),
        _header_regex=header_regex,
        _signature_regex=signature_regex,
        _disclaimers_regex=disclaimers_regex,
    )
    text = message.text  # normalised by the library: line ends, stripped lines
    current_position = 0
    previous_header = ""
    for found in header_regex.finditer(text):
        for header in found.groups():
            if not header:
                continue
            position = text.find(header, current_position + 1 if current_position > 0 else current_position)
            content = text[current_position:position]
            if content.strip():
                return _reply_body(message, content, previous_header)
            current_position = position if position >= 0 else 0
            previous_header = header
    return _reply_body(message, text[current_position:], previous_header)


def _reply_body(message: EmailMessage, content: str, header: str) -> str:
    disclaimers, signatures = message._process_signatures_disclaimers(content)
    return EmailReply(headers=header, content=content, signatures=signatures, disclaimers=disclaimers).body


def _drop_trailing_quote(text: str) -> str:
    """A bottom-posted quote without an attribution line ("> …" lines at the end) is not new words."""
    lines = text.rstrip().splitlines()
    while lines and (lines[-1].startswith(">") or not lines[-1].strip()):
        lines.pop()
    return "\n".join(lines)


# --------------------------------------------------------------------------- filenames and parts

_CONTROL_BYTES = bytes(b for b in range(0x20) if b not in (0x09, 0x0A, 0x0D)) + b"\x7f"


def _looks_binary(raw: bytes) -> bool:
    """Whether bytes are binary junk rather than text: text in any charset has hardly any control bytes."""
    controls = len(raw) - len(raw.translate(None, _CONTROL_BYTES))  # in C: a Python loop costs ~50 ns a byte
    return controls > len(raw) * 0.05
