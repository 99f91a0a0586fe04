"""SMTP intake throughput: `inlet serve` (SQLite) against a bare aiosmtpd handler, same run.

Starts three servers as subprocesses on loopback: a bare aiosmtpd handler that
answers 250 and keeps nothing, the same bare handler served by Inlet's SMTP
protocol class (its faster MAIL/RCPT address parsing: the ratio against it is
the cost of storing and processing alone), and `inlet serve --only smtp,worker`
on a fresh SQLite database (every 250 means the Inbound row is committed).
Sends N messages over C concurrent SMTP connections to each, in rounds of each
server in turn (so the machine's other load hits all alike), then prints messages/s,
the ratio (overall and per round), p50/p99 per-message latency
(MAIL+RCPT+DATA), and how long after the last 250 of a round the last message
had become an incident (processing keeping up).

Run: ``PYTHONPATH=. python bench/smtp_intake.py [-n 2000] [-c 8] [--rounds 3] [--intake-only]``;
``--steady RATE [--seconds 5]`` sends steady traffic instead and prints how far processing is behind.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BODY = (
    "Hello,\n\nsince this morning the payroll export fails with error 500 when we press Export.\n"
    "We tried again after lunch, same result. Could you please have a look?\n\nThanks,\nAlice\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {timeout}s")


def messages(n: int, run: str) -> list[bytes]:
    out = []
    for i in range(n):
        msg = EmailMessage()
        msg["From"] = f"Alice {i} <user{i % 97}@customer.example>"
        msg["To"] = "support@example.org"
        msg["Subject"] = f"Payroll export fails ({run} #{i})"
        msg["Message-ID"] = make_msgid(idstring=f"{run}{i}", domain="customer.example")
        msg.set_content(BODY)
        out.append(msg.as_bytes().replace(b"\n", b"\r\n"))
    return out


def blast(port: int, payloads: list[bytes], concurrency: int) -> tuple[float, list[float], datetime]:
    """Send every payload over ``concurrency`` connections; (seconds, latencies, time of the last 250)."""
    latencies: list[float] = []
    errors: list[str] = []
    last = [datetime.min.replace(tzinfo=UTC)]
    lock = threading.Lock()
    chunks = [payloads[i::concurrency] for i in range(concurrency)]

    def worker(chunk: list[bytes]) -> None:
        mine = []
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.ehlo("bench.example")
            for raw in chunk:
                start = time.perf_counter()
                client.mail("alice@customer.example")
                client.rcpt("support@example.org")
                code, text = client.data(raw)
                mine.append(time.perf_counter() - start)
                if code != 250:
                    errors.append(f"{code} {text!r}")
        with lock:
            latencies.extend(mine)
            last[0] = max(last[0], datetime.now(UTC))

    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} messages refused, e.g. {errors[0]}")
    return elapsed, latencies, last[0]


def bare_server(port: int, smtp_class: str = "stock") -> None:
    """The baseline: aiosmtpd with a handler that accepts and keeps nothing.

    ``smtp_class = "inlet"`` serves it with Inlet's SMTP protocol class (its faster
    address parsing), so that the ratio against it is the cost of storing and
    processing alone.
    """
    from aiosmtpd.controller import Controller

    class Bare:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 -- aiosmtpd's name
            return "250 2.0.0 OK"

    class InletClass(Controller):
        def factory(self):
            from gateway.intake.smtp import InletSMTP

            return InletSMTP(self.handler, **self.SMTP_kwargs)

    kind = InletClass if smtp_class == "inlet" else Controller
    controller = kind(Bare(), hostname="127.0.0.1", port=port, data_size_limit=26_214_400)
    controller.start()
    threading.Event().wait()


def inlet_config(folder: Path, smtp_port: int) -> Path:
    path = folder / "bench.toml"
    path.write_text(
        f"""
fallback_group = "service-desk"
[inlet]
data_dir = "{folder}"
log_level = "warning"
[database]
url = "sqlite:///{folder}/inlet.db"
[web]
port = {free_port()}
[smtp]
port = {smtp_port}
[mail]
throttle_count = 1000000
[[group]]
name = "service-desk"
[[address]]
address = "support@example.org"
"""
    )
    return path


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="messages per server (default 2000)")
    parser.add_argument("-c", type=int, default=8, help="concurrent SMTP connections (default 8)")
    parser.add_argument(
        "--intake-only", action="store_true", help="run Inlet without its pipeline worker (store only, no incidents)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of bare then inlet (default 3)")
    parser.add_argument(
        "--steady",
        type=float,
        metavar="RATE",
        help="instead: send RATE messages/s over one connection to inlet serve for --seconds, print the lag",
    )
    parser.add_argument("--seconds", type=float, default=5, help="how long --steady sends (default 5)")
    parser.add_argument("--bare-server", nargs=2, metavar=("PORT", "CLASS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        bare_server(int(args.bare_server[0]), args.bare_server[1])
        return
    if args.steady:
        steady(args.steady, args.seconds)
        return

    env = {**os.environ, "PYTHONPATH": str(ROOT), "INLET_MESSAGE_ID_SECRET": "bench-message-id-key"}
    warmup = min(200, args.n)
    names = ("bare aiosmtpd", "bare, Inlet's SMTP class", "inlet serve")
    runs: dict[str, list] = {name: [] for name in names}
    lags: list[float] = []
    with tempfile.TemporaryDirectory(prefix="inlet-bench-") as tmp:
        folder = Path(tmp)
        ports = {name: free_port() for name in names}
        config = inlet_config(folder, ports["inlet serve"])
        inlet = [sys.executable, "-m", "gateway.cli.main", "-c", str(config)]
        subprocess.run([*inlet, "db", "upgrade"], env=env, check=True, stdout=subprocess.DEVNULL)
        log = (folder / "serve.log").open("wb")  # a file, not a pipe: an unread pipe would block the server
        servers = {
            name: subprocess.Popen([sys.executable, __file__, "--bare-server", str(ports[name]), kind], env=env)
            for name, kind in ((names[0], "stock"), (names[1], "inlet"))
        }
        servers["inlet serve"] = subprocess.Popen(
            [*inlet, "serve", "--only", "smtp" if args.intake_only else "smtp,worker"], env=env, stdout=log, stderr=log
        )
        try:
            for name in names:
                wait_listening(ports[name], servers[name])
                blast(ports[name], messages(warmup, f"warmup-{name}"), args.c)
            sent = warmup
            # Rounds of each server in turn, each after Inlet processed everything: the machine's other
            # load hits all alike, and Inlet's pipeline never runs during a bare round.
            for round_ in range(args.rounds):
                if not args.intake_only:
                    processing_lag(folder / "inlet.db", datetime.now(UTC), sent)
                for index, name in enumerate(names):
                    runs[name].append(blast(ports[name], messages(args.n, f"r{round_}s{index}"), args.c))
                sent += args.n
                if not args.intake_only:
                    lags.append(processing_lag(folder / "inlet.db", runs["inlet serve"][-1][2], sent))
        finally:
            for process in servers.values():
                process.terminate()
                process.wait()
            log.close()

    print(
        f"{args.rounds} rounds of {args.n} messages over {args.c} connections, per server "
        f"(after {warmup} warm-up messages)"
    )
    print(f"{'server':<26}{'msgs/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name in names:
        latencies = [x for _elapsed, lat, _last in runs[name] for x in lat]
        rate = args.n * len(runs[name]) / sum(elapsed for elapsed, _lat, _last in runs[name])
        p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
        print(f"{name:<26}{rate:>10.0f}{p50:>10.2f}{p99:>10.2f}")
    for baseline, what in ((names[0], "target >= 75%"), (names[1], "storing and processing alone")):
        ratio = sum(r[0] for r in runs[baseline]) / sum(r[0] for r in runs["inlet serve"])
        per_round = ", ".join(f"{b[0] / i[0]:.0%}" for b, i in zip(runs[baseline], runs["inlet serve"], strict=True))
        print(f"inlet / {baseline}: {ratio:.0%} ({what}; per round: {per_round})")
    if lags:
        print(f"last message became an incident {', '.join(f'{x:.2f}' for x in lags)} s after the last 250, per round")


def steady(rate: float, seconds: float) -> None:
    """Steady traffic below a burst: is every message an incident right after its 250?"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "INLET_MESSAGE_ID_SECRET": "bench-message-id-key"}
    with tempfile.TemporaryDirectory(prefix="inlet-bench-") as tmp:
        folder, port = Path(tmp), free_port()
        inlet = [sys.executable, "-m", "gateway.cli.main", "-c", str(inlet_config(folder, port))]
        subprocess.run([*inlet, "db", "upgrade"], env=env, check=True, stdout=subprocess.DEVNULL)
        log = (folder / "serve.log").open("wb")
        serve = subprocess.Popen([*inlet, "serve", "--only", "smtp,worker"], env=env, stdout=log, stderr=log)
        try:
            wait_listening(port, serve)
            blast(port, messages(50, "warmup"), 4)
            processing_lag(folder / "inlet.db", datetime.now(UTC), 50)
            payloads = messages(int(rate * seconds), "steady")
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                started = time.monotonic()
                for i, raw in enumerate(payloads):
                    time.sleep(max(0.0, started + i / rate - time.monotonic()))
                    client.sendmail("alice@customer.example", ["support@example.org"], raw)
                last = datetime.now(UTC)
            lag = processing_lag(folder / "inlet.db", last, 50 + len(payloads))
        finally:
            serve.terminate()
            serve.wait()
            log.close()
    print(f"steady {rate:g} messages/s for {seconds:g} s: the last message was an incident {lag:.2f} s after its 250")


def processing_lag(db_path: Path, last_250: datetime, expected: int, timeout: float = 300.0) -> float:
    """Seconds from the last 250 until every stored message was processed (from the rows' own times)."""
    deadline = time.monotonic() + timeout
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as conn:
        while time.monotonic() < deadline:
            pending, total = conn.execute("SELECT SUM(status = 'pending'), COUNT(*) FROM inbound").fetchone()
            if total >= expected and not pending:
                break
            time.sleep(0.02)
        else:
            raise SystemExit("processing did not finish in time")
        (last,) = conn.execute("SELECT MAX(opened_at) FROM incident").fetchone()
    done = datetime.fromisoformat(last).replace(tzinfo=UTC)
    return max(0.0, (done - last_250).total_seconds())


if __name__ == "__main__":
    main()
