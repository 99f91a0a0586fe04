"""Processing throughput: the pipeline's sustained rate against the floor of durable work, same run.

For each database (SQLite file, a throwaway PostgreSQL schema) and each input:

- ``emails``: N generated support emails, 10 % of them replies threading onto earlier ones;
- ``alerts``: N Alertmanager events over 50 fingerprints (a storm);
- ``mixed``: half of each, interleaved;

the Inbound rows are stored first (not timed), then processed by the worker's own tick
(gateway/pipeline/tick.py ``pipeline_tick``, the code path of ``inlet serve`` and ``inlet import``)
until none is pending. Printed: messages/s, ms per message, queries per message, the
parse time alone (parsers/: measured apart, the same messages parsed again), and the floor: raw
INSERTs of the same number of incident rows with their event rows through the same driver,
committed in the same batches, measured in the same run. The ratio to the floor is the figure to read
on a noisy machine.

Run: ``PYTHONPATH=. python bench/pipeline.py [-n 1000] [--db sqlite,postgres] [--input emails,alerts,mixed]``
(PostgreSQL from ``INLET_BENCH_PG``, default ``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import peewee  # noqa: E402

from gateway.config.loader import config_from_dict  # noqa: E402
from gateway.pipeline.driver import Context  # noqa: E402
from gateway.pipeline.tick import pipeline_tick  # noqa: E402
from gateway.service import build_lifecycle, build_pipeline  # noqa: E402
from store.db import db, is_postgres, open_database  # noqa: E402
from store.migrations import upgrade  # noqa: E402
from store.models import PENDING, Inbound, Incident  # noqa: E402

PG = os.environ.get("INLET_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
BODY = (
    "Hello,\n\nsince this morning the payroll export fails with error 500 when we press Export.\n"
    "We tried again after lunch, same result. Could you please have a look?\n\nThanks,\n{name}\n"
)
REPLY = "Any news on this? It still fails.\n\n{name}\n\nOn Monday, Service Desk wrote:\n> We are looking at it.\n"


def emails(n: int, run: str) -> list[tuple[str, bytes, str]]:
    """(source, raw, dedup key): new requests, and every tenth a reply to an earlier one."""
    out = []
    for i in range(n):
        msg = EmailMessage()
        parent = i - 5 if i % 10 == 9 else None
        user = (parent if parent is not None else i) % 97  # a reply comes from the one who asked
        name = f"User {user}"
        msg["From"] = f"{name} <user{user}@customer.example>"
        msg["To"] = "support@example.org"
        msg["Message-ID"] = f"<{run}.{i}.request@customer.example>"
        if parent is not None:
            msg["Subject"] = f"Re: Payroll export fails ({run} #{parent})"
            msg["In-Reply-To"] = f"<{run}.{parent}.request@customer.example>"
            msg["References"] = msg["In-Reply-To"]
            msg.set_content(REPLY.format(name=name))
        else:
            msg["Subject"] = f"Payroll export fails ({run} #{i})"
            msg.set_content(BODY.format(name=name))
        out.append(("smtp", msg.as_bytes(), msg["Message-ID"]))
    return out


def alerts(n: int, run: str) -> list[tuple[str, bytes, str]]:
    """Alertmanager events over 50 fingerprints; every fifth of a fingerprint resolves it."""
    out = []
    for i in range(n):
        alert = i % 50
        status = "resolved" if (i // 50) % 5 == 4 else "firing"
        body = {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="Bench{alert}"}}',
            "status": status,
            "receiver": "inlet",
            "groupLabels": {"alertname": f"Bench{alert}"},
            "alerts": [
                {
                    "status": status,
                    "labels": {"alertname": f"Bench{alert}", "instance": f"node-{alert}:9100", "severity": "warning"},
                    "annotations": {"summary": f"Bench alert {alert}", "value": f"{run}-{i}"},
                    "startsAt": "2026-01-05T09:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "fingerprint": f"bench{alert:04d}",
                }
            ],
        }
        out.append(("webhook", json.dumps(body).encode(), f"{run}-alert-{i}"))
    return out


def mixed(n: int, run: str) -> list[tuple[str, bytes, str]]:
    a, b = emails(n - n // 2, run), alerts(n // 2, run)
    return [x for pair in zip(a, b, strict=False) for x in pair] + a[len(b) :]


INPUTS = {"emails": emails, "alerts": alerts, "mixed": mixed}


class QueryCounter:
    """Counts the statements the database runs (peewee's one entry point, execute_sql)."""

    def __init__(self, database):
        self.database, self.count = database, 0
        self._original = database.execute_sql

    def __enter__(self):
        def counted(sql, params=None, *args, **kwargs):
            self.count += 1
            return self._original(sql, params, *args, **kwargs)

        self.database.execute_sql = counted
        return self

    def __exit__(self, *exc):
        del self.database.execute_sql


@contextlib.contextmanager
def fresh_database(kind: str, tmp: Path):
    """A config dict for a new, migrated database of ``kind``; dropped afterwards."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp / f'bench-{uuid.uuid4().hex[:6]}.db'}"
        yield url
        return
    import psycopg2

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG}?options=-csearch_path%3D{schema}"
    finally:
        if db.obj is not None:
            if not db.is_closed():
                db.close()
            if hasattr(db.obj, "close_all"):
                db.obj.close_all()
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def config_for(url: str, tmp: Path):
    data = {
        "fallback_group": "service-desk",
        "inlet": {"data_dir": str(tmp / "data"), "log_level": "warning"},
        "database": {"url": url},
        "group": [{"name": "service-desk"}, {"name": "network"}],
        "integration": [{"name": "bench", "kind": "alertmanager", "token_env": "BENCH_TOKEN"}],
    }
    return config_from_dict(data, str(tmp / "config.toml"))


def store_inputs(items) -> list[int]:
    rows = [
        {
            "source": source,
            "integration": "bench" if source == "webhook" else "",
            "received_at": db_now(),
            "dedup_key": key,
            "raw": raw,
            "envelope_to": ["support@example.org"] if source == "smtp" else [],
            "envelope_from": "user@customer.example" if source == "smtp" else None,
        }
        for source, raw, key in items
    ]
    with db.atomic():
        for start in range(0, len(rows), 200):
            Inbound.insert_many(rows[start : start + 200]).execute()
    return [r.id for r in Inbound.select(Inbound.id).where(Inbound.status == PENDING).order_by(Inbound.id)]


def db_now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def run_pipeline(config, items) -> dict:
    clock = None
    lifecycle = build_lifecycle(config, clock)
    pipeline = build_pipeline(config, lifecycle, clock)
    store_inputs(items)
    tick = pipeline_tick(pipeline)
    with QueryCounter(db.obj) as queries:
        started = time.perf_counter()
        done = 0
        while True:
            did = tick()
            if not did:
                break
            done += did
        seconds = time.perf_counter() - started
    left = Inbound.select().where(Inbound.status == PENDING).count()
    statuses = dict(Inbound.select(Inbound.status, peewee.fn.COUNT(Inbound.id)).group_by(Inbound.status).tuples())
    statuses["incidents"] = Incident.select().count()  # fewer than processed: replies and repeats thread
    # Parse alone, the same rows again (parsers/ is measured apart from the rest of processing)
    parse_started = time.perf_counter()
    for row in Inbound.select():
        ctx = Context(row, config, lifecycle, pipeline.clock)
        with contextlib.suppress(Exception):
            pipeline.parsers[row.source](ctx)
    parse_seconds = time.perf_counter() - parse_started
    return {
        "n": len(items),
        "seconds": seconds,
        "queries": queries.count,
        "parse": parse_seconds,
        "pending": left,
        "statuses": statuses,
    }


def run_floor(n: int, batch: int) -> dict:
    """Raw INSERTs of n incident rows and n event rows (the durable work), committed per ``batch``."""
    p = "%s" if is_postgres() else "?"
    now = db_now()
    # every column the incident table requires (no default, not null), with a plain value
    required = [c for c in db.get_columns("incident") if not c.null and c.default is None and c.name != "id"]
    names = ", ".join('"%s"' % c.name for c in required)  # noqa: UP031 -- quoted: "group" is a keyword
    insert_incident = f"INSERT INTO incident ({names}) VALUES ({', '.join([p] * len(required))})"
    if is_postgres():
        insert_incident += " RETURNING id"
    insert_event = (
        f"INSERT INTO event (incident_id, at, type, actor, visibility, field, body, data) VALUES ({', '.join([p] * 8)})"
    )
    started = time.perf_counter()
    for start in range(0, n, batch):
        with db.atomic():
            for i in range(start, min(n, start + batch)):
                cursor = db.execute_sql(insert_incident, [_floor_value(c, i, now) for c in required])
                incident_id = cursor.fetchone()[0] if is_postgres() else cursor.lastrowid
                db.execute_sql(insert_event, [incident_id, now, "created", "bench", "internal", "", "", "{}"])
    return {"n": n, "seconds": time.perf_counter() - started, "queries": 2 * n}


def _floor_value(column, i: int, now):
    name, kind = column.name, column.data_type.lower()
    if name == "ref":
        return f"BENCH-{i}"
    if name == "number":
        return 10**6 + i  # above what the pipeline run numbered
    if name == "title":
        return "Payroll export fails"
    if "time" in kind or "date" in kind:
        return now
    if "int" in kind or "bool" in kind or "real" in kind or "double" in kind or "numeric" in kind:
        return 0 if "bool" not in kind else False
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--db", default="sqlite,postgres")
    parser.add_argument("--input", default="emails,alerts,mixed")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of the pipeline run")
    args = parser.parse_args()
    os.environ.setdefault("BENCH_TOKEN", "bench-token-not-secret")
    import logging

    logging.disable(logging.WARNING)
    from gateway.pipeline import tick as worker

    batch = getattr(worker, "TRANSACTION_BATCH", 1)  # the floor commits as often as the pipeline does

    print(
        f"{'db':9} {'input':7} {'msgs/s':>8} {'ms/msg':>7} {'q/msg':>6} {'parse ms':>8} "
        f"{'floor/s':>8} {'floor ms':>8} {'ratio':>6}  outcome"
    )
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for kind in args.db.split(","):
            for name in args.input.split(","):
                with fresh_database(kind, tmp) as url:
                    config = config_for(url, tmp)
                    open_database(config)
                    upgrade()
                    with db.connection_context():
                        items = INPUTS[name](args.n, uuid.uuid4().hex[:8])
                        if args.profile:
                            import cProfile
                            import pstats

                            profile = cProfile.Profile()
                            profile.enable()
                            result = run_pipeline(config, items)
                            profile.disable()
                            pstats.Stats(profile).sort_stats(os.environ.get("BENCH_SORT", "cumulative")).print_stats(40)
                        else:
                            result = run_pipeline(config, items)
                        floor = run_floor(args.n, batch)
                n, s = result["n"], result["seconds"]
                rate, floor_rate = n / s, floor["n"] / floor["seconds"]
                print(
                    f"{kind:9} {name:7} {rate:8.0f} {1000 * s / n:7.2f} {result['queries'] / n:6.1f} "
                    f"{1000 * result['parse'] / n:8.2f} {floor_rate:8.0f} {1000 * floor['seconds'] / n:8.3f} "
                    f"{floor_rate / rate:5.1f}x  {result['statuses']}",
                    flush=True,
                )
                if result["pending"]:
                    raise SystemExit(f"{result['pending']} Inbounds left pending")


if __name__ == "__main__":
    main()
