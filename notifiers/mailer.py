"""Emails to reporters, sent with smtplib through the configured relay.

Why not Apprise's ``mailto://``: its email plugin adds extra headers with
``Header()`` and then *appends* its own ``Message-ID`` (``make_msgid``), so a
Message-ID of ours would appear twice and ``References`` would be re-encoded;
replies could not thread back. Reporter emails therefore go through this
module; the outcome has the same shape as the Apprise adapter's
(:class:`~notifiers.apprise_adapter.Outcome`), so delivery treats both alike.
Group and stakeholder ``mailto://`` channels still go through Apprise.

Targets look like ``email:ann@example.org``.
"""

from __future__ import annotations

import email.policy
import ipaddress
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from urllib.parse import urlsplit

from notifiers.apprise_adapter import Outcome
from notifiers.render import Rendered, header_safe

PREFIX = "email:"
_POLICY = email.policy.default.clone(max_line_length=998)  # no folding of Message-ID and References


def is_email_target(target: str) -> bool:
    return target.startswith(PREFIX)


def email_target(address: str) -> str:
    return PREFIX + address.strip().lower()


def automatic_headers(config, *, reply: bool = False) -> dict[str, str]:
    """What marks Inlet's mail as automatic (RFC 3834) and as Inlet's own (X-Loop).

    ``reply``: the message answers one (an acknowledgement): ``auto-replied`` (RFC 3834 section 5)."""
    return {
        "Auto-Submitted": "auto-replied" if reply else "auto-generated",
        "X-Auto-Response-Suppress": "All",
        "X-Loop": header_safe(config.mail.loop_token),
    }


def helo_name(config) -> str:
    """The name Inlet gives in HELO/EHLO: ``helo_name``, else the host of ``base_url``; when that is an IP
    address, this machine's fully qualified name (never the ``[127.0.0.1]`` smtplib would make up)."""
    if config.notifications.helo_name:
        return config.notifications.helo_name
    host = urlsplit(config.inlet.base_url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host:
            return host
    fqdn = socket.getfqdn()
    return fqdn if "." in fqdn else "localhost.localdomain"


def build_message(
    config, to: str, message: Rendered, *, message_id: str, references=(), now=None, reply: bool = False
) -> EmailMessage:
    """The email: threading headers, loop protection, text with an HTML alternative.

    Every header value is passed through :func:`header_safe`, and the message
    uses ``policy.default``, which refuses CR or LF in a header: data from an
    incident can never start a header of its own.
    """
    section = config.notifications
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = formataddr((header_safe(section.from_name or config.inlet.name), section.from_address))
    msg["Reply-To"] = section.from_address
    msg["To"] = header_safe(to)
    msg["Subject"] = header_safe(message.subject, 900)
    msg["Message-ID"] = header_safe(message_id)
    refs = [header_safe(r) for r in references if r]
    if refs:
        msg["In-Reply-To"] = refs[0]
        msg["References"] = " ".join(refs)
    if now is not None:
        msg["Date"] = format_datetime(now)
    for name, value in automatic_headers(config, reply=reply).items():
        msg[name] = value
    msg.set_content(message.text)
    msg.add_alternative(message.html, subtype="html")
    return msg


def send(
    config, target: str, message: Rendered, *, message_id: str, references=(), now=None, reply: bool = False
) -> Outcome:
    """Send one email through the relay; never raises. 5xx answers are permanent failures.

    ``reply``: the message answers the reporter's (an acknowledgement)."""
    section = config.notifications
    address = target[len(PREFIX) :]
    started = time.monotonic()
    name, parsed = parseaddr(address)
    if not parsed or "@" not in parsed or parsed != address:
        return Outcome(target, target, False, "not an email address", 0.0, True)
    try:
        msg = build_message(
            config, address, message, message_id=message_id, references=references, now=now, reply=reply
        )
        timeout, helo = section.send_timeout.total_seconds(), helo_name(config)
        if section.smtp_security == "ssl":
            client = smtplib.SMTP_SSL(
                section.smtp_host,
                section.smtp_port,
                local_hostname=helo,
                timeout=timeout,
                context=ssl.create_default_context(),
            )
        else:
            client = smtplib.SMTP(section.smtp_host, section.smtp_port, local_hostname=helo, timeout=timeout)
        with client:
            if section.smtp_security == "starttls":
                client.starttls(context=ssl.create_default_context())
            if section.smtp_user:
                client.login(section.smtp_user, section.smtp_password())
            client.send_message(msg, from_addr=section.from_address, to_addrs=[address])
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = next(iter(exc.recipients.values()))
        return _failed(target, started, f"{code} {_text(reply)}", code >= 500)
    except smtplib.SMTPResponseException as exc:
        return _failed(target, started, f"{exc.smtp_code} {_text(exc.smtp_error)}", exc.smtp_code >= 500)
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        return _failed(target, started, f"{type(exc).__name__}: {exc}", False)
    return Outcome(target, target, True, "", time.monotonic() - started)


def _failed(target: str, started: float, detail: str, permanent: bool) -> Outcome:
    return Outcome(target, target, False, detail[:1000], time.monotonic() - started, permanent)


def _text(reply) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
