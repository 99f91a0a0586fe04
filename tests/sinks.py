"""Real receivers on loopback for notification tests: an HTTP sink and an SMTP sink."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller


class HttpSink:
    """Records every request (path, headers, body); answers ``status`` (200 unless told otherwise).

    ``start()`` may be called late: a sink that is "down" refuses connections on its port.
    """

    def __init__(self, port: int):
        self.port = port
        self.requests: list[dict] = []
        self.status = 200
        self.delay = 0.0  # seconds between recording a request and answering it: a slow receiver
        self.files: dict[str, bytes] = {}  # path -> body answered to a GET (404 for others)
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}/hook"

    def start(self) -> HttpSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 -- the http.server interface
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink.lock:
                    sink.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if sink.delay:
                    time.sleep(sink.delay)  # the receiver's pace (a slow channel under test), not a wait for Inlet
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):  # noqa: N802 -- the http.server interface
                with sink.lock:
                    sink.requests.append({"path": self.path, "headers": dict(self.headers), "body": b"", "get": True})
                body = sink.files.get(self.path)
                self.send_response(sink.status if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def json(self) -> list[dict]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests]

    def forms(self) -> list[dict]:
        with self.lock:
            return [{k: v[-1] for k, v in parse_qs(r["body"].decode()).items()} for r in self.requests]


class _TrackingController(Controller):
    """An aiosmtpd Controller that knows its sessions, so stopping closes their transports first."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sessions: list = []

    def factory(self):
        smtp = super().factory()
        self.sessions.append(smtp)
        return smtp

    async def close_sessions(self) -> None:
        for smtp in self.sessions:
            transport = getattr(smtp, "transport", None)
            if transport is not None and not transport.is_closing():
                transport.close()
        await asyncio.sleep(0)  # one turn of the loop: the closed transports' connection_lost callbacks run


class SmtpSink:
    """An aiosmtpd server that keeps every message it is given."""

    def __init__(self, port: int):
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []
        self.refuse: int | None = None  # answer RCPT with this code instead of accepting
        self.helo: list[str] = []  # the HELO/EHLO name of each message's session
        sink = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
                if sink.refuse:
                    return f"{sink.refuse} refused by the test sink"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                sink.helo.append(session.host_name)
                sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
                return "250 OK"

        self.controller = _TrackingController(Handler(), hostname="127.0.0.1", port=port)
        self.port = port

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        # A client that closed (e.g. `inlet check`'s relay probe: connect, close) may not have been seen by the
        # loop yet: close every session's transport in the loop, then stop it (no transport left unclosed).
        asyncio.run_coroutine_threadsafe(self.controller.close_sessions(), self.controller.loop).result(timeout=10)
        self.controller.stop()
