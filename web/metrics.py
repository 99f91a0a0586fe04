"""``/metrics`` in the Prometheus text format: incidents, inbound, notifications, MTTA and MTTR.

Counts include security incidents, so the endpoint asks for an admin: a signed-in
session or an admin's API token (``Authorization: Bearer …``, as Prometheus sends it).
"""

from __future__ import annotations

from flask import Blueprint, Response, abort
from flask_login import current_user
from peewee import SQL, fn
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from store.db import is_postgres
from store.models import CANCELLED, Inbound, Incident, Notification
from web.api import token_user

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics():
    user = token_user()
    if user is None and current_user.is_authenticated:
        user = current_user.row
    if user is None:
        return Response("authentication required\n", 401, {"WWW-Authenticate": "Bearer"}, mimetype="text/plain")
    if user.role != "admin":
        abort(403)
    return Response(generate_latest(collect()), mimetype=CONTENT_TYPE_LATEST)


def collect() -> CollectorRegistry:
    """A fresh registry filled from the database (nothing is kept between scrapes)."""
    registry = CollectorRegistry()
    incidents = Gauge("inlet_incidents", "Incidents by status and priority.", ["status", "priority"], registry=registry)
    counted = Incident.select(Incident.status, Incident.priority, fn.COUNT(Incident.id).alias("n"))
    for row in counted.where(Incident.drill == False).group_by(Incident.status, Incident.priority):  # noqa: E712
        incidents.labels(row.status, row.priority).set(row.n)
    inbound = Gauge("inlet_inbound", "Inbound inputs by status.", ["status"], registry=registry)
    for row in Inbound.select(Inbound.status, fn.COUNT(Inbound.id).alias("n")).group_by(Inbound.status):
        inbound.labels(row.status).set(row.n)
    notifications = Gauge("inlet_notifications", "Outbox notifications by status.", ["status"], registry=registry)
    for row in Notification.select(Notification.status, fn.COUNT(Notification.id).alias("n")).group_by(
        Notification.status
    ):
        notifications.labels(row.status).set(row.n)
    mtta = Gauge(
        "inlet_mtta_seconds", "Mean time from opening to acknowledgement (cancelled excluded).", registry=registry
    )
    mttr = Gauge("inlet_mttr_seconds", "Mean time from opening to resolution (cancelled excluded).", registry=registry)
    mtta.set(_mean_seconds(Incident.acknowledged_at))
    mttr.set(_mean_seconds(Incident.resolved_at))
    return registry


def _mean_seconds(end_field) -> float:
    """Mean of (end - opened_at) in seconds over incidents that reached ``end_field``, in SQL."""
    if is_postgres():
        span = SQL(f'EXTRACT(EPOCH FROM ("t1"."{end_field.column_name}" - "t1"."opened_at"))')
    else:
        span = (fn.julianday(end_field) - fn.julianday(Incident.opened_at)) * 86400
    value = (
        Incident.select(fn.AVG(span))
        .where(end_field.is_null(False) & (Incident.status != CANCELLED) & (Incident.drill == False))  # noqa: E712
        .scalar()
    )
    return round(float(value or 0.0), 3)  # julianday arithmetic is exact to about a millisecond
