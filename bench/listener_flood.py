"""The listeners under floods: how long a normal client waits.

Starts `inlet serve` (SQLite, fresh data folder) on loopback, then:

1. opens N idle SMTP connections (half from one address, half spread over 40
   addresses, so both the per-client and the overall cap are hit) and measures
   how long a normal smtplib sender from another address waits for its 250
   (at the overall cap the session idle longest makes room, after 1 s idle);
   `/healthz` and one webhook while the flood is held;
2. opens S half-sent HTTP requests (slowloris) and measures `/healthz`, a
   webhook and the login page while they are held;
3. sends SIGTERM and measures how long `inlet serve` takes to exit.

Run: ``PYTHONPATH=. python bench/listener_flood.py [--idle 2000] [--slow 300]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.core.descriptors import raise_open_files_limit  # noqa: E402

TOKEN = "bench-token"
MESSAGE = (
    b"From: alice@customer.example\r\nTo: support@example.org\r\nSubject: Printer broken\r\n\r\n"
    b"The printer on floor 2 is broken.\r\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(folder: Path, smtp_port: int, web_port: int) -> Path:
    path = folder / "config.toml"
    path.write_text(
        f"""
fallback_group = "service-desk"
[inlet]
data_dir = "{folder / "data"}"
[database]
url = "sqlite:///{folder / "inlet.db"}"
[web]
port = {web_port}
[smtp]
port = {smtp_port}
[[group]]
name = "service-desk"
[[address]]
address = "support@example.org"
[[integration]]
name = "plain"
kind = "generic"
token_env = "BENCH_TOKEN"
"""
    )
    return path


def wait_until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)


def up(smtp_port: int, web_port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", smtp_port), timeout=1).close()
        return requests.get(f"http://127.0.0.1:{web_port}/healthz", timeout=1).ok
    except OSError:
        return False


def timed(action) -> tuple[float, object]:
    started = time.monotonic()
    result = action()
    return time.monotonic() - started, result


def send() -> tuple[int, bytes] | None:
    try:
        with smtplib.SMTP("127.0.0.1", SMTP_PORT, timeout=60) as client:
            return client.sendmail("alice@customer.example", ["support@example.org"], MESSAGE) or (250, b"")
    except smtplib.SMTPConnectError:  # 421 4.7.0: full, retry
        return None


def send_until_accepted() -> int:
    attempts = 0
    while True:
        attempts += 1
        if send() is not None:
            return attempts
        time.sleep(0.05)


def hook() -> int:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    body = json.dumps({"title": "Disk full", "dedup_key": f"k{time.monotonic_ns()}", "status": "firing"})
    return requests.post(f"{WEB}/hooks/plain", data=body, headers=headers, timeout=60).status_code


def main() -> None:
    global SMTP_PORT, WEB
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=2000, help="idle SMTP connections")
    parser.add_argument("--slow", type=int, default=300, help="half-sent HTTP requests")
    args = parser.parse_args()
    raise_open_files_limit()
    SMTP_PORT, web_port = free_port(), free_port()
    WEB = f"http://127.0.0.1:{web_port}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = config(folder, SMTP_PORT, web_port)
        env = {**os.environ, "BENCH_TOKEN": TOKEN, "INLET_MESSAGE_ID_SECRET": "bench-message-id-key"}
        subprocess.run(
            [sys.executable, "-m", "gateway.cli.main", "-c", str(path), "db", "upgrade"], check=True, env=env
        )
        log = (folder / "serve.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "-c", str(path), "serve"], env=env, stdout=log, stderr=log
        )
        try:
            wait_until(lambda: up(SMTP_PORT, web_port), 30)
            baseline, _ = timed(send_until_accepted)
            print(f"normal sender, quiet server: 250 after {baseline * 1000:.0f} ms")

            held = []
            sources = ["127.0.0.2"] * (args.idle // 2) + [f"127.0.1.{1 + i % 40}" for i in range(args.idle // 2)]
            flood_time, _ = timed(
                lambda: held.extend(
                    socket.create_connection(("127.0.0.1", SMTP_PORT), timeout=30, source_address=(s, 0))
                    for s in sources
                )
            )
            print(f"opened {len(held)} idle SMTP connections in {flood_time:.2f}s")
            waited, attempts = timed(send_until_accepted)
            print(f"normal sender under the flood: 250 after {waited:.2f}s ({attempts} attempt(s))")
            took, status = timed(lambda: requests.get(f"{WEB}/healthz", timeout=60).status_code)
            print(f"/healthz under the flood: {status} in {took * 1000:.0f} ms")
            took, status = timed(hook)
            print(f"webhook under the flood: {status} in {took * 1000:.0f} ms")
            for sock in held:
                sock.close()

            slow = []
            for _ in range(args.slow):
                sock = socket.create_connection(("127.0.0.1", web_port), timeout=30)
                sock.sendall(b"POST /hooks/plain HTTP/1.1\r\nHost: inlet\r\nContent-Length: 100\r\n")
                slow.append(sock)
            for name, action in [
                ("/healthz", lambda: requests.get(f"{WEB}/healthz", timeout=60).status_code),
                ("webhook", hook),
                ("/login", lambda: requests.get(f"{WEB}/login", timeout=60).status_code),
            ]:
                took, status = timed(action)
                print(f"{name} with {len(slow)} half-sent requests held: {status} in {took * 1000:.0f} ms")
            for sock in slow:
                sock.close()

            took, code = timed(lambda: (proc.send_signal(signal.SIGTERM), proc.wait(timeout=60))[1])
            print(f"SIGTERM, idle server: exited {code} after {took:.2f}s")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


SMTP_PORT = 0
WEB = ""

if __name__ == "__main__":
    main()
