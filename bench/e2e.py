"""End to end through `inlet serve` (every role in its own process, SQLite): from the SMTP 250 and from
the webhook 202 to the group's notification arriving at a loopback HTTP sink.

First a ramp finds the maximum sustained rate (the highest offered rate, in steps, at which every
input's group notification arrives within a second: no queue builds up); then two steady runs, at half
that rate and at 50/s, each on a fresh database, half the inputs by SMTP and half by webhook. Prints
p50 / p95 / p99 of 250 → delivered and 202 → delivered (target p99 < 250 ms), and the bare baseline of
the same machine in the same run: a loopback HTTP round trip to the sink.

Run: ``PYTHONPATH=. python bench/e2e.py [--seconds 15] [--rate R | --ramp 25,50,75 --step-seconds 5]``
"""

from __future__ import annotations

import argparse
import json
import re
import smtplib
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from bench.e2e_latency import Inlet, Sink, message
from bench.smtp_intake import free_port, percentile

TOKEN = re.compile(rb"bench-(mail|hook)-(\d+)")


class GroupSink:
    """The group's channel: a loopback HTTP server noting when each input's notification first arrived."""

    def __init__(self):
        self.port = free_port()
        self.arrived: dict[str, float] = {}
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 -- the http.server interface
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.monotonic()
                for kind, n in TOKEN.findall(body):
                    sink.arrived.setdefault(f"bench-{kind.decode()}-{n.decode()}", now)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def start(folder: Path, sink: GroupSink, reporters: Sink) -> Inlet:
    return Inlet(
        folder,
        reporters.port,
        notifications="rate_limit = 1000000",  # every group notification on its own, none folded into a digest
        group=f'channels = ["json://127.0.0.1:{sink.port}/hook"]',
    )


def offer(
    inlet: Inlet, rate: float, seconds: float, senders: int = 4, first: int = 0, walls: dict | None = None
) -> dict[str, float]:
    """Offer ``rate`` inputs/s (half SMTP, half webhooks) on ``senders`` connections of each kind, open loop.

    Returns the monotonic time each input was acknowledged (250 or 202), by its token; tokens are
    numbered from ``first`` (each input is new: a token is also the webhook's dedup key). ``walls``
    gets the wall-clock time of each 250 by Message-ID (to compare with the incident's opened time).
    """
    walls = {} if walls is None else walls
    acked: dict[str, float] = {}
    per_sender = rate / 2 / senders
    count = int(seconds * per_sender)
    began = time.monotonic() + 0.2

    def mail(k: int) -> None:
        with smtplib.SMTP("127.0.0.1", inlet.smtp_port, timeout=60) as client:
            for i in range(count):
                time.sleep(max(0.0, began + i / per_sender - time.monotonic()))
                token = f"bench-mail-{first + k * count + i}"
                mid, raw = message(first + k * count + i, token)
                client.sendmail("alice@customer.example", ["support@example.org"], raw)
                acked[token] = time.monotonic()
                walls[mid.strip("<>")] = datetime.now(UTC)

    def hook(k: int) -> None:
        session = requests.Session()
        url = f"http://127.0.0.1:{inlet.web_port}/hooks/plain"
        for i in range(count):
            time.sleep(max(0.0, began + i / per_sender - time.monotonic()))
            token = f"bench-hook-{first + k * count + i}"
            answer = session.post(url, data=json.dumps({"title": f"Disk full ({token})", "dedup_key": token}),
                                  headers={"Authorization": "Bearer bench", "Content-Type": "application/json"},
                                  timeout=60)  # fmt: skip
            if answer.status_code == 202:
                acked[token] = time.monotonic()

    threads = [threading.Thread(target=f, args=(k,)) for f in (mail, hook) for k in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return acked


def settle(sink: GroupSink, acked: dict[str, float], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while any(token not in sink.arrived for token in acked) and time.monotonic() < deadline:
        time.sleep(0.1)


def warm(inlet: Inlet, sink: GroupSink) -> None:
    acked = offer(inlet, 20, 1, senders=1, first=10**6)
    settle(sink, acked)
    sink.arrived.clear()


def sustained(step_seconds: float, rates: list[float]) -> float:
    """The highest of ``rates`` Inlet keeps up with: offered in turn on one Inlet, each for ``step_seconds``;
    a rate is kept up with when every input of its step was delivered within 1 s (no queue building up)."""
    sink, reporters = GroupSink(), Sink()
    best, first = 0.0, 0
    with tempfile.TemporaryDirectory(prefix="inlet-bench-") as tmp:
        inlet = start(Path(tmp), sink, reporters)
        try:
            warm(inlet, sink)
            for rate in rates:
                acked = offer(inlet, rate, step_seconds, senders=8, first=first)
                first += len(acked) + 10_000
                settle(sink, acked)
                spans = [sink.arrived[t] - acked[t] for t in acked if t in sink.arrived]
                worst = max(spans) if len(spans) == len(acked) else float("inf")
                print(f"ramp: {rate:g} inputs/s for {step_seconds:g} s: {len(spans)}/{len(acked)} delivered,"
                      f" p50 {percentile(spans, 50) * 1000:.0f} ms, slowest {worst * 1000:.0f} ms")  # fmt: skip
                if worst > 1.0:
                    break
                best = rate
        finally:
            inlet.stop()
            reporters.stop()
            sink.stop()
    print(f"maximum sustained rate: {best:g} inputs/s end to end")
    return best


def steady(rate: float, seconds: float) -> None:
    sink, reporters = GroupSink(), Sink()
    with tempfile.TemporaryDirectory(prefix="inlet-bench-") as tmp:
        inlet = start(Path(tmp), sink, reporters)
        try:
            warm(inlet, sink)
            walls: dict[str, datetime] = {}
            acked = offer(inlet, rate, seconds, walls=walls)
            settle(sink, acked)
            opened = inlet.opened()
        finally:
            inlet.stop()
            reporters.stop()
            sink.stop()
    print(f"steady {rate:.0f} inputs/s for {seconds:g} s (half SMTP, half webhooks), group notification to HTTP sink")
    print(f"{'':<30}{'n':>6}{'lost':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for kind, name in (("mail", "SMTP 250 -> delivered"), ("hook", "webhook 202 -> delivered")):
        tokens = [t for t in acked if t.startswith(f"bench-{kind}-")]
        spans = [sink.arrived[t] - acked[t] for t in tokens if t in sink.arrived]
        p = [percentile(spans, q) * 1000 for q in (50, 95, 99)] if spans else [float("nan")] * 3
        print(f"{name:<30}{len(spans):>6}{len(tokens) - len(spans):>6}{p[0]:>9.1f}{p[1]:>9.1f}{p[2]:>9.1f}")
    spans = [(opened[m] - at).total_seconds() for m, at in walls.items() if m in opened]
    if spans:  # where the time goes: the pipeline's part of it
        p = [percentile(spans, q) * 1000 for q in (50, 95, 99)]
        print(f"{'  of which 250 -> incident':<30}{len(spans):>6}{'':>6}{p[0]:>9.1f}{p[1]:>9.1f}{p[2]:>9.1f}")


def baseline(n: int = 300) -> None:
    """The bare floor of this machine now: a loopback HTTP POST to the same kind of sink."""
    sink = GroupSink()
    session = requests.Session()
    spans = []
    try:
        for i in range(n):
            began = time.monotonic()
            session.post(f"http://127.0.0.1:{sink.port}/hook", data=f"bench-hook-{i}".encode(), timeout=10)
            spans.append(time.monotonic() - began)
    finally:
        sink.stop()
    print(f"baseline: loopback HTTP POST to the sink p50 {percentile(spans, 50) * 1000:.2f} ms,"
          f" p99 {percentile(spans, 99) * 1000:.2f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each steady run (default 15)")
    parser.add_argument("--rate", type=float, help="skip the ramp: this is the maximum sustained rate")
    parser.add_argument("--step-seconds", type=float, default=5.0, help="length of each step of the ramp (default 5)")
    parser.add_argument("--ramp", default="25,50,75,100,125,150,200", help="rates of the ramp, inputs/s")
    args = parser.parse_args()
    baseline()
    maximum = args.rate or sustained(args.step_seconds, [float(r) for r in args.ramp.split(",")])
    steady(maximum / 2, args.seconds)
    steady(50, args.seconds)


if __name__ == "__main__":
    main()
