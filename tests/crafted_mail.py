"""Crafted messages that cost more than linear time to a naive parser (issue #11 point 7).

Shared by the tests and bench/mail_limits.py; each is well under the default 25 MB size limit and
has lines an SMTP server takes (long headers folded, as RFC 5322 allows).
"""

from __future__ import annotations

HEAD = b"From: Mallory <mallory@evil.example>\r\nTo: support@example.org\r\nMessage-ID: <%s@evil.example>\r\n"


def _fold(items: list[bytes], separator: bytes, per_line: int) -> bytes:
    """Items joined by ``separator``, a folding line break after every ``per_line`` of them."""
    lines = [separator.join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return (separator.rstrip() + b"\r\n ").join(lines) if separator.strip() else b"\r\n ".join(lines)


def reply_prefixes(n: int = 20_000) -> bytes:
    """``Subject: Re: Re: … `` n times (each prefix cleaned in its own pass: quadratic)."""
    return HEAD % b"re" + b"Subject: " + _fold([b"Re:"] * n, b" ", 100) + b" printer\r\n\r\nbody\r\n"


def nested_mime(depth: int = 2_000) -> bytes:
    """multipart/mixed nested ``depth`` levels (the stdlib parser nests a generator per level)."""
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth))
    closing = b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    return (
        HEAD % b"nested"
        + b"Subject: nested\r\nMIME-Version: 1.0\r\n"
        + opening
        + b"Content-Type: text/plain\r\n\r\nhi\r\n"
        + closing
    )


def many_parts(n: int = 20_000) -> bytes:
    parts = b"".join(b"--b\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n" for _ in range(n))
    return (
        HEAD % b"parts"
        + b'Subject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + parts
        + b"--b--\r\n"
    )


def many_headers(n: int = 200_000) -> bytes:
    return (
        HEAD % b"headers" + b"Subject: headers\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(n)) + b"\r\nbody\r\n"
    )


def many_references(n: int = 50_000) -> bytes:
    refs = _fold([b"<r%d@evil.example>" % i for i in range(n)], b" ", 20)
    return HEAD % b"refs" + b"Subject: refs\r\nReferences: " + refs + b"\r\n\r\nbody\r\n"


def many_cc(n: int = 20_000) -> bytes:
    cc = _fold([b"User %d <u%d@evil.example>" % (i, i) for i in range(n)], b", ", 10)
    return HEAD % b"cc" + b"Subject: cc\r\nCc: " + cc + b"\r\n\r\nbody\r\n"


def huge_html(n: int = 100_000) -> bytes:
    html = _fold([b"<div>"] * n, b"", 50) + b"\r\ndeep\r\n" + _fold([b"</div>"] * n, b"", 50)
    return (
        HEAD % b"html"
        + b"Subject: html\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        + html
        + b"\r\n"
    )


def quoted_reply(n: int = 20_000) -> bytes:
    quote = b"> an old line of the thread\r\n" * n
    return HEAD % b"quoted" + b"Subject: Re: quoted\r\n\r\nNew words.\r\n\r\nOn Mon, 3 Jun 2024 Ann wrote:\r\n" + quote


CRAFTED = {
    "prefixes": reply_prefixes(),
    "nested": nested_mime(),
    "parts": many_parts(),
    "headers": many_headers(),
    "references": many_references(),
    "cc": many_cc(),
    "html": huge_html(),
    "quoted": quoted_reply(),
}
