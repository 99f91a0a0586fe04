"""What outbox delivery costs, and what Apprise's per-plugin throttle would cost.

Sends N outbox rows (spread over C json:// channels of one loopback HTTP sink
that answers after D ms, like a real webhook) through the delivery worker on
SQLite, and prints rows/s side by side with a bare baseline: the same sends
with plain Apprise calls from the same number of threads, no database. Then
shows why the throttle matters: one reused Apprise object sending to one
``json://`` URL with the plugin default ``request_rate_per_sec`` (5.5 s for
most plugins; 0 for json://, so it is set to 5.5 here) against Inlet's send.

Run: ``PYTHONPATH=. python bench/notify.py [rows] [channels] [delay_ms]``
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import apprise  # noqa: E402

from gateway.config.loader import config_from_dict  # noqa: E402
from notifiers import apprise_adapter  # noqa: E402
from notifiers.delivery import Delivery  # noqa: E402
from notifiers.outbox import counts_by_status, enqueue  # noqa: E402
from notifiers.render import Rendered  # noqa: E402
from store.db import db, open_database  # noqa: E402
from store.migrations import upgrade  # noqa: E402

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
CHANNELS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
DELAY = (int(sys.argv[3]) if len(sys.argv) > 3 else 20) / 1000
THREADS = 8


def sink() -> int:
    wait = threading.Event().wait

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            wait(DELAY)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def main() -> None:
    port = sink()
    urls = [f"json://127.0.0.1:{port}/c{i}" for i in range(CHANNELS)]
    message = Rendered("subject", "text", "markdown", "<p>html</p>")

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda i: apprise_adapter.send(urls[i % CHANNELS], message), range(ROWS)))
    bare = ROWS / (time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_dict(
            {
                "database": {"url": f"sqlite:///{tmp}/inlet.db"},
                "inlet": {"data_dir": tmp},
                "group": [{"name": "service-desk"}],
                "notifications": {"concurrency": THREADS, "batch": 200, "rate_limit": 100_000},
            }
        )
        open_database(config)
        upgrade()
        with db.connection_context(), db.atomic():
            for i in range(ROWS):
                enqueue(audience="group", template="test", targets=[urls[i % CHANNELS]], now=_now())
        delivery = Delivery(config)
        started = time.perf_counter()
        with db.connection_context():
            while delivery.tick():
                pass
            outbox = ROWS / (time.perf_counter() - started)
            assert counts_by_status()["sent"] == ROWS
        delivery.pool.shutdown()

    print(f"{ROWS} sends, {CHANNELS} channels, sink answers after {DELAY * 1000:.0f} ms, {THREADS} threads")
    print(f"  bare Apprise sends        {bare:8.0f} /s")
    print(f"  outbox delivery (SQLite)  {outbox:8.0f} /s   ({outbox / bare:.0%} of bare)")

    app = apprise.Apprise()
    plugin = apprise.Apprise.instantiate(urls[0])
    plugin.request_rate_per_sec = 5.5
    app.add(plugin)
    started = time.perf_counter()
    for _ in range(2):
        app.notify(body="x", title="y")
    reused = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(2):
        apprise_adapter.send(urls[0], message, throttle=5.5)
    ours = time.perf_counter() - started
    print(f"  2 sends, one reused Apprise object, throttle 5.5 s: {reused:5.2f} s")
    print(f"  2 sends, Inlet's adapter (fresh plugin per send):  {ours:5.2f} s")


def _now():
    from gateway.core.clock import Clock

    return Clock().now()


if __name__ == "__main__":
    main()
