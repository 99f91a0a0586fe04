"""What a beat costs: ``record_beat`` (one UPDATE through peewee) against a bare baseline measured in the same
run, the same UPDATE through the raw sqlite3 driver, autocommitted, on the same kind of file; and inside
``db.atomic()``, which on SQLite also takes the cross-process write turn (store/db.py).

Run: ``PYTHONPATH=. python bench/heartbeat.py`` (SQLite in a temporary folder; prints µs per beat and the ratio).
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config.loader import config_from_dict  # noqa: E402
from gateway.incidents.heartbeats import record_beat  # noqa: E402
from store.db import db, open_database  # noqa: E402
from store.migrations import upgrade  # noqa: E402
from tests.conftest import base_config_dict  # noqa: E402

BEATS, ROUNDS = 2000, 5


def per_beat(run) -> float:
    """Median µs per beat over the rounds."""
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) / BEATS * 1e6)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "inlet.db"
        open_database(config_from_dict(base_config_dict(f"sqlite:///{path}", inlet={"data_dir": folder})))
        upgrade()
        db.connect(reuse_if_open=True)
        now = datetime.now(UTC)
        record_beat("bench", now)  # the row exists: every further beat is the one UPDATE

        def inlet() -> None:  # as web/hooks.py and the IMAP poller call it: one statement, autocommitted
            for _ in range(BEATS):
                record_beat("bench", now)

        def in_transaction() -> None:  # as the pipeline's steps call it: inside a write transaction (its turn)
            for _ in range(BEATS):
                with db.atomic():
                    record_beat("bench", now)

        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("PRAGMA journal_mode=wal")
        raw.execute("PRAGMA synchronous=normal")
        stamp = now.isoformat()

        def bare() -> None:
            for _ in range(BEATS):
                raw.execute('UPDATE "heartbeat" SET "last_beat_at" = ?, "beats" = "beats" + 1 WHERE "name" = ?',
                            (stamp, "bench"))  # fmt: skip

        baseline, ours, turned = per_beat(bare), per_beat(inlet), per_beat(in_transaction)
        print(f"bare sqlite3 UPDATE, autocommit:        {baseline:8.1f} µs per beat")
        print(f"record_beat, autocommit:                {ours:8.1f} µs per beat  ({ours / baseline:.1f}x the baseline)")
        print(f"record_beat in db.atomic() (write turn): {turned:8.1f} µs per beat  ({turned / baseline:.1f}x)")
        raw.close()


if __name__ == "__main__":
    main()
