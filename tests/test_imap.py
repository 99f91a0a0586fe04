"""The IMAP poller against a real Dovecot on loopback (throwaway config, passwd-file, maildir)."""

from __future__ import annotations

import contextlib
import html
import logging
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import imapclient
import pytest
import requests
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from gateway.config.loader import load_config
from gateway.intake.imap import MailboxPoller, describe
from gateway.intake.mailbox_status import states
from gateway.intake.writer import InboundWriter
from gateway.service import Service
from notifiers.words import moment
from store.models import PENDING, Inbound, Incident, MailboxState
from tests.conftest import INLET, ROOT, free_port, wait_for

DOVECOT = "/usr/sbin/dovecot"
USER, PASSWORD = "support", "imap-secret"

CONFIG = """
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = inlet-test-{port}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {uid}
auth_failure_delay = 0
mail_location = maildir:{root}/home/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


class Dovecot:
    def __init__(self, root: Path, port: int):
        self.root, self.port = root, port
        self.password = PASSWORD
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        output = open(self.root / "console.log", "ab")  # noqa: SIM115 -- the process holds it; closed below
        try:
            command = [DOVECOT, "-c", str(self.root / "dovecot.conf"), "-F"]
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        finally:
            output.close()
        process = self.process
        wait_for(lambda: _listening(self.port) or process.poll() is not None, message="dovecot listening")
        assert process.poll() is None, (self.root / "console.log").read_text()

    def stop(self) -> None:
        """Stop the server and its sessions: Dovecot's master leaves running imap processes behind (they
        keep their clients), so they are ended too, by the pids the master started."""
        if self.process is None:
            return
        children = _children(self.process.pid)
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def restart(self) -> None:
        """Stop and start the server: every connection to it ends, as when an IMAP server restarts."""
        self.stop()
        self.start()

    def set_password(self, password: str) -> None:
        """The user's new password (the passwd-file, which Dovecot reads again when it changes)."""
        self.password = password
        (self.root / "passwd").write_text(f"{USER}:{{PLAIN}}{password}::::::\n")

    def client(self) -> imapclient.IMAPClient:
        client = imapclient.IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        client.login(USER, self.password)
        return client

    def deliver(self, raw: bytes, folder: str = "INBOX") -> None:
        with self.client() as client:
            client.append(folder, raw)

    def uids(self, folder: str = "INBOX", *criteria) -> list[int]:
        with self.client() as client:
            client.select_folder(folder)
            return client.search(list(criteria) or ["ALL"])


@pytest.fixture
def dovecot():
    """A Dovecot IMAP server on a free loopback port, stopped and removed afterwards."""
    # Dovecot runs mail processes as an unprivileged user: its tree must be reachable by it.
    root = Path(tempfile.mkdtemp(prefix="inlet-dovecot-"))
    root.chmod(0o755)
    account = pwd.getpwnam("dovecot")
    for sub in ("run", "state", "home"):
        (root / sub).mkdir()
    shutil.chown(root / "home", account.pw_uid, account.pw_gid)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    port = free_port()
    conf = root / "dovecot.conf"
    conf.write_text(CONFIG.format(root=root, port=port, uid=account.pw_uid, gid=account.pw_gid))
    server = Dovecot(root, port)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux /proc), and theirs."""
    try:
        found = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []
    return found + [grandchild for child in found for grandchild in _children(child)]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def mail(subject: str, message_id: bool = True) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@customer.example"
    msg["To"] = "support@example.org"
    msg["Subject"] = subject
    if message_id:
        msg["Message-ID"] = make_msgid(domain="customer.example")
    msg.set_content(f"{subject}: details")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def box(dovecot, **overrides) -> dict:
    values = {
        "name": "support",
        "host": "127.0.0.1",
        "port": dovecot.port,
        "tls": False,
        "user": USER,
        "password_env": "INLET_TEST_IMAP_PASSWORD",
        "poll_interval": "1s",
        "address": "support@example.org",
    }
    values.update(overrides)
    return values


def mail_config(store, tmp_path, dovecot, **overrides):
    return store.config(
        inlet={"data_dir": str(tmp_path)},
        smtp={"enabled": False},
        address=[{"address": "support@example.org"}, {"address": "network@example.org", "group": "network"}],
        mailbox=[box(dovecot, **overrides)],
    )


@pytest.fixture
def writer(store):
    w = InboundWriter()
    w.start()
    yield w
    w.stop()


@pytest.fixture(autouse=True)
def imap_password(monkeypatch):
    monkeypatch.setenv("INLET_TEST_IMAP_PASSWORD", PASSWORD)
    monkeypatch.setenv("INLET_MESSAGE_ID_SECRET", "imap-test-secret")


def poller_for(config, writer) -> MailboxPoller:
    return MailboxPoller(config, config.mailbox[0], writer, backoff=(0.05, 0.2), timeout=10)


def test_serve_stores_new_mail_then_moves_it_and_opens_incidents(store, tmp_path, dovecot):
    config = mail_config(store, tmp_path, dovecot, processed_folder="Inlet", address="network@example.org")
    dovecot.deliver(mail("Switch in rack 4 down"))
    service = Service(config, roles={"imap", "worker"})
    service.start()
    try:
        wait_for(lambda: Incident.select().count() == 1, message="incident from IMAP")
        dovecot.deliver(mail("Second problem"))  # arrives while the poller IDLEs
        wait_for(lambda: Incident.select().count() == 2, message="second incident (IDLE)")
    finally:
        service.stop()
    incident = Incident.get(Incident.title == "Switch in rack 4 down")
    assert incident.group == "network"  # the mailbox's [[address]] defaults
    assert {i.source for i in Inbound.select()} == {"imap"}
    assert dovecot.uids("INBOX") == [] and len(dovecot.uids("Inlet")) == 2
    state = MailboxState.get(MailboxState.mailbox == "support")
    assert state.last_uid == 2


def test_flag_mode_and_checkpoint_do_not_depend_on_seen(store, tmp_path, dovecot, writer):
    config = mail_config(store, tmp_path, dovecot)
    for i in range(3):
        dovecot.deliver(mail(f"Problem {i}"))
    poller = poller_for(config, writer)
    client = poller.connect()
    try:
        assert poller.scan(client) == 3
        with dovecot.client() as other:  # another client marks everything read: irrelevant to Inlet
            other.select_folder("INBOX")
            other.add_flags(other.search(["ALL"]), [b"\\Seen"])
        dovecot.deliver(mail("Problem 3"))
        assert poller.scan(client) == 1
        assert poller.scan(client) == 0
    finally:
        client.logout()
    assert Inbound.select().count() == 4
    assert dovecot.uids("INBOX", "KEYWORD", "$InletStored") == [1, 2, 3, 4]


class CrashAfterStore(MailboxPoller):
    """Dies once between storing a message and marking it processed (the crash of the issue)."""

    crashed = False

    def mark_processed(self, client, uid):
        if not self.crashed:
            self.crashed = True
            raise ConnectionError("simulated crash between store and move")
        super().mark_processed(client, uid)


@pytest.mark.parametrize("message_id", [True, False], ids=["message-id", "content-hash"])
def test_crash_between_store_and_move_makes_no_duplicate(store, tmp_path, dovecot, writer, message_id):
    config = mail_config(store, tmp_path, dovecot, processed_folder="Done")
    dovecot.deliver(mail("Printer jammed", message_id=message_id))
    crashing = CrashAfterStore(config, config.mailbox[0], writer, backoff=(0.05, 0.2), timeout=10)
    client = crashing.connect()
    with pytest.raises(ConnectionError):
        crashing.scan(client)
    client.logout()
    assert Inbound.select().count() == 1 and dovecot.uids("INBOX") == [1]
    again = poller_for(config, writer)  # the restarted process
    client = again.connect()
    assert again.scan(client) == 1
    client.logout()
    assert Inbound.select().count() == 1
    assert dovecot.uids("INBOX") == [] and dovecot.uids("Done") == [1]


def test_uidvalidity_change_rescans_without_duplicates(store, tmp_path, dovecot, writer):
    config = mail_config(store, tmp_path, dovecot)
    dovecot.deliver(mail("Stored and flagged"))
    dovecot.deliver(mail("Stored, then crashed"))
    crashing = CrashAfterStore(config, config.mailbox[0], writer, backoff=(0.05, 0.2), timeout=10)
    crashing.crashed = True
    client = crashing.connect()
    crashing.scan(client)
    client.logout()
    with dovecot.client() as other:  # the second one was stored but lost its flag (crash before flagging)
        other.select_folder("INBOX")
        other.remove_flags([2], ["$InletStored"])
    # The server renumbered the folder: a new UIDVALIDITY, and old UIDs mean nothing.
    MailboxState.update(uidvalidity=MailboxState.uidvalidity + 1, last_uid=10_000).execute()
    dovecot.deliver(mail("New after the change"))
    poller = poller_for(config, writer)
    client = poller.connect()
    assert poller.scan(client) == 2  # the unflagged old one (a duplicate, stored once) and the new one
    client.logout()
    assert Inbound.select().count() == 3
    state = MailboxState.get()
    assert state.last_uid == 3


def test_bad_password_is_logged_and_retried_then_recovers(store, tmp_path, dovecot, writer, monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="inlet.imap")
    monkeypatch.setenv("INLET_TEST_IMAP_PASSWORD", "wrong")
    config = mail_config(store, tmp_path, dovecot)
    dovecot.deliver(mail("Waiting for a good password"))
    poller = poller_for(config, writer)
    poller.start()
    try:
        wait_for(lambda: caplog.text.count("cannot log in") >= 2, message="two failed logins, logged")
        refused = "the server refused the login: Authentication failed"
        assert f"mailbox support (127.0.0.1): cannot log in: {refused}; retrying" in caplog.text
        assert "b'" not in caplog.text and "[AUTHENTICATIONFAILED]" not in caplog.text  # words, not a bytes repr
        monkeypatch.setenv("INLET_TEST_IMAP_PASSWORD", PASSWORD)
        wait_for(lambda: Inbound.select().count() == 1, message="stored after the password was fixed")
    finally:
        poller.stop()
    assert Inbound.get().status == PENDING  # no worker here: stored only


def test_unreachable_server_is_retried_not_fatal(store, tmp_path, dovecot, writer, caplog):
    caplog.set_level(logging.ERROR, logger="inlet.imap")
    config = mail_config(store, tmp_path, dovecot, port=free_port())
    poller = poller_for(config, writer)
    poller.start()
    try:
        wait_for(lambda: caplog.text.count("cannot connect") >= 3, message="retries with backoff")
    finally:
        poller.stop()
    assert "cannot connect: the server refused the connection (is it running, on this port?)" in caplog.text
    (state,) = states(config)
    assert (state.status, state.problem, state.last_poll_at) == ("failing", "cannot connect", None)


# ---------------------------------------------------------------- watching the poller (issue 20, point 2)


def test_each_restart_of_the_server_costs_seconds_not_a_growing_backoff(store, tmp_path, dovecot):
    """The back-off starts again from its minimum after every login: restart after restart, new mail is an
    incident within seconds (before, each restart doubled the wait, up to 5 minutes)."""
    config = mail_config(store, tmp_path, dovecot, poll_interval="60s")  # the default: IDLE is re-issued each minute
    service = Service(config, roles={"imap", "worker"})  # the poller's own back-off: 1 s, doubling to 300 s
    service.start()
    try:
        poller = service.pollers["support"]
        for n in range(5):
            dovecot.restart()
            wait_for(lambda: poller.report.status == "idle", timeout=8, message=f"logged in again ({n + 1})")
            dovecot.deliver(mail(f"After restart {n + 1}"))
            wait_for(lambda n=n: Incident.select().count() == n + 1, timeout=8, message=f"incident {n + 1} in seconds")
    finally:
        service.stop()
    (state,) = states(config)
    assert state.ok and state.last_error.startswith("the server closed the connection")


def test_a_refused_login_is_shown_in_words_by_readyz_the_queue_the_configuration_and_heartbeats_pages(
    store, tmp_path, dovecot, writer, monkeypatch
):
    from tests.test_web import Web

    monkeypatch.setenv("INLET_TEST_IMAP_PASSWORD", "wrong")
    web = Web(store, mailbox=[box(dovecot, address="")])
    poller = poller_for(web.config, writer)
    poller.start()
    try:
        wait_for(lambda: states(web.config)[0].status == "failing", message="the failure recorded")
        (state,) = states(web.config)
        assert state.problem == "cannot log in"
        assert state.last_error == "the server refused the login: Authentication failed"
        line = f"mailbox support: cannot log in since {moment(state.since)} ({state.last_error})"
        ready = web.client().get("/readyz")
        assert ready.status_code == 200  # reported, not failing: this process serves whatever IMAP does
        assert ready.json["warnings"] == [line]
        (shown,) = ready.json["mailboxes"]
        assert (shown["name"], shown["status"], shown["ok"], shown["last_poll_at"]) == (
            "support",
            "failing",
            False,
            None,
        )
        admin = web.client("admin")
        assert html.escape(line) in admin.get("/incidents").text  # the queue's header warns
        assert html.escape(state.last_error) in admin.get("/configuration").text
        beside_heartbeats = web.client("desk").get("/heartbeats").text  # agents see it too, beside the heartbeats
        assert html.escape(state.summary()) in beside_heartbeats
        monkeypatch.setenv("INLET_TEST_IMAP_PASSWORD", PASSWORD)
        wait_for(lambda: states(web.config)[0].status == "idle", message="read the folder, waiting for mail")
    finally:
        poller.stop()
    (state,) = states(web.config)
    assert state.status == "idle" and state.last_poll_at is not None
    assert state.last_error == "the server refused the login: Authentication failed"  # kept, with when
    ready = web.client().get("/readyz").json
    assert ready["warnings"] == [] and ready["mailboxes"][0]["ok"] is True
    assert "cannot log in since" not in web.client("admin").get("/incidents").text


def test_inlet_reload_applies_a_rotated_password_file(store, tmp_path, dovecot):
    secret_file = tmp_path / "imap-password"
    secret_file.write_text(PASSWORD + "\n")
    boxes = [{**box(dovecot), "password_env": "", "password_file": str(secret_file)}]
    path = store.write_config(smtp={"enabled": False}, address=[{"address": "support@example.org"}], mailbox=boxes)
    service = Service(load_config(path), roles={"imap", "worker"})
    service.start()
    try:
        first = service.pollers["support"]
        wait_for(lambda: first.report.status == "idle", message="logged in")
        assert service.reload().mailbox == service.config.mailbox and service.pollers["support"] is first  # no change
        dovecot.set_password("rotated-secret")
        dovecot.restart()  # ends the session: the next login needs the new password
        wait_for(lambda: states(service.config)[0].problem == "cannot log in", message="the old password refused")
        secret_file.write_text("rotated-secret\n")
        service.reload()
        assert service.pollers["support"] is not first  # restarted at once, not after its back-off
        dovecot.deliver(mail("After the rotation"))
        wait_for(lambda: Incident.select().count() == 1, timeout=8, message="mail flows with the new password")
    finally:
        service.stop()
    assert states(service.config)[0].ok


def test_inlet_serve_shows_a_refused_login_on_readyz_and_inlet_reload_applies_the_rotated_password(
    store, tmp_path, dovecot, serve
):
    """The real interface: `inlet serve` (the poller in its imap process, /readyz in its web process, which
    reads the state from the store), the password rotated on the real Dovecot, `inlet reload`."""
    (tmp_path / "imap-password").write_text(PASSWORD + "\n")
    mailbox = [{**box(dovecot), "password_env": "", "password_file": "imap-password"}]  # next to the config file
    served = serve(mailbox=mailbox)
    readyz = f"http://127.0.0.1:{served.web_port}/readyz"

    def mailbox_state() -> dict:
        return requests.get(readyz, timeout=10).json()["mailboxes"][0]

    dovecot.deliver(mail("Before the rotation"))
    wait_for(lambda: Incident.select().count() == 1, timeout=20, message="mail read by inlet serve")
    wait_for(lambda: mailbox_state()["status"] == "idle", message="/readyz: waiting for mail")
    dovecot.set_password("rotated-secret")
    dovecot.restart()
    wait_for(lambda: mailbox_state()["problem"] == "cannot log in", message="/readyz: the old password refused")
    body = requests.get(readyz, timeout=10)
    assert body.status_code == 200 and body.json()["status"] == "ready"  # reported, not failing
    (warning,) = body.json()["warnings"]
    assert warning.startswith("mailbox support: cannot log in since ")
    assert warning.endswith("(the server refused the login: Authentication failed)")
    (tmp_path / "imap-password").write_text("rotated-secret\n")
    done = subprocess.run([*INLET, "-c", str(served.path), "reload"], cwd=ROOT, env=served.env, timeout=60)
    assert done.returncode == 0
    dovecot.deliver(mail("After the rotation"))
    wait_for(lambda: Incident.select().count() == 2, timeout=15, message="mail flows with the new password")
    wait_for(lambda: requests.get(readyz, timeout=10).json()["warnings"] == [], message="/readyz: no warning")
    assert served.stop() == 0


def test_reload_starts_stops_and_restarts_pollers_as_the_file_says(store, tmp_path, dovecot):
    path = store.write_config(smtp={"enabled": False}, mailbox=[box(dovecot, address="")])
    service = Service(load_config(path), roles={"imap"})
    service.start()
    try:
        first = service.pollers["support"]
        wait_for(lambda: first.report.status == "idle", message="logged in")
        two = [box(dovecot, poll_interval="2s", address=""), box(dovecot, name="b", address="")]
        store.write_config(smtp={"enabled": False}, mailbox=two)
        service.reload()
        assert set(service.pollers) == {"support", "b"} and service.pollers["support"] is not first
        wait_for(lambda: all(s.ok for s in states(service.config)), message="both read")
        store.write_config(smtp={"enabled": False}, mailbox=two[1:])
        service.reload()
        assert set(service.pollers) == {"b"}
        assert [c for c in service.components if isinstance(c, MailboxPoller)] == [service.pollers["b"]]
    finally:
        service.stop()


REFUSED = "the server refused the login: Authentication failed"
NOT_RUNNING = "the server refused the connection (is it running, on this port?)"
NO_FOLDER = "the server answered with an error: select failed: Mailbox doesn't exist: Nope"


@pytest.mark.parametrize(
    ("error", "lost", "words"),
    [
        (LoginError("b'[AUTHENTICATIONFAILED] Authentication failed.'"), False, ("cannot log in", REFUSED)),
        (ConnectionRefusedError(111, "Connection refused"), False, ("cannot connect", NOT_RUNNING)),
        (
            socket.gaierror(-2, "Name or service not known"),
            False,
            ("cannot connect", "the server's name could not be resolved"),
        ),
        (TimeoutError("timed out"), True, ("connection lost", "the server did not answer in time")),
        (IMAPClientAbortError("socket error: EOF"), True, ("connection lost", "the server closed the connection")),
        (
            IMAPClientError("select failed: b'[NONEXISTENT] Mailbox doesn\\'t exist: Nope'"),
            True,
            ("connection lost", NO_FOLDER),
        ),
        (ValueError("odd"), True, ("connection lost", "an unexpected error (see the log)")),
    ],
)
def test_errors_are_described_in_words(error, lost, words):
    assert describe(error, lost=lost) == words


def test_tls_errors_are_described_in_words():
    error = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")
    error.reason = "WRONG_VERSION_NUMBER"  # as the ssl module sets it
    assert describe(error, lost=False) == ("cannot connect", "TLS failed: wrong version number")
