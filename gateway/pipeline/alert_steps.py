"""The alert-specific pipeline: webhook Inbound -> Signals, and one incident per problem.

``parse_webhook_inbound`` is the parser of Inbound source ``webhook``: it looks up
the integration, runs the pure parser of its kind, namespaces the correlation keys
by integration, applies the configured grouping and hands the integration's
defaults to the allocate step.

``correlate``, ``maintenance`` and ``apply`` are the alert steps of ``ALERT_STEPS``
(gateway/service.py), around the generic classify and allocate; the same list runs for a
monitoring tool's alert mail (gateway/pipeline/mail_alerts.py), whose ``[[mail_alert]]``
rule stands where a webhook's ``[[integration]]`` does (``ctx.integration``: name, reopen and
flap windows, resolve policy):

- the same fingerprint while its incident is open (or resolved within the reopen
  window) → that incident; a repeat only counts (signal count, last seen), no
  timeline entry;
- signals of one group (Alertmanager ``groupKey`` or the configured label set)
  join one incident; the incident keeps each fingerprint's state
  (``CorrelationKey.state``) and resolves when all / any / never of them have
  resolved, with resolution code ``auto-recovered``; PagerDuty ``acknowledge``
  acknowledges;
- a re-fire within the reopen window after an automatic recovery reopens the
  incident and counts a flap; more than ``flap_threshold`` flaps within
  ``flap_window`` mark it flapping: its lifecycle changes carry
  ``context={"page": False}`` until it is stable;
- a signal inside a maintenance window (the ``maintenance`` step) is recorded and
  attached, with ``context={"page": False}``; resolves always pass.
"""

from __future__ import annotations

import dataclasses
import functools

from gateway.config.integrations import Integration, integration_named, maintenance_for
from gateway.core.errors import ParseError
from gateway.incidents.lifecycle import add_key
from gateway.pipeline.driver import Context, Discard
from gateway.pipeline.signal_steps import FINGERPRINT, GROUP, create_incident, keys_of
from parsers.drill import drill_defaults
from parsers.payload import decode_json
from parsers.signal import ACKNOWLEDGED, RESOLVED, Signal
from parsers.webhooks import parse_webhook
from store.db import NEW_PROBLEM, db, is_postgres, wait_for_key
from store.models import NEW, OPEN_STATUSES, CorrelationKey, Event, Incident
from store.models import RESOLVED as INCIDENT_RESOLVED

SOURCE = "webhook"
GENERATED_DEDUP_HEADER = "X-Inlet-Dedup-Key"  # stored with the Inbound: the key answered to a PagerDuty client
FIRING_STATE, RESOLVED_STATE = "firing", "resolved"
NO_PAGE = {"page": False}


def webhook_signals(integration: Integration, payload, generated_dedup_key: str | None = None) -> list[Signal]:
    """The Signals of one request to ``integration``, keys namespaced and grouped as configured.

    Pure (no I/O): the HTTP edge runs it to answer 400 before storing, the pipeline
    runs it again on the stored raw body. ``generated_dedup_key`` replaces the key
    the PagerDuty parser generates for a trigger without one, so intake and
    pipeline agree on it.
    """
    signals = parse_webhook(integration.kind, payload, integration.options())
    out = []
    for s in signals:
        fingerprint = s.fingerprint
        if generated_dedup_key and s.details.get("dedup_key_generated"):
            fingerprint = generated_dedup_key
        group_key = s.group_key
        if integration.group_by:
            group_key = "|".join(f"{name}={s.labels.get(name, '')}" for name in integration.group_by)
        out.append(
            dataclasses.replace(
                s,
                fingerprint=f"{integration.name}:{fingerprint}" if fingerprint else None,
                group_key=f"{integration.name}:{group_key}" if group_key else None,
            )
        )
    return out


def parse_webhook_inbound(ctx: Context) -> list[Signal]:
    """The parser of Inbound source ``webhook`` (registered in build_pipeline)."""
    integration = integration_named(ctx.config, ctx.inbound.integration)
    if integration is None:
        raise ParseError(f"no [[integration]] named {ctx.inbound.integration!r} in the configuration")
    payload = decode_json(bytes(ctx.inbound.raw))  # ParseError (quarantine) for what intake refuses today
    headers = {k.lower(): v for k, v in (ctx.inbound.headers or {}).items()}
    ctx.integration = integration
    ctx.defaults = integration.defaults()
    signals = webhook_signals(integration, payload, headers.get(GENERATED_DEDUP_HEADER.lower()))
    if integration.kind == "drill":  # the drill asks for its procedure and group
        ctx.defaults.update(drill_defaults(signals))
    return signals


# ---------------------------------------------------------------- correlate


def correlate(ctx: Context) -> None:
    """Fingerprint, then group key; a long-resolved incident is not reopened."""
    integration = ctx.integration
    s, now = ctx.signal, ctx.clock.now()
    keys = [(kind, value) for kind, value in ((FINGERPRINT, s.fingerprint), (GROUP, s.group_key)) if value]
    ctx.incident, ctx.match = _correlate(keys, integration.reopen_window, now)
    if ctx.incident is None and keys and is_postgres():
        # Two worker processes meeting on a new problem would open an incident each: the second waits
        # here until the first commits (or rolls back), then looks again and joins the first's incident.
        for kind, value in sorted(keys):
            wait_for_key(NEW_PROBLEM, f"{kind}:{value[:512]}")
        ctx.incident, ctx.match = _correlate(keys, integration.reopen_window, now)
    ctx.decide("correlate", incident=ctx.incident.ref if ctx.incident else None, by=ctx.match or "new")


def _correlate(keys: list[tuple[str, str]], reopen_window, now) -> tuple[Incident | None, str]:
    """The incident of the first key that has one open (or resolved within the reopen window), and the key's kind."""
    for kind, value in keys:
        incident = _find_open(kind, value)
        if incident is None:
            continue
        if incident.status == INCIDENT_RESOLVED and (
            incident.resolved_at is None or now - incident.resolved_at > reopen_window
        ):
            continue  # resolved too long ago: a new problem
        return incident, kind
    return None, ""


def _find_open(kind: str, value: str) -> Incident | None:
    """Like generic.find_by_key for one key, in one indexed query (the hot path of a storm; its SQL built once)."""
    row = db.execute_sql(_find_open_sql(db.param), [kind, value[:512], True]).fetchone()
    return None if row is None else Incident.from_row(row)


@functools.cache
def _find_open_sql(param: str) -> str:
    return (
        f'SELECT {Incident.column_list("i")} FROM "incident" AS "i" '
        'JOIN "correlation_key" AS "k" ON ("k"."incident_id" = "i"."id") '
        f'WHERE "k"."kind" = {param} AND "k"."value" = {param} AND "k"."open" = {param} ORDER BY "k"."id" DESC LIMIT 1'
    )


# ---------------------------------------------------------------- maintenance


def maintenance(ctx: Context) -> None:
    """A signal inside a maintenance window of its integration pages no one (its changes still happen)."""
    window = maintenance_for(ctx.config, ctx.integration.name, ctx.signal.labels, ctx.clock.now())
    if window is not None:
        ctx.page = False
        ctx.decide("maintenance", window=window.name, reason=window.reason)


# ---------------------------------------------------------------- apply


def apply(ctx: Context) -> None:
    """Create, count, join, resolve, acknowledge, reopen (flaps), as the module says."""
    integration = ctx.integration
    s, lc, now = ctx.signal, ctx.lifecycle, ctx.clock.now()
    actor = ctx.source_name  # the [[integration]] (or [[mail_alert]]) that reported it
    context = {} if ctx.page else dict(NO_PAGE)

    if ctx.incident is None:
        if s.status == RESOLVED:
            raise Discard("a recovery for a problem with no open incident")
        if s.status == ACKNOWLEDGED:
            raise Discard("an acknowledgement for a problem with no open incident")
        keys = [k for k in keys_of(ctx) if k[0] != FINGERPRINT]  # the fingerprint key carries state
        drill = integration.kind == "drill"
        ctx.incident = create_incident(ctx, actor, keys=keys, drill=drill, context=context)
        if s.fingerprint:
            add_key(ctx.incident, FINGERPRINT, s.fingerprint, now, state=FIRING_STATE)
        ctx.created.add(ctx.incident.id)
        ctx.outcome = "created"
        ctx.decide("apply", result="created", incident=ctx.incident.ref, paging=not context)
        return

    incident = ctx.incident
    if incident.flapping:
        context = dict(NO_PAGE)
    previous = _set_state(incident, s, now)
    ctx.incident = lc.add_signal(incident.ref, actor, at=now)
    result = "repeat"
    if s.status == RESOLVED:
        result = _on_resolved(ctx, integration, incident, previous, actor)
    elif s.status == ACKNOWLEDGED:
        if incident.status == NEW:
            ctx.incident = lc.acknowledge(incident.ref, actor)
            result = "acknowledged"
    elif incident.status == INCIDENT_RESOLVED:
        result = _reopen(ctx, integration, incident, actor, context)
    elif previous is None and incident.id in ctx.created:
        result = "alert joins"  # a further alert of the request that opened the incident: not news
    elif previous != FIRING_STATE and incident.status in OPEN_STATUSES:
        what = "joins" if previous is None else "fires again"
        lc.note(incident.ref, actor, f"Alert {_name(s)} {what}.", context=NO_PAGE)
        result = "alert firing"
    ctx.outcome = "updated"
    ctx.decide("apply", result=result, incident=incident.ref)


def _on_resolved(ctx: Context, integration: Integration, incident, previous: str | None, actor: str) -> str:
    if incident.status not in OPEN_STATUSES:
        return "repeat"
    still_firing = (
        CorrelationKey.select()
        .where(
            (CorrelationKey.incident == incident)
            & (CorrelationKey.kind == FINGERPRINT)
            & (CorrelationKey.state != RESOLVED_STATE)
        )
        .count()
    )
    policy = integration.resolve_when
    if policy == "any" or (policy == "all" and still_firing == 0):
        lc = ctx.lifecycle
        ctx.incident = lc.resolve(
            incident.ref,
            actor,
            code="auto-recovered",
            notes=ctx.signal.text or "The source reported recovery.",
            cause="monitoring",
        )
        if incident.flapping and _flaps_in_window(ctx, integration, incident) <= integration.flap_threshold:
            ctx.incident = lc.flap(incident.ref, actor, flapping=False, count=False)
        return "resolved"
    if previous != RESOLVED_STATE:
        left = f"{still_firing} still firing" if policy == "all" else "resolve_when = never"
        ctx.lifecycle.note(incident.ref, actor, f"Alert {_name(ctx.signal)} resolved ({left}).", context=NO_PAGE)
        return "alert resolved"
    return "repeat"


def _reopen(ctx: Context, integration: Integration, incident, actor: str, context: dict) -> str:
    lc = ctx.lifecycle
    auto = incident.resolution_code == "auto-recovered"
    flapping = incident.flapping
    if auto:
        flapping = _flaps_in_window(ctx, integration, incident) + 1 > integration.flap_threshold
    if flapping:
        context = dict(NO_PAGE)
    reason = f"the source reports the problem again: {ctx.signal.title}"
    ctx.incident = lc.reopen(incident.ref, actor, reason=reason, context=context)
    if auto:
        ctx.incident = lc.flap(incident.ref, actor, flapping=flapping, context=context)
        return "reopened (flap)" + (", flapping" if flapping else "")
    return "reopened"


def _flaps_in_window(ctx: Context, integration: Integration, incident) -> int:
    """Reopens of the incident within the flap window (each counted as a flap)."""
    since = ctx.clock.now() - integration.flap_window
    return Event.select().where((Event.incident == incident) & (Event.type == "reopened") & (Event.at >= since)).count()


def _set_state(incident, s: Signal, now) -> str | None:
    """Record the fingerprint's state on the incident; return its state before (None: new to it)."""
    if not s.fingerprint:
        return FIRING_STATE if s.status != RESOLVED else None
    state = RESOLVED_STATE if s.status == RESOLVED else FIRING_STATE
    key = CorrelationKey.first_where(incident=incident.id, kind=FINGERPRINT, value=s.fingerprint[:512])
    if key is None:
        add_key(incident, FINGERPRINT, s.fingerprint, now, state=state)
        return None
    if s.status == ACKNOWLEDGED or key.state == state:
        return key.state
    CorrelationKey.update(state=state).where(CorrelationKey.id == key.id).execute()
    return key.state


def _name(s: Signal) -> str:
    return s.labels.get("alertname") or s.title
