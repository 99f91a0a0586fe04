"""Crash and outage proofs: `inlet serve` as real subprocesses under load, with faults injected from outside.

- the whole `inlet serve` SIGKILLed several times under mixed SMTP + webhook load: every 250 and
  every 202 is stored exactly once and applied exactly once, nothing stays pending (both databases);
- PostgreSQL stopped and started under load (a throwaway cluster this file starts on a free port,
  never the shared server): 451 and 503 + Retry-After while it is away, recovery without a restart;
- two `inlet serve` on one PostgreSQL database: identical alerts make one incident, each notification
  and each timer is handled once, and when one process is killed the other does all the work;
- the notify role SIGKILLed while a delivery is in flight: every notification arrives at least once,
  the interrupted attempt is recorded, and every duplicate is accounted for by one.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import threading
import time
from email.message import EmailMessage
from email.utils import make_msgid

import psycopg2
import pytest
import requests

from store.db import db
from store.models import PENDING, Inbound, Incident, Notification, NotificationAttempt, Timer
from tests.conftest import INLET, ROOT, SUPPORT, Served, Store, alive, free_port, in_db, wait_for
from tests.sinks import HttpSink

_pause = threading.Event().wait  # a pace between sends, not a wait for a result


class Load:
    """SMTP and webhook senders against some `inlet serve` until stopped: what was acknowledged, what refused."""

    def __init__(self, targets: list[Served], prefix: str, pace: float = 0.01):
        self.targets, self.prefix, self.pace = targets, prefix, pace
        self.mail: list[str] = []  # subjects answered 250
        self.hooks: list[str] = []  # titles answered 202
        self.refused: list[tuple[str, int, str | None]] = []  # (kind, code, Retry-After)
        self.unreachable = 0  # connection refused or dropped: no answer at all
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send_mail), threading.Thread(target=self._post_hooks)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _send_mail(self) -> None:
        n = 0
        while not self._stop.is_set():
            served, subject = self.targets[n % len(self.targets)], f"{self.prefix} mail {n}"
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "alice@customer.example", SUPPORT, subject
            msg["Message-ID"] = make_msgid(domain="customer.example")
            msg.set_content("Details follow.")
            try:
                with smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=15) as client:
                    client.send_message(msg)
                self.mail.append(subject)
            except smtplib.SMTPRecipientsRefused as exc:
                self.refused.append(("smtp", next(iter(exc.recipients.values()))[0], None))
            except smtplib.SMTPResponseException as exc:
                self.refused.append(("smtp", exc.smtp_code, None))
            except OSError:
                self.unreachable += 1
            n += 1
            _pause(self.pace)

    def _post_hooks(self) -> None:
        n = 0
        while not self._stop.is_set():
            served, title = self.targets[n % len(self.targets)], f"{self.prefix} hook {n}"
            try:
                answer = served.post_hook(title)
                if answer.status_code == 202:
                    self.hooks.append(title)
                else:
                    self.refused.append(("http", answer.status_code, answer.headers.get("Retry-After")))
            except requests.RequestException:
                self.unreachable += 1
            n += 1
            _pause(self.pace)


def nothing_pending() -> bool:
    return in_db(lambda: Inbound.select().where(Inbound.status == PENDING).count()) == 0


def assert_each_once(load: Load) -> None:
    """Every acknowledged input has exactly one Inbound row and exactly one incident of its own."""
    with db.connection_context():
        stored: dict[str, int] = {}
        outcome: dict[str, tuple] = {}
        for source, raw, *what in Inbound.select(
            Inbound.source, Inbound.raw, Inbound.status, Inbound.attempts, Inbound.reason, Inbound.decisions
        ).tuples():
            raw = bytes(raw)
            if source == "webhook":
                title = json.loads(raw)["title"]
            else:
                head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
                title = next(line[9:].decode() for line in head.split(b"\n") if line.startswith(b"Subject: "))
            stored[title] = stored.get(title, 0) + 1
            outcome[title] = tuple(what)
        titles: dict[str, int] = {}
        for (title,) in Incident.select(Incident.title).tuples():
            titles[title] = titles.get(title, 0) + 1
    for title in load.mail + load.hooks:
        assert stored.get(title) == 1, f"{title!r} stored {stored.get(title, 0)} times"
        assert titles.get(title) == 1, f"{title!r} made {titles.get(title, 0)} incidents: {outcome.get(title)}"
    assert all(n == 1 for n in stored.values()) and all(n == 1 for n in titles.values())


@contextlib.contextmanager
def running(store: Store, **sections):
    """`inlet serve` on ``store``; killed at the end whatever happened."""
    served = Served(store, mail={"throttle_count": 1_000_000}, **sections)  # one sender sends everything
    try:
        served.wait_started()
        yield served
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
        served.reader.join(timeout=10)
        served.proc.stdout.close()


def test_sigkill_under_mixed_load_keeps_every_acknowledged_input_once(store):
    # Each kill costs the Inbounds in hand an attempt (the poison rule: an attempt that never finishes counts),
    # and the worker has up to a batch in hand: with three kills an input could be quarantined by that rule,
    # which test_poison covers. Here more attempts than kills, so what is asserted is crash safety alone.
    with running(store, serve={"max_attempts": 10}) as served:
        with Load([served], "Crash", pace=0.03) as load:
            for _ in range(3):
                wait_for(lambda n=len(load.mail): len(load.mail) > n + 5, timeout=20, message="mail acknowledged")
                wait_for(lambda n=len(load.hooks): len(load.hooks) > n + 5, timeout=20, message="hooks acknowledged")
                served.kill()
                served.restart()
            wait_for(lambda n=len(load.mail): len(load.mail) > n + 5, timeout=20, message="mail after the restarts")
        assert load.mail and load.hooks
        assert {code for _, code, _ in load.refused} <= {421, 451, 503}, load.refused
        try:
            wait_for(nothing_pending, timeout=60, message="every stored input processed")
        except AssertionError as timeout:
            with db.connection_context():
                pending = list(Inbound.select(Inbound.id, Inbound.attempts, Inbound.reason)
                               .where(Inbound.status == PENDING).tuples())  # fmt: skip
            raise AssertionError(
                f"still pending (id, attempts, reason): {pending}\n{''.join(served.lines)[-6000:]}"
            ) from timeout
        assert_each_once(load)
        assert served.stop() == 0


# ------------------------------------------------------------ PostgreSQL, a cluster of our own


class Cluster:
    """A throwaway PostgreSQL cluster in a temporary folder on a free loopback port (initdb, pg_ctl)."""

    def __init__(self):
        self.bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        self.folder = tempfile.mkdtemp(prefix="inlet-pg-")
        self.port = free_port()
        # initdb refuses to run as root: the cluster then belongs to the postgres account.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_owner:
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", f"{self.folder}/data", "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_owner, f"{self.bin}/{tool}", *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", f"{self.folder}/data", "-o", options, "-l", f"{self.folder}/log", "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", f"{self.folder}/data", "-m", mode, "-w", "stop")

    def database(self, tmp_path) -> Store:
        with contextlib.closing(psycopg2.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres")) as admin:
            admin.autocommit = True
            admin.cursor().execute("CREATE DATABASE inlet")
        store = Store("postgres", f"postgresql://postgres@127.0.0.1:{self.port}/inlet?connect_timeout=2", tmp_path)
        done = subprocess.run([*INLET, "-c", str(store.write_config()), "db", "upgrade"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return store

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def cluster():
    made = Cluster()
    made.start()
    yield made
    made.remove()


@contextlib.contextmanager
def opened(store: Store):
    """The test's own connection to ``store`` (through the proxy, as the other tests read)."""
    from store.db import open_database

    open_database(store.config())
    try:
        yield
    finally:
        if not db.is_closed():
            db.close()
        db.obj.close_all()


def probe(served: Served, path: str) -> int:
    try:
        return requests.get(f"http://127.0.0.1:{served.web_port}{path}", timeout=5).status_code
    except requests.RequestException:
        return 0


def test_postgresql_outage_refuses_with_retry_and_recovers_without_restart(cluster, tmp_path):
    store = cluster.database(tmp_path)
    with opened(store), running(store) as served:
        roles = served.pids()
        with Load([served], "Outage", pace=0.05) as load:
            wait_for(lambda: len(load.mail) > 5 and len(load.hooks) > 5, timeout=20, message="load acknowledged")
            cluster.stop()
            wait_for(lambda: {"smtp", "http"} <= {kind for kind, *_ in load.refused}, timeout=30,
                     message="refusals from both listeners while the database is away")  # fmt: skip
            assert probe(served, "/readyz") == 503  # not ready: the database is away
            mail_before, hooks_before = len(load.mail), len(load.hooks)
            cluster.start()
            wait_for(lambda: len(load.mail) > mail_before + 5, timeout=40, message="mail acknowledged again")
            wait_for(lambda: len(load.hooks) > hooks_before + 5, timeout=40, message="hooks acknowledged again")
        assert served.pids() == roles  # recovered without any role process restarting
        smtp_codes = {code for kind, code, _ in load.refused if kind == "smtp"}
        assert smtp_codes and smtp_codes <= {421, 451}, load.refused
        http = [(code, retry) for kind, code, retry in load.refused if kind == "http"]
        assert http and all(code == 503 and retry and int(retry) > 0 for code, retry in http), http
        assert probe(served, "/readyz") == 200 and probe(served, "/healthz") == 200
        wait_for(nothing_pending, timeout=60, message="everything acknowledged processed after the outage")
        assert_each_once(load)
        # Normal speed after the outage: a new input becomes an incident at once, not after a backoff.
        began = time.monotonic()
        served.send_mail("After the outage")
        wait_for(lambda: in_db(lambda: Incident.get_or_none(Incident.title == "After the outage")), timeout=10,
                 message="an incident right after the outage")  # fmt: skip
        assert time.monotonic() - began < 5
        assert served.stop() == 0


# ------------------------------------------------------------ two processes on one PostgreSQL database


@pytest.fixture
def sinks():
    made = [HttpSink(free_port()).start() for _ in range(2)]
    yield made
    for sink in made:
        sink.stop()


def shared_sections(group_sink: HttpSink, escalation_sink: HttpSink) -> dict:
    return {
        "group": [
            {"name": "service-desk", "escalation": "fast", "channels": [f"json://{group_sink.url}"]},
            {"name": "network"},
            {"name": "security"},
        ],
        "escalation": [{"name": "fast", "steps": [{"after": "2s", "notify": [f"json://{escalation_sink.url}"]}]}],
        "notifications": {"apprise_throttle": "0s", "rate_limit": 1_000_000, "acknowledge_reporter": False},
    }


def deliveries(sink: HttpSink) -> dict[str, int]:
    """How many times the sink got each message, by incident reference (each kind of message apart)."""
    counted: dict[tuple[str, str], int] = {}
    for body in sink.json():
        found = re.search(r"INC-\d+", json.dumps(body))
        assert found, body
        key = (found.group(), body.get("title", ""))
        counted[key] = counted.get(key, 0) + 1
    by_ref: dict[str, int] = {}
    for (ref, _), n in counted.items():
        by_ref[ref] = max(by_ref.get(ref, 0), n)  # the most any one message to this incident arrived
    return by_ref


def test_two_processes_share_one_database_and_one_takes_over(pg_store, sinks):
    group_sink, escalation_sink = sinks
    sections = shared_sections(group_sink, escalation_sink)
    with running(pg_store, **sections) as first, running(pg_store, **sections) as second:
        # The same alert through both processes at once: one incident.
        answers = []
        threads = [threading.Thread(target=lambda s=s: answers.append(s.post_hook("Disk full on db1").status_code))
                   for s in (first, second) for _ in range(10)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [202] * 20
        with Load([first, second], "Shared", pace=0.02) as load:
            wait_for(lambda: len(load.mail) >= 20 and len(load.hooks) >= 20, timeout=30, message="load")
        wait_for(nothing_pending, timeout=60, message="every input processed")
        assert in_db(lambda: Incident.select().where(Incident.title == "Disk full on db1").count()) == 1
        assert_each_once(load)
        refs = {ref for (ref,) in in_db(lambda: Incident.select(Incident.ref).tuples())}
        # Each group notification delivered once, each escalation timer fired once, by one of the two.
        wait_for(lambda: set(deliveries(group_sink)) == refs, timeout=60, message="every group notification")
        wait_for(lambda: set(deliveries(escalation_sink)) == refs, timeout=60, message="every escalation")
        assert set(deliveries(group_sink).values()) == {1} and set(deliveries(escalation_sink).values()) == {1}
        assert in_db(lambda: Timer.select().where(Timer.status == PENDING).count()) == 0

        # One process killed: the other does all the work, timers included.
        first.kill()
        with Load([second], "Survivor", pace=0.02) as survivor:
            wait_for(lambda: len(survivor.mail) >= 10 and len(survivor.hooks) >= 10, timeout=30, message="load")
        wait_for(nothing_pending, timeout=60, message="the survivor processed everything")
        assert_each_once(survivor)
        refs = {ref for (ref,) in in_db(lambda: Incident.select(Incident.ref).tuples())}
        wait_for(lambda: set(deliveries(group_sink)) == refs, timeout=60, message="notifications by the survivor")
        wait_for(lambda: set(deliveries(escalation_sink)) == refs, timeout=60, message="escalations by the survivor")
        assert set(deliveries(group_sink).values()) == {1} and set(deliveries(escalation_sink).values()) == {1}
        survivor_pids = {str(pid) for pid in second.pids().values()}
        late = in_db(lambda: list(Timer.select(Timer.fired_by).where(Timer.incident.in_(
            Incident.select(Incident.id).where(Incident.title.startswith("Survivor")))).tuples()))  # fmt: skip
        assert late and {by.split(":")[1] for (by,) in late} <= survivor_pids
        assert second.stop() == 0


# ------------------------------------------------------------ the notify role killed mid-delivery


def test_notify_role_killed_mid_delivery_delivers_at_least_once_and_counts(store, sinks):
    group_sink, escalation_sink = sinks
    group_sink.delay = 1.0  # each delivery is in flight for a second: time to kill the sender during one
    sections = shared_sections(group_sink, escalation_sink)
    sections["escalation"][0]["steps"][0]["after"] = "1h"
    sections["notifications"].update(send_timeout="2s", lease="8s", backoff="1s")
    with running(store, **sections) as served:
        for n in range(4):
            served.send_mail(f"Mid-delivery {n}")
        wait_for(lambda: group_sink.requests, timeout=30, message="a delivery in flight")
        notify = served.pids()["notify"]
        os.kill(notify, signal.SIGKILL)
        wait_for(lambda: served.pids()["notify"] != notify, timeout=20, message="a new notify process")
        assert not alive(notify)

        def all_sent():
            rows = in_db(lambda: list(Notification.select().where(Notification.audience == "group")))
            return len(rows) == 4 and all(row.status == "sent" for row in rows)

        wait_for(all_sent, timeout=60, message="every group notification sent")
        got = deliveries(group_sink)
        refs = {ref for (ref,) in in_db(lambda: Incident.select(Incident.ref).tuples())}
        assert set(got) == refs  # every one at least once
        interrupted = in_db(lambda: list(NotificationAttempt.select().where(
            NotificationAttempt.detail.startswith("interrupted"))))  # fmt: skip
        assert interrupted and all(not attempt.ok for attempt in interrupted)
        duplicates = sum(n - 1 for n in got.values())
        assert duplicates <= len(interrupted)  # every duplicate is one an interrupted attempt may have sent
        assert served.stop() == 0
