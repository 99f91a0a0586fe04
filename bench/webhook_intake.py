"""Webhook intake throughput: ``inlet serve`` (SQLite) vs a bare Flask endpoint, same WSGI server, same run.

Sends N Alertmanager-style events (one alert each, over 100 distinct alerts, so
repeats are counted on open incidents) from C concurrent keep-alive clients to

- a bare Flask app whose ``POST /hooks/bench`` returns 202 with a small JSON body,
  served by waitress with the same number of threads, in a subprocess;
- ``inlet serve`` (subprocess, SQLite in a temporary folder, bearer token), whose
  ``POST /hooks/bench`` authenticates, validates, stores the raw body (group
  commit) and answers 202 with the Inbound id; its pipeline worker applies each
  event to its incident.

Prints events/s for both, the ratio (target: at least 75 %), p50/p99 latency, and
how long after the last 202 the last event was applied to its incident.

Run: ``PYTHONPATH=. python bench/webhook_intake.py [-n 5000] [-c 16] [--threads 8]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789"


def bare_server(port: int, threads: int) -> None:
    """The baseline: a Flask endpoint that answers 202 and does nothing else."""
    from flask import Flask, jsonify
    from waitress import serve

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # inlet serve logs at warning; so does this
    app = Flask("bare")

    @app.post("/hooks/<name>")
    def receive(name):
        return jsonify(inbound_id=1), 202

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    serve(app, host="127.0.0.1", port=port, threads=threads, ident="bare", _quiet=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not answer /healthz")


def event(i: int, run: str) -> bytes:
    alert = i % 100
    return json.dumps(
        {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="Bench{alert}"}}',
            "status": "firing",
            "receiver": "inlet",
            "groupLabels": {"alertname": f"Bench{alert}"},
            "externalURL": "http://alertmanager.example.org:9093",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": f"Bench{alert}", "instance": f"node-{alert}:9100", "severity": "warning"},
                    "annotations": {"summary": f"Bench alert {alert}", "value": f"{run}-{i}"},
                    "startsAt": "2026-01-05T09:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus.example.org/graph",
                    "fingerprint": f"bench{alert:04d}",
                }
            ],
        }
    ).encode()


def load(port: int, n: int, clients: int, run: str) -> dict:
    """Send n events from ``clients`` threads; return rate, latencies and the time of the last 202."""
    bodies = [event(i, run) for i in range(n)]
    latencies: list[float] = []
    errors: list[str] = []
    last_202 = [0.0]
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        mine, done = [], 0.0
        start_gate.wait()
        for body in bodies[index::clients]:
            t0 = time.perf_counter()
            conn.request("POST", "/hooks/bench", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            t1 = time.perf_counter()
            if response.status != 202:
                errors.append(f"{response.status}")
            mine.append(t1 - t0)
            done = time.time()
        conn.close()
        with lock:
            latencies.extend(mine)
            last_202[0] = max(last_202[0], done)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start_gate.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. HTTP {errors[0]}")
    latencies.sort()
    return {
        "rate": n / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "last_202": last_202[0],
        "elapsed": elapsed,
        "latencies": latencies,
    }


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def applied_lag(db_path: Path, n_total: int, last_202: float, timeout: float = 300) -> float:
    """Seconds from the last 202 until the last event was applied (Inbound processed_at)."""
    deadline = time.monotonic() + timeout
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        while True:
            pending, done, last = conn.execute(
                "SELECT SUM(status = 'pending'), SUM(status = 'processed'), MAX(processed_at) FROM inbound"
            ).fetchone()
            if not pending and (done or 0) >= n_total:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"pipeline did not finish: {pending} pending")
            time.sleep(0.05)
    finally:
        conn.close()
    applied_at = datetime.fromisoformat(str(last)).replace(tzinfo=UTC).timestamp()
    return max(0.0, applied_at - last_202)


def summary(results: list[dict]) -> dict:
    latencies = sorted(x for r in results for x in r["latencies"])
    return {
        "rate": sum(len(r["latencies"]) for r in results) / sum(r["elapsed"] for r in results),
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="events per server and round (default 5000)")
    parser.add_argument("-c", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads of both servers (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of bare then inlet (default 3)")
    parser.add_argument("--warmup", type=int, default=300, help="events sent first and not measured")
    parser.add_argument("--bare-server", nargs=2, type=int, metavar=("PORT", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        bare_server(*args.bare_server)
        return

    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bare_port, port = free_port(), free_port()
        db_path = tmp / "inlet.db"
        config = tmp / "config.toml"
        config.write_text(
            f"""
fallback_group = "service-desk"
[inlet]
data_dir = "{tmp}"
log_level = "warning"
[database]
url = "sqlite:///{db_path}"
[web]
host = "127.0.0.1"
port = {port}
threads = {args.threads}
[[group]]
name = "service-desk"
[[integration]]
name = "bench"
kind = "alertmanager"
token_env = "BENCH_TOKEN"
rate_limit = 0
"""
        )
        inlet = [sys.executable, "-m", "gateway.cli", "-c", str(config)]
        subprocess.run([*inlet, "db", "upgrade"], env=env, cwd=ROOT, check=True, capture_output=True)
        only = ["--only", os.environ["BENCH_ONLY"]] if os.environ.get("BENCH_ONLY") else []
        bare = subprocess.Popen(
            [sys.executable, __file__, "--bare-server", str(bare_port), str(args.threads)], env=env, cwd=ROOT
        )
        server = subprocess.Popen(
            [*inlet, "serve", *only], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        bare_results, inlet_results, lags, ratios = [], [], [], []
        try:
            wait_healthy(bare_port, bare)
            wait_healthy(port, server)
            load(bare_port, args.warmup, args.c, "warm")
            load(port, args.warmup, args.c, "warm")
            sent = args.warmup
            if not only:
                applied_lag(db_path, sent, 0)
            # Rounds of bare then inlet, each after inlet applied everything: the machine's other
            # load hits both alike, and inlet's pipeline never runs during a bare round.
            for round_ in range(args.rounds):
                bare_results.append(load(bare_port, args.n, args.c, f"bare{round_}"))
                inlet_results.append(load(port, args.n, args.c, f"inlet{round_}"))
                sent += args.n
                ratios.append(inlet_results[-1]["rate"] / bare_results[-1]["rate"])
                if not only:
                    lags.append(applied_lag(db_path, sent, inlet_results[-1]["last_202"]))
        finally:
            stop(bare)
            stop(server)

    bare_result, inlet_result = summary(bare_results), summary(inlet_results)
    ratio = inlet_result["rate"] / bare_result["rate"]
    print(
        f"webhook intake: {args.rounds} rounds of {args.n} Alertmanager events, {args.c} concurrent clients, "
        f"waitress {args.threads} threads"
    )
    for label, result in (("bare Flask 202:", bare_result), ("inlet serve:", inlet_result)):
        rate, p50, p99 = result["rate"], result["p50"], result["p99"]
        print(f"  {label:17} {rate:8.0f} events/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
    print(f"  ratio:            {ratio:8.0%}  (target >= 75 %; per round: {', '.join(f'{r:.0%}' for r in ratios)})")
    if lags:
        print(f"  last 202 -> last event applied to its incident: {', '.join(f'{x:.2f}' for x in lags)} s per round")


if __name__ == "__main__":
    main()
