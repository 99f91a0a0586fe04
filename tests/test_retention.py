"""[retention]: raw inputs and attachment data of incidents closed long ago are dropped in bounded
batches by the timers role; open, resolved, recently closed and security incidents keep everything."""

from __future__ import annotations

from datetime import timedelta

from gateway.core.clock import FixedClock
from gateway.retention import DROPPED, Retention
from gateway.service import Service
from store.db import db
from store.models import Attachment, Inbound, Incident
from tests.conftest import wait_for

RAW = b"Subject: the printer\r\n\r\nIt is on fire.\r\n"


def make_incident(number: int, clock: FixedClock, *, status: str, closed_days_ago: int | None = None, **fields):
    now = clock.now()
    incident = Incident.create(
        number=number,
        ref=f"INC-{number}",
        title=f"incident {number}",
        status=status,
        opened_at=now - timedelta(days=400),
        updated_at=now,
        closed_at=None if closed_days_ago is None else now - timedelta(days=closed_days_ago),
        **fields,
    )
    for n in range(3):
        inbound = Inbound.create(
            source="smtp",
            received_at=now,
            dedup_key=f"<{number}.{n}@x>",
            raw=RAW,
            status="processed",
            incident=incident,
        )
        Attachment.create(
            incident=incident, inbound=inbound, filename="log.txt", content_type="text/plain", size=3, sha256="0" * 64,
            data=b"abc",
        )  # fmt: skip
    return incident


def kept(incident) -> tuple[int, int]:
    """(inputs with their raw body, attachments with their data) of ``incident``."""
    raws = sum(bytes(row.raw) == RAW for row in Inbound.select().where(Inbound.incident == incident.id))
    data = Attachment.select().where((Attachment.incident == incident.id) & Attachment.data.is_null(False)).count()
    return raws, data


def test_old_closed_incidents_lose_raw_and_attachments_in_batches_others_keep_all(store):
    clock = FixedClock()
    old = make_incident(1, clock, status="closed", closed_days_ago=100)
    other_old = make_incident(2, clock, status="closed", closed_days_ago=91)
    recent = make_incident(3, clock, status="closed", closed_days_ago=70)
    still_open = make_incident(4, clock, status="in_progress")
    resolved = make_incident(5, clock, status="resolved")
    secret = make_incident(6, clock, status="closed", closed_days_ago=200, security=True)
    config = store.config(retention={"inbound_raw": "90d", "attachments": "60d", "batch": 4})
    retention = Retention(config.retention, clock)

    assert retention.tick() == 8  # one bounded batch of each kind
    rounds = 1
    while retention.tick():
        rounds += 1
    assert rounds >= 2
    assert kept(old) == (0, 0) and kept(other_old) == (0, 0)
    assert kept(recent) == (3, 0)  # closed 70 days ago: past 60d for attachments, not 90d for raw
    for untouched in (still_open, resolved, secret):
        assert kept(untouched) == (3, 3)
    dropped = Attachment.get(Attachment.incident == old.id)
    assert dropped.skipped == DROPPED and dropped.sha256 == "0" * 64 and dropped.size == 3
    assert Inbound.select().count() == 18 and Attachment.select().count() == 18  # the rows stay
    assert retention.tick() == 0


def test_retention_is_off_by_default_and_runs_in_the_timers_role(store):
    clock = FixedClock()
    old = make_incident(1, clock, status="closed", closed_days_ago=1000)
    assert Retention(store.config().retention, clock).tick() == 0
    assert kept(old) == (3, 3)

    db.close()
    service = Service(store.config(retention={"inbound_raw": "90d"}), roles={"timers"}, clock=clock)
    service.start()
    try:

        def dropped():
            with db.connection_context():
                return kept(old) == (0, 3)

        wait_for(dropped, timeout=20, message="the timers role to apply [retention]")
    finally:
        service.stop()
        db.connect(reuse_if_open=True)
