"""Escalation: timers scheduled by the lifecycle, fired once by the worker, cancelled when moot.

Time is a FixedClock moved by the tests; the exactly-once tests run real
concurrent workers (threads on both databases, processes on PostgreSQL).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta

import pytest

from gateway.core.clock import FixedClock
from gateway.core.errors import NotFound, TransitionError
from gateway.incidents.escalation import ESCALATION
from gateway.service import build_lifecycle, build_timer_worker
from store.db import db
from store.models import PENDING, Event, Incident, Notification, Timer

POLICIES = [
    {
        "name": "default",
        "steps": [
            {"after": "5m", "when": "unacknowledged", "notify": ["json://contacts/"]},
            {"after": "15m", "when": "unacknowledged", "managers": True, "flag": True},
            {"after": "0s", "when": "resolve_sla_warning", "notify": ["json://warn/"]},
            {"after": "0s", "when": "resolve_sla_breach", "notify": ["json://owner/"]},
        ],
    },
    {"name": "p1", "steps": [{"after": "1m", "when": "unacknowledged", "notify": ["json://p1/"]}]},
]
GROUPS = [
    {"name": "service-desk", "escalation": "default", "managers": ["json://mgr/"], "channels": ["json://sd/"]},
    {
        "name": "network",
        "escalation": "default",
        "escalation_by_priority": {"P1": "p1"},
        "channels": ["json://net/"],
        "managers": ["json://net-mgr/"],
    },
    {"name": "security"},
]


def sections(**extra):
    return {"group": GROUPS, "escalation": POLICIES, **extra}


@pytest.fixture
def clock():
    return FixedClock()


@pytest.fixture
def lc(store, clock):
    return build_lifecycle(store.config(**sections()), clock)


@pytest.fixture
def timers(lc):
    return build_timer_worker(lc)


def create(lc, **kwargs):
    kwargs.setdefault("title", "Printer on fire")
    kwargs.setdefault("group", "service-desk")
    return lc.create(actor="alice", **kwargs)


def timer_rows(incident, kind=ESCALATION):
    return {t.step: t for t in Timer.select().where((Timer.incident == incident) & (Timer.kind == kind))}


def pages(incident=None, template=None):
    query = Notification.select().where(Notification.audience == "escalation").order_by(Notification.id)
    if incident is not None:
        query = query.where(Notification.incident == incident)
    if template is not None:
        query = query.where(Notification.template == template)
    return list(query)


def escalated_events(incident):
    return list(Event.select().where((Event.incident == incident) & (Event.type == "escalated")))


def test_create_schedules_each_step_at_its_point(lc, clock):
    incident = create(lc)  # P3: resolve 1d, warning at 80 %
    rows = timer_rows(incident)
    opened = incident.opened_at
    assert {s: (t.status, t.due_at) for s, t in rows.items()} == {
        0: (PENDING, opened + timedelta(minutes=5)),
        1: (PENDING, opened + timedelta(minutes=15)),
        2: (PENDING, opened + timedelta(days=1) * 0.8),
        3: (PENDING, opened + timedelta(days=1)),
    }


def test_unacknowledged_steps_fire_once_page_and_flag(lc, timers, clock):
    incident = create(lc)
    assert timers.tick() == 0  # nothing due yet
    clock.advance(minutes=5)
    assert timers.tick() == 1
    assert timers.tick() == 0  # a fired step never fires again
    [page] = pages(incident)
    assert (page.template, page.targets) == ("escalation", ["json://contacts/"])
    assert page.context["when"] == "unacknowledged" and page.context["step"] == 0
    assert page.event.type == "escalated"
    assert not Incident.get_by_id(incident.id).escalated  # step 0 has no flag
    clock.advance(minutes=10)
    assert timers.tick() == 1
    latest = pages(incident)[-1]
    assert latest.targets == ["json://mgr/"]  # managers = true: the group's management
    assert Incident.get_by_id(incident.id).escalated
    # one timeline entry per escalation: no separate "escalated: False → True" change
    assert len(pages(incident)) == 2 and len(escalated_events(incident)) == 2
    assert Event.select().where(Event.incident == incident.id, Event.field == "escalated").count() == 0
    assert {t.status for s, t in timer_rows(incident).items() if s < 2} == {"fired"}


def test_acknowledge_cancels_the_unacknowledged_steps(lc, timers, clock):
    incident = create(lc)
    clock.advance(minutes=3)
    lc.acknowledge(incident.ref, "bob")
    rows = timer_rows(incident)
    assert (rows[0].status, rows[1].status) == ("cancelled", "cancelled")
    assert (rows[2].status, rows[3].status) == (PENDING, PENDING)
    clock.advance(hours=1)
    assert timers.tick() == 0
    assert pages(incident) == []


def test_a_fired_step_rechecks_its_condition(lc, timers, clock):
    incident = create(lc)
    lc.acknowledge(incident.ref, "bob")
    Timer.update(status=PENDING).where(Timer.incident == incident).execute()  # as if the hook had missed it
    clock.advance(minutes=20)
    assert timers.tick() == 2  # both handled: cancelled, not fired
    assert {timer_rows(incident)[s].status for s in (0, 1)} == {"cancelled"}
    assert pages(incident) == [] and escalated_events(incident) == []


def test_sla_warning_then_breach(lc, timers, clock):
    incident = create(lc)
    lc.acknowledge(incident.ref, "bob")
    clock.advance(hours=19, minutes=11)
    assert timers.tick() == 0
    clock.advance(minutes=1)  # 19h12m = 80 % of 1d
    assert timers.tick() == 1
    [warning] = pages(incident, "sla_warning")
    assert warning.targets == ["json://warn/"]
    clock.advance(hours=5)
    assert timers.tick() == 1
    [breach] = pages(incident, "sla_breach")
    assert breach.targets == ["json://owner/"] and breach.context["when"] == "resolve_sla_breach"


def test_hold_stops_the_sla_steps_and_resume_moves_them(lc, timers, clock):
    incident = create(lc)
    lc.start(incident.ref, "bob")
    clock.advance(hours=1)
    lc.hold(incident.ref, "bob", "waiting for the reporter")
    assert {timer_rows(incident)[s].status for s in (2, 3)} == {"cancelled"}
    clock.advance(hours=20)  # past the original warning point, but on hold
    assert timers.tick() == 0
    lc.resume(incident.ref, "bob")
    rows = timer_rows(incident)
    assert rows[2].status == PENDING
    assert rows[2].due_at == incident.opened_at + timedelta(hours=19, minutes=12) + timedelta(hours=20)


def test_a_priority_change_reschedules(lc, clock):
    incident = create(lc)
    before = timer_rows(incident)[3].due_at
    clock.advance(minutes=1)
    changed = lc.update(incident.ref, "alice", impact="high", urgency="high", reason="whole site down")
    assert changed.priority == "P1"
    after = timer_rows(incident)[3].due_at
    assert after == incident.opened_at + timedelta(hours=4) and after < before
    assert Event.get(Event.field == "priority").new == "P1"


def test_per_priority_policy(lc, timers, clock):
    incident = create(lc, group="network", impact="high", urgency="high")
    assert set(timer_rows(incident)) == {0}
    assert timer_rows(incident)[0].data == {"policy": "p1"}
    clock.advance(minutes=1)
    assert timers.tick() == 1
    assert pages(incident)[0].targets == ["json://p1/"]


def test_resolve_and_cancel_cancel_every_step(lc, timers, clock):
    a, b = create(lc), create(lc)
    lc.resolve(a.ref, "bob", code="fixed", notes="put it out", cause="hardware")
    lc.cancel(b.ref, "bob", "duplicate")
    for incident in (a, b):
        assert {t.status for t in timer_rows(incident).values()} == {"cancelled"}
    clock.advance(days=2)
    assert timers.tick() == 0


def test_functional_escalation_moves_group_and_pages_it(lc, clock):
    incident = create(lc)
    clock.advance(minutes=2)
    moved = lc.escalate(incident.ref, "alice", "functional", "needs the network team", group="network")
    assert (moved.group, moved.reassignment_count, moved.escalated) == ("network", 1, True)
    [page] = pages(incident)
    assert page.targets == ["json://net/"] and page.context["kind"] == "functional"
    [event] = escalated_events(incident)
    assert (event.new, event.body, event.actor) == ("functional", "needs the network team", "alice")
    assert event.data["moved"] == ["service-desk", "network"]  # the move is part of the one entry
    assert not Event.select().where(Event.field == "group").exists()


def test_hierarchical_escalation_pages_management(lc):
    incident = create(lc)
    lc.escalate(incident.ref, "alice", "hierarchical", "customer threatens to cancel")
    [page] = pages(incident)
    assert page.targets == ["json://mgr/"] and page.context["reason"] == "customer threatens to cancel"
    assert Incident.get_by_id(incident.id).escalated


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"kind": "hierarchical", "reason": "  "}, TransitionError, "a reason is required"),
        ({"kind": "functional", "reason": "x"}, TransitionError, "name another group"),
        ({"kind": "functional", "reason": "x", "group": "service-desk"}, TransitionError, "name another group"),
        ({"kind": "functional", "reason": "x", "group": "nope"}, NotFound, "no group"),
        ({"kind": "sideways", "reason": "x"}, TransitionError, "kind must be one of"),
    ],
)
def test_manual_escalation_refusals(lc, kwargs, error, match):
    incident = create(lc)
    kwargs = dict(kwargs)
    kind = kwargs.pop("kind")
    with pytest.raises(error, match=match):
        lc.escalate(incident.ref, "alice", kind, **kwargs)
    assert pages(incident) == []


def test_resolved_incident_does_not_escalate(lc):
    incident = create(lc)
    lc.resolve(incident.ref, "bob", code="fixed", notes="n", cause="c")
    with pytest.raises(TransitionError, match="only an open incident"):
        lc.escalate(incident.ref, "alice", "hierarchical", "too late")


def test_two_threads_fire_each_step_once(store, clock):
    config = store.config(**sections())
    lc = build_lifecycle(config, clock)
    incidents = [create(lc, title=f"Incident {i}") for i in range(20)]
    clock.advance(minutes=16)  # steps 0 and 1 of each are due
    db.close()
    fired = []

    def run(name):
        worker = build_timer_worker(build_lifecycle(config, clock))
        worker.name = name
        with db.connection_context():
            total = 0
            while Timer.select().where((Timer.status == PENDING) & (Timer.due_at <= clock.now())).exists():
                total += worker.tick(batch=5)
            fired.append(total)

    threads = [threading.Thread(target=run, args=(f"t{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    db.connect(reuse_if_open=True)
    assert sum(fired) == 40
    for incident in incidents:
        assert len(escalated_events(incident)) == 2
        assert len(pages(incident)) == 2


CHILD = """
import sys
from datetime import datetime
from gateway.core.clock import FixedClock
from gateway.config.loader import load_config
from gateway.service import build_lifecycle, build_timer_worker
from store.db import db, open_database
from store.models import PENDING, Timer

config = load_config(sys.argv[1])
open_database(config)
clock = FixedClock(datetime.fromisoformat(sys.argv[2]))
worker = build_timer_worker(build_lifecycle(config, clock))
worker.name = sys.argv[3]
sys.stdin.readline()  # start together
total = 0
with db.connection_context():
    while Timer.select().where((Timer.status == PENDING) & (Timer.due_at <= clock.now())).exists():
        total += worker.tick(batch=3)
print(total)
"""


def test_two_processes_fire_each_step_exactly_once_on_postgresql(pg_store, clock):
    path = pg_store.write_config(**sections())
    lc = build_lifecycle(pg_store.config(**sections()), clock)
    incidents = [create(lc, title=f"Incident {i}") for i in range(40)]
    clock.advance(minutes=16)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), clock.now().isoformat(), f"p{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    counts = [int(p.communicate(timeout=120)[0].strip()) for p in procs]
    assert sum(counts) == 80
    assert all(p.returncode == 0 for p in procs)
    fired_by = {t.fired_by for t in Timer.select().where(Timer.status == "fired")}
    assert fired_by <= {"p0", "p1"}
    for incident in incidents:
        assert len(escalated_events(incident)) == 2
        assert len(pages(incident)) == 2


def test_unresolved_step_fires_after_acknowledge_and_is_cancelled_by_hold(store, clock):
    policy = [
        {"name": "default", "steps": [{"after": "2h", "when": "unresolved", "notify": ["json://lead/"]}]},
        POLICIES[1],
    ]
    lc = build_lifecycle(store.config(group=GROUPS, escalation=policy), clock)
    timers = build_timer_worker(lc)
    fires, holds = create(lc), create(lc)
    for incident in (fires, holds):
        lc.acknowledge(incident.ref, "bob")
    lc.start(holds.ref, "bob")
    lc.hold(holds.ref, "bob", "waiting for the supplier")
    clock.advance(hours=2)
    assert timers.tick() == 1
    assert [p.targets for p in pages(fires)] == [["json://lead/"]] and pages(holds) == []
    assert timer_rows(holds)[0].status == "cancelled"
