"""``/metrics`` in the Prometheus text format, computed from the database at each scrape.

Every role of ``inlet serve`` runs in its own process and the database is the only
thing they share (DESIGN.md §2.5), so every series is read from the store: nothing
is kept between scrapes, and the counters survive restarts because the rows do.
Refused inputs are never stored: each listener counts them and writes the counts
(``refusal_count``, gateway/intake/refusals.py), which is what is read here.
Each query is a range over an index (migration 4 adds the ones it needs) or is
bounded by the open incidents, the pending rows or a time window; README
"Metrics" lists every series.

Counts include security incidents, so the endpoint asks for an admin: a signed-in
session or an admin's API token (``Authorization: Bearer …``, as Prometheus sends it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Blueprint, Response, abort, current_app
from flask_login import current_user
from peewee import SQL, Case, fn
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.samples import Sample

from gateway.incidents.heartbeats import STATES as HEARTBEAT_STATES
from gateway.incidents.heartbeats import statuses as heartbeat_statuses
from store.db import is_postgres
from store.models import (
    CANCELLED,
    FAILED,
    IGNORED,
    ON_HOLD,
    OPEN_STATUSES,
    PENDING,
    PROCESSED,
    Event,
    Inbound,
    Incident,
    Notification,
    NotificationAttempt,
    RefusalCount,
)
from web.api import token_user

bp = Blueprint("metrics", __name__)

OUTCOMES = {PROCESSED: "accepted", IGNORED: "ignored", FAILED: "failed"}  # Inbound status -> intake outcome
LATENCY_WINDOW = timedelta(minutes=10)
MEAN_WINDOW = timedelta(days=30)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@bp.get("/metrics")
def metrics():
    user = token_user()
    if user is None and current_user.is_authenticated:
        user = current_user.row
    if user is None:
        return Response("authentication required\n", 401, {"WWW-Authenticate": "Bearer"}, mimetype="text/plain")
    if user.role != "admin":
        abort(403)
    return Response(generate_latest(collect(config=current_app.config["INLET"])), mimetype=CONTENT_TYPE_LATEST)


def collect(now: datetime | None = None, config=None) -> CollectorRegistry:
    """A fresh registry filled from the database (nothing is kept between scrapes); ``config``: the heartbeats."""
    now = now or datetime.now(UTC)
    registry = CollectorRegistry()
    if config is not None:
        _heartbeats(registry, config, now)
    incidents = Gauge("inlet_incidents", "Incidents by status and priority.", ["status", "priority"], registry=registry)
    counted = Incident.select(Incident.status, Incident.priority, fn.COUNT(SQL("*")))
    counted = counted.where(Incident.drill == False).group_by(Incident.status, Incident.priority)  # noqa: E712
    for status, priority, n in counted.tuples():  # index-only on (status, priority, drill)
        incidents.labels(status, priority).set(n)
    notifications = Gauge("inlet_notifications", "Outbox notifications by status.", ["status"], registry=registry)
    by_status = Notification.select(Notification.status, fn.COUNT(SQL("*"))).group_by(Notification.status)
    for status, n in by_status.tuples():  # index-only on (status, next_attempt_at)
        notifications.labels(status).set(n)
    window = f"opened in the last {MEAN_WINDOW.days} days; cancelled and drills excluded"
    mtta = Gauge("inlet_mtta_seconds", f"Mean time from opening to acknowledgement ({window}).", registry=registry)
    mttr = Gauge("inlet_mttr_seconds", f"Mean time from opening to resolution ({window}).", registry=registry)
    mtta.set(_mean_seconds(Incident.acknowledged_at, now - MEAN_WINDOW))
    mttr.set(_mean_seconds(Incident.resolved_at, now - MEAN_WINDOW))
    registry.register(_StoreCollector(now))
    return registry


def _heartbeats(registry: CollectorRegistry, config, now: datetime) -> None:
    """One row per heartbeat (gateway/incidents/heartbeats.py): its state as a 0/1 per state, its last beat."""
    state = Gauge(
        "inlet_heartbeat_state",
        "1 for the state each heartbeat is in (waiting, ok, late, expired), 0 for the others.",
        ["name", "state"],
        registry=registry,
    )
    last = Gauge(
        "inlet_heartbeat_last_beat_timestamp_seconds",
        "Unix time of each heartbeat's last beat (0: none yet).",
        ["name"],
        registry=registry,
    )
    for s in heartbeat_statuses(config, now):
        for name in HEARTBEAT_STATES:
            state.labels(s.name, name).set(1 if s.state == name else 0)
        last.labels(s.name).set(s.last_beat_at.timestamp() if s.last_beat_at else 0)


class _StoreCollector:
    """The pipeline, incident, SLA, escalation and outbox series, read at one instant ``now``."""

    def __init__(self, now: datetime):
        self.now = now

    def collect(self):
        yield from self._intake()
        yield self._lag()
        yield self._latency()
        yield from self._incidents()
        yield from self._outbox()

    def _intake(self):
        total = CounterMetricFamily(
            "inlet_intake",
            "Inputs by source and by what became of them: stored and then accepted (processed into an "
            "incident or update), ignored (loop, auto-reply, duplicate, out of scope) or failed (quarantined); "
            "or rejected, refused before storing, by reason (counted by each listener process, written every "
            "[serve] refusals_flush_interval).",
            labels=["source", "outcome"],
        )
        pending = GaugeMetricFamily("inlet_intake_pending", "Inputs stored but not processed yet.", labels=["source"])
        inbound = GaugeMetricFamily("inlet_inbound", "Inbound inputs by status.", labels=["status"])
        by_status: dict[str, int] = {}
        rows = Inbound.select(Inbound.source, Inbound.status, fn.COUNT(SQL("*")))
        for source, status, n in rows.group_by(Inbound.source, Inbound.status).tuples():  # index-only
            by_status[status] = by_status.get(status, 0) + n
            if status in OUTCOMES:
                total.add_metric([source, OUTCOMES[status]], n)
            elif status == PENDING:
                pending.add_metric([source], n)
        for status, n in sorted(by_status.items()):
            inbound.add_metric([status], n)
        # Rejected inputs have a third label, the reason: one of gateway.intake.refusals.REASONS, never client text.
        refused = RefusalCount.select(RefusalCount.source, RefusalCount.reason, RefusalCount.count)
        for source, reason, n in refused.order_by(RefusalCount.source, RefusalCount.reason).tuples():
            labels = {"source": source, "outcome": "rejected", "reason": reason}
            total.samples.append(Sample("inlet_intake_total", labels, n))
        yield total
        yield pending
        yield inbound

    def _lag(self):
        lag = GaugeMetricFamily(
            "inlet_pipeline_lag_seconds", "Age of the oldest input waiting to be processed (0 when none waits)."
        )
        row = Inbound.select(Inbound.received_at).where(Inbound.status == PENDING).order_by(Inbound.received_at)
        oldest = row.limit(1).get_or_none()
        oldest = oldest.received_at if oldest is not None else None
        lag.add_metric([], max(0.0, (self.now - oldest).total_seconds()) if oldest else 0.0)
        return lag

    def _latency(self):
        family = GaugeHistogramMetricFamily(
            "inlet_processing_latency_seconds",
            f"Time from receiving an input to the pipeline's verdict (accepted, ignored or failed), over the "
            f"inputs received in the last "
            f"{int(LATENCY_WINDOW.total_seconds() // 60)} minutes (a window: a gauge histogram, read it without "
            "rate()).",
        )
        span = _seconds(Inbound.received_at, Inbound.processed_at)
        columns = [fn.SUM(Case(None, [(span <= bound, 1)], 0)) for bound in LATENCY_BUCKETS]
        row = (
            Inbound.select(*columns, fn.COUNT(SQL("*")), fn.SUM(span))
            .where(
                Inbound.status.in_(tuple(OUTCOMES))
                & (Inbound.received_at >= self.now - LATENCY_WINDOW)
                & Inbound.processed_at.is_null(False)
            )
            .tuples()
            .get()
        )
        buckets = [(str(bound), int(value or 0)) for bound, value in zip(LATENCY_BUCKETS, row, strict=False)]
        count, total = int(row[-2] or 0), float(row[-1] or 0.0)
        family.add_metric([], [*buckets, ("+Inf", count)], gsum_value=round(total, 3))
        return family

    def _incidents(self):
        open_ = GaugeMetricFamily(
            "inlet_open_incidents",
            "Open incidents (new, acknowledged, in progress, on hold) by priority and group; drills excluded.",
            labels=["priority", "group"],
        )
        escalated = GaugeMetricFamily(
            "inlet_open_incidents_escalated",
            "Open incidents that have been escalated, by priority.",
            labels=["priority"],
        )
        breached = GaugeMetricFamily(
            "inlet_sla_breached",
            "Open incidents past an SLA target now: respond (not acknowledged by respond-by) or resolve (not "
            "resolved by resolve-by; on-hold ones are paused and not counted), by priority.",
            labels=["target", "priority"],
        )
        respond_late = (Incident.acknowledged_at.is_null()) & (Incident.respond_by < self.now)
        resolve_late = (Incident.status != ON_HOLD) & (Incident.resolve_by < self.now)
        query = (
            Incident.select(
                Incident.priority,
                Incident.group,
                fn.COUNT(SQL("*")),
                fn.SUM(Case(None, [(Incident.escalated == True, 1)], 0)),  # noqa: E712
                fn.SUM(Case(None, [(respond_late, 1)], 0)),
                fn.SUM(Case(None, [(resolve_late, 1)], 0)),
            )
            .where(Incident.status.in_(OPEN_STATUSES) & (Incident.drill == False))  # noqa: E712
            .group_by(Incident.priority, Incident.group)
            .tuples()
        )
        by_priority: dict[str, list[int]] = {}
        for priority, group, n, esc, respond, resolve in query:
            open_.add_metric([priority, group], n)
            sums = by_priority.setdefault(priority, [0, 0, 0])
            for index, value in enumerate((esc, respond, resolve)):
                sums[index] += int(value or 0)
        for priority, (esc, respond, resolve) in sorted(by_priority.items()):
            escalated.add_metric([priority], esc)
            breached.add_metric(["respond", priority], respond)
            breached.add_metric(["resolve", priority], resolve)
        escalations = CounterMetricFamily(
            "inlet_escalations",
            "Escalations ever made, by kind (functional, hierarchical, automatic), drills included.",
            labels=["kind"],
        )
        rows = Event.select(Event.new, fn.COUNT(SQL("*"))).where(Event.type == "escalated").group_by(Event.new)
        for kind, n in rows.tuples():  # a range of the (type, at) index
            escalations.add_metric([kind or ""], n)
        yield open_
        yield escalated
        yield breached
        yield escalations

    def _outbox(self):
        depth = GaugeMetricFamily(
            "inlet_outbox_depth", "Notifications waiting to be delivered (pending, retries included)."
        )
        depth.add_metric([], Notification.select().where(Notification.status == PENDING).count())
        failures = CounterMetricFamily(
            "inlet_delivery_failures", "Failed delivery attempts (one notification to one channel), ever."
        )
        failures.add_metric(
            [],
            NotificationAttempt.select().where(NotificationAttempt.ok == False).count(),  # noqa: E712
        )
        return depth, failures


def _seconds(start_field, end_field):
    """``end - start`` in seconds as SQL over a one-model query (peewee names its table ``t1``), on either
    database (julianday is exact to about a millisecond)."""
    if is_postgres():
        return SQL(f'EXTRACT(EPOCH FROM ("t1"."{end_field.column_name}" - "t1"."{start_field.column_name}"))')
    return (fn.julianday(end_field) - fn.julianday(start_field)) * 86400


def _mean_seconds(end_field, since: datetime) -> float:
    """Mean of (end - opened_at) in seconds over incidents opened since ``since`` that reached ``end_field``,
    in SQL (a range of the opened_at index: bounded by the window, not by the whole history)."""
    span = _seconds(Incident.opened_at, end_field)
    value = (
        Incident.select(fn.AVG(span))
        .where(
            (Incident.opened_at >= since)
            & end_field.is_null(False)
            & (Incident.status != CANCELLED)
            & (Incident.drill == False)  # noqa: E712
        )
        .scalar()
    )
    return round(float(value or 0.0), 3)
