"""`inlet db backup PATH`: SQLite's online backup while `inlet serve` takes mail; the copy restores with every row.

PostgreSQL is backed up with pg_dump: the command says so instead of writing anything.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading

from tests.conftest import INLET, ROOT, wait_for


def run(config, *args) -> subprocess.CompletedProcess:
    return subprocess.run([*INLET, "-c", str(config), *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_backup_while_serving_restores_every_acknowledged_row(serve, store, tmp_path):
    if store.kind == "postgres":
        refused = run(store.write_config(), "db", "backup", str(tmp_path / "inlet.backup"))
        assert refused.returncode == 1 and "pg_dump" in refused.stderr, refused.stderr
        assert not (tmp_path / "inlet.backup").exists()
        return
    served = serve()
    acked: list[str] = []
    stop = threading.Event()

    def load():
        n = 0
        while not stop.is_set():
            served.send_mail(f"Backup load {n}")
            acked.append(f"Backup load {n}")
            n += 1

    sender = threading.Thread(target=load)
    sender.start()
    try:
        wait_for(lambda: len(acked) >= 30, timeout=30, message="mail acknowledged before the backup")
        before = list(acked)
        backup = tmp_path / "backup" / "inlet.db"
        done = run(served.path, "db", "backup", str(backup))
        after = len(acked)
    finally:
        stop.set()
        sender.join(timeout=30)
    assert done.returncode == 0, done.stderr
    assert f"backed up to {backup}" in done.stdout
    assert after > len(before)  # intake went on while the copy was made
    assert backup.stat().st_mode & 0o077 == 0  # the copy holds everything: private like the database
    again = run(served.path, "db", "backup", str(backup))
    assert again.returncode == 1 and "already exists" in again.stderr

    # Restore: the copy in place of the database, opened by Inlet.
    restored = tmp_path / "restored" / "inlet.db"
    restored.parent.mkdir()
    shutil.copy(backup, restored)
    config = store.write_config(database={"url": f"sqlite:///{restored}"})
    status = run(config, "db", "status")
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout + status.stderr
    with sqlite3.connect(restored) as copy:
        raws = [bytes(raw).replace(b"\r\n", b"\n") for (raw,) in copy.execute("SELECT raw FROM inbound")]
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    for subject in before:  # every message acknowledged before the backup began is in it, once
        assert sum(f"Subject: {subject}\n".encode() in raw for raw in raws) == 1, subject
    assert len(raws) <= after
    assert served.stop() == 0
