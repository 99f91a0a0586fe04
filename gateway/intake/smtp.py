"""The SMTP server of ``inlet serve`` (aiosmtpd): receive, store, then answer.

The handler accepts mail only for the configured ``[[address]]`` entries
(never an open relay), stores each message as one Inbound through the
group-commit :class:`~gateway.intake.writer.InboundWriter` and answers ``250`` only
once that row is committed (DESIGN.md §2.1). Parsing happens later, in the
pipeline worker: a session never waits for it and never sees its errors.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
import socket
import ssl
import sys
import threading
import time
from collections import Counter, deque

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from gateway import accounts
from gateway.config.mail_settings import match_address
from gateway.core.descriptors import listener_share
from gateway.core.errors import StoreUnavailable
from gateway.core.keys import secret
from gateway.intake.refusals import SMTP as SOURCE
from gateway.intake.refusals import Refusals
from gateway.intake.writer import InboundRecord, InboundWriter
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
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required for requested authentication mechanism"
TOO_MANY_SESSIONS = "421 4.7.0 too many connections, try again later"
TOO_MANY_FROM_CLIENT = "421 4.7.0 too many connections from your address, try again later"
IDLE_TIMEOUT = "421 4.4.2 {host} Error: timeout exceeded, closing"
SESSION_TOO_LONG = "421 4.4.2 {host} Error: session time limit reached, closing"
EVICTED = "421 4.4.2 {host} Error: idle while the server is full, closing"
EVICT_AFTER_IDLE = 1.0  # seconds without a byte before a session may be closed to make room for a new one
REFUSALS_LOG_INTERVAL = 10.0  # seconds
# Connections the kernel queues before they are accepted. asyncio also accepts up to this many in one go,
# before any of them is answered: part of the descriptor reserve (gateway/core/descriptors.py), so kept small.
LISTEN_BACKLOG = 100
SHUTTING_DOWN = "421 4.3.2 {host} Service shutting down, try again later"
# What each refusal of Inlet's counts as (gateway/intake/refusals.py); any other 4xx/5xx reply is aiosmtpd's own
# (syntax, bad sequence, line too long, a command sent too often): "protocol".
REFUSAL_REASONS = {
    TOO_MANY_SESSIONS: "connections",
    TOO_MANY_FROM_CLIENT: "connections",
    SHUTTING_DOWN: "shutting_down",
    IDLE_TIMEOUT: "timeout",
    SESSION_TOO_LONG: "timeout",
    EVICTED: "timeout",
    TOO_MANY_RECIPIENTS: "too_many_recipients",
    MESSAGE_TOO_BIG: "too_large",
    STORE_FAILED: "store_unavailable",
    LOCAL_ERROR: "local_error",
    AUTH_FAILED: "auth",
    AUTH_NEEDS_TLS: "auth",
}
_NO_SUCH_USER_CODE = NO_SUCH_USER.partition("<")[0]


def refusal_reason(reply: str) -> str | None:
    """The reason a reply (or its template) counts under, or None when it is not a refusal (2xx, 3xx)."""
    if reply[:1] not in ("4", "5"):
        return None
    if reply.startswith(_NO_SUCH_USER_CODE):
        return "recipient_unknown"
    return REFUSAL_REASONS.get(reply, "protocol")


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


class Sessions:
    """The open sessions of one SMTP server and its connection limits (used in its event loop only)."""

    def __init__(self, max_sessions: int, per_client: int, refusals: Refusals | None = None):
        self.max_sessions, self.per_client = max_sessions, per_client
        self.refusals = refusals
        self.open: set[InletSMTP] = set()
        self._per_peer: Counter[str] = Counter()
        self.draining = False
        self._refused: Counter[str] = Counter()  # since the last log line: a flood is one line per interval
        self._refusals_logged = 0.0
        self._no_room_until = 0.0  # at the overall limit: the earliest time a session may be idle enough to go

    def admit(self, peer: str, now: float) -> str | None:
        """May a new connection from ``peer`` have a session? None, or the 421 to answer.

        At the overall limit the session idle longest (at least EVICT_AFTER_IDLE) makes room: a flood of
        connections that send nothing cannot keep a sender out for the length of the idle timeout.
        """
        if self.draining:
            return SHUTTING_DOWN
        if self._per_peer[peer] >= self.per_client:
            return TOO_MANY_FROM_CLIENT
        if len(self.open) >= self.max_sessions:
            if now < self._no_room_until:  # no session can have been idle long enough yet: no scan per refusal
                return TOO_MANY_SESSIONS
            idlest = max(self.open, key=lambda s: s.idle_for(now))
            idle = idlest.idle_for(now)
            if idle < EVICT_AFTER_IDLE:
                self._no_room_until = now + EVICT_AFTER_IDLE - max(idle, 0.0)
                return TOO_MANY_SESSIONS
            idlest.close_with(EVICTED)
            self.leave(idlest, idlest.peer_host)
        return None

    def enter(self, session: InletSMTP, peer: str) -> None:
        self.open.add(session)
        self._per_peer[peer] += 1

    def refusal(self, reply: str) -> None:
        """Count ``reply`` (or its template) if it is a refusal: every SMTP refusal comes through here."""
        reason = refusal_reason(reply)
        if reason is not None and self.refusals is not None:
            self.refusals.count(SOURCE, reason)

    def refused(self, peer: str, now: float, reply: str) -> None:
        self.refusal(reply)
        self._refused[peer] += 1
        if now - self._refusals_logged >= REFUSALS_LOG_INTERVAL:
            top = ", ".join(f"{host} ({count})" for host, count in self._refused.most_common(3))
            log.warning(
                "SMTP: refused %d connections over the limits (%d open; most from %s)",
                self._refused.total(),
                len(self.open),
                top,
            )
            self._refused.clear()
            self._refusals_logged = now

    def leave(self, session: InletSMTP, peer: str) -> None:
        if session in self.open:
            self.open.discard(session)
            self._per_peer[peer] -= 1
            if self._per_peer[peer] <= 0:
                del self._per_peer[peer]


class InletSMTP(SMTP):
    """aiosmtpd's SMTP with Inlet's limits and replies.

    - connection limits overall and per client address (421 4.7.0, then closed);
    - an idle timeout counted from the last bytes received (aiosmtpd's counts from the last
      command, so a slow DATA would be cut), and a limit on the whole session (421 4.4.2);
    - a graceful stop: 421 4.3.2 to open sessions, after the answer to a DATA in progress;
    - the size-limit reply with its enhanced code, and a fast path for the common form of an
      address in MAIL and RCPT.
    """

    def __init__(self, handler, *, sessions: Sessions | None = None, max_session_time: float = 600.0, **kwargs):
        super().__init__(handler, **kwargs)
        # SmtpServer passes the server's; a session made alone (tests, other controllers) has no limits
        self.sessions = sessions if sessions is not None else Sessions(1_000_000, 1_000_000)
        self.max_session_time = max_session_time
        self.storing = False  # the handler is committing this session's message: its answer is on its way
        self._admitted = False
        self.peer_host = ""
        self._in_data = False
        self._last_bytes = 0.0
        self._session_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ limits

    def admitted(self, peer_host: str) -> None:
        """Counted in by the server's gate (_Gate): the limits apply to this session from now on."""
        self._admitted, self.peer_host = True, peer_host
        self._last_bytes = self.loop.time()
        self._session_timer = self.loop.call_later(self.max_session_time, self._session_expired)
        self.sessions.enter(self, peer_host)

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted:
            self.sessions.leave(self, self.peer_host)
            if self._session_timer is not None:
                self._session_timer.cancel()
        self._release()
        super().connection_lost(error)

    def idle_for(self, now: float) -> float:
        """Seconds since the last bytes came; -1 while a message is being stored (never idle then)."""
        return -1.0 if self.storing else now - self._last_bytes

    def data_received(self, data: bytes) -> None:
        self._last_bytes = self.loop.time()
        super().data_received(data)

    def _timeout_cb(self) -> None:
        idle = self.loop.time() - self._last_bytes
        if self.storing or idle < self._timeout_duration:  # bytes came meanwhile, or the answer is on its way
            self._reset_timeout(max(self._timeout_duration - idle, 0.05) if not self.storing else 1.0)
            return
        log.debug("SMTP session from %s idle for %.0fs: closed", self.peer_host, idle)
        self.close_with(IDLE_TIMEOUT)

    def _session_expired(self) -> None:
        if self.storing:
            self._session_timer = self.loop.call_later(1.0, self._session_expired)
            return
        log.debug("SMTP session from %s over its time limit: closed", self.peer_host)
        self.close_with(SESSION_TOO_LONG)

    def close_with(self, reply: str) -> None:
        """Send ``reply`` (a 421) unasked and close the connection (RFC 5321 §3.8)."""
        if self.transport is None or self.transport.is_closing():
            return
        self.sessions.refusal(reply)
        self.transport.write(reply.format(host=self.hostname).encode() + b"\r\n")
        self.transport.close()

    # ------------------------------------------------------------ graceful stop

    def drain(self) -> None:
        """The server is stopping: 421 4.3.2 and close now, unless a DATA is in progress (it is answered
        first, then the 421). A session between commands gets the 421 as the answer to its next one."""
        if not self._in_data:
            self.close_with(SHUTTING_DOWN)

    async def smtp_DATA(self, arg: str) -> None:
        self._in_data = True
        try:
            await super().smtp_DATA(arg)
        finally:
            self._in_data = False
        if self.sessions.draining:  # its answer is out: now the 421
            self.close_with(SHUTTING_DOWN)

    # ------------------------------------------------------------ work in hand

    def _set_post_data_state(self) -> None:
        # Every end of a mail transaction comes here (DATA answered or refused, RSET, HELO/EHLO);
        # connection_lost covers the rest: the pipeline worker never waits on a transaction that ended.
        self._release()
        super()._set_post_data_state()

    def _release(self) -> None:
        handler = getattr(self, "event_handler", None)
        if isinstance(handler, IntakeHandler):
            handler.writer.out_of_hand(self)

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str) and status.startswith("552 Error"):
            status = MESSAGE_TOO_BIG
        self.sessions.refusal(status if isinstance(status, str) else status[:3].decode("ascii", "replace"))
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
        self.writer.in_hand(server)  # until the transaction ends (InletSMTP._release): the pipeline worker waits
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
            headers=agent_login(session),
        )
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._batch.append((record, future))
        if len(self._batch) == 1:  # the first DATA of this loop turn schedules the commit of them all
            loop.call_soon(self._commit)
        server.storing = True
        try:
            accepted = await future
        except StoreUnavailable as exc:
            log.error("message from %s (%s) not stored: %s", envelope.mail_from, peer, exc or "timeout")
            return STORE_FAILED
        finally:
            server.storing = False
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
    """SMTP AUTH against the configured trusted submitters (passwords from the environment) and, with
    ``[smtp] agent_auth``, against Inlet's users: an agent or admin who logs in with their own password
    proves the sender of email commands (gateway/commands.py). With agent_auth, AUTH is offered without
    TLS, so this refuses a password in clear text except from loopback."""

    FAILURES, FAILURE_WINDOW = 5, 60.0  # per client address: then refused without a (costly) password check

    def __init__(self, users, *, agents: bool = False):
        self.users = {u.name: u.password_env for u in users}
        self.agents = agents
        self._failures: dict[str, deque] = {}  # only the event loop's thread touches it

    def __call__(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        if self.agents and not (server._tls_protocol or _loopback(session.peer)):
            return AuthResult(success=False, handled=False, message=AUTH_NEEDS_TLS)
        name = auth_data.login.decode("utf-8", "replace")
        peer, now = _host(session.peer), time.monotonic()
        failures = self._failures.get(peer)
        while failures and failures[0] < now - self.FAILURE_WINDOW:
            failures.popleft()
        if failures is not None and len(failures) >= self.FAILURES:
            log.warning("SMTP AUTH for %r from %s refused: %d failures within a minute", name, peer, len(failures))
            return AuthResult(success=False, handled=False, message=AUTH_FAILED)
        expected = secret(self.users.get(name, ""))
        good = expected is not None and hmac.compare_digest(expected.encode(), auth_data.password)
        login = None
        if not good and self.agents and name not in self.users:
            # A password hash check (~0.1 s) in the loop: AUTH is rare, and failures are limited above.
            db.connect(reuse_if_open=True)  # the loop thread's connection, kept open as the writer keeps it
            user = accounts.authenticate(name, auth_data.password.decode("utf-8", "replace"))
            good = user is not None and user.role in ("agent", "admin")
            login = AgentLogin(user.name) if good else None
        if not good:
            log.warning("SMTP AUTH failed for %r", name)
            if len(self._failures) > 10_000:  # bounded: a flood from many addresses forgets the oldest
                self._failures.pop(next(iter(self._failures)))
            self._failures.setdefault(peer, deque()).append(now)
        return AuthResult(success=good, handled=False, message=None if good else AUTH_FAILED, auth_data=login)


class AgentLogin:
    """What a session authenticated as an Inlet user carries (``session.auth_data``)."""

    def __init__(self, name: str):
        self.name = self.login = name


def agent_login(session) -> dict:
    """The Inbound ``headers`` recording the Inlet user this session authenticated as (read by
    gateway/commands.py): set by Inlet's own server, never from the message, so a sender cannot forge it."""
    login = getattr(session, "auth_data", None)
    return {"smtp_auth": login.name} if isinstance(login, AgentLogin) else {}


def _host(peer) -> str:
    return peer[0] if isinstance(peer, tuple) else str(peer or "")


def _loopback(peer) -> bool:
    host = _host(peer)
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Gate(asyncio.Protocol):
    """Each new connection meets this first: admitted, it gets an SMTP session (its transport is handed
    over); refused, a 421 and closed, at next to no cost (a session costs ~0.5 ms to make: a flood
    refused after making one would fill the listen queue faster than it is emptied)."""

    def __init__(self, controller: _Controller):
        self.controller = controller

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        controller = self.controller
        sessions, loop = controller.SMTP_kwargs["sessions"], controller.loop
        peer = transport.get_extra_info("peername")
        peer_host = peer[0] if isinstance(peer, tuple) else str(peer or "")
        refusal = sessions.admit(peer_host, loop.time())
        if refusal is not None:
            sessions.refused(peer_host, loop.time(), refusal)
            transport.write(refusal.format(host=controller.SMTP_kwargs.get("hostname", "")).encode() + b"\r\n")
            transport.close()  # once the reply is written
            return
        session = controller._factory_invoker()  # aiosmtpd's: it also tells start() the server answers
        if isinstance(session, InletSMTP):
            session.admitted(peer_host)
        transport.set_protocol(session)
        session.connection_made(transport)


class _Controller(Controller):
    def factory(self):
        return InletSMTP(self.handler, **self.SMTP_kwargs)

    def _create_server(self):
        return self.loop.create_server(
            lambda: _Gate(self), host=self.hostname, port=self.port, ssl=self.ssl_context, backlog=LISTEN_BACKLOG
        )


class SmtpServer:
    """The SMTP component of ``inlet serve`` (role ``smtp``)."""

    name = "smtp"

    def __init__(self, config, writer: InboundWriter, refusals: Refusals | None = None):
        smtp = config.smtp
        port = smtp.port or _free_port(smtp.host)
        kwargs = dict(
            data_size_limit=smtp.max_message_size,
            decode_data=False,
            enable_SMTPUTF8=True,
            ident="Inlet ESMTP",
            timeout=smtp.idle_timeout.total_seconds(),
        )
        if smtp.tls_cert:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(smtp.tls_cert, smtp.tls_key)
            kwargs.update(tls_context=context, require_starttls=smtp.require_tls)
        if smtp.users or smtp.agent_auth:
            kwargs.update(
                authenticator=Authenticator(smtp.users, agents=smtp.agent_auth), auth_required=smtp.auth_required
            )
        if smtp.agent_auth:  # AUTH offered without TLS: the Authenticator allows clear text from loopback only
            kwargs.update(auth_require_tls=False)
        # aiosmtpd logs every connection and command at INFO ("mail.log"): keep its warnings only.
        logging.getLogger("mail.log").setLevel(max(logging.WARNING, logging.getLogger("mail.log").level))
        self.handler = IntakeHandler(config, writer)
        self.sessions = Sessions(
            listener_share(smtp.max_sessions, "[smtp] max_sessions"), smtp.max_sessions_per_client, refusals
        )
        self.drain_timeout = smtp.drain_timeout.total_seconds()
        self.controller = _Controller(
            self.handler,
            hostname=smtp.host,
            port=port,
            server_hostname=smtp.hostname,
            sessions=self.sessions,
            max_session_time=smtp.max_session_time.total_seconds(),
            **kwargs,
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
        """Stop gracefully: stop accepting, answer 421 4.3.2 to open sessions (a DATA in progress
        is answered first, within [smtp] drain_timeout), then close."""
        loop = self.controller.loop
        if getattr(self.controller, "_thread", None) is None:  # never started: only its loop to close
            loop.close()
            return
        if loop.is_running():
            drained = asyncio.run_coroutine_threadsafe(self._drain(), loop)
            try:
                drained.result(self.drain_timeout + 5)
            except Exception:  # e.g. the loop stopped under us: the sessions are closed below anyway
                log.exception("SMTP drain failed")
        if loop.is_running():  # close the connection the loop committed on, in the loop's own thread
            closed = threading.Event()

            def close() -> None:
                if not db.is_closed():
                    db.close()
                closed.set()

            loop.call_soon_threadsafe(close)
            closed.wait(5)
        self.controller.stop()

    def stop_accepting(self) -> None:
        """The first step of stopping: no new connections; sessions between commands get 421 4.3.2
        now, a DATA in progress goes on (stop() waits for it)."""
        loop = self.controller.loop
        if getattr(self.controller, "_thread", None) is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self._stop_accepting(), loop).result(5)

    async def _stop_accepting(self) -> None:
        if self.controller.server is not None:
            self.controller.server.close()  # no new connections; the open ones stay
        self.sessions.draining = True
        for session in list(self.sessions.open):
            session.drain()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        if not self.sessions.draining:
            await self._stop_accepting()
        deadline = loop.time() + self.drain_timeout
        while self.sessions.open and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for session in list(self.sessions.open):  # a DATA still coming in: refused, never half-stored
            log.warning("SMTP session from %s still open at shutdown: 421", session.peer_host)
            session.close_with(SHUTTING_DOWN)
        if self.sessions.open:  # give the 421s a moment to go out before the loop stops
            await asyncio.sleep(0.1)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _printable(address: str) -> str:
    return "".join(ch for ch in address if ch.isprintable() and ch not in "<>")[:200]
