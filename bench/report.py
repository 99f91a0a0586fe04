"""How fast the reports are with 1,000,000 incidents over a year, on SQLite and on PostgreSQL.

Seeds a fresh database with N incidents (default 1,000,000) opened over the last
365 days — a realistic mix: P1 2 %, P2 8 %, P3 50 %, P4 30 %, P5 10 %; 8 groups,
40 services, 5 sources; 10 % held, 4 % reopened, 12 % reassigned, 6 % escalated,
2 % cancelled, 0.5 % drills, 0.5 % major (with public updates); the recent week
partly open — plus 20,000 reporters and a fingerprint for each alert. Seeding
uses bulk inserts (sqlite3 ``executemany``, PostgreSQL ``COPY``), never the models.

Then times, each the median of ``--rounds``: gateway/reports/figures.py's ``report()`` for
the last 30 and 365 days, and the Reports page (``GET /reports``, full stack:
session, report, template) for both periods; beside a bare baseline measured in
the same run: ``SELECT COUNT(*)`` of the incidents opened in the period (an index
range count). Target: < 1 s each. ``--explain`` prints the plan of every statement
of the 365-day report.

Run: ``PYTHONPATH=. python bench/report.py [--count N] [--db sqlite|postgres|both] [--explain]``
(PostgreSQL: ``$INLET_TEST_PG``, default postgresql://postgres@127.0.0.1:5432/test; a throwaway schema.)
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg2  # noqa: E402

from gateway import accounts  # noqa: E402
from gateway.config.loader import config_from_dict  # noqa: E402
from gateway.reports import figures as reports  # noqa: E402
from gateway.reports import rollup as report_rollup  # noqa: E402
from gateway.service import build_services  # noqa: E402
from store.db import db, is_postgres, open_database  # noqa: E402
from store.migrations import rollup_triggers, upgrade  # noqa: E402
from web.app import create_app  # noqa: E402

PG_DSN = os.environ.get("INLET_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PRIORITIES = [("P1", 2), ("P2", 8), ("P3", 50), ("P4", 30), ("P5", 10)]
TARGETS = {"P1": (900, 4 * 3600), "P2": (3600, 8 * 3600), "P3": (4 * 3600, 86400), "P4": (86400, 3 * 86400)}
TARGETS["P5"] = (2 * 86400, 5 * 86400)
LEVELS = {"P1": ("high", "high"), "P2": ("high", "medium"), "P3": ("medium", "medium"), "P4": ("medium", "low")}
LEVELS["P5"] = ("low", "low")
GROUPS = ["service-desk", "network", "apps", "database", "security", "storage", "identity", "workplace"]
CATEGORIES = "network hardware software access database email storage printing security outage vpn other".split()  # noqa: SIM905
SERVICES = [f"service-{i:02d}" for i in range(40)]
SOURCES = [("email", 50), ("alertmanager", 20), ("webhook", 15), ("manual", 10), ("api", 5)]
CAUSES = [f"cause-{i:02d}" for i in range(30)]
CONTACTS = 20_000
FINGERPRINTS = 3_000
COLUMNS = (
    "number", "ref", "title", "description", "status", "category", "service", "impact", "urgency", "priority",
    "procedure", "group", "reporter_id", "source", "integration", "tags", "labels", "major", "security", "escalated",
    "status_page", "drill", "flapping", "flap_count", "respond_by", "resolve_by", "opened_at", "acknowledged_at",
    "resolved_at", "closed_at", "cancelled_at", "on_hold_since", "paused_seconds", "updated_at", "signal_count",
    "reopen_count", "reassignment_count", "resolution_code", "resolution_notes", "fix_type", "cause_code",
    "cause_text", "closed_by", "decisions",
)  # fmt: skip
PASSWORD = "a long bench password"


def _pick(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def generate(count: int, now: datetime):
    """Incident rows (tuples in COLUMNS order, times naive UTC), fingerprint keys and major updates."""
    rng = random.Random(42)
    start = now - timedelta(days=365)
    span = 365 * 86400
    weighted_causes = [(c, 30 - i) for i, c in enumerate(CAUSES)]
    for n in range(1, count + 1):
        opened = start + timedelta(seconds=span * (n - 0.5) / count)
        prio = _pick(rng, PRIORITIES)
        respond, resolve = TARGETS[prio]
        age = (now - opened).total_seconds()
        source = _pick(rng, SOURCES)
        security = rng.random() < 0.01
        major = prio in ("P1", "P2") and rng.random() < 0.2
        held = rng.random() < 0.1
        paused = rng.randint(3600, 2 * 86400) if held else 0
        ack_after = rng.expovariate(1 / (respond * 0.4))
        resolve_after = min(rng.lognormvariate(0, 1) * resolve * 0.5, 30 * 86400) + paused + ack_after
        status = "closed"
        acknowledged = opened + timedelta(seconds=ack_after) if ack_after < age else None
        resolved = opened + timedelta(seconds=resolve_after) if resolve_after < age else None
        closed = resolved + timedelta(days=1) if resolved and (now - resolved).days >= 1 else None
        cancelled = None
        on_hold_since = None
        if rng.random() < 0.02:
            status, resolved, closed, cancelled = "cancelled", None, None, opened + timedelta(minutes=20)
        elif resolved is None:
            status = "acknowledged" if acknowledged else "new"
            if acknowledged and held:
                status, on_hold_since, paused = "on_hold", acknowledged + timedelta(minutes=5), 0
        elif closed is None:
            status = "resolved"
        respond_by = opened + timedelta(seconds=respond)
        resolve_by = opened + timedelta(seconds=resolve + paused)
        cause = _pick(rng, weighted_causes) if resolved else ""
        yield (
            n, f"INC-{n}", f"Incident {n}", "", status, rng.choice(CATEGORIES), rng.choice(SERVICES), *LEVELS[prio],
            prio, "major" if major else "standard", "security" if security else rng.choice(GROUPS),
            rng.randint(1, CONTACTS), source, "", "[]", "{}", major, security, rng.random() < 0.06, "",
            rng.random() < 0.005, False, 0, respond_by, resolve_by, opened, acknowledged, resolved, closed, cancelled,
            on_hold_since, paused, closed or resolved or opened, 1, int(rng.random() < 0.04),
            int(rng.random() < 0.12), "fixed" if resolved else "", "", "workaround" if resolved else "", cause, "",
            "agent" if closed else "", "{}",
        )  # fmt: skip


def _naive(value):
    return value.replace(tzinfo=None) if isinstance(value, datetime) else value


def seed(count: int, now: datetime) -> float:
    """Bulk-insert the data set into the connected (migrated) database; return seconds taken."""
    began = time.perf_counter()
    t0 = now - timedelta(days=400)
    contacts = [(i, f"reporter{i}@example.org", "", t0) for i in range(1, CONTACTS + 1)]
    majors: list[tuple] = []
    keys: list[tuple] = []

    def rows():
        for row in generate(count, now):
            n, source, opened = row[0], row[13], row[26]
            if source == "alertmanager":
                keys.append((n, "fingerprint", f"fp-{n % FINGERPRINTS}", False, "", opened))
            if row[17]:  # major: public updates every 20-50 minutes while open
                end = row[28] or now
                at = opened + timedelta(minutes=20)
                while at < end and at < opened + timedelta(hours=12):
                    majors.append((n, at, "update", "commander", "public", "", "update", "{}"))
                    at += timedelta(minutes=random.Random(n).randint(20, 50))
            yield tuple(_naive(v) for v in row)

    if is_postgres():
        raw = db.connection()
        with raw.cursor() as cur:
            _copy(cur, "contact", ("id", "email", "name", "created_at"), contacts)
            _copy(cur, "incident", COLUMNS, rows())
            _copy(cur, "correlation_key", ("incident_id", "kind", "value", "open", "state", "created_at"), keys)
            event_columns = ("incident_id", "at", "type", "actor", "visibility", "field", "body", "data")
            _copy(cur, "event", event_columns, majors)
            cur.execute("SELECT setval(pg_get_serial_sequence('incident', 'id'), (SELECT MAX(id) FROM incident))")
            cur.execute("ANALYZE")
        raw.commit()
    else:
        raw = db.connection()
        raw.execute("PRAGMA synchronous=off")
        raw.execute("BEGIN")  # one transaction: peewee's connection autocommits, a million commits took most of an hour
        raw.executemany(_insert("contact", ("id", "email", "name", "created_at")), contacts)
        batch: list[tuple] = []
        for row in rows():
            batch.append(row)
            if len(batch) == 20_000:
                raw.executemany(_insert("incident", COLUMNS), batch)
                batch.clear()
        raw.executemany(_insert("incident", COLUMNS), batch)
        raw.executemany(
            _insert("correlation_key", ("incident_id", "kind", "value", "open", "state", "created_at")), keys
        )
        columns = ("incident_id", "at", "type", "actor", "visibility", "field", "body", "data")
        raw.executemany(_insert("event", columns), majors)
        raw.commit()
        raw.execute("ANALYZE")
    return time.perf_counter() - began


def _insert(table: str, columns) -> str:
    names = ", ".join(f'"{c}"' for c in columns)
    return f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" * len(columns))})'


def _copy(cur, table: str, columns, rows) -> None:
    """COPY in chunks of 50,000 rows (CSV; booleans as t/f, None as \\N)."""
    names = ", ".join(f'"{c}"' for c in columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush():
        buffer.seek(0)
        cur.copy_expert(f"""COPY "{table}" ({names}) FROM STDIN WITH (FORMAT csv, NULL '\\N')""", buffer)
        buffer.seek(0)
        buffer.truncate()

    for n, row in enumerate(rows, 1):
        writer.writerow(["t" if v is True else "f" if v is False else "\\N" if v is None else v for v in row])
        if n % 50_000 == 0:
            flush()
    flush()


def timed(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def parts(now: datetime, rounds: int) -> None:
    """Where the time of the 365-day report goes: the rollup's part and each part still computed live."""
    scope = reports.Scope(since=now - timedelta(days=365), until=now)
    until = report_rollup.usable("UTC")
    rolled = report_rollup.rolled(scope, now, until)
    shown = {
        "rollup (counts, MTTA/MTTR, SLA, days, weeks, rates, causes, services)": lambda: report_rollup.rolled(
            scope, now, until
        ),
        "live: fingerprints and senders": lambda: reports._recurring(scope, rolled=rolled),
        "live: backlog": lambda: reports._backlog(scope, now),
        "live: major-incident updates": lambda: reports._major_updates(scope, now, timedelta(minutes=30)),
    }
    for name, fn in shown.items():
        print(f"    365 days, {name}: {timed(fn, rounds) * 1000:.1f} ms")


def explain(now: datetime) -> None:
    """The plan of every statement of the 365-day report."""
    statements: list[tuple[str, list]] = []
    originals = {module: module._rows for module in (reports, report_rollup)}

    def recording(original):
        def record(sql, params):
            statements.append((sql, list(params)))
            return original(sql, params)

        return record

    for module, original in originals.items():
        module._rows = recording(original)
    try:
        reports.report(reports.Scope(since=now - timedelta(days=365), until=now), now=now)
    finally:
        for module, original in originals.items():
            module._rows = original
    prefix = "EXPLAIN " if is_postgres() else "EXPLAIN QUERY PLAN "
    for sql, params in statements:
        shown = re.sub(r"VALUES \(.{200,}?\) (SELECT)", r"VALUES (… one row per bucket …) \1", sql)
        print(f"\n-- {shown[:400]}{'…' if len(shown) > 400 else ''}")
        for row in db.execute_sql(prefix + sql, params).fetchall():
            print("   ", " | ".join(str(v) for v in row))


def run(kind: str, count: int, rounds: int, show_plans: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = None
        if kind == "postgres":
            admin = psycopg2.connect(PG_DSN)
            admin.autocommit = True
            admin.cursor().execute(f"CREATE SCHEMA {schema}")
            url = f"{PG_DSN}?options=-csearch_path%3D{schema}"
        else:
            url = f"sqlite:///{tmp}/bench.db"
        try:
            config = config_from_dict(
                {
                    "database": {"url": url},
                    "inlet": {"data_dir": tmp},
                    "group": [{"name": g} for g in GROUPS],
                    "fallback_group": "service-desk",
                },
                f"{tmp}/config.toml",
            )
            open_database(config)
            upgrade()
            now = datetime.now(UTC).replace(microsecond=0)
            # seeded without the rollup's triggers (a bulk load marks every day anyway), rebuilt after
            for name in ("report_dirty_insert", "report_dirty_insert_delete", "report_dirty_delete"):
                db.execute_sql(f"DROP TRIGGER IF EXISTS {name}" + (" ON incident" if is_postgres() else ""))
            seconds = seed(count, now)
            for statement in rollup_triggers(is_postgres()):
                db.execute_sql(statement)
            print(f"\n{kind}: seeded {count:,} incidents in {seconds:.1f} s")
            began = time.perf_counter()
            days = report_rollup.rebuild("UTC", now)
            print(f"  rollup rebuilt ({days} days) in {time.perf_counter() - began:.1f} s; {_rollup_size()}")
            accounts.create_user("boss", "admin", PASSWORD)
            app = create_app(config, build_services(config))
            client = app.test_client()
            token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
            client.post("/login", data={"name": "boss", "password": PASSWORD, "csrf_token": token})
            for days in (30, 365):
                since = now - timedelta(days=days)
                scope = reports.Scope(since=since, until=now)
                base = timed(lambda s=since: db.execute_sql(_count_sql(), [s.replace(tzinfo=None)]).fetchall(), rounds)
                full = timed(lambda s=scope: reports.report(s, now=now), rounds)

                def page(d=days):
                    response = client.get(f"/reports?since={d}d")
                    assert response.status_code == 200, response.status_code

                shown = timed(page, rounds)
                print(
                    f"  {days:>3} days: baseline count {base * 1000:8.1f} ms | report {full * 1000:8.1f} ms "
                    f"({full / base:6.1f}x) | Reports page {shown * 1000:8.1f} ms ({shown / base:6.1f}x)"
                )
            parts(now, rounds)
            if show_plans:
                explain(now)
        finally:
            if not db.is_closed():
                db.close()
            if admin is not None:
                if hasattr(db.obj, "close_all"):
                    db.obj.close_all()
                admin.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
                admin.close()


def _rollup_size() -> str:
    rows = db.execute_sql("SELECT COUNT(*) FROM report_rollup").fetchone()[0]
    hist = db.execute_sql("SELECT COUNT(*) FROM report_rollup_hist").fetchone()[0]
    return f"{rows:,} rollup rows, {hist:,} histogram rows"


def _count_sql() -> str:
    return f"SELECT COUNT(*) FROM incident WHERE opened_at >= {db.param}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--explain", action="store_true", help="print the plan of every statement")
    args = parser.parse_args()
    for kind in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        run(kind, args.count, args.rounds, args.explain)


if __name__ == "__main__":
    main()
