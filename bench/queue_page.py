"""How fast the queue page renders with 1,000,000 incidents in SQLite.

Seeds a fresh SQLite database with N incidents (default 1,000,000; 3 % open,
the rest closed or cancelled, 1 % security incidents) with raw ``executemany``,
then renders pages through the Flask test client (full stack: session, query,
template) and prints median and p95 ms per page, side by side with a bare
baseline measured in the same run: a trivial page of the same app
(``/healthz``, which also touches the database). Target: the default queue
page under 100 ms.

Run: ``PYTHONPATH=. python bench/queue_page.py [N]``
"""

from __future__ import annotations

import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import accounts  # noqa: E402
from gateway.config.loader import config_from_dict  # noqa: E402
from gateway.service import build_services  # noqa: E402
from store.db import db, open_database  # noqa: E402
from store.migrations import upgrade  # noqa: E402
from web.app import create_app  # noqa: E402

GROUPS = ["service-desk", "network", "apps", "security"]
OPEN = ["new", "acknowledged", "in_progress", "on_hold"]
WORDS = "vpn printer payroll email backup disk wifi login slow down error timeout sap crm switch".split()  # noqa: SIM905
ROUNDS = 30


def seed(path: Path, count: int) -> None:
    """``count`` incidents with raw executemany (the models would take minutes for a million rows)."""
    rng = random.Random(42)
    start = datetime(2020, 1, 1)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=off")
    users = [row[0] for row in conn.execute("SELECT id FROM user")]
    columns = (
        "number, ref, title, description, status, category, service, impact, urgency, priority, procedure, "
        '"group", assignee_id, source, integration, tags, labels, major, security, escalated, drill, flapping, '
        "flap_count, respond_by, resolve_by, opened_at, updated_at, signal_count, reopen_count, "
        "reassignment_count, resolution_code, resolution_notes, fix_type, cause_code, cause_text, closed_by, "
        "decisions, paused_seconds, acknowledged_at, resolved_at, closed_at, status_page"
    )
    sql = f"INSERT INTO incident ({columns}) VALUES ({', '.join('?' * 42)})"

    def rows(first: int, last: int):
        for n in range(first, last):
            opened = start + timedelta(minutes=n * 2)
            is_open = rng.random() < 0.03
            status = rng.choice(OPEN) if is_open else ("closed" if rng.random() < 0.95 else "cancelled")
            priority = rng.choices(["P1", "P2", "P3", "P4", "P5"], [1, 4, 30, 40, 25])[0]
            group = rng.choice(GROUPS)
            security = group == "security" and rng.random() < 0.25
            title = " ".join(rng.choices(WORDS, k=5)) + f" #{n}"
            yield (
                n, f"INC-{n}", title, "", status, "", "", "medium", "medium", priority, "standard", group,
                rng.choice(users) if rng.random() < 0.6 else None, "smtp", "", "[]", "{}", 0, int(security), 0, 0, 0,
                0, (opened + timedelta(hours=1)).isoformat(" "), (opened + timedelta(hours=8)).isoformat(" "),
                opened.isoformat(" "), opened.isoformat(" "), 1, 0, 0, "", "", "", "", "", "", "{}",
                0, None if status == "new" else (opened + timedelta(minutes=20)).isoformat(" "),
                None if is_open else (opened + timedelta(hours=5)).isoformat(" "),
                (opened + timedelta(days=3)).isoformat(" ") if status == "closed" else None, "",
            )  # fmt: skip

    batch = 50_000
    for first in range(1, count + 1, batch):
        conn.executemany(sql, rows(first, min(first + batch, count + 1)))
        conn.commit()
    conn.execute("UPDATE counter SET value = ? WHERE name = 'incident'", (count,))
    conn.commit()
    conn.close()


def timed(client, url: str, rounds: int = ROUNDS) -> tuple[float, float]:
    client.get(url)  # warm: templates compiled, pages cached
    samples = []
    for _ in range(rounds):
        begin = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - begin) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


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
    for n in range(20):
        accounts.create_user(f"user{n}", "agent", "bench password")
    db.close()
    begin = time.perf_counter()
    seed(path, count)
    print(f"seeded {count:,} incidents in {time.perf_counter() - begin:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")

    app = create_app(config, build_services(config))
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"name": "agent", "password": "bench password", "csrf_token": token})
    first = client.get("/incidents").text
    after = re.search(r'href="(/incidents\?[^"]*after=[^"]+)"', first).group(1).replace("&amp;", "&")
    pages = [
        ("baseline: /healthz (trivial page, same app)", "/healthz"),
        ("queue: open, by priority (default)", "/incidents"),
        ("queue: next page (keyset)", after),
        ("queue: every status, newest first", "/incidents?status=any&sort=newest"),
        ("queue: every status, oldest first", "/incidents?status=any&sort=oldest"),
        ("queue: group network, open", "/incidents?group=network"),
        ("queue: mine", "/incidents?view=mine"),
        ("queue: unassigned", "/incidents?view=unassigned"),
        ("queue: priority P1, every status", "/incidents?status=any&priority=P1"),
        ("queue: by reference", f"/incidents?q=INC-{count // 2}&status=any"),
        ("queue: on hold only", "/incidents?status=on_hold"),
        ("queue: open, by SLA due", "/incidents?sort=sla"),
        ("queue: open, by last updated", "/incidents?sort=updated"),
        ("queue: breached (open, SLA past due)", "/incidents?view=breached&sort=sla"),
        ("queue: refresh with 'N new' (seen=)", f"/incidents?seen={count // 2}"),
        ("incident page", f"/incidents/INC-{count}"),
        ("queue: title words, every status (scan)", "/incidents?q=payroll%20vpn&status=any&sort=newest"),
    ]
    print(f"{'page':<46} {'median ms':>10} {'p95 ms':>8} {'× baseline':>11}")
    base = None
    for label, url in pages:
        rounds = 5 if "(scan)" in label else ROUNDS
        median, p95 = timed(client, url, rounds)
        base = base or median
        print(f"{label:<46} {median:10.1f} {p95:8.1f} {median / base:10.1f}x")


if __name__ == "__main__":
    main()
