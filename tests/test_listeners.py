"""The listeners' limits and graceful stop, through the real servers on loopback.

SMTP (Inlet's aiosmtpd server, raw sockets and smtplib) and HTTP (waitress, raw
sockets and requests): connection caps overall and per client address, idle and
session timeouts, the request body limit held before the body is read, slow
requests, floods of idle connections, descriptor exhaustion, the work-in-hand
mark released on every exit, and SIGTERM on a real ``inlet serve`` process.
Loopback has every 127.0.0.0/8 address, so "other clients" bind their own source.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import smtplib
import socket
import subprocess
import sys
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
import requests

from gateway.core.descriptors import raise_open_files_limit
from gateway.service import Service
from store.db import db
from store.models import Inbound
from tests.conftest import ROOT, free_port, wait_for

SUPPORT = "support@example.org"
TOKEN = "t0ken-for-listener-tests"
INTEGRATIONS = [
    {"name": "plain", "kind": "generic", "token_env": "HOOK_TOKEN"},
    {"name": "limited", "kind": "generic", "token_env": "HOOK_TOKEN", "rate_limit": 1, "rate_window": "1h"},
]
HOOK = {"title": "Disk full", "dedup_key": "disk-1", "status": "firing"}


def message(subject="Printer broken") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@customer.example", SUPPORT, subject
    msg["Message-ID"] = make_msgid(domain="customer.example")
    msg.set_content("The printer on floor 2 is broken.\n" * 20)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def sections(smtp_port: int, web_port: int, smtp=None, web=None) -> dict:
    return {
        "smtp": {"port": smtp_port, **(smtp or {})},
        "web": {"host": "127.0.0.1", "port": web_port, **(web or {})},
        "address": [{"address": SUPPORT}],
        "integration": INTEGRATIONS,
    }


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    monkeypatch.setenv("INLET_MESSAGE_ID_SECRET", "test-secret-not-for-production")
    raise_open_files_limit()  # the test itself holds thousands of client sockets


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while Smtp.opened:
        Smtp.opened.pop().close()


@pytest.fixture
def serve(store, env):
    """Start an in-process Service (web, smtp, worker) with these [smtp]/[web] settings."""
    started = []

    def start(smtp=None, web=None) -> Service:
        config = store.config(**sections(free_port(), free_port(), smtp, web))
        db.close()
        service = Service(config, roles={"web", "smtp", "worker"})
        service.start()
        started.append(service)
        service.web_url = f"http://127.0.0.1:{config.web.port}"
        return service

    yield start
    for service in started:
        service.stop()


# ---------------------------------------------------------------- raw clients


class Smtp:
    """A raw SMTP client from a chosen loopback address: sees every line the server sends, unasked ones too."""

    opened: list = []  # clients (and raw HTTP sockets) closed after each test

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        self.file = self.sock.makefile("rb")
        Smtp.opened.append(self)

    def reply(self) -> str:
        """One reply (all its lines); '' at end of connection."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                return "".join(lines)
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] != b"-":
                return "".join(lines)

    def command(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        return self.file.readline() == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def smtp_send(port: int, raw: bytes, source: str = "127.0.0.1") -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0)) as client:
        client.ehlo("sender.example")
        client.mail("alice@customer.example")
        client.rcpt(SUPPORT)
        return client.data(raw)


def hook(base_url: str, body=HOOK, name="plain", token=TOKEN, timeout: float = 30):
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return requests.post(f"{base_url}/hooks/{name}", data=json.dumps(body), headers=headers, timeout=timeout)


def http_head(port: int, lines: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    Smtp.opened.append(sock)  # closed after the test, as the SMTP clients are
    sock.sendall(lines.encode())
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def in_hand_released(service: Service) -> bool:
    return service.writer.in_hand_count() == 0


# ---------------------------------------------------------------- work in hand (#11.8a)


def test_every_exit_of_a_webhook_lets_go_of_its_work_in_hand(serve):
    service = serve()
    url = service.web_url
    answers = [
        hook(url),  # 202
        hook(url, body={"no": "title"}),  # 400
        hook(url, token="wrong"),  # 403
        hook(url, name="limited"),  # 202
        hook(url, name="limited"),  # 429
    ]
    assert [a.status_code for a in answers] == [202, 400, 403, 202, 429]
    wait_for(lambda: in_hand_released(service), timeout=5, message="every request to let go of its work in hand")
    service.writer.stop()  # the store cannot take more: 503
    assert hook(url, body={**HOOK, "dedup_key": "d2"}).status_code == 503
    wait_for(lambda: in_hand_released(service), timeout=5, message="the 503 to let go of its work in hand")


def test_every_end_of_an_smtp_transaction_lets_go_of_its_work_in_hand(serve, store):
    service = serve(smtp={"max_message_size": 2048})
    port = service.smtp.port

    def transaction(client: Smtp) -> None:
        assert client.command("EHLO sender.example").startswith("250")
        assert client.command("MAIL FROM:<alice@customer.example>").startswith("250")
        assert client.command(f"RCPT TO:<{SUPPORT}>").startswith("250")
        assert service.writer.in_hand_count() == 1  # held from the first recipient on

    def data(client: Smtp, raw: bytes) -> str:
        assert client.command("DATA").startswith("354")
        client.sock.sendall(raw + b".\r\n")
        return client.reply()

    client = Smtp(port)  # the session stays open throughout: nothing here is let go by a disconnect
    assert client.reply().startswith("220")
    transaction(client)
    assert client.command("RSET").startswith("250")
    wait_for(lambda: in_hand_released(service), timeout=5, message="RSET to let go of the work in hand")
    transaction(client)
    assert data(client, message() * 10).startswith("552 5.3.4")  # too big: the handler never ran
    wait_for(lambda: in_hand_released(service), timeout=5, message="552 to let go of the work in hand")
    transaction(client)
    assert data(client, message()).startswith("250 2.0.0")
    wait_for(lambda: in_hand_released(service), timeout=5, message="250 to let go of the work in hand")
    db.execute_sql("ALTER TABLE inbound RENAME TO inbound_away")
    try:
        transaction(client)
        assert data(client, message("again")).startswith("451 4.3.0")
    finally:
        db.execute_sql("ALTER TABLE inbound_away RENAME TO inbound")
    wait_for(lambda: in_hand_released(service), timeout=5, message="451 to let go of the work in hand")
    client.close()
    client = Smtp(port)
    assert client.reply().startswith("220")
    transaction(client)
    client.close()  # gone mid-transaction
    wait_for(lambda: in_hand_released(service), timeout=5, message="a dropped session to let go of its work")


# ---------------------------------------------------------------- SMTP limits (#18.1)


def test_smtp_sessions_are_capped_per_client_address_and_overall(serve):
    service = serve(smtp={"max_sessions": 4, "max_sessions_per_client": 2})
    port = service.smtp.port
    a, b = Smtp(port, "127.0.0.2"), Smtp(port, "127.0.0.2")
    assert a.reply().startswith("220") and b.reply().startswith("220")
    third = Smtp(port, "127.0.0.2")
    assert third.reply().startswith("421 4.7.0 too many connections") and third.closed()
    c, d = Smtp(port, "127.0.0.3"), Smtp(port, "127.0.0.3")
    assert c.reply().startswith("220") and d.reply().startswith("220")
    full = Smtp(port, "127.0.0.4")  # four open, none idle long: no room
    assert full.reply().startswith("421 4.7.0 too many connections") and full.closed()

    # At the cap, the session idle longest makes room; sessions that talk keep theirs.
    def admitted():
        for busy in (b, c, d):
            assert busy.command("NOOP").startswith("250")
        newcomer = Smtp(port, "127.0.0.4")
        first = newcomer.reply()
        if first.startswith("220"):
            return newcomer
        assert first.startswith("421 4.7.0")
        newcomer.close()
        return None

    newcomer = wait_for(admitted, timeout=15, interval=0.2, message="the idlest session to make room")
    assert a.reply().startswith("421 4.4.2") and a.closed()
    for alive in (b, c, d, newcomer):
        assert alive.command("NOOP").startswith("250")
    b.close()
    c.close()

    def from_a_and_b_address():  # a's and b's places: the per-client count went down for both
        pair = [Smtp(port, "127.0.0.2"), Smtp(port, "127.0.0.2")]
        if all(one.reply().startswith("220") for one in pair):
            return True
        for one in pair:
            one.close()
        return False

    wait_for(from_a_and_b_address, timeout=10, message="two sessions from 127.0.0.2 again")


def test_idle_session_is_closed_and_a_slow_data_is_not(serve):
    service = serve(smtp={"idle_timeout": "1s"})
    port = service.smtp.port
    silent = Smtp(port)
    assert silent.reply().startswith("220")
    assert silent.reply().startswith("421 4.4.2") and silent.closed()  # within the socket's 10 s

    slow = Smtp(port)  # bytes keep coming, each gap under the idle timeout, the whole DATA over it
    assert slow.reply().startswith("220")
    slow.command("EHLO sender.example")
    slow.command("MAIL FROM:<alice@customer.example>")
    slow.command(f"RCPT TO:<{SUPPORT}>")
    assert slow.command("DATA").startswith("354")
    lines = message().split(b"\r\n")
    started = time.monotonic()
    for i in range(0, len(lines), 4):
        slow.sock.sendall(b"\r\n".join(lines[i : i + 4]) + b"\r\n")
        time.sleep(0.3)  # the client's pace (a slow link), not a wait for the server
    slow.sock.sendall(b".\r\n")
    assert time.monotonic() - started > 1.0
    assert slow.reply().startswith("250 2.0.0")


def test_a_session_ends_at_its_time_limit_however_busy(serve):
    service = serve(smtp={"idle_timeout": "5s", "max_session_time": "2s"})
    client = Smtp(service.smtp.port)
    assert client.reply().startswith("220")

    def ended():
        answer = client.command("NOOP")
        if answer.startswith("250"):
            return None
        return answer or "closed"

    answer = wait_for(ended, timeout=15, interval=0.2, message="the session time limit")
    assert answer.startswith("421 4.4.2") and "time limit" in answer


# ---------------------------------------------------------------- HTTP limits (#18.1)


def test_a_body_over_the_limit_is_refused_before_it_is_read(serve):
    service = serve(web={"max_body_size": 1000})
    port = int(service.web_url.rsplit(":", 1)[1])
    sock = http_head(
        port,
        "POST /hooks/plain HTTP/1.1\r\nHost: inlet\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100000000\r\n\r\n",
    )  # and not one byte of the body
    answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413 ")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head and json.loads(body) == {"error": "request body larger than 1000 bytes"}
    chunked = http_head(
        port, "POST /hooks/plain HTTP/1.1\r\nHost: inlet\r\nTransfer-Encoding: chunked\r\n\r\n" + "800\r\n" + "x" * 2048
    )
    assert read_all(chunked).startswith(b"HTTP/1.1 413 ")
    padded = {**HOOK, "description": "x" * (1000 - len(json.dumps({**HOOK, "description": ""})))}
    assert len(json.dumps(padded)) == 1000 and hook(service.web_url, body=padded).status_code == 202  # the limit itself


def test_a_request_that_takes_too_long_to_arrive_is_closed(serve):
    service = serve(web={"request_timeout": "1s", "idle_timeout": "1s"})
    port = int(service.web_url.rsplit(":", 1)[1])
    half = http_head(port, "POST /hooks/plain HTTP/1.1\r\nHost: inlet\r\nContent-Length: 10\r\n")
    assert read_all(half) == b""  # closed by the server (the socket's own timeout is 10 s)
    idle = http_head(port, "")
    assert read_all(idle) == b""


def test_300_half_sent_requests_leave_the_web_answering(serve):
    service = serve()
    port = int(service.web_url.rsplit(":", 1)[1])
    slow = [
        http_head(port, "POST /hooks/plain HTTP/1.1\r\nHost: inlet\r\nContent-Length: 100\r\nX-Slow: 1\r\n")
        for _ in range(300)
    ]
    try:
        started = time.monotonic()
        assert requests.get(f"{service.web_url}/healthz", timeout=10).status_code == 200
        assert hook(service.web_url, timeout=10).status_code == 202
        assert requests.get(f"{service.web_url}/login", timeout=10).status_code == 200
        assert time.monotonic() - started < 10
    finally:
        for sock in slow:
            sock.close()


# ---------------------------------------------------------------- a real `inlet serve`


class Served:
    """``inlet serve`` as a subprocess, on free ports, with its output collected."""

    def __init__(self, store, tmp_path, smtp=None, web=None, limits: tuple[int, int] | None = None):
        self.smtp_port, self.web_port = free_port(), free_port()
        path = store.write_config(**sections(self.smtp_port, self.web_port, smtp, web))
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.log = tmp_path / "serve.log"

        def limit():  # in the child, before exec: a small open files limit
            if limits:
                resource.setrlimit(resource.RLIMIT_NOFILE, limits)

        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "-c", str(path), "serve"],
            cwd=ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
        )
        wait_for(self.ready, timeout=30, interval=0.1, message="inlet serve to listen")

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.output()
        try:
            socket.create_connection(("127.0.0.1", self.smtp_port), timeout=1).close()
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except OSError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def refuses(self, port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:  # queued while the listening socket closed, then dropped: look again
            return False
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


@pytest.fixture
def served(store, tmp_path, env):
    running = []

    def start(**kwargs) -> Served:
        db.close()
        running.append(Served(store, tmp_path, **kwargs))
        return running[-1]

    yield start
    for one in running:
        one.stop()


def stored(inbound_id: int) -> bool:
    with db.connection_context():
        return Inbound.get_or_none(Inbound.id == inbound_id) is not None


def send_when_admitted(port: int):
    """Send one message; None while the server answers 421 4.7.0 (full: an idle session makes room soon)."""
    try:
        return smtp_send(port, message())
    except smtplib.SMTPConnectError as refused:
        assert refused.smtp_code == 421 and refused.smtp_error.startswith(b"4.7.0"), refused
        return None


def flood(port: int, sources: list[str], each: int) -> list[socket.socket]:
    held = []
    for source in sources:
        for _ in range(each):
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)))
            except OSError:  # a connection the server could not take at all: the flood goes on
                pass
    return held


def test_a_flood_of_2000_idle_smtp_connections_leaves_senders_web_and_webhooks_answering(served):
    inlet = served()
    one_host = flood(inlet.smtp_port, ["127.0.0.2"], 1000)  # one flooding host: its own cap holds it
    many_hosts = flood(inlet.smtp_port, [f"127.0.1.{i}" for i in range(1, 41)], 25)  # past the overall cap
    try:
        assert len(one_host) + len(many_hosts) == 2000
        started = time.monotonic()
        code, text = wait_for(
            lambda: send_when_admitted(inlet.smtp_port), timeout=30, interval=0.2, message="a sender to get through"
        )
        waited = time.monotonic() - started
        assert code == 250, text
        assert requests.get(f"{inlet.url}/healthz", timeout=10).status_code == 200
        assert hook(inlet.url, timeout=10).status_code == 202
        assert requests.get(f"{inlet.url}/login", timeout=10).status_code == 200
        print(f"normal sender under a flood of 2000 idle connections: 250 after {waited:.2f}s")
    finally:
        for sock in one_host + many_hosts:
            sock.close()
    assert stored(int(text.decode().rsplit(" ", 1)[1]))
    assert "Traceback" not in inlet.output()


def test_descriptor_exhaustion_refuses_connections_not_the_store_or_the_web(served):
    inlet = served(limits=(200, 400))
    limits = Path(f"/proc/{inlet.proc.pid}/limits").read_text()
    soft, hard = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()
    assert (soft, hard) == ("400", "400")  # raised to the hard limit at start
    held = flood(inlet.smtp_port, [f"127.0.2.{i}" for i in range(1, 31)], 20)  # 600: more than the limit
    try:
        assert requests.get(f"{inlet.url}/healthz", timeout=10).status_code == 200
        answer = hook(inlet.url, timeout=10)
        assert answer.status_code == 202 and stored(answer.json()["inbound_id"])
        assert requests.get(f"{inlet.url}/login", timeout=10).status_code == 200
    finally:
        for sock in held:
            sock.close()
    code, text = wait_for(lambda: send_when_admitted(inlet.smtp_port), timeout=30, message="a sender to get through")
    assert code == 250, text
    out = inlet.output()
    assert "Too many open files" not in out and "Traceback" not in out


# ---------------------------------------------------------------- SIGTERM (#11.8c)


def test_sigterm_answers_open_sessions_finishes_work_in_progress_and_exits(served):
    inlet = served(smtp={"drain_timeout": "5s"}, web={"drain_timeout": "10s"})
    code, text = smtp_send(inlet.smtp_port, message("before"))
    assert code == 250
    before = int(text.decode().rsplit(" ", 1)[1])

    talking = Smtp(inlet.smtp_port)  # mid-conversation, between commands
    assert talking.reply().startswith("220")
    talking.command("EHLO sender.example")
    assert talking.command("MAIL FROM:<alice@customer.example>").startswith("250")

    def in_data(client: Smtp, raw: bytes) -> None:
        assert client.reply().startswith("220")
        client.command("EHLO sender.example")
        client.command("MAIL FROM:<alice@customer.example>")
        assert client.command(f"RCPT TO:<{SUPPORT}>").startswith("250")
        assert client.command("DATA").startswith("354")
        client.sock.sendall(raw[: len(raw) // 2])

    finishing, finishing_raw = Smtp(inlet.smtp_port), message("finishing")
    in_data(finishing, finishing_raw)
    stalled = Smtp(inlet.smtp_port)
    in_data(stalled, message("stalled"))

    body = json.dumps({**HOOK, "dedup_key": "during-stop"}).encode()
    uploading = http_head(
        inlet.web_port,
        f"POST /hooks/plain HTTP/1.1\r\nHost: inlet\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n",
    )
    uploading.sendall(body[:10])
    # a request answered after it: the server has taken the upload in (one not yet accepted is reset at stop)
    assert requests.get(f"{inlet.url}/healthz", timeout=10).status_code == 200

    stop_sent = time.monotonic()
    inlet.proc.send_signal(signal.SIGTERM)
    assert talking.reply().startswith("421 4.3.2") and talking.closed()  # answered, not dropped
    wait_for(lambda: inlet.refuses(inlet.smtp_port), timeout=10, message="SMTP to stop accepting")
    wait_for(lambda: inlet.refuses(inlet.web_port), timeout=10, message="the web server to stop accepting")
    uploading.sendall(body[10:])
    response = read_all(uploading)
    assert response.startswith(b"HTTP/1.1 202 "), response
    finishing.sock.sendall(finishing_raw[len(finishing_raw) // 2 :] + b".\r\n")
    answer = finishing.reply()
    assert answer.startswith("250 2.0.0"), answer
    assert finishing.reply().startswith("421 4.3.2") and finishing.closed()
    # the stalled DATA is refused once drain_timeout is over, never half-stored
    assert stalled.reply().startswith("421 4.3.2") and stalled.closed()

    assert inlet.proc.wait(timeout=30) == 0
    took = time.monotonic() - stop_sent
    assert took < 25, f"stopping took {took:.1f}s"  # the drains are 10 s (web) and 5 s (smtp) at most
    out = inlet.output()
    assert "Traceback" not in out and "inlet: stopped" in out
    hook_id = json.loads(response.partition(b"\r\n\r\n")[2])["inbound_id"]
    finished = int(answer.split()[-1])
    for inbound_id in (before, finished, hook_id):
        assert stored(inbound_id)
    with db.connection_context():
        subjects = [bytes(row.raw) for row in Inbound.select()]
    assert not any(b"Subject: stalled" in raw for raw in subjects)
