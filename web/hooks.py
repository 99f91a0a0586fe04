"""Webhook intake: ``POST /hooks/<integration>``, and heartbeat pings ``/hooks/<integration>/heartbeat/<name>``.

The order of the checks: unknown integration 404; body over the size limit 413;
not JSON 415; the bearer token or HMAC signature (missing 401, wrong 403, secret
not configured on the server 503: checked before the body is decoded, so a
stranger's body costs no parsing); the body decoded in a guarded step of its own
(not UTF-8 or not JSON, NaN or out-of-range numbers, nesting deeper than 64
levels, text that is not plain — a lone surrogate or NUL, which no store can
keep — all 400 naming the field); then a PagerDuty routing key (401/403); rate
limit 429 with Retry-After; invalid payload 400 naming the field (the pure parser
runs here, so a bad payload is never stored); a re-delivery (Idempotency-Key, or the same body within the window)
answers 202 with the first delivery's id; otherwise the raw body is stored and
the answer, 202 with the Inbound id, is sent only once its row is committed
(503 with Retry-After when the store cannot take it). PagerDuty-kind
integrations answer like PagerDuty's Events API v2, so existing clients work.

The blueprint is exempt from CSRF protection: its callers are machines that
authenticate every request by token or signature, not browser sessions.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid

import peewee
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from gateway.config.integrations import (
    Denied,
    RateLimiter,
    RecentRequests,
    authenticate,
    authenticate_routing_key,
    integration_named,
)
from gateway.core.clock import iso
from gateway.core.errors import ParseError, StoreUnavailable
from gateway.incidents.heartbeats import record_beat
from gateway.intake.refusals import WEBHOOK
from gateway.intake.sns_signature import confirm_subscription
from gateway.intake.sns_signature import verify as sns_verify
from gateway.intake.writer import InboundRecord
from gateway.pipeline.alert_steps import GENERATED_DEDUP_HEADER, SOURCE, webhook_signals
from parsers.payload import decode_json, require_plain_text
from store.db import db
from store.models import Inbound

log = logging.getLogger("inlet.hooks")

bp = Blueprint("hooks", __name__, url_prefix="/hooks")

# Request headers kept with the Inbound: what tells where a request came from, never credentials.
KEPT_HEADERS = ("Content-Type", "User-Agent", "Idempotency-Key", "X-Request-Id", "X-Forwarded-For")
RETRY_AFTER_STORE = 5
_FIELD = re.compile(r"field '([^']*)'")


def init_app(app, services) -> None:
    """Register the blueprint; its rate limiter and idempotency memory live with the app."""
    clock = services.clock
    app.extensions["inlet_hooks"] = {"limiter": RateLimiter(clock), "recent": RecentRequests(clock), "clock": clock}
    app.register_blueprint(bp)


@bp.teardown_request
def _answered(error: BaseException | None = None) -> None:
    """Every exit of a webhook request (any status, or an exception) lets go of its work in hand:
    one left behind would slow the pipeline worker down until a restart (it waits while intake is busy)."""
    writer = getattr(current_app.config.get("SERVICES"), "writer", None)
    if writer is not None:
        writer.out_of_hand(request._get_current_object())


def _json(status: int, body: dict, headers: dict | None = None) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _error(status: int, reason: str, message: str, headers: dict | None = None, **extra) -> Response:
    """A refusal: counted under ``reason`` (a name of gateway.intake.refusals.REASONS) and answered in JSON."""
    refusals = getattr(current_app.config.get("SERVICES"), "refusals", None)
    if refusals is not None:
        refusals.count(WEBHOOK, reason)
    return _json(status, {"error": message, **extra}, headers)


def _bad_request(exc: ParseError) -> Response:
    match = _FIELD.search(str(exc))
    return _error(400, "bad_request", str(exc), field=match.group(1) if match else "")


def _denied(name: str, denied: Denied) -> Response:
    if denied.status == 401:
        log.info("hooks/%s: unauthenticated request from %s", name, request.remote_addr)
        return _error(401, "unauthenticated", denied.error, {"WWW-Authenticate": 'Bearer realm="inlet"'})
    if denied.status == 503:
        return _error(503, "auth_unconfigured", denied.error, {"Retry-After": "60"})
    log.warning("hooks/%s: refused request from %s: %s", name, request.remote_addr, denied.error)
    return _error(denied.status, "forbidden", denied.error)


def _accepted(integration, inbound_id: int, dedup_key: str | None) -> Response:
    if integration.kind == "pagerduty":
        return _json(202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key})
    return _json(202, {"inbound_id": inbound_id})


@bp.post("/<name>")
def receive(name: str):
    config = current_app.config["INLET"]
    services = current_app.config["SERVICES"]
    state = current_app.extensions["inlet_hooks"]
    integration = integration_named(config, name)
    if integration is None:
        return _error(404, "unknown_integration", f"no integration named '{name}'")

    limit = config.web.max_body_size
    if request.content_length is not None and request.content_length > limit:
        return _error(413, "too_large", f"request body larger than {limit} bytes")
    mimetype = request.mimetype or ""
    sns = integration.kind == "sns"  # Amazon SNS posts its JSON as text/plain
    if mimetype != "application/json" and not mimetype.endswith("+json") and not (sns and mimetype == "text/plain"):
        return _error(415, "content_type", f"Content-Type must be application/json, got '{mimetype or 'none'}'")
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:  # a chunked body without Content-Length, cut at the limit
        return _error(413, "too_large", f"request body larger than {limit} bytes")
    if len(body) > limit:
        return _error(413, "too_large", f"request body larger than {limit} bytes")

    # Authenticate, decode, authenticate what the body carries: each step refuses on its own, and
    # neither check lets an exception through as "no denial" (gateway.config.integrations fails closed).
    denied = authenticate(integration, request.headers, body, state["clock"].now())
    if denied is not None:
        return _denied(name, denied)
    try:
        payload = decode_json(body, plain_text=False)
    except ParseError as exc:
        return _bad_request(exc)
    denied = authenticate_routing_key(integration, payload)  # a key that is not plain text: 403
    if denied is None and sns:
        denied = sns_verify(integration, payload, state["clock"].now())
    if denied is not None:
        return _denied(name, denied)
    try:
        require_plain_text(body, payload)
    except ParseError as exc:
        return _bad_request(exc)

    # Work in hand until answered (the pipeline worker waits meanwhile): every exit lets go (_answered).
    services.writer.in_hand(request._get_current_object())
    wait = state["limiter"].take(integration)
    if wait:
        seconds = max(1, math.ceil(wait))
        return _error(
            429,
            "rate_limited",
            f"integration '{name}' is over its rate limit of {integration.rate_limit} requests per "
            f"{int(integration.rate_window.total_seconds())}s",
            {"Retry-After": str(seconds)},
            retry_after=seconds,
        )

    idempotency_key = request.headers.get("Idempotency-Key", "").strip()[:200] or None
    recent = state["recent"]
    key = recent.key(integration, idempotency_key, body)
    seen = recent.get(integration, key)
    if seen is not None:
        _repeated_beats(config, integration, payload, state["clock"].now())
        return _accepted(integration, seen.inbound_id, seen.dedup_key)

    if sns and payload.get("Type") == "SubscriptionConfirmation":
        failed = confirm_subscription(integration, payload)  # before storing: a refusal makes SNS send it again
        if failed is not None:
            log.warning("hooks/%s: %s", name, failed)
            return _error(503, "sns_unconfirmed", failed, {"Retry-After": "60"})

    generated = None
    if integration.kind == "pagerduty" and isinstance(payload, dict) and not payload.get("dedup_key"):
        generated = uuid.uuid4().hex  # decided here, stored with the Inbound, used by the pipeline
    try:
        signals = webhook_signals(integration, payload, generated)
    except ParseError as exc:
        return _bad_request(exc)
    answered_key = generated
    if integration.kind == "pagerduty" and not generated and signals:
        answered_key = payload.get("dedup_key")

    headers = {h: value for h in KEPT_HEADERS if (value := request.headers.get(h)) is not None}
    if generated:
        headers[GENERATED_DEDUP_HEADER] = generated
    record = InboundRecord(
        source=SOURCE,
        integration=integration.name,
        raw=body,
        headers=headers,
        dedup_key=recent.dedup_key(integration, key),
        peer=request.remote_addr or "",
    )
    try:
        accepted = services.writer.store(record)
    except StoreUnavailable as exc:
        log.warning("hooks/%s: store unavailable: %s", name, exc)
        return _error(
            503, "store_unavailable", f"cannot store the event now: {exc}", {"Retry-After": str(RETRY_AFTER_STORE)}
        )
    if accepted.duplicate and generated:
        answered_key = _stored_dedup_key(accepted.inbound_id) or generated
    recent.remember(key, accepted.inbound_id, answered_key)
    return _accepted(integration, accepted.inbound_id, answered_key)


@bp.route("/<name>/heartbeat/<beat>", methods=["POST", "GET"])
def heartbeat(name: str, beat: str):
    """A beat of ``[[heartbeat]] <beat>`` through ``[[integration]] <name>``: its authentication (bearer or
    HMAC; fail closed), its rate limit and the size limit apply; the body, if any, is not kept. GET is for
    cron and curl (the token in the Authorization header, never in the URL, which logs keep)."""
    config = current_app.config["INLET"]
    state = current_app.extensions["inlet_hooks"]
    integration = integration_named(config, name)
    if integration is None:
        return _error(404, "unknown_integration", f"no integration named '{name}'")
    hb = next((h for h in config.heartbeat if h.name == beat and h.integration == name), None)
    if hb is None:
        return _error(404, "unknown_integration", f"no heartbeat named '{beat}' takes pings from '{name}'")
    limit = config.web.max_body_size
    if request.content_length is not None and request.content_length > limit:
        return _error(413, "too_large", f"request body larger than {limit} bytes")
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        return _error(413, "too_large", f"request body larger than {limit} bytes")
    if len(body) > limit:
        return _error(413, "too_large", f"request body larger than {limit} bytes")
    now = state["clock"].now()
    if integration.auth not in ("bearer", "hmac"):  # a routing key or an SNS signature cannot sign a ping
        denied = Denied(403, f"heartbeat pings need auth = bearer or hmac; '{name}' uses {integration.auth}")
    else:
        denied = authenticate(integration, request.headers, body, now)
    if denied is not None:
        return _denied(name, denied)
    wait = state["limiter"].take(integration)
    if wait:
        seconds = max(1, math.ceil(wait))
        return _error(
            429,
            "rate_limited",
            f"integration '{name}' is over its rate limit of {integration.rate_limit} requests per "
            f"{int(integration.rate_window.total_seconds())}s",
            {"Retry-After": str(seconds)},
            retry_after=seconds,
        )
    try:
        with db.connection_context():
            record_beat(hb.name, now)
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        log.warning("hooks/%s/heartbeat/%s: store unavailable: %s", name, beat, exc)
        return _error(
            503, "store_unavailable", f"cannot record the beat now: {exc}", {"Retry-After": str(RETRY_AFTER_STORE)}
        )
    return _json(202, {"heartbeat": hb.name, "beat_at": iso(now)})


def _repeated_beats(config, integration, payload, now) -> None:
    """A repeat is not stored again, yet it is a beat when a heartbeat takes its alerts (Alertmanager sends the
    same Watchdog body every repeat_interval): record it here, as the pipeline's step would have."""
    wanted = [h for h in config.heartbeat if h.labels and h.integration in ("", integration.name)]
    if not wanted:
        return
    try:
        signals = webhook_signals(integration, payload)
    except ParseError:
        return
    names = {
        h.name
        for s in signals
        for h in wanted
        if s.status == "firing" and all(s.labels.get(k) == v for k, v in h.labels.items())
    }
    try:
        with db.connection_context():
            for name in sorted(names):
                record_beat(name, now)
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        log.warning("hooks/%s: cannot record a heartbeat: %s", integration.name, exc)


def _stored_dedup_key(inbound_id: int) -> str | None:
    """The dedup key generated for the first delivery of a re-delivered PagerDuty trigger."""
    with db.connection_context():
        row = Inbound.get_or_none(Inbound.id == inbound_id)
    return (row.headers or {}).get(GENERATED_DEDUP_HEADER) if row else None
