"""The generic signal steps: correlate, classify, allocate, apply.

Each is a function of the pipeline :class:`~gateway.pipeline.Context`. Source
specific behaviour (email threading rules, alert grouping) lives in the
modules of those sources and is composed into the step list by the service.
"""

from __future__ import annotations

from gateway.pipeline import Context, Discard
from parsers.severity import severity_to_impact_urgency
from parsers.signal import ACKNOWLEDGED, RESOLVED
from store.models import OPEN_STATUSES, CorrelationKey, Incident
from store.models import RESOLVED as INCIDENT_RESOLVED

MESSAGE_ID, FINGERPRINT, GROUP = "message-id", "fingerprint", "group"


def find_by_key(kind: str, values, *, open_only: bool = True) -> Incident | None:
    """The newest incident holding one of these correlation keys (one indexed lookup)."""
    values = [v for v in values if v]
    if not values:
        return None
    query = CorrelationKey.select(CorrelationKey.incident).where(
        (CorrelationKey.kind == kind) & (CorrelationKey.value.in_(values))
    )
    if open_only:
        query = query.where(CorrelationKey.open == True)  # noqa: E712
    key = query.order_by(CorrelationKey.id.desc()).first()
    return Incident.get_by_id(key.incident_id) if key else None


def correlate(ctx: Context) -> None:
    """Find the incident this signal belongs to, or decide it is new."""
    s = ctx.signal
    if ctx.incident is None and s.fingerprint:
        ctx.incident, ctx.match = find_by_key(FINGERPRINT, [s.fingerprint]), FINGERPRINT
    if ctx.incident is None and s.group_key:
        ctx.incident, ctx.match = find_by_key(GROUP, [s.group_key]), GROUP
    if ctx.incident is None:
        ctx.match = ""
    ctx.decide("correlate", incident=ctx.incident.ref if ctx.incident else None, by=ctx.match or "new")


def classify(ctx: Context) -> None:
    """Run the configured rules; record which rule set each field."""
    recipient = ctx.extras.get("recipient")
    decision = ctx.config.ruleset.classify(ctx.signal, recipient=recipient, integration=ctx.inbound.integration)
    ctx.classification = decision
    ctx.decide("classify", matched=list(decision.matched), reasons=dict(decision.reasons))


def allocate(ctx: Context) -> None:
    """Group, impact, urgency and procedure: rule first, then source defaults, then the fallback."""
    d, defaults, sla = ctx.classification, ctx.extras.get("defaults", {}), ctx.config.sla
    severity = severity_to_impact_urgency(ctx.signal.severity, defaults.get("severity_map"))
    impact = d.impact or defaults.get("impact") or (severity and severity[0]) or sla.default_impact
    urgency = d.urgency or defaults.get("urgency") or (severity and severity[1]) or sla.default_urgency
    group = d.group or defaults.get("group") or ctx.config.fallback_group
    major = bool(d.major or defaults.get("major"))
    security = bool(d.security or defaults.get("security"))
    category = d.category or defaults.get("category", "")
    procedure = "major" if major else "security" if security else _procedure_for(ctx.config, category)
    ctx.allocation = {
        "group": group,
        "impact": impact,
        "urgency": urgency,
        "category": category,
        "service": d.service or defaults.get("service", ""),
        "tags": list(d.tags),
        "major": major,
        "security": security,
        "procedure": procedure,
    }
    why = {"group": d.reasons.get("group") or ("source default" if defaults.get("group") else "fallback group")}
    ctx.decide("allocate", group=group, procedure=procedure, impact=impact, urgency=urgency, why=why)


def _procedure_for(config, category: str) -> str:
    low_impact = getattr(config, "low_impact_categories", ())
    return "low-impact" if category and category in low_impact else "standard"


def keys_of(ctx: Context) -> list[tuple[str, str]]:
    s = ctx.signal
    keys = []
    if s.message_id:
        keys.append((MESSAGE_ID, s.message_id))
    if s.fingerprint:
        keys.append((FINGERPRINT, s.fingerprint))
    if s.group_key:
        keys.append((GROUP, s.group_key))
    return keys


def apply(ctx: Context) -> None:
    """Create the incident, or apply the signal to the one it belongs to."""
    s, lc, actor = ctx.signal, ctx.lifecycle, ctx.extras.get("actor") or s_actor(ctx)
    if ctx.incident is None:
        if s.status == RESOLVED:
            raise Discard("a recovery for a problem with no open incident")
        a = ctx.allocation
        ctx.incident = lc.create(
            title=s.title,
            description=s.text,
            actor=actor,
            source=s.source,
            integration=ctx.inbound.integration,
            reporter_email=s.reporter_email,
            reporter_name=s.reporter_name or "",
            impact=a["impact"],
            urgency=a["urgency"],
            category=a["category"],
            service=a["service"],
            group=a["group"],
            procedure=a["procedure"],
            tags=a["tags"],
            labels=s.labels,
            major=a["major"],
            security=a["security"],
            decisions=dict(ctx.classification.reasons),
            keys=keys_of(ctx),
            inbound=ctx.inbound,
            context=ctx.extras.get("context"),
        )
        ctx.outcome = "created"
        ctx.decide("apply", result="created", incident=ctx.incident.ref)
        return
    incident = ctx.incident
    if s.status == RESOLVED and incident.status in OPEN_STATUSES:
        ctx.incident = lc.resolve(
            incident.ref,
            actor,
            code="auto-recovered",
            notes=s.text or "The source reported recovery.",
            cause="monitoring",
        )
        result = "resolved"
    elif s.status == ACKNOWLEDGED and incident.status == "new":
        ctx.incident = lc.acknowledge(incident.ref, actor)
        result = "acknowledged"
    elif incident.status == INCIDENT_RESOLVED and s.status != RESOLVED:
        ctx.incident = lc.reopen(incident.ref, actor, reason=f"the source reports the problem again: {s.title}")
        result = "reopened"
    else:
        ctx.incident = lc.add_signal(incident.ref, actor)
        result = "repeat"
    ctx.outcome = "updated"
    ctx.decide("apply", result=result, incident=incident.ref)


def s_actor(ctx: Context) -> str:
    s = ctx.signal
    return s.reporter_email or ctx.inbound.integration or s.source
