"""End-to-end latency and one-session intake of `inlet serve` (every role in its own process), from outside.

Three measurements, each against a fresh SQLite database:

``--rate R --seconds S`` (default 20/s for 20 s): one SMTP client sends R messages/s to
`inlet serve` with every role running and reporter acknowledgements on, delivered to a
loopback SMTP sink. Prints the p50/p99 of: the acknowledgement (MAIL+RCPT+DATA → 250),
ack → incident opened (the incident row's own time), ack → notification delivered (the
sink received Inlet's acknowledgement to the reporter).

``--one-session N``: Postfix's load client ``smtp-source -s 1 -m N`` (one session at a time,
the way a relaying MTA often delivers) against a bare aiosmtpd server, `inlet serve --only smtp`
and `inlet serve` (every role), in rounds; prints messages/s and the ratio every-role /
smtp-only (target ≥ 75 %). ``--smtp-source CMD`` names the client (Debian's postfix package).

``--pinned``: a worker pinned by a step that holds the interpreter lock (tests/pin/sitecustomize.py);
SMTP and webhook answers meanwhile.

Run: ``PYTHONPATH=. python bench/e2e_latency.py [--rate 20 --seconds 20] [--one-session 2000] [--pinned]``
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.smtp_intake import free_port, percentile, wait_listening  # noqa: E402

ENV = {
    **os.environ,
    "PYTHONPATH": str(ROOT),
    "INLET_MESSAGE_ID_SECRET": "bench-message-id-key",
    "BENCH_HOOK_TOKEN": "bench",
}


def config(
    folder: Path,
    smtp_port: int,
    web_port: int,
    sink_port: int,
    extra: str = "",
    notifications: str = "",
    group: str = "",
) -> Path:
    """``notifications`` and ``group``: more lines for [notifications] and the service-desk [[group]] (bench/e2e.py)."""
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
port = {web_port}
[smtp]
port = {smtp_port}
[mail]
throttle_count = 1000000
[notifications]
smtp_port = {sink_port}
acknowledge_reporter = true
{notifications}
[[group]]
name = "service-desk"
{group}
[[address]]
address = "support@example.org"
[[integration]]
name = "plain"
kind = "generic"
token_env = "BENCH_HOOK_TOKEN"
{extra}
"""
    )
    return path


class Sink:
    """The reporters' mail server: when each of Inlet's acknowledgements arrived, by the message it answers."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.arrived: dict[str, float] = {}
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 -- aiosmtpd's name
                now = time.monotonic()
                head = envelope.content.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
                match = re.search(r"^In-Reply-To:\s*(<[^>]+>)", head, re.MULTILINE | re.IGNORECASE)
                if match:
                    sink.arrived.setdefault(match.group(1).strip("<>"), now)
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self):
        self.controller.stop()


class Inlet:
    """`inlet serve` on a fresh SQLite database, as a subprocess."""

    def __init__(
        self,
        folder: Path,
        sink_port: int,
        only: str | None = None,
        extra: str = "",
        env: dict | None = None,
        **sections: str,
    ):
        """``sections``: ``notifications=`` and ``group=`` lines for :func:`config`."""
        self.folder, self.smtp_port, self.web_port = folder, free_port(), free_port()
        path = config(folder, self.smtp_port, self.web_port, sink_port, extra, **sections)
        inlet = [sys.executable, "-m", "gateway.cli.main", "-c", str(path)]
        subprocess.run([*inlet, "db", "upgrade"], env=ENV, check=True, stdout=subprocess.DEVNULL)
        self.log = (folder / f"serve-{only or 'all'}.log").open("wb")
        command = [*inlet, "serve"] + (["--only", only] if only else [])
        self.proc = subprocess.Popen(command, env={**ENV, **(env or {})}, stdout=self.log, stderr=self.log)
        wait_listening(self.smtp_port, self.proc)
        deadline = time.monotonic() + 60
        while b"inlet: running" not in (folder / f"serve-{only or 'all'}.log").read_bytes():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("inlet serve did not start")
            time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.log.close()

    def opened(self) -> dict[str, datetime]:
        """Incident opened times by the Message-ID of the message that opened it."""
        with sqlite3.connect(f"file:{self.folder}/inlet.db?mode=ro", uri=True, timeout=30) as conn:
            rows = conn.execute(
                "SELECT i.dedup_key, n.opened_at FROM inbound i JOIN incident n ON n.id = i.incident_id"
            ).fetchall()
        return {
            key.removeprefix("mid:").strip("<>"): datetime.fromisoformat(at).replace(tzinfo=UTC) for key, at in rows
        }


def message(i: int, run: str) -> tuple[str, bytes]:
    msg = EmailMessage()
    msg["From"] = f"Alice {i} <user{i}@customer.example>"
    msg["To"] = "support@example.org"
    msg["Subject"] = f"Payroll export fails ({run} #{i})"
    msg["Message-ID"] = make_msgid(idstring=f"{run}{i}", domain="customer.example")
    msg.set_content("Since this morning the payroll export fails with error 500.\n")
    return msg["Message-ID"], msg.as_bytes().replace(b"\n", b"\r\n")


def steady(rate: float, seconds: float) -> None:
    sink = Sink()
    with tempfile.TemporaryDirectory(prefix="inlet-bench-") as tmp:
        inlet = Inlet(Path(tmp), sink.port)
        acks: dict[str, tuple[float, datetime, float]] = {}  # message id -> (ack latency, ack wall, ack monotonic)
        try:
            with smtplib.SMTP("127.0.0.1", inlet.smtp_port, timeout=60) as client:
                for i in range(20):  # warm-up: every role has run once
                    client.sendmail("alice@customer.example", ["support@example.org"], message(i, "warmup")[1])
                time.sleep(2)
                started = time.monotonic()
                for i in range(int(rate * seconds)):
                    time.sleep(max(0.0, started + i / rate - time.monotonic()))
                    mid, raw = message(i, "steady")
                    began = time.perf_counter()
                    client.sendmail("alice@customer.example", ["support@example.org"], raw)
                    acks[mid.strip("<>")] = (time.perf_counter() - began, datetime.now(UTC), time.monotonic())
            deadline = time.monotonic() + 60
            while len([m for m in acks if m in sink.arrived]) < len(acks) and time.monotonic() < deadline:
                time.sleep(0.1)
            opened = inlet.opened()
        finally:
            inlet.stop()
            sink.stop()
    ack = [a for a, _w, _m in acks.values()]
    to_incident = [(opened[m] - w).total_seconds() for m, (_a, w, _mo) in acks.items() if m in opened]
    to_notice = [sink.arrived[m] - mo for m, (_a, _w, mo) in acks.items() if m in sink.arrived]
    print(f"steady {rate:g} messages/s for {seconds:g} s over one connection, every role running, acks on")
    print(f"{'':<34}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}")
    for name, values in (("ack (MAIL+RCPT+DATA -> 250)", ack), ("ack -> incident opened", to_incident),
                         ("ack -> notification delivered", to_notice)):  # fmt: skip
        if values:
            p50, p99 = percentile(values, 50) * 1000, percentile(values, 99) * 1000
            print(f"{name:<34}{len(values):>6}{p50:>10.1f}{p99:>10.1f}")
        else:
            print(f"{name:<34}{0:>6}")


def one_session(n: int, rounds: int, client: list[str]) -> None:
    sink = Sink()
    rates: dict[str, list[float]] = {"bare aiosmtpd": [], "inlet serve --only smtp": [], "inlet serve (every role)": []}
    with tempfile.TemporaryDirectory(prefix="inlet-bench-") as tmp:
        folder = Path(tmp)
        (folder / "smtp").mkdir()
        (folder / "all").mkdir()
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "smtp_intake.py"), "--bare-server",
                                 str(bare_port), "stock"], env=ENV)  # fmt: skip
        servers = {
            "bare aiosmtpd": (bare, bare_port),
            "inlet serve --only smtp": None,
            "inlet serve (every role)": None,
        }
        only = Inlet(folder / "smtp", sink.port, only="smtp")
        every = Inlet(folder / "all", sink.port)
        servers["inlet serve --only smtp"] = (only.proc, only.smtp_port)
        servers["inlet serve (every role)"] = (every.proc, every.smtp_port)
        try:
            wait_listening(bare_port, bare)
            for _round in range(rounds):
                for name, (_proc, port) in servers.items():
                    command = [*client, "-s", "1", "-m", str(n), "-l", "1024", "-f", "alice@customer.example",
                               "-t", "support@example.org", f"127.0.0.1:{port}"]  # fmt: skip
                    began = time.perf_counter()
                    subprocess.run(command, check=True)
                    rates[name].append(n / (time.perf_counter() - began))
                    if name != "bare aiosmtpd":  # let the pipeline catch up: each round starts alike
                        time.sleep(2)
        finally:
            bare.terminate()
            bare.wait()
            only.stop()
            every.stop()
            sink.stop()
    print(f"smtp-source -s 1 -m {n} -l 1024, {rounds} rounds per server (messages/s per round)")
    for name, values in rates.items():
        print(f"{name:<28}{sum(values) / len(values):>8.0f}   ({', '.join(f'{v:.0f}' for v in values)})")
    ratio = sum(rates["inlet serve (every role)"]) / sum(rates["inlet serve --only smtp"])
    print(f"every role / --only smtp: {ratio:.0%} (target >= 75%)")


def pinned(count: int) -> None:
    import requests

    # Rules run on RE2: the pinned step is the fault of tests/pin/sitecustomize.py (Python's re on the title).
    pin = {"INLET_PIN_PATTERN": "^(a+)+$", "PYTHONPATH": f"{ROOT / 'tests' / 'pin'}{os.pathsep}{ROOT}"}
    sink = Sink()
    with tempfile.TemporaryDirectory(prefix="inlet-bench-") as tmp:
        inlet = Inlet(Path(tmp), sink.port, extra='[serve]\nstep_time_limit = "30s"\n', env=pin)
        smtp, hooks = [], []
        try:
            with smtplib.SMTP("127.0.0.1", inlet.smtp_port, timeout=60) as client:
                _mid, raw = message(0, "hostile")
                raw = raw.replace(b"Payroll export fails (hostile #0)", b"a" * 40 + b"!")
                client.sendmail("alice@customer.example", ["support@example.org"], raw)
                time.sleep(1)  # the worker has taken it and is pinned
                session = requests.Session()
                for i in range(count):
                    began = time.perf_counter()
                    client.sendmail("alice@customer.example", ["support@example.org"], message(i, "pinned")[1])
                    smtp.append(time.perf_counter() - began)
                    began = time.perf_counter()
                    answer = session.post(f"http://127.0.0.1:{inlet.web_port}/hooks/plain", json={"title": f"h{i}"},
                                          headers={"Authorization": "Bearer bench"}, timeout=30)  # fmt: skip
                    hooks.append(time.perf_counter() - began)
                    assert answer.status_code == 202, answer.text
                    time.sleep(0.02)
        finally:
            inlet.stop()
            sink.stop()
    print(f"with a worker pinned by a step holding the interpreter lock: {count} SMTP messages and {count} webhooks")
    for name, values in (("SMTP (MAIL+RCPT+DATA -> 250)", smtp), ("webhook POST -> 202", hooks)):
        p50, p99 = percentile(values, 50) * 1000, percentile(values, 99) * 1000
        print(f"{name:<32}p50 {p50:.1f} ms  p99 {p99:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="messages/s of the steady run (default 20)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the steady run (default 20)")
    parser.add_argument("--one-session", type=int, metavar="N", help="instead: smtp-source -s 1 -m N, three servers")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --one-session (default 3)")
    parser.add_argument("--smtp-source", default="smtp-source", help="the smtp-source command (default: on PATH)")
    parser.add_argument("--pinned", type=int, nargs="?", const=200, metavar="N", help="instead: intake while pinned")
    args = parser.parse_args()
    if args.one_session:
        one_session(args.one_session, args.rounds, shlex.split(args.smtp_source))
    elif args.pinned:
        pinned(args.pinned)
    else:
        steady(args.rate, args.seconds)


if __name__ == "__main__":
    main()
