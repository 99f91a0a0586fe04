"""Heartbeats in the one flow: the parser of their Inbounds, and the steps that take beats from alerts and mail.

``parse_heartbeat_inbound`` turns an expiry or a recovery (written by gateway/incidents/heartbeats.py)
into an alert Signal with the fingerprint ``heartbeat:<name>``, for the alert steps (``HEARTBEAT_STEPS``
in gateway/service.py): the expiry opens one incident with the heartbeat's group, priority and wording,
the recovery resolves it (``auto-recovered``). ``beat_by_alert`` (first of the alert steps) and
``beat_by_mail`` (first of the mail steps) record a beat for an input that is one and discard it: an
always-firing Watchdog alert or a cron mail opens no incident.
"""

from __future__ import annotations

import functools
from datetime import timedelta

from gateway.config.heartbeat_settings import Heartbeat, heartbeat_named, impact_urgency
from gateway.config.integrations import Integration
from gateway.core.errors import ParseError
from gateway.incidents.heartbeats import FINGERPRINT_PREFIX, FIRING, RESOLVED, incident_title, parse_time, record_beat
from gateway.pipeline.driver import Context, Discard
from gateway.rules import compile_regex
from notifiers.words import duration, moment
from parsers.payload import decode_json
from parsers.signal import Signal


def parse_heartbeat_inbound(ctx: Context) -> list[Signal]:
    """The parser of Inbound source ``heartbeat`` (registered in build_pipeline)."""
    payload = decode_json(bytes(ctx.inbound.raw))
    if not isinstance(payload, dict) or not isinstance(payload.get("heartbeat"), str):
        raise ParseError("field 'heartbeat': a heartbeat Inbound names its heartbeat")
    name, status = payload["heartbeat"], payload.get("status")
    if status not in (FIRING, RESOLVED):
        raise ParseError(f"field 'status': expected firing or resolved, got {status!r}")
    # A heartbeat taken out of the file still resolves its incident: its defaults serve.
    hb = heartbeat_named(ctx.config, name) or Heartbeat(name=name, interval=timedelta(0))
    impact, urgency = impact_urgency(ctx.config, hb.priority)
    ctx.integration = Integration(
        name=ctx.inbound.integration or f"{FINGERPRINT_PREFIX}{name}",
        kind="generic",
        group=hb.group,
        impact=impact,
        urgency=urgency,
        service_label="",
        category_label="",
        resolve_when="any",
    )
    ctx.defaults = ctx.integration.defaults()
    since = parse_time(payload.get("since"))
    if status == FIRING:
        title = incident_title(hb, since)
        text = (
            hb.text.replace("{name}", hb.name).replace("{since}", moment(since))
            if hb.text
            else (
                f"Heartbeat {hb.name} expected a beat at least every {duration(hb.interval)}"
                f" (grace {duration(hb.grace)}); "
                f"the last sign of life was at {moment(since)}."
            )
        )
    else:
        title = f"{hb.name} beats again"
        text = f"Heartbeat {hb.name} beat again at {moment(parse_time(payload.get('beat_at')))}."
    return [
        Signal(
            source="heartbeat",
            title=title,
            text=text,
            fingerprint=f"{FINGERPRINT_PREFIX}{name}",
            status=status,
            labels={"heartbeat": name},
            occurred_at=parse_time(payload.get("at")),
        )
    ]


def beat_by_alert(ctx: Context) -> None:
    """An alert carrying all the labels of a heartbeat is its beat, and opens nothing."""
    s, integration = ctx.signal, ctx.integration
    for hb in ctx.config.heartbeat:
        if not hb.labels or (hb.integration and integration is not None and hb.integration != integration.name):
            continue
        if all(s.labels.get(k) == v for k, v in hb.labels.items()):
            if s.status == FIRING:
                record_beat(hb.name, ctx.clock.now())
            ctx.decide("heartbeat", heartbeat=hb.name)
            raise Discard(f"a beat of heartbeat {hb.name}")


def beat_by_mail(ctx: Context) -> None:
    """Mail whose sender and subject match a heartbeat's patterns is its beat, and opens nothing."""
    s = ctx.signal
    for hb in ctx.config.heartbeat:
        if not (hb.mail_from or hb.mail_subject):
            continue
        if _matches(hb.mail_from, s.reporter_email or "") and _matches(hb.mail_subject, s.title or ""):
            record_beat(hb.name, ctx.clock.now())
            ctx.decide("heartbeat", heartbeat=hb.name)
            raise Discard(f"a beat of heartbeat {hb.name}")


def _matches(pattern: str, text: str) -> bool:
    return not pattern or _regex(pattern).search(text.encode("utf-8", "replace")) is not None


@functools.lru_cache(maxsize=256)
def _regex(pattern: str):
    return compile_regex(pattern, ("[[heartbeat]]",))  # validated at load: compiles here
