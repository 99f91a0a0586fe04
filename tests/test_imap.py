"""The IMAP poller against a real Dovecot on loopback (throwaway config, passwd-file, maildir)."""

from __future__ import annotations

import logging
import pwd
import shutil
import socket
import subprocess
import tempfile
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import imapclient
import pytest

from gateway.intake.imap import MailboxPoller
from gateway.intake.writer import InboundWriter
from gateway.service import Service
from store.models import PENDING, Inbound, Incident, MailboxState
from tests.conftest import free_port, wait_for

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
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

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
        wait_for(lambda: caplog.text.count("login failed") >= 2, message="two failed logins, logged")
        assert "mailbox support (127.0.0.1): cannot connect: login failed" in caplog.text
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
    assert "ConnectionRefusedError" in caplog.text
