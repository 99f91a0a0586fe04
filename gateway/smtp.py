"""The SMTP server of ``inlet serve`` (aiosmtpd): receive, store, then answer.

The handler accepts mail only for the configured ``[[address]]`` entries
(never an open relay), stores each message as one Inbound through the
group-commit :class:`~gateway.intake.InboundWriter` and answers ``250`` only
once that row is committed (DESIGN.md §2.1). Parsing happens later, in the
pipeline worker: a session never waits for it and never sees its errors.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import socket
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from gateway.config import secret
from gateway.errors import StoreUnavailable
from gateway.intake import InboundRecord, InboundWriter
from gateway.mail_settings import match_address
from parsers.email import dedup_key as message_dedup_key
from store.db import db

log = logging.getLogger("inlet.smtp")

# Reply codes (RFC 5321, enhanced status codes RFC 3463).
OK = "250 2.1.5 OK"
STORED = "250 2.0.0 OK: stored as inbound {id}"
DUPLICATE = "250 2.0.0 OK: already stored as inbound {id}"
NO_SUCH_USER = "550 5.1.1 <{address}>: no such recipient here"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
MESSAGE_TOO_BIG = "552 5.3.4 Message too big for system"
STORE_FAILED = "451 4.3.0 Cannot store the message now, try again later"
LOCAL_ERROR = "451 4.3.0 Local error in processing, try again later"
AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"


def dedup_key(raw: bytes) -> str:
    """The duplicate-detection key of a message: its Message-ID, else a content hash (fits the column)."""
    import hashlib

    key = message_dedup_key(raw)
    if len(key) > 255:  # a hostile Message-ID must not make the row unstorable
        key = "mid-sha256:" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
    return key


# A path of MAIL FROM / RCPT TO in its common form: <dot-atom@dot-atom>, then the ESMTP parameters.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"\s*<((?:{_ATOM}(?:\.{_ATOM})*)@(?:{_ATOM}(?:\.{_ATOM})*))>(.*)", re.DOTALL)


class InletSMTP(SMTP):
    """aiosmtpd's SMTP with our size-limit reply (its own text lacks the enhanced code),
    and a fast path for the common form of an address in MAIL and RCPT."""

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str) and status.startswith("552 Error"):
            status = MESSAGE_TOO_BIG
        await super().push(status)

    def _getaddr(self, arg: str):
        # aiosmtpd's version declares a typing.Protocol class on every call and runs the full RFC 5322
        # address parser: together more than half of a bare session's CPU (bench/smtp_intake.py). A plain
        # <local@domain> path gets the same answer from one regex; anything else (quoted local parts,
        # source routes, <>) goes to the full parser.
        plain = _PLAIN_PATH.fullmatch(arg) if arg else None
        if plain is None:
            return self._parse_address(arg)
        address, rest = plain.group(1), plain.group(2)
        if rest[:1].isspace():
            rest = rest.lstrip()
            if rest.startswith("("):  # a comment after the path: the full parser knows what to do
                return self._parse_address(arg)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    def _parse_address(self, arg: str):
        try:
            return super()._getaddr(arg)
        except (IndexError, AttributeError):  # the stdlib parser's bugs on e.g. "a@": malformed (553)
            return None, None


class IntakeHandler:
    """aiosmtpd handler: RCPT checks recipients, DATA stores the message."""

    def __init__(self, config, writer: InboundWriter, *, source: str = "smtp"):
        self.config, self.writer, self.source = config, writer, source
        self.max_recipients = config.smtp.max_recipients
        self._batch: list = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 -- aiosmtpd's name
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return TOO_MANY_RECIPIENTS
        if match_address(self.config, address) is None:
            return NO_SUCH_USER.format(address=_printable(address))
        envelope.rcpt_tos.append(address)
        self.writer.in_hand(session)  # until DATA is answered: the pipeline worker waits meanwhile
        return OK

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 -- aiosmtpd's name
        # The sessions of one event-loop turn are committed together, in the loop itself (_commit):
        # group commit without a thread hand-over per message. A store that cannot take the rows
        # within [database] busy_timeout answers 451 4.3.0.
        raw = bytes(envelope.original_content or b"")
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer or "")
        record = InboundRecord(
            source=self.source,
            raw=raw,
            dedup_key=dedup_key(raw),
            envelope_from=(envelope.mail_from or "")[:320],
            envelope_to=tuple(a[:320] for a in envelope.rcpt_tos),
            peer=peer[:100],
        )
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._batch.append((record, future))
        if len(self._batch) == 1:  # the first DATA of this loop turn schedules the commit of them all
            loop.call_soon(self._commit)
        try:
            accepted = await future
        except StoreUnavailable as exc:
            log.error("message from %s (%s) not stored: %s", envelope.mail_from, peer, exc or "timeout")
            return STORE_FAILED
        finally:
            self.writer.out_of_hand(session)
        template = DUPLICATE if accepted.duplicate else STORED
        return template.format(id=accepted.inbound_id)

    def _commit(self) -> None:
        """Group commit inside the event loop: the messages of one loop turn share one transaction."""
        batch, self._batch = self._batch, []
        self.writer.commit_now(batch)

    async def handle_exception(self, error: Exception) -> str:
        log.exception("SMTP session error: %s", error)
        return LOCAL_ERROR


class Authenticator:
    """SMTP AUTH against the configured trusted submitters (passwords from the environment)."""

    def __init__(self, users):
        self.users = {u.name: u.password_env for u in users}

    def __call__(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        name = auth_data.login.decode("utf-8", "replace")
        expected = secret(self.users.get(name, ""))
        good = expected is not None and hmac.compare_digest(expected.encode(), auth_data.password)
        if not good:
            log.warning("SMTP AUTH failed for %r", name)
        return AuthResult(success=good, handled=False, message=None if good else AUTH_FAILED)


class _Controller(Controller):
    def factory(self):
        return InletSMTP(self.handler, **self.SMTP_kwargs)


class SmtpServer:
    """The SMTP component of ``inlet serve`` (role ``smtp``)."""

    name = "smtp"

    def __init__(self, config, writer: InboundWriter):
        smtp = config.smtp
        port = smtp.port or _free_port(smtp.host)
        kwargs = dict(
            data_size_limit=smtp.max_message_size,
            decode_data=False,
            enable_SMTPUTF8=True,
            ident="Inlet ESMTP",
            timeout=300,
        )
        if smtp.tls_cert:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(smtp.tls_cert, smtp.tls_key)
            kwargs.update(tls_context=context, require_starttls=smtp.require_tls)
        if smtp.users:
            kwargs.update(authenticator=Authenticator(smtp.users), auth_required=smtp.auth_required)
        # aiosmtpd logs every connection and command at INFO ("mail.log"): keep its warnings only.
        logging.getLogger("mail.log").setLevel(max(logging.WARNING, logging.getLogger("mail.log").level))
        self.handler = IntakeHandler(config, writer)
        self.controller = _Controller(
            self.handler, hostname=smtp.host, port=port, server_hostname=smtp.hostname, **kwargs
        )

    @property
    def port(self) -> int:
        return self.controller.port

    def where(self) -> str:
        return f"SMTP on {self.controller.hostname}:{self.port}"

    def start(self) -> None:
        # The pipeline worker shares the GIL with the sessions: hand it over sooner than the default 5 ms.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        self.controller.start()

    def stop(self) -> None:
        loop = self.controller.loop
        if getattr(self.controller, "_thread", None) is None:  # never started: only its loop to close
            loop.close()
            return
        if loop.is_running():  # close the connection the loop committed on, in the loop's own thread
            closed = threading.Event()

            def close() -> None:
                if not db.is_closed():
                    db.close()
                closed.set()

            loop.call_soon_threadsafe(close)
            closed.wait(5)
        self.controller.stop()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _printable(address: str) -> str:
    return "".join(ch for ch in address if ch.isprintable() and ch not in "<>")[:200]
