"""Processing scale-out: 1 vs 2 ``inlet serve --only worker`` processes on one PostgreSQL database.

For each round and each process count P: a fresh PostgreSQL schema, P separate
``inlet serve --only worker`` processes (a configuration and data folder each, as
P machines would run them), started and idle; then N pending Inbounds committed in
one transaction whose NOTIFY wakes them all. The rate is N over the time from that
commit to the last Inbound's ``processed_at``. Inputs (``--kind``):

- ``alerts``: Alertmanager events over 50 fingerprints (a storm: 50 incidents, the
  rest repeats counted on them);
- ``mail``: support emails with distinct subjects (each a new incident).

Prints Inbounds/s per process count, the ratio of 2 processes to 1 (the baseline,
measured in the same run), checks that every Inbound was taken once and applied, and
the workers' CPU time per Inbound (from /proc): what one core busy with nothing else
processes, however loaded the machine was (PostgreSQL's own CPU is not in it).

Run (PostgreSQL on 127.0.0.1:5432, database ``test``, as the tests use):
``PYTHONPATH=. .venv/bin/python bench/workers.py [-n 2000] [--rounds 2] [--kind alerts,mail]``
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import psycopg2
import tomli_w

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_scaleout import alert  # noqa: E402 -- the storm the scale-out test applies

INLET = [sys.executable, "-m", "gateway.cli.main"]
SUPPORT = "support@example.org"


def mail(n: int, run: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"user{n % 97}@customer.example"
    msg["To"] = SUPPORT
    msg["Subject"] = f"Printer {n} on floor {n % 7} does not print ({run})"
    msg["Message-ID"] = f"<bench-{run}-{n}@customer.example>"
    msg["Date"] = "Mon, 05 Jan 2026 09:00:00 +0000"
    msg.set_content(f"Hello,\n\nprinter {n} shows error E{n % 50:02d} since this morning.\n\nThanks,\nUser {n % 97}\n")
    return msg.as_bytes()


def rows(kind: str, n: int, run: str, now) -> list[tuple]:
    if kind == "alerts":
        return [("webhook", "storm", now, alert(i), f"{run}-{i}", None, "[]") for i in range(n)]
    return [("smtp", "", now, mail(i, run), f"{run}-{i}", "user@customer.example", f'["{SUPPORT}"]') for i in range(n)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_round(dsn: str, kind: str, processes: int, n: int, tmp: Path) -> dict:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    url = f"{dsn}?options=-csearch_path%3D{schema}"
    procs = []
    try:
        for p in range(processes):
            folder = tmp / f"{schema}-{p}"
            folder.mkdir()
            config = folder / "config.toml"
            config.write_text(
                tomli_w.dumps(
                    {
                        "fallback_group": "service-desk",
                        "inlet": {"data_dir": str(folder / "data"), "log_level": "warning"},
                        "database": {"url": url},
                        "group": [{"name": "service-desk"}],
                        "address": [{"address": SUPPORT}],
                        "integration": [{"name": "storm", "kind": "alertmanager", "token_env": "BENCH_TOKEN"}],
                    }
                )
            )
            env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_TOKEN": "bench-token-0123456789"}
            if p == 0:
                subprocess.run([*INLET, "-c", str(config), "db", "upgrade"], env=env, cwd=ROOT, check=True,
                               capture_output=True)  # fmt: skip
            procs.append(
                subprocess.Popen(
                    [*INLET, "-c", str(config), "serve", "--only", "worker"],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )  # fmt: skip
            )
        workers = []  # the role processes that do the work: their CPU time is the load-independent figure
        for proc in procs:  # "inlet: running" once every role process has started
            for line in proc.stdout:
                started = re.match(r"inlet: worker\S* \(worker\) started as pid (\d+)", line)
                if started:
                    workers.append(int(started.group(1)))
                if line.startswith("inlet: running"):
                    break
            else:
                raise SystemExit(f"inlet serve exited with {proc.wait()}")
        cpu_before = sum(cpu_seconds(pid) for pid in workers)
        conn = psycopg2.connect(url)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT now() AT TIME ZONE 'UTC'")
            now = cur.fetchone()[0]
            cur.executemany(
                "INSERT INTO inbound (source, integration, received_at, raw, dedup_key, envelope_from, envelope_to, "
                "status, reason, headers, peer, mail_class, decisions, attempts) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, 'pending', '', '{}', '', '', '[]', 0)",
                [(*r[:3], psycopg2.Binary(r[3]), *r[4:]) for r in rows(kind, n, schema, now)],
            )
            cur.execute("NOTIFY inlet_inbound")
        began = time.time()
        deadline = time.monotonic() + 600
        with conn.cursor() as cur:
            while True:
                cur.execute("SELECT count(*) FILTER (WHERE status = 'pending') FROM inbound")
                conn.commit()
                if cur.fetchone()[0] == 0:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("the workers did not finish within 600 s")
                time.sleep(0.05)
            cur.execute(
                "SELECT max(processed_at), count(*) FILTER (WHERE status = 'processed'), "
                "count(*) FILTER (WHERE attempts > 1), (SELECT count(*) FROM incident) FROM inbound"
            )
            last, processed, retaken, incidents = cur.fetchone()
        conn.close()
        cpu = sum(cpu_seconds(pid) for pid in workers) - cpu_before
        from datetime import UTC

        elapsed = last.replace(tzinfo=UTC).timestamp() - began
        return {"rate": n / elapsed, "processed": processed, "retaken": retaken, "incidents": incidents, "cpu": cpu}
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="Inbounds per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of 1 then 2 processes (default 2)")
    parser.add_argument("--kind", default="alerts,mail", help="inputs: alerts, mail or both (default)")
    parser.add_argument(
        "--pg", default=os.environ.get("INLET_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"), help="DSN"
    )
    args = parser.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"processing scale-out on PostgreSQL: {args.rounds} rounds of {args.n} Inbounds, {os.cpu_count()} cores, "
        f"load average before: {load}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kind.split(","):
            results = {1: [], 2: []}
            for _ in range(args.rounds):
                for processes in (1, 2):  # alternating: the machine's other load hits both alike
                    result = run_round(args.pg, kind, processes, args.n, Path(tmp))
                    if result["processed"] != args.n:
                        raise SystemExit(f"{kind}: {result['processed']} of {args.n} processed")
                    results[processes].append(result)
            rates = {p: sum(r["rate"] for r in rs) / len(rs) for p, rs in results.items()}
            print(f"  {kind}:")
            for p, rs in results.items():
                per_round = ", ".join(f"{r['rate']:.0f}" for r in rs)
                retaken = sum(r["retaken"] for r in rs)
                cpu_ms = 1000 * sum(r["cpu"] for r in rs) / (args.n * len(rs))
                print(
                    f"    {p} worker process{'es' if p > 1 else '  '}: {rates[p]:7.0f} Inbounds/s "
                    f"(rounds {per_round}; {rs[0]['incidents']} incidents; taken twice: {retaken}); "
                    f"worker CPU {cpu_ms:.2f} ms per Inbound = {1000 / cpu_ms:.0f}/s per busy core"
                )
            print(f"    2 processes / 1: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
