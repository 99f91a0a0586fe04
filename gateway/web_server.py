"""The web server of ``inlet serve``: the Flask app (web UI, REST API, webhooks) on waitress.

waitress reads each request whole (headers and body) in its event loop before a
worker thread runs the app, so slow clients cost a descriptor and a buffer, not
a thread. Its limits come from ``[web]``: open connections, idle keep-alive
connections, the request body (a ``Content-Length`` over it is answered 413 as
soon as the headers are in, before any of the body is read), and — added here,
waitress has none — the time one request may take to arrive (slowloris).

With ``[web] processes`` over 1, each of the supervisor's web processes binds the
port with ``SO_REUSEPORT`` and the kernel spreads new connections among them: each
process is its own interpreter, so the rate grows with the cores, not with threads.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask

from gateway.config.loader import Config
from gateway.core.descriptors import listener_share
from gateway.intake.refusals import WEBHOOK

log = logging.getLogger("inlet.web")


def proxy_settings(web) -> dict:
    """waitress's proxy settings: the one place that decides the client address (REMOTE_ADDR) the
    web layer and its login limiter see. Only the configured proxy's forwarding headers count."""
    if not web.trusted_proxy:
        return {}
    return {
        "trusted_proxy": web.trusted_proxy,
        "trusted_proxy_count": 1,
        "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"},
    }


class _JsonErrorTask(ErrorTask):
    """waitress's own refusals (413, 431, 400 before the app runs) with a JSON body, like the app's."""

    def execute(self):
        error = self.request.error
        refusals = getattr(self.channel.server, "refusals", None)
        if refusals is not None and (getattr(self.request, "path", "") or "").startswith("/hooks/"):  # intake refused
            refusals.count(WEBHOOK, "too_large" if error.code == 413 else "bad_request")
        if error.code == 413:
            message = f"request body larger than {self.channel.server.adj.max_request_body_size - 1} bytes"
        else:
            message = f"{error.reason}: {error.body}"
        body = json.dumps({"error": message}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    """One HTTP connection; remembers when the request it is receiving began."""

    error_task_class = _JsonErrorTask
    request_began = 0.0

    def received(self, data):
        if self.request is None and data:
            self.request_began = time.monotonic()
        return super().received(data)

    def receiving(self) -> bool:
        """Part of a request is in, the rest not yet."""
        return self.request is not None

    def busy(self) -> bool:
        """A request is being received, run or answered."""
        return bool(self.requests) or self.receiving() or bool(self.total_outbufs_len)


class _Server(TcpWSGIServer):
    channel_class = _Channel
    request_timeout = 30.0

    def __init__(self, *args, reuse_port: bool = False, **kwargs):
        self.reuse_port = reuse_port
        super().__init__(*args, **kwargs)

    def set_reuse_addr(self):  # waitress calls it between creating the socket and binding it
        super().set_reuse_addr()
        if self.reuse_port:
            # Several web processes bind the same port; the kernel spreads new connections among them.
            # Only processes of the same user may join (Linux), so no other account can take a share.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)

    def maintenance(self, now):
        super().maintenance(now)  # closes connections idle longer than channel_timeout between requests
        cutoff = time.monotonic() - self.request_timeout
        for channel in list(self.active_channels.values()):
            if channel.receiving() and channel.request_began < cutoff:
                log.debug("closing a connection from %s: its request took over %gs", channel.addr, self.request_timeout)
                channel.will_close = True


class WebServer:
    """The Flask app on waitress, in a thread of its own."""

    name = "web"

    def __init__(self, config: Config, app, refusals=None):
        web = config.web
        # waitress warns "Task queue depth is N" for every request queued behind busy threads: a burst
        # of webhooks would write thousands of lines. Requests waiting is normal; errors still show.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        adjustments = Adjustments(
            host=web.host,
            port=web.port,
            threads=web.threads,
            ident="inlet",
            clear_untrusted_proxy_headers=True,
            connection_limit=listener_share(web.connection_limit, "[web] connection_limit"),
            channel_timeout=max(1, round(web.idle_timeout.total_seconds())),
            cleanup_interval=1,  # how often the timeouts are looked at
            max_request_body_size=web.max_body_size + 1,  # waitress refuses a body of this size or more
            asyncore_use_poll=True,  # select() cannot watch descriptors above 1023
            **proxy_settings(web),
        )
        self.server = _Server(app, map={}, adj=adjustments, reuse_port=web.processes > 1)
        self.server.request_timeout = web.request_timeout.total_seconds()
        self.server.refusals = refusals  # waitress's own refusals of webhook requests count too
        self.drain_timeout = web.drain_timeout.total_seconds()
        self._stopping = False
        self.thread = threading.Thread(target=self._serve, name="web", daemon=True)

    def _serve(self) -> None:
        try:
            self.server.run()
        except (OSError, ValueError):
            # stop() closes the sockets under the running poll(): EBADF then is the way out, not an error
            if not self._stopping:
                raise

    @property
    def port(self) -> int:
        return self.server.effective_port

    def where(self) -> str:
        return f"web UI and webhooks on http://{self.server.effective_host}:{self.port}/"

    def start(self) -> None:
        self.thread.start()

    def stop_accepting(self) -> None:
        """The first step of stopping: close the listening socket (new clients are refused at once)."""
        if self._stopping or not self.thread.is_alive():
            return
        self._stopping = True
        closed = threading.Event()

        def close_listener() -> None:  # in the server's own thread, between two polls
            from waitress import wasyncore

            self.server.accepting = False
            wasyncore.dispatcher.close(self.server)  # the listening socket only; the trigger stays
            closed.set()

        self.server.trigger.pull_trigger(close_listener)
        closed.wait(5)

    def stop(self) -> None:
        """Stop gracefully: refuse new connections, let requests in progress finish (within
        [web] drain_timeout), close idle connections, then stop."""
        from waitress import wasyncore

        if self.thread.is_alive():
            self.stop_accepting()
            deadline = time.monotonic() + self.drain_timeout
            while time.monotonic() < deadline:
                channels = list(self.server.active_channels.values())
                if not any(channel.busy() for channel in channels):
                    break
                self.server.trigger.pull_trigger(self._close_idle)
                time.sleep(0.02)
            else:
                log.warning("web: requests still in progress after %gs: closing them", self.drain_timeout)
        self._stopping = True
        self.server.task_dispatcher.shutdown(timeout=1)
        wasyncore.close_all(self.server._map)
        if self.thread.ident is not None:  # started
            self.thread.join(timeout=10)

    def _close_idle(self) -> None:
        for channel in list(self.server.active_channels.values()):
            if not channel.busy():
                channel.will_close = True
