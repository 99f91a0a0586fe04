"""What parsing one email costs (issue #12 point 3), next to the bare stdlib parse of the same messages.

A realistic generated mix, the kind a help desk receives: new requests (plain text with a
signature), replies with quoted history (threading by In-Reply-To/References and ``Re:``),
HTML-only mail, mail with attachments (PDF, PNG), and non-UTF-8 charsets (ISO-8859-1,
Windows-1252, KOI8-R, Shift_JIS), plus a few auto-replies and multipart/alternative.

Printed per kind and for the whole mix (and, as "headers", the first stage of ``read_email`` alone:
what a message costs that the pipeline can drop on its headers): ms per message for ``parse_email`` (Inlet) and for the
bare baseline measured in the same run on the same bytes: ``email.message_from_bytes(raw,
policy=policy.default)`` and ``get_body(("plain", "html")).get_content()`` — what any Python
mail reader does at least. The ratio says what Inlet's reading (classification, threading keys,
attachments, HTML to text, reply stripping) costs on top.

Run: ``PYTHONPATH=. python bench/parse.py [--count 1000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import email
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from parsers.email import EmailOptions, parse_email, read_email  # noqa: E402

OPTIONS = EmailOptions(
    ref_prefix="INC",
    own_addresses=("support@example.org",),
    loop_token="support@example.org",
    message_id_secret=b"bench-secret",
    message_id_domain="example.org",
)

PROBLEMS = [
    ("Payroll export fails", "The payroll export stops at 80 % with 'error 0x80070005' since this morning."),
    ("VPN gateway unreachable", "Nobody in the Berlin office can connect to the VPN gateway since 08:50."),
    ("Printer on floor 3", "The printer on floor 3 prints blank pages; we replaced the toner already."),
    ("Password reset mail missing", "Users do not receive the password reset mail; checked spam folders too."),
    ("Shop checkout slow", "Checkout takes 40 seconds and sometimes times out with a 504 error."),
]
SIGNATURE = "Best regards,\n{name}\nCustomer Ltd. | +49 30 1234567\nhttps://customer.example"
NAMES = ["Alice Example", "Bob Müller", "Chloé Durand", "Dmitri Ivanov", "Hanako Sato"]
KINDS = ("new", "reply", "html", "attachment", "charset", "alternative", "auto-reply")
WEIGHTS = (40, 25, 8, 8, 8, 8, 3)  # a help desk's day: mostly new requests and replies


def _base(i: int, kind: str, when: datetime) -> tuple[EmailMessage, str, str]:
    name = NAMES[i % len(NAMES)]
    title, text = PROBLEMS[i % len(PROBLEMS)]
    msg = EmailMessage()
    msg["From"] = f"{name} <user{i % 97}@customer.example>"
    msg["To"] = "Support <support@example.org>"
    if i % 5 == 0:
        msg["Cc"] = "ops@customer.example, Team Lead <lead@customer.example>"
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = make_msgid(idstring=f"{kind}{i}", domain="customer.example")
    msg["Subject"] = f"{title} ({i})"
    return msg, name, text


def generate(count: int, seed: int = 7, first: int = 0) -> list[tuple[str, bytes]]:
    """``count`` (kind, raw bytes) pairs in a fixed pseudo-random mix, numbered from ``first``."""
    rng = random.Random(seed)
    start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    out = []
    for i in range(first, first + count):
        kind = rng.choices(KINDS, WEIGHTS)[0]
        when = start + timedelta(minutes=i)
        msg, name, text = _base(i, kind, when)
        body = f"Hello,\n\n{text}\nCould you please have a look?\n\n" + SIGNATURE.format(name=name)
        if kind == "reply":
            ref = f"INC-{100 + i % 50}"
            msg.replace_header("Subject", f"Re: [{ref}] {msg['Subject']}")
            msg["In-Reply-To"] = f"<inlet.{ref}.n{i}.0123456789abcdef01234567@example.org>"
            msg["References"] = f"<orig{i}@customer.example> <inlet.{ref}.n{i}.0123456789abcdef01234567@example.org>"
            history = "\n".join(f"> {line}" for line in body.splitlines())
            history += "\n> \n> > " + "\n> > ".join(text.split(". "))
            body = (
                f"Thanks, it works again since 10:55.\n\n{SIGNATURE.format(name=name)}\n\n"
                f"On {format_datetime(when - timedelta(hours=2))}, Support <support@example.org> wrote:\n{history}\n"
            )
            msg.set_content(body)
        elif kind == "html":
            html = (
                f"<html><body><p>Hello,</p><p>{text}</p><table><tr><td>Host</td><td>web-{i % 9}</td></tr>"
                f"<tr><td>Since</td><td>08:50</td></tr></table><p>Best regards,<br>{name}</p></body></html>"
            )
            msg.set_content(html, subtype="html")
        elif kind == "attachment":
            msg.set_content(body)
            msg.add_attachment(
                bytes(rng.randrange(256) for _ in range(20_000)), "application", "pdf", filename="log.pdf"
            )
            msg.add_attachment(b"\x89PNG\r\n\x1a\n" + bytes(4000), "image", "png", filename=f"screen{i}.png")
        elif kind == "charset":
            charset = ("iso-8859-1", "windows-1252", "koi8-r", "shift_jis")[i % 4]
            native = {
                "iso-8859-1": "Grüße aus Köln: der Drucker druckt leere Seiten.",
                "windows-1252": "Le serveur “web-3” répond en 40 s — merci de vérifier.",
                "koi8-r": "Принтер на третьем этаже печатает пустые страницы.",
                "shift_jis": "三階のプリンターが白紙を印刷します。確認してください。",
            }[charset]
            msg.set_content(
                f"{native}\n\n{text}\n\nBest regards,\nIT desk",
                charset=charset,
                cte="8bit" if i % 2 else "quoted-printable",
            )
        elif kind == "alternative":
            msg.set_content(body)
            msg.add_alternative(f"<html><body><p>{body.replace(chr(10), '<br>')}</p></body></html>", subtype="html")
        else:  # auto-reply
            msg.replace_header("Subject", f"Automatic reply: {msg['Subject']}")
            msg["Auto-Submitted"] = "auto-replied"
            msg.set_content("I am out of the office until Monday and will read your mail then.")
        out.append((kind, msg.as_bytes().replace(b"\n", b"\r\n")))
    return out


def bare(raw: bytes) -> None:
    msg = email.message_from_bytes(raw, policy=policy.default)
    body = msg.get_body(("plain", "html"))
    if body is not None:
        body.get_content()


def inlet(raw: bytes) -> None:
    parse_email(raw, OPTIONS, envelope_from="user@customer.example")


def headers_only(raw: bytes) -> str | None:
    return read_email(raw, OPTIONS, envelope_from="user@customer.example").headers.mail_class


def per_message_ms(function, rounds: list[list[bytes]]) -> float:
    """The best of the runs (one per round of distinct messages), in ms per message (the least disturbed run).

    Each round has messages of its own: Inlet's parser remembers parsed header values (parsers/email),
    so parsing the same bytes twice would measure that memory, not a stream of new mail.
    """
    times = []
    for messages in rounds:
        started = time.perf_counter()
        for raw in messages:
            function(raw)
        times.append((time.perf_counter() - started) * 1000 / len(messages))
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="messages in the mix (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs over the mix; the fastest counts (default 3)")
    args = parser.parse_args()
    # The same mix of kinds in every round (same seed), each message new (numbered on); one more set warms up.
    # The kinds are disjoint sets of messages; "all" gets sets of its own.
    mixes = [generate(args.count, first=n * args.count) for n in range(args.rounds * 4 + 1)]
    for _kind, raw in mixes.pop():  # warm both paths (imports, compiled patterns) before timing
        bare(raw)
        inlet(raw)
    print(f"{'kind':<12} {'count':>5} {'inlet ms':>9} {'bare ms':>8} {'ratio':>6}")
    for kind in (*KINDS, "all"):
        sets = mixes[args.rounds * 2 :] if kind == "all" else mixes[: args.rounds * 2]
        rounds = [[raw for k, raw in mix if kind in (k, "all")] for mix in sets]
        if not rounds[0]:
            continue
        # alternate: inlet on even sets, the baseline on odd ones, so neither sees bytes the other parsed
        ours = per_message_ms(inlet, rounds[0::2])
        base = per_message_ms(bare, rounds[1::2])
        print(f"{kind:<12} {len(rounds[0]):>5} {ours:>9.3f} {base:>8.3f} {ours / base:>6.2f}")
    # The first stage of read_email alone: what a message the pipeline drops on its headers costs.
    ours = per_message_ms(headers_only, [[raw for _k, raw in mix] for mix in mixes[args.rounds * 2 :: 2]])
    base = per_message_ms(bare, [[raw for _k, raw in mix] for mix in mixes[args.rounds * 2 + 1 :: 2]])
    print(f"{'headers':<12} {len(mixes[0]):>5} {ours:>9.3f} {base:>8.3f} {ours / base:>6.2f}  (read_email().headers)")
    sizes = [len(raw) for _k, raw in mixes[0]]
    print(f"mix: {len(mixes[0])} messages per round, median {statistics.median(sizes):.0f} bytes")


if __name__ == "__main__":
    main()
