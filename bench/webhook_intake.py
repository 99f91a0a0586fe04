"""Webhook intake throughput: ``inlet serve`` vs a bare Flask endpoint, same WSGI server, same run.

Sends Alertmanager-style events (one alert each, over 100 distinct alerts, so
repeats are counted on open incidents) from C concurrent keep-alive clients to

- a bare Flask app whose ``POST /hooks/bench`` returns 202 with a small JSON body,
  served by waitress with the same number of threads, in a subprocess (or P of
  them sharing the port with ``SO_REUSEPORT``);
- ``inlet serve`` (subprocess, bearer token), whose ``POST /hooks/bench``
  authenticates, validates, stores the raw body (group commit) and answers 202
  with the Inbound id; its pipeline worker applies each event to its incident.

Two measurements:

- default, SQLite, every role of ``inlet serve`` (one web process, one worker):
  intake events/s beside the bare figure, and the **sustained** rate of intake +
  processing: the events of a round over the time from its first request to the
  last event applied to its incident (target >= 1,000 events/s);
- ``--pg DSN``: intake alone on PostgreSQL, ``inlet serve --only web`` with
  ``[web] processes`` = 1 and 2 (``--web-processes``), each beside a bare Flask of
  as many processes. Processing on PostgreSQL is bench/workers.py's.

The load client is ``wrk`` (Debian's ``wrk``: ``apt-get install wrk``) when it is
installed: a C client leaves the cores to the servers; each request gets a body of
its own from ``bench/webhook_wrk.lua``. Without it (or with ``--client python``),
threads of this script send the events (they take a good share of the 2 cores).

Run: ``PYTHONPATH=. .venv/bin/python bench/webhook_intake.py [-n 5000] [-c 16] [--threads 8]``
     ``PYTHONPATH=. .venv/bin/python bench/webhook_intake.py --pg postgresql://postgres@127.0.0.1:5432/test``
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import re
import shutil
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


def bare_server(port: int, threads: int, reuse_port: bool = False) -> None:
    """The baseline: a Flask endpoint that answers 202 and does nothing else."""
    import socket

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

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # as inlet's web processes do (gateway/web_server.py)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    serve(app, sockets=[sock], threads=threads, ident="bare", _quiet=True)


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


WRK_SCRIPT = """
local run = os.getenv("WRK_RUN")
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("WRK_TOKEN")}
local template = [==[TEMPLATE]==]
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local n = 0
function request()
  n = n + 1
  local i = n * 64 + tid
  local a = i % 100
  local body = template:gsub("@A@", a):gsub("@F@", string.format("%04d", a)):gsub("@V@", run .. "-" .. i)
  return wrk.format("POST", "/hooks/bench", headers, body)
end
"""


def wrk_template() -> str:
    """event() with placeholders the Lua script fills in: @A@ the alert, @F@ its fingerprint number, @V@ unique."""
    text = event(0, "@V@").decode()
    text = text.replace('"value": "@V@-0"', '"value": "@V@"').replace("bench0000", "bench@F@")
    return text.replace("Bench0", "Bench@A@").replace("node-0:", "node-@A@:").replace("alert 0", "alert @A@")


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:  # wrk prints e.g. "-nanus" for a percentile it has no sample for
        return float("nan")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}[unit]


def load_wrk(port: int, seconds: float, clients: int, run: str, script: Path) -> dict:
    """``wrk`` for ``seconds`` with ``clients`` connections (2 threads); rate, latencies, requests sent."""
    env = {**os.environ, "WRK_RUN": run, "WRK_TOKEN": TOKEN}
    began = time.time()
    done = subprocess.run(
        ["wrk", "-t2", f"-c{clients}", f"-d{seconds:g}s", "--latency", "-s", str(script), f"http://127.0.0.1:{port}/"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = done.stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw failed requests:\n{out}")
    requests_, elapsed = re.search(r"(\d+) requests in ([\d.]+)(s|m)", out).groups()[:2]
    p50 = _wrk_ms(re.search(r"50%\s+(\S+)", out).group(1))
    p99 = _wrk_ms(re.search(r"99%\s+(\S+)", out).group(1))
    n = int(requests_)
    return {"rate": n / float(elapsed), "p50": p50, "p99": p99, "n": n, "began": began, "last_202": time.time()}


def summary(results: list[dict]) -> dict:
    n = sum(r["n"] for r in results)
    return {
        "rate": n / sum(r["n"] / r["rate"] for r in results),
        "p50": statistics.median(r["p50"] for r in results),
        "p99": max(r["p99"] for r in results),
    }


class Load:
    """The load client of this run: wrk for ``seconds``, or this script's threads for ``n`` events."""

    def __init__(self, args, tmp: Path):
        self.args, self.use_wrk = args, args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
        self.script = tmp / "webhook_wrk.lua"
        self.script.write_text(WRK_SCRIPT.replace("TEMPLATE", wrk_template()))

    def name(self) -> str:
        a = self.args
        if self.use_wrk:
            return f"wrk -t2 -c{a.c} -d{a.seconds:g}s"
        return f"{a.n} events from {a.c} Python client threads"

    def __call__(self, port: int, run: str, warmup: bool = False) -> dict:
        if self.use_wrk:
            return load_wrk(port, 1 if warmup else self.args.seconds, self.args.c, run, self.script)
        result = load(port, self.args.warmup if warmup else self.args.n, self.args.c, run)
        latencies = result.pop("latencies")
        return {**result, "n": len(latencies), "began": result["last_202"] - result["elapsed"]}


def inlet_config(tmp: Path, url: str, port: int, threads: int, processes: int = 1) -> Path:
    config = tmp / f"config-{port}.toml"
    config.write_text(
        f"""
fallback_group = "service-desk"
[inlet]
data_dir = "{tmp / f"data-{port}"}"
log_level = "warning"
[database]
url = "{url}"
[web]
host = "127.0.0.1"
port = {port}
threads = {threads}
processes = {processes}
[[group]]
name = "service-desk"
[[integration]]
name = "bench"
kind = "alertmanager"
token_env = "BENCH_TOKEN"
rate_limit = 0
"""
    )
    return config


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}


def start_bare(port: int, threads: int, processes: int) -> list[subprocess.Popen]:
    command = [sys.executable, __file__, "--bare-server", str(port), str(threads), str(int(processes > 1))]
    procs = [subprocess.Popen(command, env=ENV, cwd=ROOT) for _ in range(processes)]
    for proc in procs:
        wait_healthy(port, proc)
    return procs


def start_inlet(config: Path, port: int, only: list[str]) -> subprocess.Popen:
    inlet = [sys.executable, "-m", "gateway.cli.main", "-c", str(config)]
    subprocess.run([*inlet, "db", "upgrade"], env=ENV, cwd=ROOT, check=True, capture_output=True)
    server = subprocess.Popen(
        [*inlet, "serve", *only], env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_healthy(port, server, timeout=60)
    return server


def line(label: str, result: dict, bare: dict | None = None) -> str:
    ratio = f"  {result['rate'] / bare['rate']:4.0%} of bare" if bare else ""
    return (
        f"  {label:34} {result['rate']:7.0f} events/s  p50 {result['p50']:6.2f} ms  p99 {result['p99']:6.2f} ms{ratio}"
    )


def sqlite_run(args, tmp: Path, client: Load) -> None:
    """Every role of inlet serve on SQLite: intake beside bare, and intake + processing sustained."""
    bare_port, port = free_port(), free_port()
    db_path = tmp / "inlet.db"
    config = inlet_config(tmp, f"sqlite:///{db_path}", port, args.threads)
    only = ["--only", os.environ["BENCH_ONLY"]] if os.environ.get("BENCH_ONLY") else []
    bare = start_bare(bare_port, args.threads, 1)
    server = start_inlet(config, port, only)
    bare_results, inlet_results, lags, sustained = [], [], [], []
    try:
        client(bare_port, "warm", warmup=True)
        sent = client(port, "warm", warmup=True)["n"]
        if not only:
            applied_lag(db_path, sent, 0)
        # Rounds of bare then inlet, each after inlet applied everything: the machine's other
        # load hits both alike, and inlet's pipeline never runs during a bare round.
        for round_ in range(args.rounds):
            bare_results.append(client(bare_port, f"bare{round_}"))
            inlet_results.append(client(port, f"inlet{round_}"))
            sent += inlet_results[-1]["n"]
            if not only:
                lag = applied_lag(db_path, sent, inlet_results[-1]["last_202"])
                lags.append(lag)
                r = inlet_results[-1]
                sustained.append(r["n"] / (r["last_202"] - r["began"] + lag))
    finally:
        for proc in [*bare, server]:
            stop(proc)
    bare_result, inlet_result = summary(bare_results), summary(inlet_results)
    print(f"webhook intake on SQLite, {args.rounds} rounds of {client.name()}, waitress {args.threads} threads")
    print(line("bare Flask 202:", bare_result))
    print(line("inlet serve, intake (202):", inlet_result, bare_result))
    ratios = ", ".join(f"{i['rate'] / b['rate']:.0%}" for i, b in zip(inlet_results, bare_results, strict=True))
    print(f"  {'':34} per round: {ratios}")
    if lags:
        print(f"  last 202 -> last event applied to its incident: {', '.join(f'{x:.2f}' for x in lags)} s per round")
        total = sum(r["n"] for r in inlet_results) / sum(
            r["n"] / x for r, x in zip(inlet_results, sustained, strict=True)
        )
        print(
            f"  intake + processing sustained:     {total:7.0f} events/s (first request -> last event applied; "
            f"target >= 1,000; per round: {', '.join(f'{x:.0f}' for x in sustained)})"
        )


def postgres_run(args, tmp: Path, client: Load) -> None:
    """``inlet serve --only web`` on PostgreSQL with 1 and 2 web processes, each beside as many bare ones."""
    import psycopg2

    print(
        f"webhook intake alone on PostgreSQL, {args.rounds} rounds of {client.name()}, waitress {args.threads} threads"
    )
    results = {}
    for processes in args.web_processes:
        schema = f"bench_{os.getpid()}_{processes}"
        admin = psycopg2.connect(args.pg)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {schema}")
        bare_port, port = free_port(), free_port()
        config = inlet_config(tmp, f"{args.pg}?options=-csearch_path%3D{schema}", port, args.threads, processes)
        bare = start_bare(bare_port, args.threads, processes)
        server = start_inlet(config, port, ["--only", "web"])
        bare_results, inlet_results = [], []
        try:
            client(bare_port, "warm", warmup=True)
            client(port, "warm", warmup=True)
            for round_ in range(args.rounds):
                bare_results.append(client(bare_port, f"bare{round_}"))
                inlet_results.append(client(port, f"inlet{round_}"))
        finally:
            for proc in [*bare, server]:
                stop(proc)
            with admin.cursor() as cur:
                cur.execute(f"DROP SCHEMA {schema} CASCADE")
            admin.close()
        bare_result, inlet_result = summary(bare_results), summary(inlet_results)
        results[processes] = inlet_result
        s = "es" if processes > 1 else ""
        print(line(f"bare Flask 202, {processes} process{s}:", bare_result))
        print(line(f"inlet serve --only web, {processes} process{s}:", inlet_result, bare_result))
    if 1 in results and len(results) > 1:
        for processes, result in results.items():
            if processes > 1:
                print(f"  inlet {processes} web processes / 1: {result['rate'] / results[1]['rate']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="events per round, Python client (default 5000)")
    parser.add_argument("--seconds", type=float, default=5, help="seconds per round, wrk (default 5)")
    parser.add_argument("-c", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads of both servers (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of bare then inlet (default 3)")
    parser.add_argument("--warmup", type=int, default=300, help="events sent first and not measured")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto", help="load client")
    parser.add_argument("--pg", metavar="DSN", help="intake alone on PostgreSQL (inlet serve --only web)")
    parser.add_argument(
        "--web-processes", default="1,2", type=lambda v: [int(x) for x in v.split(",")], help="with --pg"
    )
    parser.add_argument(
        "--bare-server", nargs=3, type=int, metavar=("PORT", "THREADS", "REUSE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.bare_server:
        bare_server(*args.bare_server[:2], reuse_port=bool(args.bare_server[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        client = Load(args, tmp)
        if args.pg:
            postgres_run(args, tmp, client)
        else:
            sqlite_run(args, tmp, client)


if __name__ == "__main__":
    main()
