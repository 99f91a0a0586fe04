"""The lifecycle state machine: every allowed and every refused transition, on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.accounts import create_user
from gateway.core.clock import FixedClock
from gateway.core.errors import NotFound, TransitionError
from gateway.incidents.lifecycle import TRANSITIONS, Lifecycle
from store.models import (
    ACKNOWLEDGED,
    CANCELLED,
    CLOSED,
    IN_PROGRESS,
    NEW,
    ON_HOLD,
    RESOLVED,
    STATUSES,
    CorrelationKey,
    Event,
    Incident,
    Notification,
)

# How to bring a fresh incident into each status.
PATHS = {
    NEW: [],
    ACKNOWLEDGED: ["acknowledge"],
    IN_PROGRESS: ["start"],
    ON_HOLD: ["start", "hold"],
    RESOLVED: ["resolve"],
    CLOSED: ["resolve", "close"],
    CANCELLED: ["cancel"],
}


def act(lc: Lifecycle, ref: str, action: str):
    """Perform ``action`` with valid arguments."""
    kwargs = {
        "hold": {"reason": "waiting for the reporter"},
        "reopen": {"reason": "still broken"},
        "cancel": {"reason": "duplicate"},
        "resolve": {"code": "fixed", "notes": "restarted the VPN gateway", "cause": "software"},
    }.get(action, {})
    return getattr(lc, action)(ref, "alice", **kwargs)


@pytest.fixture
def clock():
    return FixedClock()


@pytest.fixture
def lc(store, clock):
    return Lifecycle(clock=clock)


def new_incident(lc, **kwargs):
    kwargs.setdefault("title", "VPN is down")
    return lc.create(actor="alice", group="network", **kwargs)


def in_status(lc, status):
    incident = new_incident(lc)
    for action in PATHS[status]:
        act(lc, incident.ref, action)
    return lc.get(incident.ref)


CASES = [(action, status) for action in TRANSITIONS for status in STATUSES]


@pytest.mark.parametrize("action,status", CASES, ids=[f"{a}-from-{s}" for a, s in CASES])
def test_every_transition_allowed_or_refused(lc, action, status):
    incident = in_status(lc, status)
    assert incident.status == status
    allowed, target = TRANSITIONS[action]
    before = Event.select().where(Event.incident == incident).count()
    if status in allowed:
        result = act(lc, incident.ref, action)
        assert result.status == target
        assert lc.get(incident.ref).status == target
        last = Event.select().where(Event.incident == incident).order_by(Event.id.desc()).get()
        assert (last.field, last.old, last.new, last.actor) == ("status", status, target, "alice")
    else:
        with pytest.raises(TransitionError) as err:
            act(lc, incident.ref, action)
        assert f"cannot {action} from '{status.replace('_', ' ')}'" in str(err.value)  # in words
        assert incident.ref in str(err.value)
        assert lc.get(incident.ref).status == status  # nothing changed
        assert Event.select().where(Event.incident == incident).count() == before


def test_create_writes_incident_event_and_reference(lc, clock):
    first = new_incident(lc, impact="high", urgency="high", reporter_email="Bob@Example.org", reporter_name="Bob")
    second = new_incident(lc)
    assert (first.ref, second.ref) == ("INC-1", "INC-2")
    assert first.priority == "P1" and second.priority == "P3"
    assert first.respond_by == clock.now() + timedelta(minutes=15)
    assert first.resolve_by == clock.now() + timedelta(hours=4)
    assert first.reporter.email == "bob@example.org"
    (event,) = Event.select().where(Event.incident == first)
    assert (event.type, event.new, event.actor) == ("created", NEW, "alice")


def test_acknowledge_and_resolve_record_times(lc, clock):
    incident = new_incident(lc)
    clock.advance(minutes=3)
    lc.acknowledge(incident.ref, "alice")
    clock.advance(minutes=30)
    resolved = act(lc, incident.ref, "resolve")
    assert resolved.acknowledged_at == resolved.opened_at + timedelta(minutes=3)
    assert resolved.resolved_at == resolved.opened_at + timedelta(minutes=33)
    assert (resolved.resolution_code, resolved.cause_code, resolved.fix_type) == ("fixed", "software", "workaround")


@pytest.mark.parametrize("missing", ["code", "notes", "cause"])
def test_resolve_requires_code_notes_and_cause(lc, missing):
    incident = new_incident(lc)
    record = {"code": "fixed", "notes": "done", "cause": "hardware", missing: "  "}
    with pytest.raises(TransitionError, match=f"{missing} required"):
        lc.resolve(incident.ref, "alice", **record)
    assert lc.get(incident.ref).status == NEW


def test_hold_pauses_the_sla_clock(lc, clock):
    incident = in_status(lc, IN_PROGRESS)
    resolve_by = incident.resolve_by
    lc.hold(incident.ref, "alice", reason="waiting for the supplier")
    clock.advance(hours=2)
    resumed = lc.resume(incident.ref, "alice")
    assert resumed.paused_seconds == 7200
    assert resumed.resolve_by == resolve_by + timedelta(hours=2)


def test_reopen_counts_and_clears_resolution_time(lc):
    incident = in_status(lc, RESOLVED)
    reopened = lc.reopen(incident.ref, "reporter", reason="still broken")
    assert (reopened.status, reopened.reopen_count, reopened.resolved_at) == (IN_PROGRESS, 1, None)


def test_closed_is_read_only(lc):
    incident = in_status(lc, CLOSED)
    for call in (
        lambda: lc.note(incident.ref, "alice", "late note"),
        lambda: lc.assign(incident.ref, "alice", group="security"),
        lambda: lc.update(incident.ref, "alice", impact="high"),
    ):
        with pytest.raises(TransitionError, match="closed incident is read-only"):
            call()


@pytest.mark.parametrize("flag", ["major", "security"])
def test_major_and_security_need_review_before_close(lc, flag):
    incident = new_incident(lc, **{flag: True})
    if flag == "major":  # a major incident is resolved by its commander
        create_user("carol", "agent", "pw-carol-123")
        lc.assign(incident.ref, "alice", assignee="carol")
    act(lc, incident.ref, "resolve")
    with pytest.raises(TransitionError, match="post-incident review"):
        lc.close(incident.ref, "alice")
    Incident.update(review={"cause": "x", "actions": []}).where(Incident.id == incident.id).execute()
    assert lc.close(incident.ref, "alice").status == CLOSED


def test_notes_public_and_internal(lc):
    incident = new_incident(lc)
    public = lc.note(incident.ref, "alice", "We are on it", public=True)
    internal = lc.note(incident.ref, "alice", "Suspect the firewall")
    assert (public.type, public.visibility) == ("update", "public")
    assert (internal.type, internal.visibility) == ("note", "internal")
    with pytest.raises(TransitionError, match="a text is required"):
        lc.note(incident.ref, "alice", "   ")


def test_update_recomputes_priority_and_targets(lc, clock):
    incident = new_incident(lc)
    clock.advance(minutes=10)
    changed = lc.update(incident.ref, "alice", impact="high", urgency="high", reason="whole site affected")
    assert changed.priority == "P1"
    assert changed.respond_by == changed.opened_at + timedelta(minutes=15)
    fields = {e.field: (e.old, e.new) for e in Event.select().where(Event.type == "changed")}
    assert fields == {"impact": ("medium", "high"), "urgency": ("medium", "high"), "priority": ("P3", "P1")}
    with pytest.raises(TransitionError, match="impact must be one of"):
        lc.update(incident.ref, "alice", impact="huge")


def test_assign_counts_reassignments(lc):
    from gateway.accounts import create_user

    create_user("bob", "agent", "pw-bob-long-enough")
    incident = new_incident(lc)
    lc.assign(incident.ref, "alice", group="security", reason="looks like phishing")
    lc.assign(incident.ref, "alice", assignee="bob")
    result = lc.get(incident.ref)
    assert (result.group, result.assignee.name, result.reassignment_count) == ("security", "bob", 1)
    with pytest.raises(NotFound):
        lc.assign(incident.ref, "alice", assignee="nobody")


def test_link_parent_child_and_cycles(lc):
    parent, child = new_incident(lc, title="Data centre power"), new_incident(lc, title="VPN down")
    lc.link(child.ref, "alice", parent.ref, "parent")
    assert lc.get(child.ref).parent.ref == parent.ref
    with pytest.raises(TransitionError, match="descendant"):
        lc.link(parent.ref, "alice", child.ref, "parent")
    with pytest.raises(TransitionError, match="itself"):
        lc.link(parent.ref, "alice", parent.ref)


def test_a_related_link_may_name_a_closed_incident_and_leaves_it_as_it_was(lc):
    old, new = new_incident(lc, title="Printer jam"), new_incident(lc, title="Printer jam again")
    act(lc, old.ref, "resolve")
    lc.close(old.ref, "alice")
    before = Event.select().where(Event.incident == old).count()
    lc.link(new.ref, "alice", old.ref)
    link = Event.get((Event.incident == new) & (Event.type == "linked"))
    assert (link.field, link.new) == ("related", old.ref)
    assert Event.select().where(Event.incident == old).count() == before
    with pytest.raises(TransitionError, match="read-only"):
        lc.link(new.ref, "alice", old.ref, "parent")  # a closed incident takes no children
    with pytest.raises(TransitionError, match="read-only"):
        lc.link(old.ref, "alice", new.ref)  # nor links of its own


def test_keys_close_with_the_incident(lc, clock):
    incident = new_incident(lc, keys=[("fingerprint", "abc")])
    act(lc, incident.ref, "resolve")
    assert CorrelationKey.get(CorrelationKey.value == "abc").open  # still threads: a re-fire may reopen it
    lc.close(incident.ref, "alice")
    assert not CorrelationKey.get(CorrelationKey.value == "abc").open


def test_hooks_run_inside_the_transaction(lc):
    from datetime import UTC, datetime

    def hook(change):
        Notification.create(
            incident=change.incident, event=change.event, audience="test", template=change.action,
            next_attempt_at=datetime.now(UTC), created_at=datetime.now(UTC),
        )  # fmt: skip
        if change.action == "acknowledge":
            raise RuntimeError("hook failed")

    lc.hooks.append(hook)
    incident = new_incident(lc)
    assert Notification.select().count() == 1
    with pytest.raises(RuntimeError):
        lc.acknowledge(incident.ref, "alice")
    # the failed hook rolled back the status change, its event and its notification together
    assert lc.get(incident.ref).status == NEW
    assert Notification.select().count() == 1
    assert Event.select().where(Event.type == "acknowledged").count() == 0


def test_unknown_reference(lc):
    with pytest.raises(NotFound, match="INC-404"):
        lc.acknowledge("INC-404", "alice")
