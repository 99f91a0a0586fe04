"""Scale-out, as it runs: several real ``inlet serve`` processes sharing one database.

- Two ``inlet serve --only worker`` processes (on PostgreSQL two "machines", on SQLite two
  processes of one: a configuration and a data folder each) share 1,000 pending Inbounds of
  an alert storm: every Inbound is applied exactly once (processed, taken once), every repeat
  is counted once on the one incident of its fingerprint, no incident or timeline entry is
  duplicated, and both processes took part.
- Two web processes (``[web] processes = 2``) serve one port (``SO_REUSEPORT``), on both databases: both accept
  connections and answer requests.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading

import pytest
import tomli_w
from peewee import fn

from store.db import CLAIM_INBOUND, claimed, db
from store.models import PENDING, PROCESSED, Event, Inbound, Incident
from tests.conftest import ROOT, _fresh_database, base_config_dict, free_port, wait_for

INLET = [sys.executable, "-m", "gateway.cli.main"]
TOKEN = "t0ken-for-scale-out-tests"
INBOUNDS, FINGERPRINTS = 1000, 50


class Served:
    """One ``inlet serve`` (its own configuration file and data folder), its output as it comes."""

    def __init__(self, store, name: str, only: str, **sections):
        folder = store.tmp_path / name
        folder.mkdir()
        settings = base_config_dict(
            store.url,
            inlet={"data_dir": str(folder / "data"), "log_level": "info"},
            integration=[{"name": "storm", "kind": "alertmanager", "token_env": "SCALEOUT_TEST_TOKEN"}],
            **sections,
        )
        self.path = folder / "config.toml"
        self.path.write_text(tomli_w.dumps(settings))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SCALEOUT_TEST_TOKEN": TOKEN}
        self.proc = subprocess.Popen([*INLET, "-c", str(self.path), "serve", "--only", only], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def running(self) -> bool:
        assert self.proc.poll() is None, self.output
        return "inlet: running" in self.output

    def pids(self) -> dict[str, int]:
        """The pid of each role process, from the supervisor's lines."""
        return {m[1]: int(m[2]) for m in re.finditer(r"inlet: (\S+) \([^)]*\) started as pid (\d+)", self.output)}

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"inlet serve did not stop within 30s:\n{self.output}") from None


def serving(store):
    started: list[Served] = []

    def start(name: str, only: str, **sections) -> Served:
        started.append(Served(store, name, only, **sections))
        return started[-1]

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
        served.reader.join(timeout=10)
        served.proc.stdout.close()


@pytest.fixture
def serve(pg_store):
    yield from serving(pg_store)


@pytest.fixture
def serve_any(store):
    yield from serving(store)


def alert(n: int) -> bytes:
    """Alertmanager event n of the storm: one of FINGERPRINTS alerts, firing; events n and n + 1 of an
    even n are the same alert, so two workers taking neighbouring rows meet on a new alert."""
    name = f"Storm{n // 2 % FINGERPRINTS}"
    return json.dumps(
        {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="{name}"}}',
            "status": "firing",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": name, "instance": "node-1:9100", "severity": "warning"},
                    "annotations": {"summary": f"{name} is firing", "value": str(n)},
                    "startsAt": "2026-01-05T09:00:00Z",
                    "fingerprint": f"storm{n // 2 % FINGERPRINTS:04d}",
                }
            ],
        }
    ).encode()


def test_two_worker_processes_apply_each_inbound_exactly_once(serve_any, store):
    # PostgreSQL: two machines. SQLite: two `inlet serve` of one machine (a data folder each, so the
    # commit below wakes neither: they find the rows at their next [serve] poll_interval).
    machines = [serve_any(f"machine-{n}", "worker", serve={"poll_interval": "1s"}) for n in (1, 2)]
    wait_for(lambda: all(m.running() for m in machines), timeout=60, message="both worker processes to start")

    # The storm arrives while both are idle: one commit, whose NOTIFY wakes both.
    from gateway.core.clock import Clock

    now = Clock().now()
    rows = [
        {"source": "webhook", "integration": "storm", "received_at": now, "raw": alert(n), "dedup_key": f"storm-{n}"}
        for n in range(INBOUNDS)
    ]
    with db.connection_context(), db.atomic():
        Inbound.insert_many(rows).execute()
        if store.kind == "postgres":
            db.execute_sql("NOTIFY inlet_inbound")

    def drained() -> bool:
        with db.connection_context():
            return not Inbound.select().where(Inbound.status == PENDING).exists()

    wait_for(drained, timeout=60, interval=0.2, message="the two workers to apply 1,000 Inbounds")
    for machine in machines:
        assert machine.stop() == 0, machine.output

    with db.connection_context():
        statuses = dict(Inbound.select(Inbound.status, fn.COUNT(Inbound.id)).group_by(Inbound.status).tuples())
        assert statuses == {PROCESSED: INBOUNDS}
        # Taken once each: the attempt is counted when a worker takes the row.
        attempts = dict(Inbound.select(Inbound.attempts, fn.COUNT(Inbound.id)).group_by(Inbound.attempts).tuples())
        incidents = list(Incident.select())
        assert len(incidents) == FINGERPRINTS  # one per fingerprint: no race created a second
        assert sorted(i.signal_count for i in incidents) == [INBOUNDS // FINGERPRINTS] * FINGERPRINTS  # each once
        opened = (
            Event.select(Event.incident, fn.COUNT(Event.id)).where(Event.type == "created").group_by(Event.incident)
        )
        assert sorted(count for _, count in opened.tuples()) == [1] * FINGERPRINTS
        # Every timeline entry came from one Inbound and none is there twice.
        duplicated = (
            Event.select(Event.incident, Event.type, Event.inbound, fn.COUNT(Event.id))
            .group_by(Event.incident, Event.type, Event.inbound)
            .having(fn.COUNT(Event.id) > 1)
        )
        assert list(duplicated.tuples()) == []
        assert attempts == {1: INBOUNDS}
    # Both took part: each process logs the Inbounds it applied.
    applied = [set(re.findall(r"inbound (\d+) signal 0: (?:created|updated)", m.output)) for m in machines]
    assert all(applied), [len(a) for a in applied]
    assert not applied[0] & applied[1]
    assert len(applied[0] | applied[1]) == INBOUNDS


def server_pid(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the server end of the loopback TCP connection from ``client_port``."""
    inode = None
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
            if local == server_port and remote == client_port:
                inode = fields[9]
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:  # closed meanwhile
                continue
    return None


def test_two_web_processes_serve_one_port_and_both_take_requests(serve_any):
    port = free_port()
    front = serve_any("front", "web", web={"host": "127.0.0.1", "port": port, "processes": 2})
    wait_for(front.running, timeout=60, message="two web processes to start")
    pids = front.pids()
    assert set(pids) == {"web-1", "web-2"} and pids["web-1"] != pids["web-2"]
    assert front.output.count(f"inlet: web UI and webhooks on http://127.0.0.1:{port}/") == 2

    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(16)]
    answered_by = []
    for n, conn in enumerate(connections):
        conn.request(
            "POST",
            "/hooks/storm",
            body=alert(n),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        assert response.status == 202, response.read()
        response.read()
        answered_by.append(server_pid(port, conn.sock.getsockname()[1], list(pids.values())))
    for conn in connections:
        conn.close()
    # The kernel spread the connections over both processes (all 16 on one: odds of 1 in 32,768).
    assert set(answered_by) == set(pids.values()), answered_by
    with db.connection_context():
        assert Inbound.select().where(Inbound.integration == "storm").count() == 16  # each 202 stored its row
    assert front.stop() == 0, front.output


def test_several_web_processes_need_a_fixed_port(pg_store, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(base_config_dict(pg_store.url, web={"port": 0, "processes": 2})))
    done = subprocess.run([*INLET, "-c", str(path), "serve", "--only", "web"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert "[web] processes = 2 needs a fixed [web] port" in done.stderr


HOLD = """
import sys
from store.db import CLAIM_INBOUND, claimed, db, make_database
db.initialize(make_database(sys.argv[1]))
with claimed(CLAIM_INBOUND, 1) as taken:
    print("held" if taken else "refused", flush=True)
    sys.stdin.readline()
"""


def test_claims_belong_to_one_schema(pg_store, tmp_path):
    """Advisory locks are per database: an Inlet in another schema of the same database holding Inbound 1
    does not hold this Inlet's Inbound 1, and one in this schema does."""
    with _fresh_database("postgres", tmp_path / "other") as other:
        for url, ours in ((other.url, False), (pg_store.url, True)):
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLD, url], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            try:
                assert holder.stdout.readline().strip() == "held"
                with claimed(CLAIM_INBOUND, 1) as taken:
                    assert taken is not ours, url
            finally:
                holder.communicate("\n", timeout=10)
