"""Procedures: each effect of major, security, low-impact, parent/child and member allocation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway import membership
from gateway.accounts import create_user
from gateway.core.clock import FixedClock
from gateway.core.errors import ConfigError, TransitionError
from gateway.incidents.procedures import AUTO_CLOSE, MAJOR_REMINDER
from gateway.pipeline.signal_steps import allocation_for
from gateway.rules import Decision
from gateway.service import build_lifecycle, build_timer_worker
from parsers.signal import Signal
from store.models import CLOSED, PENDING, RESOLVED, Event, Incident, Notification, Timer, User

POLICIES = [
    {
        "name": "default",
        "steps": [
            {"after": "5m", "when": "unacknowledged", "notify": ["json://contacts/"]},
            {"after": "0s", "when": "resolve_sla_warning", "notify": ["json://warn/"]},
            {"after": "0s", "when": "resolve_sla_breach", "notify": ["json://owner/", "json://contacts/"]},
        ],
    }
]
GROUPS = [
    {"name": "service-desk", "escalation": "default", "channels": ["json://sd/"]},
    {"name": "network"},
    {"name": "security"},
]


def sections(**extra):
    return {"group": GROUPS, "escalation": POLICIES, **extra}


PROCEDURES = {
    "categories": ["outage", "printer", "password", "breach"],
    "major_categories": ["outage"],
    "security_categories": ["breach"],
    "low_impact_categories": ["printer", "password"],
    "auto_close_after": "3d",
    "major_page": ["json://on-call/"],
    "major_reminder_interval": "30m",
}


@pytest.fixture
def clock():
    return FixedClock()


@pytest.fixture
def config(store):
    board = {"name": "board", "notify": ["json://stakeholders/"], "procedures": ["major"]}
    return store.config(**sections(procedures=PROCEDURES, stakeholder=[board]))


@pytest.fixture
def lc(config, clock):
    return build_lifecycle(config, clock)


@pytest.fixture
def timers(lc):
    return build_timer_worker(lc)


@pytest.fixture
def commander(store):
    return create_user("carol", "agent", "pw-carol-123")


def create(lc, **kwargs):
    kwargs.setdefault("title", "Everything is down")
    kwargs.setdefault("group", "service-desk")
    return lc.create(actor="alice", **kwargs)


def rows(incident, **where):
    query = Notification.select().where(Notification.incident == incident).order_by(Notification.id)
    for name, value in where.items():
        query = query.where(getattr(Notification, name) == value)
    return list(query)


def timer(incident, kind, step=None):
    query = Timer.select().where((Timer.incident == incident) & (Timer.kind == kind)).order_by(Timer.step)
    if step is not None:
        query = query.where(Timer.step == step)
    return list(query)


def resolve(lc, ref, actor="carol"):
    return lc.resolve(ref, actor, code="fixed", notes="restarted", cause="software")


# ---------------------------------------------------------------- major


def test_major_declared_broadcasts_pages_and_opens_status_page(lc, clock):
    incident = create(lc, major=True, procedure="major")
    [broadcast] = rows(incident, audience="stakeholder")
    assert (broadcast.template, broadcast.targets) == ("major_declared", ["board"])  # the subscription
    assert broadcast.incident_id == incident.id
    [page] = rows(incident, audience="escalation")
    # the major_page targets, then every contact of the group's policy, at once
    assert page.template == "escalation" and page.next_attempt_at == clock.now()
    assert page.targets == ["json://on-call/", "json://contacts/", "json://warn/", "json://owner/"]
    assert Incident.get_by_id(incident.id).status_page == "investigating"
    event = Event.get((Event.incident == incident) & (Event.field == "status_page"))
    assert (event.new, event.visibility) == ("investigating", "public")
    [reminder] = timer(incident, MAJOR_REMINDER)
    assert (reminder.step, reminder.due_at) == (1, clock.now() + timedelta(minutes=30))


def test_a_security_major_incident_is_not_broadcast(lc):
    incident = create(lc, major=True, security=True, procedure="major")
    assert rows(incident, audience="stakeholder") == []
    assert rows(incident, audience="escalation")  # the contacts are still paged


def test_becoming_major_declares_it(lc):
    incident = create(lc)
    assert rows(incident, template="major_declared") == []
    lc.update(incident.ref, "alice", major=True, procedure="major", reason="whole company affected")
    assert len(rows(incident, template="major_declared")) == 1
    assert Incident.get_by_id(incident.id).status_page == "investigating"


@pytest.mark.parametrize("action", ["acknowledge", "start", "resolve"])
def test_major_needs_its_commander(lc, commander, action):
    incident = create(lc, major=True, procedure="major")
    kwargs = {"code": "fixed", "notes": "n", "cause": "c"} if action == "resolve" else {}
    with pytest.raises(TransitionError, match="commander"):
        getattr(lc, action)(incident.ref, "alice", **kwargs)
    lc.assign(incident.ref, "alice", assignee="carol")
    getattr(lc, action)(incident.ref, "carol", **kwargs)


def test_update_reminders_while_open_then_resolved_status_page(lc, timers, clock, commander):
    incident = create(lc, major=True, procedure="major")
    lc.assign(incident.ref, "alice", assignee="carol")
    lc.acknowledge(incident.ref, "carol")
    clock.advance(minutes=30)
    assert timers.tick() == 1
    [reminder] = rows(incident, template="major_reminder")
    assert (reminder.audience, reminder.targets, reminder.context["reminder"]) == ("group", ["json://sd/"], 1)
    assert reminder.event.type == "note"
    assert [(t.step, t.status) for t in timer(incident, MAJOR_REMINDER)] == [(1, "fired"), (2, PENDING)]
    clock.advance(minutes=30)
    assert timers.tick() == 1
    assert len(rows(incident, template="major_reminder")) == 2
    resolve(lc, incident.ref)
    assert Incident.get_by_id(incident.id).status_page == "monitoring"  # "resolved" once closed
    assert {t.status for t in timer(incident, MAJOR_REMINDER)} == {"fired", "cancelled"}
    clock.advance(days=30)
    timers.tick()
    assert len(rows(incident, template="major_reminder")) == 2
    assert timer(incident, AUTO_CLOSE) == []  # never auto-closed
    assert Incident.get_by_id(incident.id).status == RESOLVED


def test_review_before_close(lc, commander):
    incident = create(lc, major=True, procedure="major")
    lc.assign(incident.ref, "alice", assignee="carol")
    resolve(lc, incident.ref)
    with pytest.raises(TransitionError, match="post-incident review"):
        lc.close(incident.ref, "carol")
    with pytest.raises(TransitionError, match="a cause is required"):
        lc.review(incident.ref, "carol", cause=" ", actions=[{"what": "x", "owner": "y"}])
    with pytest.raises(TransitionError, match="each with what and owner"):
        lc.review(incident.ref, "carol", cause="expired certificate", actions=[{"what": "monitor expiry"}])
    lc.review(incident.ref, "carol", cause="expired certificate", actions=[{"what": "monitor expiry", "owner": "dave"}])
    review = Incident.get_by_id(incident.id).review
    assert review["cause"] == "expired certificate"
    assert review["actions"] == [{"what": "monitor expiry", "owner": "dave", "due": None}]
    assert Event.get((Event.incident == incident) & (Event.type == "reviewed")).body.startswith("Cause: expired")
    assert lc.close(incident.ref, "carol").status == CLOSED


def test_security_needs_review_and_is_never_broadcast(lc):
    incident = create(lc, security=True, procedure="security", group="security")
    assert rows(incident, audience="stakeholder") == []
    resolve(lc, incident.ref)
    with pytest.raises(TransitionError, match="security incident needs its post-incident review"):
        lc.close(incident.ref, "carol")


# ---------------------------------------------------------------- low-impact


def test_low_impact_auto_closes_after_the_resolved_window(lc, timers, clock):
    incident = create(lc, category="printer", procedure="low-impact")
    resolve(lc, incident.ref)
    [auto] = timer(incident, AUTO_CLOSE)
    assert auto.due_at == clock.now() + timedelta(days=3)
    clock.advance(days=3, seconds=-1)
    assert timers.tick() == 0
    clock.advance(seconds=1)
    assert timers.tick() == 1
    closed = Incident.get_by_id(incident.id)
    assert (closed.status, closed.closed_by) == (CLOSED, "auto")
    assert Event.get((Event.incident == incident) & (Event.type == "closed")).actor == "auto-close"


def test_reopen_cancels_auto_close(lc, timers, clock):
    incident = create(lc, category="printer", procedure="low-impact")
    resolve(lc, incident.ref)
    lc.reopen(incident.ref, "alice", "still jammed")
    assert [t.status for t in timer(incident, AUTO_CLOSE)] == ["cancelled"]
    clock.advance(days=4)
    timers.tick()
    assert Incident.get_by_id(incident.id).status != CLOSED


def test_standard_incidents_are_not_auto_closed(lc):
    incident = create(lc, category="", procedure="standard")
    resolve(lc, incident.ref)
    assert timer(incident, AUTO_CLOSE) == []


# ---------------------------------------------------------------- parent / child


def test_resolving_the_parent_resolves_each_open_child(lc, commander):
    parent = create(lc, title="Mail down for everyone")
    children = [create(lc, title=f"My mail is broken ({i})", reporter_email=f"u{i}@example.org") for i in range(3)]
    for child in children:
        lc.link(child.ref, "alice", parent.ref, kind="parent")
    lc.cancel(children[2].ref, "alice", "duplicate")
    resolve(lc, parent.ref)
    for child in children[:2]:
        done = Incident.get_by_id(child.id)
        assert (done.status, done.resolution_code, done.cause_code) == (RESOLVED, "fixed", "software")
        assert done.resolution_notes.startswith(f"Resolved with {parent.ref}")
        event = Event.get((Event.incident == child) & (Event.type == "resolved"))
        assert event.visibility == "public"  # what the reporter is told about
    assert Incident.get_by_id(children[2].id).status == "cancelled"


# ---------------------------------------------------------------- member allocation


def member_config(store, mode):
    groups = [
        {"name": "service-desk", "escalation": "default", "members": ["ann", "ben", "gone", "off"], "assign": mode},
        {"name": "network"},
        {"name": "security"},
    ]
    config = store.config(**sections(group=groups))
    membership.sync_config(config)  # as `inlet serve` does when it starts: the database holds membership
    return config


@pytest.fixture
def members(store):
    for name in ("ann", "ben", "off"):
        create_user(name, "agent", f"pw-{name}-12345")
    User.update(active=False).where(User.name == "off").execute()


def test_round_robin_assigns_members_in_turn(store, members, clock):
    lc = build_lifecycle(member_config(store, "round-robin"), clock)
    names = [create(lc).assignee.name for _ in range(5)]
    assert names == ["ann", "ben", "ann", "ben", "ann"]  # unknown and inactive members are skipped
    event = Event.get((Event.field == "assignee") & (Event.actor == "allocation"))
    assert event.body == "round-robin"


def test_least_loaded_assigns_the_member_with_fewest_open(store, members, clock):
    lc = build_lifecycle(member_config(store, "least-loaded"), clock)
    first = create(lc)
    second = create(lc)
    assert (first.assignee.name, second.assignee.name) == ("ann", "ben")
    resolve(lc, first.ref, "ann")
    assert create(lc).assignee.name == "ann"  # ann has none open now


def test_every_hook_sees_what_the_procedures_change(store, members, clock):
    """Assignment by procedure and the status page go through the lifecycle's public methods: a hook sees them."""
    lc = build_lifecycle(member_config(store, "round-robin"), clock)
    seen = []
    lc.hooks.append(lambda change: seen.append((change.action, change.event.field, change.event.new)))
    incident = create(lc, major=True, procedure="major")
    assert ("assign", "assignee", "ann") in seen and ("status_page", "status_page", "investigating") in seen
    assert seen[-1] == ("create", "status", "new")  # the nested changes ran inside the create, before its hooks
    assert incident.assignee.name == "ann" and incident.status_page == "investigating"  # on the object it returned
    seen.clear()
    lc.start(incident.ref, "ann")
    assert seen == [("status_page", "status_page", "identified"), ("start", "status", "in_progress")]


def test_no_assign_mode_leaves_the_group_only(lc, members):
    assert create(lc).assignee_id is None


# ---------------------------------------------------------------- allocation order


def decision(**values):
    reasons = {k: "r1" for k in values if k != "tags"}
    return Decision(**values, reasons=reasons)


@pytest.mark.parametrize(
    "values, defaults, expected",
    [
        ({"group": "network"}, {"group": "security"}, ("network", "rule 'r1'")),
        ({}, {"group": "security"}, ("security", "source default")),
        ({}, {}, ("service-desk", "fallback group")),
    ],
)
def test_allocation_order_rule_then_source_default_then_fallback(config, values, defaults, expected):
    allocation, why = allocation_for(config, decision(**values), Signal(source="email", title="t"), defaults)
    assert (allocation["group"], why["group"]) == expected


@pytest.mark.parametrize(
    "category, flags, procedure",
    [
        ("outage", {}, "major"),
        ("breach", {}, "security"),
        ("printer", {}, "low-impact"),
        ("", {}, "standard"),
        ("printer", {"major": True}, "major"),
        ("printer", {"security": True}, "security"),
    ],
)
def test_procedure_from_category_and_flags(config, category, flags, procedure):
    allocation, _ = allocation_for(config, decision(category=category or None, **flags), Signal("email", "t"), {})
    assert allocation["procedure"] == procedure
    assert allocation["major"] == (procedure == "major")


# ---------------------------------------------------------------- config refusals


@pytest.mark.parametrize(
    "extra, where",
    [
        (
            {"procedures": {"categories": ["a"]}, "rule": [{"name": "r", "category": "b"}]},
            "[[rule]] 'r' → category: unknown category 'b'",
        ),
        ({"procedures": {"categories": ["a"], "low_impact_categories": ["b"]}}, "low_impact_categories[0]"),
        (
            {"group": [{"name": "service-desk", "escalation_by_priority": {"P1": "nope"}}]},
            "escalation_by_priority → P1: no [[escalation]] named 'nope'",
        ),
        (
            {"group": [{"name": "service-desk", "escalation_by_priority": {"P9": "default"}}]},
            "unknown priority 'P9'",
        ),
        ({"escalation": [{"name": "default", "steps": [{"after": "5m"}]}]}, "steps[0]: a step needs a target"),
        ({"group": [{"name": "service-desk", "assign": "random"}]}, "assign"),
        ({"rule_test": [{"name": "t", "subject": "x", "group": "nope"}]}, "[[rule_test]] 't' → group"),
    ],
)
def test_bad_procedure_and_escalation_config_is_refused(store, extra, where):
    with pytest.raises(ConfigError) as err:
        store.config(**sections(**extra))
    assert where in str(err.value)


def test_pipeline_notes_a_recovery_of_a_major_incident_without_commander(store, clock):
    from gateway.pipeline import signal_steps
    from gateway.pipeline.driver import Steps
    from gateway.service import build_pipeline
    from store.models import Inbound

    config = store.config(**sections(rule=[{"name": "big", "text": {"any": ["outage"]}, "major": True}]))
    lc = build_lifecycle(config, clock)
    status = {b"fire": "firing", b"ok": "resolved"}
    pipeline = build_pipeline(config, lc, clock)
    steps = (signal_steps.correlate, signal_steps.classify, signal_steps.allocate, signal_steps.apply)
    pipeline.steps["test"] = Steps([(step.__name__, step) for step in steps])
    pipeline.parsers["test"] = lambda ctx: [
        Signal(source="generic", title="Total outage", fingerprint="fp", status=status[ctx.inbound.raw])
    ]
    for raw in (b"fire", b"ok"):
        inbound = Inbound.create(source="test", raw=raw, received_at=clock.now(), status=PENDING)
        assert pipeline.run(inbound.id) == "processed"
    incident = Incident.get()
    assert (incident.major, incident.status, incident.signal_count) == (True, "new", 2)
