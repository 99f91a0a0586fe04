"""How long one /metrics scrape takes with a large store (SQLite), series by series.

Seeds a fresh SQLite database with N incidents over a year (3 % open, as bench/queue_page.py), N inbound
inputs (1 % pending, the newest 1,200 in the last hour), 1.1 N events (one in eleven an escalation) and
N/10 delivery attempts (a fifth failed), then times the whole ``/metrics`` page through the Flask test
client as an admin, and each part of it alone, side by side with a bare baseline measured in the same run:
``/healthz`` of the same app. Median of ROUNDS.

Run: ``PYTHONPATH=. python bench/metrics_scrape.py [N]`` (default 1,000,000)
"""

from __future__ import annotations

import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import accounts  # noqa: E402
from gateway.config.loader import config_from_dict  # noqa: E402
from gateway.service import build_services  # noqa: E402
from store.db import db, open_database  # noqa: E402
from store.migrations import upgrade  # noqa: E402
from web import metrics  # noqa: E402
from web.app import create_app  # noqa: E402

ROUNDS = 7
GROUPS = ["service-desk", "network", "apps", "security"]
OPEN = ["new", "acknowledged", "in_progress", "on_hold"]


def seed_incidents(conn: sqlite3.Connection, count: int, now: datetime) -> None:
    """``count`` incidents over the last year, 3 % open (half of those past their targets)."""
    rng = random.Random(42)
    base = {
        "title": "bench", "description": "", "category": "", "service": "", "impact": "medium", "urgency": "medium",
        "procedure": "standard", "source": "smtp", "integration": "", "tags": "[]", "labels": "{}", "major": 0,
        "security": 0, "escalated": 0, "status_page": "", "drill": 0, "flapping": 0, "flap_count": 0,
        "signal_count": 1, "reopen_count": 0, "reassignment_count": 0, "resolution_code": "", "resolution_notes": "",
        "fix_type": "", "cause_code": "", "cause_text": "", "closed_by": "", "decisions": "{}", "paused_seconds": 0,
    }  # fmt: skip
    names = [*base, "number", "ref", "status", "priority", "group", "opened_at", "updated_at"]
    names += ["respond_by", "resolve_by", "acknowledged_at", "resolved_at"]
    columns = ", ".join(f'"{n}"' for n in names)
    sql = f"INSERT INTO incident ({columns}) VALUES ({', '.join('?' * len(names))})"
    priorities, weights = ["P1", "P2", "P3", "P4", "P5"], [1, 4, 30, 40, 25]

    def rows(first: int, last: int):
        for n in range(first, last):
            opened = now - timedelta(seconds=(count - n) * 31_536_000 / count)
            is_open = rng.random() < 0.03
            status = rng.choice(OPEN) if is_open else ("closed" if rng.random() < 0.95 else "cancelled")
            values = dict(base, escalated=int(rng.random() < 0.05))
            values.update(
                number=n, ref=f"INC-{n}", status=status, priority=rng.choices(priorities, weights)[0],
                group=rng.choice(GROUPS), opened_at=opened.isoformat(" "), updated_at=opened.isoformat(" "),
                respond_by=(opened + timedelta(hours=1)).isoformat(" "),
                resolve_by=(opened + timedelta(hours=8)).isoformat(" "),
                acknowledged_at=None if status == "new" else (opened + timedelta(minutes=20)).isoformat(" "),
                resolved_at=None if is_open else (opened + timedelta(hours=5)).isoformat(" "),
            )  # fmt: skip
            yield tuple(values[name] for name in names)

    for first in range(1, count + 1, 50_000):
        conn.executemany(sql, rows(first, min(first + 50_000, count + 1)))
        conn.commit()


def seed(path: Path, count: int) -> None:
    rng = random.Random(7)
    now = datetime.now(UTC).replace(tzinfo=None)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=off")
    seed_incidents(conn, count, now)
    sql = (
        "INSERT INTO inbound (source, integration, received_at, status, reason, raw, headers, envelope_to, peer, "
        "mail_class, decisions, attempts, processed_at) VALUES (?, '', ?, ?, '', x'00', '{}', '[]', '', '', '[]', 0, ?)"
    )

    def inbound(first: int, last: int):
        for n in range(first, last):
            received = now - timedelta(seconds=(count - n) * 3)  # the newest 1,200 in the last hour
            status = rng.choices(["processed", "ignored", "failed", "pending"], [90, 8, 1, 1])[0]
            done = None if status == "pending" else (received + timedelta(seconds=rng.random() * 2)).isoformat(" ")
            yield (rng.choice(["smtp", "imap", "webhook"]), received.isoformat(" "), status, done)

    for first in range(0, count, 50_000):
        conn.executemany(sql, inbound(first, min(first + 50_000, count)))
        conn.commit()
    kinds = ["functional", "hierarchical", "automatic"]
    events = (  # one escalation in eleven events; the rest stand for the notes, replies and changes
        (
            rng.randint(1, count),
            now.isoformat(" "),
            *(("escalated", rng.choice(kinds)) if n % 11 == 0 else ("note", None)),
        )
        for n in range(count + count // 10)
    )
    conn.executemany(
        "INSERT INTO event (incident_id, at, type, actor, visibility, field, new, body, data) "
        "VALUES (?, ?, ?, 'bench', 'internal', '', ?, '', '{}')",
        events,
    )
    conn.execute(
        "INSERT INTO notification (audience, template, targets, context, status, attempts, next_attempt_at, "
        "results, last_error, created_at) VALUES ('group', 'new', '[]', '{}', 'sent', 1, ?, '{}', '', ?)",
        (now.isoformat(" "), now.isoformat(" ")),
    )
    attempts = ((now.isoformat(" "), rng.random() < 0.8) for _ in range(count // 10))
    conn.executemany(
        "INSERT INTO notification_attempt (notification_id, at, channel, url, ok, detail, elapsed, worker) "
        "VALUES (1, ?, 'c', 'json://x', ?, '', 0, '')",
        attempts,
    )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def median_ms(run, rounds: int = ROUNDS) -> float:
    run()
    samples = []
    for _ in range(rounds):
        begin = time.perf_counter()
        run()
        samples.append((time.perf_counter() - begin) * 1000)
    return statistics.median(samples)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    folder = Path(tempfile.mkdtemp(prefix="inlet-bench-"))
    path = folder / "inlet.db"
    config = config_from_dict(
        {
            "database": {"url": f"sqlite:///{path}"},
            "inlet": {"data_dir": str(folder)},
            "fallback_group": "service-desk",
            "group": [{"name": g, "members": ["agent"] if g != "security" else []} for g in GROUPS],
        }
    )
    open_database(config)
    upgrade()
    accounts.create_user("agent", "agent", "bench password")
    accounts.create_user("admin", "admin", "bench password")
    db.close()
    begin = time.perf_counter()
    seed(path, count)
    print(f"seeded {count:,} incidents and inputs in {time.perf_counter() - begin:.1f} s")

    app = create_app(config, build_services(config))
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"name": "admin", "password": "bench password", "csrf_token": token})
    assert client.get("/metrics").status_code == 200
    base = median_ms(lambda: client.get("/healthz"))
    rows = [
        ("baseline: /healthz (same app)", base),
        ("/metrics, whole page", median_ms(lambda: client.get("/metrics"))),
    ]
    db.connect(reuse_if_open=True)
    now = datetime.now(UTC)
    store = metrics._StoreCollector(now)
    ends = (metrics.Incident.acknowledged_at, metrics.Incident.resolved_at)
    parts = [
        ("  intake totals + pending (index-only)", lambda: list(store._intake())),
        ("  pipeline lag (oldest pending)", store._lag),
        ("  processing latency (last 10 min)", store._latency),
        ("  open incidents, SLA breached, escalations", lambda: list(store._incidents())),
        ("  outbox depth, delivery failures", store._outbox),
        (
            "  MTTA + MTTR means (last 30 days)",
            lambda: [metrics._mean_seconds(f, now - metrics.MEAN_WINDOW) for f in ends],
        ),
    ]
    for label, run in parts:
        rows.append((label, median_ms(run)))
    db.close()
    print(f"{'what':<46} {'median ms':>10} {'× baseline':>11}")
    for label, ms in rows:
        print(f"{label:<46} {ms:10.1f} {ms / base:10.1f}x")


if __name__ == "__main__":
    main()
