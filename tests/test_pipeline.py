"""Durable intake (group commit, dedup) and the pipeline driver, on both databases."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time

import peewee
import pytest

from gateway.core.clock import FixedClock
from gateway.core.errors import ParseError, StoreUnavailable
from gateway.intake.writer import InboundRecord, InboundWriter, IntakeActivity
from gateway.pipeline import driver as pipeline_module
from gateway.pipeline import signal_steps
from gateway.pipeline.driver import Discard, Steps
from gateway.pipeline.tick import BUSY_BATCH, REPORT_EVERY, TRANSACTION_BATCH, pipeline_tick
from gateway.service import build_lifecycle, build_pipeline
from parsers.signal import RESOLVED, Signal
from store.db import db, local_write_turn, make_database, open_database, turn_wanted
from store.migrations import upgrade
from store.models import FAILED, IGNORED, PENDING, PROCESSED, Event, Inbound, Incident, Notification
from tests.conftest import ROOT, wait_for


@pytest.fixture
def writer(store):
    w = InboundWriter()
    w.start()
    yield w
    w.stop()


def record(i=0, key=None, raw=b"{}"):
    return InboundRecord(source="test", raw=raw, dedup_key=key, peer="127.0.0.1", envelope_to=("a@b",))


def test_writer_commits_concurrent_submissions_together(writer):
    results, errors = [], []

    def submit(n):
        try:
            for i in range(25):
                results.append(writer.store(record(key=f"k-{n}-{i}")))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({r.inbound_id for r in results}) == 200
    assert Inbound.select().where(Inbound.status == PENDING).count() == 200


def test_writer_deduplicates(writer):
    first = writer.store(record(key="mid:abc@example.org"))
    again = writer.store(record(key="mid:abc@example.org"))
    assert (again.inbound_id, again.duplicate, first.duplicate) == (first.inbound_id, True, False)
    assert Inbound.select().count() == 1
    # no key: never a duplicate
    assert writer.store(record()).inbound_id != writer.store(record()).inbound_id


def test_background_work_waits_while_intake_has_work_in_hand():
    writer = InboundWriter()

    class Session:  # stands for an SMTP session or a webhook request
        pass

    def waiter():
        writer.wait_while_busy(at_most=60)

    session, other = Session(), Session()
    writer.in_hand(session)
    writer.in_hand(other)
    waiting = threading.Thread(target=waiter)
    waiting.start()
    writer.out_of_hand(session)
    waiting.join(timeout=0.3)
    assert waiting.is_alive()  # the other is still in hand
    del other  # a session that disconnects lets go by itself
    wait_for(lambda: not waiting.is_alive(), timeout=10, message="the waiter to go on")
    started = threading.Thread(target=waiter)
    started.start()
    wait_for(lambda: not started.is_alive(), timeout=10, message="nothing in hand: no wait")


def test_writer_reports_an_unavailable_store(store):
    w = InboundWriter()
    w.start()
    try:
        db.execute_sql("DROP TABLE inbound CASCADE" if store.kind == "postgres" else "DROP TABLE inbound")
        with pytest.raises(StoreUnavailable, match="cannot store the message"):
            w.store(record(key="x"))
    finally:
        w.stop()


def test_writer_refuses_when_stopped(store):
    with pytest.raises(StoreUnavailable, match="not running"):
        InboundWriter().store(record())


def make_pipeline(store, parse):
    config = store.config(
        rule=[{"name": "vpn", "subject": {"any": ["vpn"]}, "group": "network", "impact": "high", "urgency": "high"}]
    )
    clock = FixedClock()
    lifecycle = build_lifecycle(config, clock)
    pipeline = build_pipeline(config, lifecycle, clock)
    pipeline.parsers["test"] = parse
    pipeline.steps["test"] = Steps(list(GENERIC_STEPS))
    return pipeline


# The steps of a source with no steps of its own (the parsers of these tests make generic signals).
GENERIC_STEPS = [
    ("correlate", signal_steps.correlate),
    ("classify", signal_steps.classify),
    ("allocate", signal_steps.allocate),
    ("apply", signal_steps.apply),
]


def stored(raw=b"{}", key=None) -> int:
    return Inbound.create(
        source="test", raw=raw, dedup_key=key, received_at=FixedClock().now(), status=PENDING
    ).id  # fmt: skip


def test_signal_becomes_a_classified_incident(store):
    pipeline = make_pipeline(store, lambda ctx: [Signal(source="generic", title="VPN down", fingerprint="fp1")])
    inbound_id = stored()
    assert pipeline.run(inbound_id) == PROCESSED
    incident = Incident.get()
    assert (incident.title, incident.group, incident.priority) == ("VPN down", "network", "P1")
    assert incident.signal_count == 1
    assert incident.decisions == {"group": "vpn", "impact": "vpn", "urgency": "vpn"}
    inbound = Inbound.get_by_id(inbound_id)
    assert inbound.incident_id == incident.id
    steps = [d["step"] for d in inbound.decisions]
    assert steps == ["parse", "correlate", "classify", "allocate", "apply", "steps"]
    assert inbound.decisions[-1] == {
        "step": "steps",
        "signal": 0,
        "ran": ["correlate", "classify", "allocate", "apply"],
    }
    assert pipeline.run(inbound_id) is None  # applied once only


def test_repeats_correlate_and_recovery_resolves(store):
    signals = {b"fire": "firing", b"ok": RESOLVED}
    pipeline = make_pipeline(
        store, lambda ctx: [Signal(source="generic", title="Disk", fingerprint="fp", status=signals[ctx.inbound.raw])]
    )
    for _ in range(3):
        pipeline.run(stored(b"fire"))
    incident = Incident.get()
    assert Incident.select().count() == 1 and incident.signal_count == 3
    assert Event.select().where(Event.incident == incident).count() == 1  # repeats are not news
    pipeline.run(stored(b"ok"))
    resolved = Incident.get()
    assert (resolved.status, resolved.resolution_code) == ("resolved", "auto-recovered")
    assert pipeline.run(stored(b"fire")) == PROCESSED
    assert (Incident.get().status, Incident.get().reopen_count) == ("in_progress", 1)


def test_a_recovery_without_incident_is_ignored(store):
    pipeline = make_pipeline(store, lambda ctx: [Signal(source="generic", title="x", fingerprint="f", status=RESOLVED)])
    inbound_id = stored()
    assert pipeline.run(inbound_id) == IGNORED
    assert "no open incident" in Inbound.get_by_id(inbound_id).reason
    assert Incident.select().count() == 0


def test_parse_error_quarantines_the_input(store):
    def parse(ctx):
        raise ParseError("field 'alerts': required")

    pipeline = make_pipeline(store, parse)
    inbound_id = stored(b"raw bytes kept")
    assert pipeline.run(inbound_id) == FAILED
    inbound = Inbound.get_by_id(inbound_id)
    assert (bytes(inbound.raw), inbound.reason) == (b"raw bytes kept", "parse error: field 'alerts': required")


def test_a_bug_in_a_parser_quarantines_too(store):
    pipeline = make_pipeline(store, lambda ctx: 1 / 0)
    inbound_id = stored()
    assert pipeline.run(inbound_id) == FAILED
    assert "ZeroDivisionError" in Inbound.get_by_id(inbound_id).reason


def test_discard_at_parse_is_ignored_with_reason(store):
    def parse(ctx):
        raise Discard("auto-reply: Auto-Submitted: auto-replied")

    pipeline = make_pipeline(store, parse)
    inbound_id = stored()
    assert pipeline.run(inbound_id) == IGNORED
    assert Inbound.get_by_id(inbound_id).reason == "auto-reply: Auto-Submitted: auto-replied"


def test_unknown_source_fails_visibly(store):
    pipeline = make_pipeline(store, lambda ctx: [])
    inbound = Inbound.create(source="fax", raw=b"", received_at=FixedClock().now())
    assert pipeline.run(inbound.id) == FAILED
    assert "no parser for inputs from 'fax'" in Inbound.get_by_id(inbound.id).reason


def test_a_failing_step_rolls_back_the_whole_input(store):
    pipeline = make_pipeline(
        store, lambda ctx: [Signal(source="generic", title="a", fingerprint="1"), Signal(source="generic", title="b")]
    )

    def explode(ctx):
        if ctx.index == 1:
            raise RuntimeError("boom")

    pipeline.steps["test"].steps.append(("explode", explode))
    inbound_id = stored()
    assert pipeline.run(inbound_id) == PENDING  # the error is the input's, never the worker's
    assert Incident.select().count() == 0  # the first signal's incident was rolled back with it
    assert (Event.select().count(), Notification.select().count()) == (0, 0)
    inbound = Inbound.get_by_id(inbound_id)
    assert (inbound.status, inbound.attempts) == (PENDING, 1)  # and the input waits for a retry
    assert inbound.reason == "attempt 1 of 3 failed: step 'explode' of signal 1: RuntimeError: boom"
    assert pipeline.run(inbound_id) == PENDING
    assert pipeline.run(inbound_id) == FAILED  # the third attempt: quarantined with the error
    inbound = Inbound.get_by_id(inbound_id)
    assert (inbound.status, inbound.attempts) == (FAILED, 3)
    assert inbound.reason == "failed 3 times; last error: step 'explode' of signal 1: RuntimeError: boom"
    assert inbound.decisions[-1]["result"] == "failed"  # what the steps decided before it failed
    assert (Incident.select().count(), Event.select().count(), Notification.select().count()) == (0, 0, 0)


def test_an_attempt_that_never_finishes_counts_too(store):
    """A worker killed in the middle of an input (here: an exception no handler takes) still used an attempt."""
    pipeline = make_pipeline(store, lambda ctx: [Signal(source="generic", title="slow", fingerprint="s")])

    def killed(ctx):
        raise KeyboardInterrupt  # stands for SIGKILL or the time limit: nothing after this line runs

    pipeline.steps["test"].steps.insert(0, ("killed", killed))
    inbound_id = stored()
    for attempt in (1, 2, 3):
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(inbound_id)
        assert Inbound.get_by_id(inbound_id).attempts == attempt
    assert pipeline.run(inbound_id) == FAILED  # taken a fourth time: quarantined instead
    inbound = Inbound.get_by_id(inbound_id)
    assert (inbound.status, inbound.attempts) == (FAILED, 3) and "did not finish" in inbound.reason
    assert pipeline.record_failure(inbound_id, "late") is None  # not pending any more: nothing to record


def test_record_failure_is_what_a_supervisor_calls_after_stopping_a_worker(store):
    pipeline = make_pipeline(store, lambda ctx: [Signal(source="generic", title="ok", fingerprint="o")])
    inbound_id = stored()
    Inbound.update(attempts=1).where(Inbound.id == inbound_id).execute()  # taken once, then stopped
    assert pipeline.record_failure(inbound_id, "stopped after the step time limit (30s)") == PENDING
    assert Inbound.get_by_id(inbound_id).reason == "attempt 1 of 3 failed: stopped after the step time limit (30s)"
    assert pipeline.run(inbound_id) == PROCESSED  # the next attempt may still succeed
    assert Inbound.get_by_id(inbound_id).attempts == 2


def test_the_worker_goes_on_with_the_next_input_in_the_same_tick(store):
    pipeline = make_pipeline(store, lambda ctx: [Signal(source="generic", title=ctx.inbound.raw.decode())])

    def poison(ctx):
        if ctx.signal.title == "poison":
            raise ValueError("bad input")

    pipeline.steps["test"].steps.append(("poison", poison))
    first, second = stored(b"poison"), stored(b"fine")
    tick = pipeline_tick(pipeline)
    assert tick() == 2
    assert Inbound.get_by_id(second).status == PROCESSED
    assert Inbound.get_by_id(first).status == PENDING
    tick(), tick()
    assert Inbound.get_by_id(first).status == FAILED
    assert tick() == 0  # the line is clear
    assert [i.title for i in Incident.select()] == ["fine"]


def test_text_no_store_can_keep_is_replaced(store):
    """A lone surrogate (e.g. from a UTF-7 body) or NUL would make the write fail on both databases."""
    title, text = "Disk \ud800 full\x00", "line \udcff one"
    pipeline = make_pipeline(
        store, lambda ctx: [Signal(source="generic", title=title, text=text, labels={"k\ud800": "v\x00"})]
    )
    inbound_id = stored()
    assert pipeline.run(inbound_id) == PROCESSED
    incident = Incident.get()
    assert incident.title == "Disk \ufffd full\ufffd" and "line \ufffd one" in incident.description


def batch_pipeline(store):
    """Each Inbound's raw text is its signal's title and fingerprint: one incident per Inbound."""
    return make_pipeline(
        store, lambda ctx: [Signal(source="generic", title=ctx.inbound.raw.decode(), fingerprint=ctx.inbound.raw)]
    )


def applied() -> dict[str, int]:
    """How many incidents and creation events each title has (1 and 1 when applied exactly once)."""
    counts = {}
    for incident in Incident.select():
        created = Event.select().where((Event.incident == incident) & (Event.type == "created")).count()
        counts[incident.title] = (counts.get(incident.title, (0, 0))[0] + 1, created)
    return counts


@pytest.fixture
def one_transaction(monkeypatch):
    """Every batch in one transaction, however slow the machine (TURN_BUDGET cuts it otherwise)."""
    monkeypatch.setattr(pipeline_module, "TURN_BUDGET", 600.0)


def test_a_batch_that_fails_halfway_commits_the_others_and_retries_the_failing_one_alone(store, one_transaction):
    pipeline = batch_pipeline(store)
    calls = []

    def explode(ctx):
        calls.append(ctx.inbound.raw)
        if ctx.inbound.raw == b"m5":
            raise RuntimeError("boom")

    pipeline.steps["test"].steps.append(("explode", explode))
    ids = [stored(f"m{i}".encode()) for i in range(10)]
    results = pipeline.run_batch(ids)
    assert results == {i: (PENDING if i == ids[5] else PROCESSED) for i in ids}
    assert applied() == {f"m{i}": (1, 1) for i in range(10) if i != 5}  # the others once each, none twice
    assert calls.count(b"m5") == 2  # in the batch, then alone (the same attempt: counted once)
    failing = Inbound.get_by_id(ids[5])
    assert (failing.status, failing.attempts) == (PENDING, 1)
    assert failing.reason == "attempt 1 of 3 failed: step 'explode' of signal 0: RuntimeError: boom"
    assert [row.attempts for row in Inbound.select().where(Inbound.id != ids[5])] == [1] * 9
    assert pipeline.run_batch(ids) == {ids[5]: PENDING}  # tried before: alone, the others are done
    assert pipeline.run_batch(ids) == {ids[5]: FAILED}  # the poison rules hold: quarantined at the third
    assert applied() == {f"m{i}": (1, 1) for i in range(10) if i != 5}


def test_a_batch_whose_transaction_breaks_runs_each_alone_and_applies_each_once(store, one_transaction):
    """A database error (not one input's fault) rolls the whole batch back: each runs again alone."""
    pipeline = batch_pipeline(store)
    broken = []

    def database_gone(ctx):
        if ctx.inbound.raw == b"m3" and not broken:
            broken.append(1)
            raise peewee.InterfaceError("connection lost")

    pipeline.steps["test"].steps.append(("database", database_gone))
    ids = [stored(f"m{i}".encode()) for i in range(6)]
    assert pipeline.run_batch(ids) == dict.fromkeys(ids, PROCESSED)
    assert applied() == {f"m{i}": (1, 1) for i in range(6)}
    assert [row.attempts for row in Inbound.select()] == [1] * 6


def test_a_batch_that_never_finishes_costs_its_inbounds_one_attempt_and_then_each_runs_alone(store, one_transaction):
    pipeline = batch_pipeline(store)

    def killed(ctx):
        if ctx.inbound.raw == b"m2":
            raise KeyboardInterrupt  # stands for SIGKILL or the time limit: the batch is never committed

    pipeline.steps["test"].steps.insert(0, ("killed", killed))
    ids = [stored(f"m{i}".encode()) for i in range(5)]
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_batch(ids)
    assert applied() == {}
    assert [row.attempts for row in Inbound.select()] == [1] * 5
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_batch(ids)  # each alone now: the two before m2 are applied, m2 stops the run again
    assert applied() == {"m0": (1, 1), "m1": (1, 1)}
    for _ in range(3):
        with contextlib.suppress(KeyboardInterrupt):
            pipeline.run_batch(ids)
    assert applied() == {f"m{i}": (1, 1) for i in range(5) if i != 2}  # the innocent ones: used 2 attempts
    assert [row.attempts for row in Inbound.select().where(Inbound.id != ids[2])] == [2] * 4
    poisoned = Inbound.get_by_id(ids[2])
    assert (poisoned.status, poisoned.attempts) == (FAILED, 3) and "did not finish" in poisoned.reason


def test_inputs_tried_before_go_through_while_intake_commits_between_them(store):
    """After a crash the worker finds Inbounds with an attempt counted; intake (another connection) commits
    new rows meanwhile. On SQLite a SELECT still being read holds its snapshot: a write of the same
    connection then fails at once ("database is locked", no busy wait), and the worker backed off for up
    to 30 s per tick while the backlog grew."""
    pipeline = batch_pipeline(store)
    ids = [stored(f"m{i}".encode()) for i in range(4)]
    Inbound.update(attempts=1).execute()  # each was in hand when the worker was killed

    def intake_commits(inbound_id):
        if inbound_id is None:
            return
        other = threading.Thread(target=lambda: db.connection_context()(stored)(f"new{inbound_id}".encode()))
        other.start()
        other.join(timeout=30)

    assert pipeline.run_batch(ids, intake_commits) == dict.fromkeys(ids, PROCESSED)
    assert applied() == {f"m{i}": (1, 1) for i in range(4)}
    assert [row.attempts for row in Inbound.select().where(Inbound.id.in_(ids))] == [2] * 4


@pytest.mark.parametrize("budget", [0.0, 600.0])
def test_the_worker_tick_applies_every_inbound_once_in_batches(store, monkeypatch, budget):
    """Batches cut into transactions as the budget says (0: one Inbound each) apply each Inbound once."""
    monkeypatch.setattr(pipeline_module, "TURN_BUDGET", budget)
    pipeline = batch_pipeline(store)
    ids = [stored(f"m{i}".encode()) for i in range(120)]
    tick = pipeline_tick(pipeline, batch=200)
    assert tick() == 120
    assert tick() == 0
    assert applied() == {f"m{i}": (1, 1) for i in range(120)}
    assert set(Inbound.select(Inbound.status).tuples()) == {(PROCESSED,)}
    assert max(row.attempts for row in Inbound.select()) == 1 and len(ids) == 120


@pytest.mark.parametrize("busy", [False, True])
def test_while_intake_is_busy_the_worker_takes_short_units_between_its_waits(store, busy):
    """Intake with work in hand (here or in a listener process) makes the worker wait before each unit and
    keep its units short (BUSY_BATCH): one SMTP session keeps its pace while every role runs."""
    pipeline = batch_pipeline(store)
    for i in range(120):
        stored(f"m{i}".encode())
    waits: list[float] = []
    tick = pipeline_tick(pipeline, batch=200, before_each=waits.append, busy=lambda: busy)
    assert tick() == 120
    assert applied() == {f"m{i}": (1, 1) for i in range(120)}
    unit = BUSY_BATCH if busy else TRANSACTION_BATCH
    assert len(waits) == -(-120 // unit)  # a wait before each unit


def test_a_worker_behind_intake_neither_waits_nor_shortens_its_units(store):
    """A tick that finds a full page pending (intake outpaces the worker) does not wait for intake: waiting
    before every short unit left the worker a fifth of its pace while a webhook storm lasted."""
    pipeline = batch_pipeline(store)
    for i in range(120):
        stored(f"m{i}".encode())
    waits: list[float] = []
    tick = pipeline_tick(pipeline, batch=100, before_each=waits.append, busy=lambda: True)
    assert tick() == 100  # a full page: behind
    assert waits == []
    assert tick() == 20  # caught up: waits again, short units
    assert len(waits) == -(-20 // BUSY_BATCH)
    assert applied() == {f"m{i}": (1, 1) for i in range(120)}


def test_the_tick_tells_the_supervisor_the_inbound_in_hand_per_unit_not_per_inbound(store):
    """The supervisor hears which Inbound is in hand when a unit begins (at most every REPORT_EVERY within it)
    and that none is before each wait and when the tick ends: a few lines, not three per Inbound."""
    pipeline = batch_pipeline(store)
    ids = [stored(f"m{i}".encode()) for i in range(120)]
    lines: list[int | None] = []
    tick = pipeline_tick(pipeline, batch=200, before_each=lambda spent: None, report=lines.append)
    started = time.monotonic()
    assert tick() == 120
    took = time.monotonic() - started
    assert applied() == {f"m{i}": (1, 1) for i in range(120)}
    assert lines[-1] is None
    assert set(lines) - {None} <= set(ids) and lines[0] == ids[0]
    # three units of 50, a line each way, and one more per REPORT_EVERY within them (was 3 per Inbound)
    assert len(lines) <= 2 * 3 + 1 + took / REPORT_EVERY


WAIT_FOR_TURN = """
import sys
from store.db import db, local_write_turn, make_database
db.initialize(make_database(sys.argv[1]))
print("waiting", flush=True)
with local_write_turn():
    print("took", flush=True)
"""


def test_a_writer_waiting_for_the_sqlite_turn_is_seen_by_its_holder(tmp_path):
    """A process waiting for the write turn says so (store.db.turn_wanted): the pipeline's batch, which holds
    the turn, commits at the next Inbound instead of after its whole time budget."""
    url = f"sqlite:///{tmp_path / 'turn.db'}"
    db.initialize(make_database(url))
    with local_write_turn():
        assert not turn_wanted()
        other = subprocess.Popen(
            [sys.executable, "-c", WAIT_FOR_TURN, url], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        try:
            assert other.stdout.readline().strip() == "waiting"
            wait_for(turn_wanted, timeout=10, message="the waiting writer to be seen")
        except BaseException:
            other.kill()
            other.communicate()
            raise
    out, _ = other.communicate(timeout=10)
    assert out.strip() == "took" and other.returncode == 0
    assert not turn_wanted()


STAMPING = """
import sys, time
from gateway.intake.writer import IntakeActivity
activity = IntakeActivity(sys.argv[1])
print("stamping", flush=True)
while sys.stdin.readline() == "more\\n":  # a stamp per line, as a session stamps per message
    activity.stamp()
    print("stamped", flush=True)
"""


def test_the_worker_of_another_process_sees_the_listeners_work_in_hand(tmp_path):
    """The roles run in separate processes: a listener's work in hand reaches the pipeline worker's
    wait through the shared IntakeActivity stamp, and a quiet listener makes it wait not at all."""
    writer = InboundWriter(activity=IntakeActivity(tmp_path))
    assert not writer.activity.fresh()
    listener = subprocess.Popen([sys.executable, "-c", STAMPING, str(tmp_path)], cwd=ROOT, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert listener.stdout.readline().strip() == "stamping"

        def stamped_and_seen() -> bool:
            listener.stdin.write("more\n")
            listener.stdin.flush()
            assert listener.stdout.readline().strip() == "stamped"
            return writer.activity.fresh()

        wait_for(stamped_and_seen, timeout=10, message="the other process's stamp to be seen")
    finally:
        listener.communicate("stop\n", timeout=10)
    wait_for(lambda: not writer.activity.fresh(), timeout=10, message="the stamp to go stale")
    began = time.monotonic()
    writer.wait_while_busy(30)  # nothing in hand here or there: no wait
    assert time.monotonic() - began < 10


def test_a_worker_kept_from_the_sqlite_lock_tries_again_each_interval_not_with_growing_backoff(tmp_path, caplog):
    """Another writer (a backup tool, a sqlite3 shell) holds SQLite's write lock longer than the busy
    timeout: the worker's tick fails with "database is locked". That is contention, not an outage: the
    worker tries again every poll interval, so the backlog goes through about an interval after the lock
    is released. Backing off 1, 2, 4 … 30 s as for an outage left it waiting up to 30 s more.
    SQLite only: on PostgreSQL a held lock makes the worker wait, it does not fail."""
    import sqlite3

    from gateway.service import Service
    from tests.conftest import Store

    url = f"sqlite:///{tmp_path / 'inlet.db'}"
    config = Store("sqlite", url, tmp_path).config(database={"url": url, "busy_timeout": "1s"})
    open_database(config)
    upgrade()
    db.close()
    with db.connection_context():
        inbound = Inbound.create(source="smtp", raw=b"From: a@example.org\r\nSubject: printer\r\n\r\njammed\r\n",
                                 received_at=FixedClock().now(), status=PENDING)  # fmt: skip
    service = Service(config, roles={"worker"}, clock=FixedClock())
    holder = sqlite3.connect(tmp_path / "inlet.db", isolation_level=None, timeout=10)
    holder.execute("BEGIN IMMEDIATE")  # the lock, held past the worker's busy timeout several times over
    try:
        with caplog.at_level("WARNING", logger="inlet.worker"):
            service.start()
            wait_for(lambda: caplog.text.count("retrying in") >= 4, timeout=60, message="the worker kept out 4 times")
        assert _status(inbound.id) == PENDING
        holder.execute("COMMIT")
        released = time.monotonic()
        wait_for(lambda: _status(inbound.id) == PROCESSED, timeout=30, message="the Inbound applied")
        assert time.monotonic() - released < 3.5  # about one poll interval (1 s), not the 8 s of a 4th back-off
        assert caplog.text.count("database busy") >= 4 and "database unavailable" not in caplog.text
    finally:
        holder.close()
        service.stop()


def _status(inbound_id: int) -> str:
    with db.connection_context():
        return Inbound.get_by_id(inbound_id).status
