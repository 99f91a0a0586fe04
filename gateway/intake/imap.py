"""The IMAP poller of ``inlet serve`` (role ``imap``): one thread per ``[[mailbox]]``.

For each new message: store it as an Inbound (committed), **then** move it to
the processed folder or flag it, **then** advance the checkpoint. The
checkpoint is UIDVALIDITY + the last stored UID, kept in the database (not
message numbers, not ``\\Seen``, which another client may set). A crash between
any two of these steps refetches the message on the next pass; the intake's
dedup key (Message-ID, else a content hash) makes that a no-op, so no second
incident. A changed UIDVALIDITY makes the old UIDs meaningless: the folder is
scanned again from the start, again without duplicates.

Connection problems (server down, bad password, TLS errors) are logged and
retried with exponential backoff, which starts again from its minimum after
every successful login (a server restart costs seconds, however long Inlet has
run); they never stop ``inlet serve``. What each poller is doing (connected,
idle since, the last error in words, the last complete scan) is written to the
database for every process to read: gateway/intake/mailbox_status.py.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import socket
import ssl
from datetime import timedelta
from pathlib import Path

import imapclient
import peewee
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from gateway.core.clock import Clock
from gateway.core.errors import StoreUnavailable
from gateway.core.threads import Loop
from gateway.incidents.heartbeats import polled
from gateway.intake.mailbox_status import Reporter
from gateway.intake.smtp import dedup_key
from gateway.intake.writer import InboundRecord, InboundWriter
from store.db import db
from store.models import MailboxState

log = logging.getLogger("inlet.imap")

FETCH_BATCH = 50
_IDLE_SLICE = 1.0  # seconds per IDLE wait, so a stop request is noticed quickly


class MailboxPoller(Loop):
    """Polls (or IDLEs on) one mailbox and stores what arrives; started and stopped as a core Loop."""

    def __init__(
        self,
        config,
        box,
        writer: InboundWriter,
        *,
        clock: Clock | None = None,
        backoff: tuple[float, float] = (1.0, 300.0),
        timeout: float = 30.0,
    ):
        self.config, self.box, self.writer = config, box, writer
        self.clock = clock or Clock()
        self.min_backoff, self.max_backoff = backoff
        self.timeout = timeout
        super().__init__(f"imap:{box.name}")
        self.join_timeout = timeout + 5
        self.passes = 0  # completed scans of the folder (for tests and status)
        self.last_error = ""
        self.password: str | None = None  # the one of the last login attempt: a reload compares it
        self.report = Reporter(box.name, self.clock)

    def where(self) -> str:
        box = self.box
        how = f"move to {box.processed_folder!r}" if box.processed_folder else f"flag {box.processed_flag}"
        scheme = "imaps" if box.tls else "imap"
        return f"IMAP {scheme}://{box.user}@{box.host}:{box.port}/{box.folder} ({how})"

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        delay = self.min_backoff
        while not self.stopping.is_set():
            self.report.connecting()
            try:
                client = self.connect()
            except Exception as exc:  # every failure to connect is retried, never fatal
                self._failed(exc, *describe(exc, lost=False), delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            delay = self.min_backoff  # logged in: the next failure is a new one, retried soon
            try:
                self.watch(client)
            except Exception as exc:
                self._failed(exc, *describe(exc, lost=True), delay)
                delay = min(delay * 2, self.max_backoff)
            finally:
                _close(client)

    def _failed(self, exc: Exception, problem: str, reason: str, delay: float) -> None:
        self.last_error = f"{problem}: {reason}"
        self.report.failed(problem, reason)
        detail = f" ({type(exc).__name__}: {exc})" if reason.endswith("(see the log)") else ""
        log.error(
            "mailbox %s (%s): %s%s; retrying in %.0fs", self.box.name, self.box.host, self.last_error, detail, delay
        )
        self.stopping.wait(delay)

    def connect(self) -> imapclient.IMAPClient:
        """Log in and select nothing yet; raises on any failure (with a clear message)."""
        box = self.box
        self.password = password = mailbox_password(box)
        context = ssl.create_default_context() if (box.tls or box.starttls) else None
        client = imapclient.IMAPClient(box.host, port=box.port, ssl=box.tls, ssl_context=context, timeout=self.timeout)
        try:
            if box.starttls and not box.tls:
                client.starttls(context)
            client.login(box.user, password)
            if box.processed_folder and not client.folder_exists(box.processed_folder):
                client.create_folder(box.processed_folder)
        except Exception:
            _close(client)
            raise
        log.info("mailbox %s: logged in to %s as %s", box.name, box.host, box.user)
        self.last_error = ""
        self.report.connected()
        return client

    def watch(self, client: imapclient.IMAPClient) -> None:
        """Scan, then wait for news (IDLE, else the poll interval); until stopped or the connection fails."""
        use_idle = self.box.idle and client.has_capability("IDLE")
        while not self.stopping.is_set():
            self.scan(client)
            self.report.polled()
            polled(self.box, self.clock.now())  # a successful poll: the beat of heartbeat mailbox:<name>
            if use_idle:
                self._idle(client, self.box.poll_interval)
            else:
                self.stopping.wait(self.box.poll_interval.total_seconds())
                client.noop()

    def _idle(self, client: imapclient.IMAPClient, longest: timedelta) -> None:
        # Re-issue IDLE at least every poll interval (and well under the 29 minutes of RFC 2177).
        client.idle()
        try:
            waited = 0.0
            while not self.stopping.is_set() and waited < min(longest.total_seconds(), 25 * 60):
                if client.idle_check(timeout=_IDLE_SLICE):
                    break
                if _closed_by_server(client.socket()):  # idle_check answers [] at end of file: say it now
                    raise ConnectionAbortedError("the server closed the connection during IDLE")
                waited += _IDLE_SLICE
        finally:
            client.idle_done()

    # ------------------------------------------------------------ one pass

    def scan(self, client: imapclient.IMAPClient) -> int:
        """Store every message after the checkpoint; return how many were handed to intake."""
        box = self.box
        info = client.select_folder(box.folder)
        uidvalidity = int(info[b"UIDVALIDITY"])
        last_uid = self._checkpoint(uidvalidity)
        criteria = ["UID", f"{last_uid + 1}:*"]
        if not box.processed_folder:
            criteria += ["NOT", "KEYWORD", box.processed_flag]
        uids = sorted(uid for uid in client.search(criteria) if uid > last_uid)
        handled = 0
        for start in range(0, len(uids), FETCH_BATCH):
            chunk = uids[start : start + FETCH_BATCH]
            fetched = client.fetch(chunk, ["BODY.PEEK[]"])
            for uid in chunk:
                data = fetched.get(uid, {}).get(b"BODY[]")
                if data is None:  # expunged by another client meanwhile
                    continue
                self.store(uid, bytes(data))
                self.mark_processed(client, uid)
                self._save(uidvalidity, uid)
                handled += 1
        if uids and not handled:
            self._save(uidvalidity, uids[-1])
        self.passes += 1
        return handled

    def store(self, uid: int, raw: bytes) -> None:
        record = InboundRecord(
            source="imap",
            raw=raw,
            dedup_key=dedup_key(raw),
            integration=self.box.name,
            envelope_to=(self.box.address,) if self.box.address else (),
            peer=self.box.host[:100],
        )
        accepted = self.writer.store(record)
        if accepted.duplicate:
            log.info("mailbox %s: UID %s was stored before (inbound %s)", self.box.name, uid, accepted.inbound_id)

    def mark_processed(self, client: imapclient.IMAPClient, uid: int) -> None:
        box = self.box
        if not box.processed_folder:
            client.add_flags([uid], [box.processed_flag])
        elif client.has_capability("MOVE"):
            client.move([uid], box.processed_folder)
        else:
            client.copy([uid], box.processed_folder)
            client.delete_messages([uid])
            if client.has_capability("UIDPLUS"):
                client.uid_expunge([uid])
            else:
                client.expunge()

    # ------------------------------------------------------------ checkpoint

    def _checkpoint(self, uidvalidity: int) -> int:
        with db.connection_context():
            state = MailboxState.get_or_none(MailboxState.mailbox == self.box.name)
        if state is None:
            return 0
        if state.uidvalidity != uidvalidity:
            log.warning(
                "mailbox %s: UIDVALIDITY changed (%s -> %s): scanning the folder again; stored mail is not duplicated",
                self.box.name,
                state.uidvalidity,
                uidvalidity,
            )
            return 0
        return state.last_uid

    def _save(self, uidvalidity: int, uid: int) -> None:
        now = self.clock.now()
        with db.connection_context():
            MailboxState.insert(
                mailbox=self.box.name, uidvalidity=uidvalidity, last_uid=uid, updated_at=now
            ).on_conflict(
                conflict_target=[MailboxState.mailbox],
                update={
                    MailboxState.uidvalidity: uidvalidity,
                    MailboxState.last_uid: uid,
                    MailboxState.updated_at: now,
                },
            ).execute()


class PasswordMissing(Exception):
    """The configured password cannot be read (the environment variable is unset, the file is missing)."""


def mailbox_password(box) -> str:
    """The password of ``box``, read now: from ``password_file`` (so a rotated file is used at the next login
    and by ``inlet reload``), else from the environment variable ``password_env``. Raises PasswordMissing."""
    if box.password_file:
        try:
            password = Path(box.password_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise PasswordMissing(f"cannot read its password_file: {reason}") from None
        if not password:
            raise PasswordMissing("its password_file is empty")
        return password
    password = os.environ.get(box.password_env, "")
    if not password:
        raise PasswordMissing(f"the environment variable {box.password_env} (password_env) is not set")
    return password


def describe(exc: Exception, *, lost: bool) -> tuple[str, str]:
    """What failed, in words for people: (problem, reason), e.g. ("cannot log in", "the server refused the
    login: Authentication failed"). ``lost``: the failure came after a successful login. The words are shown by
    the public /readyz: no host, user, path or driver message (those are in the configuration and the log)."""
    if isinstance(exc, PasswordMissing):
        return "cannot log in", f"no password: {exc}"
    if isinstance(exc, LoginError):
        return "cannot log in", f"the server refused the login: {_server_text(exc)}"
    if isinstance(exc, StoreUnavailable):
        return "cannot store mail", "the database is unavailable (see the log)"
    if isinstance(exc, peewee.PeeweeException):
        return "cannot store mail", "the database failed (see the log)"
    problem = "connection lost" if lost else "cannot connect"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return problem, f"the server's TLS certificate was not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason.replace("_", " ").lower() if exc.reason else "no reason given"
        return problem, f"TLS failed: {reason}"
    if isinstance(exc, socket.gaierror):
        return problem, "the server's name could not be resolved"
    if isinstance(exc, ConnectionRefusedError):
        return problem, "the server refused the connection (is it running, on this port?)"
    if isinstance(exc, TimeoutError):
        return problem, "the server did not answer in time"
    if isinstance(exc, ConnectionError | EOFError | IMAPClientAbortError):
        return problem, "the server closed the connection"
    if isinstance(exc, OSError):
        return problem, f"network error: {exc.strerror or 'no reason given'}"
    if isinstance(exc, IMAPClientError):
        return problem, f"the server answered with an error: {_server_text(exc)}"
    return problem, "an unexpected error (see the log)"


_RESPONSE_CODE = re.compile(r"\[[A-Z-]+(?: [^\]]*)?\]\s*")
_LONGEST_ANSWER = 1000  # characters of a server's answer looked at (it bounds the work on what a server sends)


def _server_text(exc: Exception) -> str:
    """A server's answer as text: imaplib gives the bytes' repr (b'[AUTHENTICATIONFAILED] Authentication
    failed.'); keep the words, without the repr, the response code and the final full stop."""
    text = str(exc).strip().removeprefix("login failed: ")[:_LONGEST_ANSWER]
    for quote in ("'", '"'):
        start = text.find("b" + quote)
        if start >= 0 and len(text) > start + 2 and text.endswith(quote):
            try:
                text = text[:start] + ast.literal_eval(text[start:]).decode("utf-8", "replace")
            except (ValueError, SyntaxError):
                text = text[:start] + text[start + 2 : -1]
            break
    text = _RESPONSE_CODE.sub("", text, count=1).strip().rstrip(".").strip()
    return text[:300] or "no reason given"


def _closed_by_server(sock: socket.socket) -> bool:
    """The server closed the connection (end of file waiting on the TCP stream); peeked on a duplicate of the
    descriptor, below any TLS layer, so nothing is consumed."""
    try:
        with socket.socket(fileno=os.dup(sock.fileno())) as raw:
            return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False  # nothing to read: still open
    except OSError:
        return True  # reset, or the descriptor is gone


def _close(client) -> None:
    try:
        client.logout()
    except Exception:  # closing a broken connection may fail too; it is closed either way
        try:
            client.shutdown()
        except Exception as exc:
            log.debug("closing IMAP connection: %s", exc)
