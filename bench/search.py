"""How fast full-text search is over 1,000,000 incidents, on SQLite (FTS5) and PostgreSQL (tsvector + GIN).

Seeds a fresh, migrated database with bench/report.py's data set (its bulk inserts: sqlite3
``executemany``, PostgreSQL ``COPY``; the search triggers suspended meanwhile, then the index built in
one pass by migration 11's own backfill — timed apart), with
titles and descriptions drawn from an incident vocabulary instead of "Incident N": a rare word
(in about 1 in 10,000 incidents) and a common one (about 1 in 100) are planted for the timings.

Then times, each the median of ``--rounds``, through the one query module (store/search.py) as
the queue and the API use it — ``GET /api/v1/incidents?q=WORD`` (full stack: token, query, JSON)
and the query alone (the first page, ranked) — for the rare word, the common word, a prefix and a
phrase; beside a bare baseline measured in the same run: the index's own match count for the
rare word (``SELECT COUNT(*) ... MATCH`` / ``@@``), and the API's page of 50 incidents without a search
(what rendering the rows costs). Target: a word search < 200 ms.

Run: ``PYTHONPATH=. python bench/search.py [--count N] [--db sqlite|postgres|both] [--rounds R] [--explain]
[--keep]`` (``--explain``: the plan of every statement of each search; ``--keep``: keep the seeded database and
reuse it on the next ``--keep`` run of the same count — seeding a million takes minutes)
(PostgreSQL: ``$INLET_TEST_PG``, default postgresql://postgres@127.0.0.1:5432/test; a throwaway schema, or with
``--keep`` the schema bench_search_COUNT.)
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg2  # noqa: E402

import bench.report as report_bench  # noqa: E402
from gateway import accounts  # noqa: E402
from gateway.config.loader import config_from_dict  # noqa: E402
from gateway.service import build_services  # noqa: E402
from store import search  # noqa: E402
from store.db import db, is_postgres, open_database  # noqa: E402
from store.migrations import upgrade  # noqa: E402
from store.models import Incident, User  # noqa: E402
from web.app import create_app  # noqa: E402

WORDS = (  # noqa: SIM905
    "disk full printer vpn mail queue stuck slow login password reset network switch down outage backup failed "
    "database replication lag certificate expired storage latency timeout error server restart memory cpu high "
    "wifi laptop screen broken license renewal firewall rule dns resolution proxy cluster node unreachable "
    "payroll export report missing access denied account locked phone headset camera meeting room projector"
).split()
RARE, COMMON = "zeppelin", "kestrel"
TITLE_INDEX, DESCRIPTION_INDEX = 2, 3
KEPT = "/tmp/inlet-search-bench-{count}.db"  # --keep: SQLite's seeded database, reused by the next --keep run


def generate(count, now):
    """bench/report.py's rows with words: titles of 3-6 vocabulary words and a host, descriptions of 8-20."""
    rng = random.Random(7)
    for row in report_bench.original_generate(count, now):
        title = " ".join(rng.choices(WORDS, k=rng.randint(3, 6))) + f" on host-{rng.randint(1, 5000)}"
        description = " ".join(rng.choices(WORDS, k=rng.randint(8, 20)))
        n = row[0]
        if n % 10_000 == 7:
            title += f" {RARE}"
        if n % 100 == 3:
            description += f" {COMMON}"
        row = list(row)
        row[TITLE_INDEX], row[DESCRIPTION_INDEX] = title, description
        yield tuple(row)


report_bench.original_generate = report_bench.generate
report_bench.generate = generate  # seed() draws its rows from here


def timed(fn, rounds: int) -> float:
    return report_bench.timed(fn, rounds)


def run(kind: str, count: int, rounds: int, *, show_plans: bool = False, keep: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        schema = f"bench_search_{count}" if keep else f"bench_{uuid.uuid4().hex[:8]}"
        admin = None
        if kind == "postgres":
            admin = psycopg2.connect(report_bench.PG_DSN)
            admin.autocommit = True
            admin.cursor().execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            url = f"{report_bench.PG_DSN}?options=-csearch_path%3D{schema}"
        else:
            url = f"sqlite:///{KEPT.format(count=count) if keep else tmp + '/bench.db'}"
        try:
            config = config_from_dict(
                {
                    "database": {"url": url},
                    "inlet": {"data_dir": tmp},
                    "group": [{"name": g} for g in report_bench.GROUPS],
                    "fallback_group": "service-desk",
                },
                f"{tmp}/config.toml",
            )
            open_database(config)
            upgrade()
            now = datetime.now(UTC).replace(microsecond=0)
            if keep and Incident.select().count() == count:
                began = time.perf_counter()
                with db.atomic():
                    search.install(db.obj)  # nothing to do unless that run stopped while indexing
                indexed = time.perf_counter() - began
                print(f"\n{kind}: the {count:,} incidents seeded by an earlier --keep run ({url}; {indexed:.1f} s)")
            else:
                search.suspend(db.obj)  # bulk load first, then index in one pass (as migration 11 does)
                seconds = report_bench.seed(count, now)
                began = time.perf_counter()
                with db.atomic():
                    search.install(db.obj)
                indexed = time.perf_counter() - began
                print(f"\n{kind}: seeded {count:,} incidents in {seconds:.1f} s, indexed them in {indexed:.1f} s")
            if not User.select().where(User.name == "boss").exists():
                accounts.create_user("boss", "admin", report_bench.PASSWORD)
            token = accounts.issue_api_token("boss")
            client = create_app(config, build_services(config)).test_client()
            headers = {"Authorization": f"Bearer {token}"}
            if is_postgres():
                bare_sql = "SELECT COUNT(*) FROM incident_search WHERE document @@ to_tsquery('simple', %s)"
                bare_args = [RARE]
            else:
                bare_sql = "SELECT COUNT(*) FROM incident_search WHERE incident_search MATCH ?"
                bare_args = [f'"{RARE}"']
            base = timed(lambda: db.execute_sql(bare_sql, bare_args).fetchall(), rounds)
            matches = db.execute_sql(bare_sql, bare_args).fetchone()[0]
            print(f"  baseline: the index's count of {RARE!r} ({matches:,} matches) {base * 1000:8.2f} ms")

            def browse():
                response = client.get("/api/v1/incidents", query_string={"sort": "newest"}, headers=headers)
                assert response.status_code == 200, response.text

            shown = timed(browse, rounds)
            print(f"  baseline: GET /api/v1/incidents?sort=newest (50 rows, no search) {shown * 1000:8.1f} ms")
            for label, text in (
                ("rare word", RARE),
                ("common word", COMMON),
                ("prefix", COMMON[:4]),
                ("two words", f"{COMMON} backup"),
                ("phrase", '"disk full"'),
            ):
                found = search.parse(text)

                def query(found=found):
                    return list(search.restrict(Incident.select(Incident.id), found, ranked=True).limit(50))

                def api(text=text):
                    response = client.get("/api/v1/incidents", query_string={"q": text}, headers=headers)
                    assert response.status_code == 200, response.text

                total = search.restrict(Incident.select(Incident.id), found).count()
                if show_plans:
                    explain(label, query, api)
                alone = timed(query, rounds)
                full = timed(api, rounds)
                print(
                    f"  {label:<11} {text!r:<18} {total:>7,} matches | ranked page {alone * 1000:8.1f} ms "
                    f"({alone / base:6.1f}x) | GET /api/v1/incidents?q= {full * 1000:8.1f} ms ({full / base:6.1f}x)"
                )
        finally:
            if not db.is_closed():
                db.close()
            if admin is not None:
                if hasattr(db.obj, "close_all"):
                    db.obj.close_all()
                if not keep:
                    admin.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
                admin.close()


def explain(label: str, *calls) -> None:
    """The plan of every statement ``calls`` run (EXPLAIN ANALYZE on PostgreSQL, EXPLAIN QUERY PLAN on SQLite)."""
    statements: list[tuple[str, list]] = []
    database = db.obj
    original = database.execute_sql

    def record(sql, params=None):
        statements.append((sql, list(params or ())))
        return original(sql, params)

    database.execute_sql = record
    try:
        for call in calls:
            call()
    finally:
        del database.execute_sql
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if is_postgres() else "EXPLAIN QUERY PLAN "
    print(f"\n  plans of the {label}:")
    for sql, params in statements:
        if search.TABLE not in sql:  # the search's own statements, not the token check's or the page's
            continue
        print(f"  -- {sql[:600]}{'…' if len(sql) > 600 else ''}  {params[:8]}")
        for row in db.execute_sql(prefix + sql, params).fetchall():
            print("     ", " | ".join(str(v) for v in row))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--explain", action="store_true", help="print the plan of every statement each search runs")
    parser.add_argument(
        "--keep",
        action="store_true",
        help=f"keep the seeded database ({KEPT} / schema bench_search_COUNT) and reuse it on the next --keep run",
    )
    args = parser.parse_args()
    for kind in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        run(kind, args.count, args.rounds, show_plans=args.explain, keep=args.keep)


if __name__ == "__main__":
    main()
