"""The generic signal steps: correlate, classify, allocate, apply.

Each is a function of the pipeline :class:`~gateway.pipeline.driver.Context`. The step
lists of gateway/service.py compose them with the steps of one kind of input
(mail_steps.py: screening and threading; alert_steps.py: grouping and maintenance).
"""

from __future__ import annotations

from gateway.config.integrations import from_label
from gateway.config.procedure_settings import procedure_for
from gateway.pipeline.driver import Context, Discard
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
    return Incident.first_where(id=key.incident_id) if key else None


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
    recipient = ctx.recipient or None
    decision = ctx.config.ruleset.classify(ctx.signal, recipient=recipient, integration=ctx.source_name)
    ctx.classification = decision
    ctx.decide("classify", matched=list(decision.matched), reasons=dict(decision.reasons))


def allocate(ctx: Context) -> None:
    """Group, impact, urgency and procedure: rule first, then source defaults, then the fallback."""
    ctx.allocation, why = allocation_for(ctx.config, ctx.classification, ctx.signal, ctx.defaults)
    a = ctx.allocation
    ctx.decide(
        "allocate", group=a["group"], procedure=a["procedure"], impact=a["impact"], urgency=a["urgency"], why=why
    )


def allocation_for(config, d, signal, defaults: dict) -> tuple[dict, dict]:
    """(allocation, why): each field's value and what set it — a rule, the source default, the signal's
    severity, the configured default, the fallback group, or the procedure's category list. Pure."""
    sla = config.sla
    severity = severity_to_impact_urgency(signal.severity, defaults.get("severity_map"))
    why = {}

    def pick(name, *candidates):
        for source, value in candidates:
            if value:
                why[name] = source
                return value
        return None

    rule = d.reasons.get
    impact = pick(
        "impact",
        (f"rule {rule('impact')!r}", d.impact),
        ("source default", defaults.get("impact")),
        ("signal severity", severity and severity[0]),
        ("sla.default_impact", sla.default_impact),
    )
    urgency = pick(
        "urgency",
        (f"rule {rule('urgency')!r}", d.urgency),
        ("source default", defaults.get("urgency")),
        ("signal severity", severity and severity[1]),
        ("sla.default_urgency", sla.default_urgency),
    )
    group = pick(
        "group",
        (f"rule {rule('group')!r}", d.group),
        ("source default", defaults.get("group")),
        ("fallback group", config.fallback_group),
    )
    category = pick(
        "category",
        (f"rule {rule('category')!r}", d.category),
        from_label("category", signal, defaults, config.procedures.categories),
        ("source default", defaults.get("category")),
    )
    service = pick(
        "service",
        (f"rule {rule('service')!r}", d.service),
        from_label("service", signal, defaults),
        ("source default", defaults.get("service")),
    )
    procedure, major, security = procedure_for(
        config,
        category=category or "",
        major=bool(d.major or defaults.get("major")),
        security=bool(d.security or defaults.get("security")),
    )
    if d.major:
        why["procedure"] = f"rule {rule('major')!r}"
    elif d.security and not major:
        why["procedure"] = f"rule {rule('security')!r}"
    elif procedure != "standard":
        why["procedure"] = f"category {category!r}" if category else "source default"
    else:
        why["procedure"] = "default"
    allocation = {
        "group": group,
        "impact": impact,
        "urgency": urgency,
        "category": category or "",
        "service": service or "",
        "tags": list(d.tags),
        "major": major,
        "security": security,
        "procedure": procedure,
    }
    return allocation, why


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


def create_incident(ctx: Context, actor: str, *, keys=None, drill: bool = False, context: dict | None = None):
    """Register the current signal as a new incident, as classified and allocated."""
    s, a = ctx.signal, ctx.allocation
    return ctx.lifecycle.create(
        title=s.title,
        description=s.text,
        actor=actor,
        source=s.source,
        integration=ctx.source_name,
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
        drill=drill,
        decisions=dict(ctx.classification.reasons),
        keys=keys_of(ctx) if keys is None else keys,
        inbound=ctx.inbound,
        context=context,
    )


def apply(ctx: Context) -> None:
    """Create the incident, or apply the signal to the one it belongs to."""
    s, lc, actor = ctx.signal, ctx.lifecycle, s_actor(ctx)
    if ctx.incident is None:
        if s.status == RESOLVED:
            raise Discard("a recovery for a problem with no open incident")
        ctx.incident = create_incident(ctx, actor, context=ctx.hook_context or None)
        ctx.outcome = "created"
        ctx.decide("apply", result="created", incident=ctx.incident.ref)
        return
    incident = ctx.incident
    if s.status == RESOLVED and incident.status in OPEN_STATUSES and incident.major and incident.assignee_id is None:
        ctx.incident = lc.add_signal(incident.ref, actor)  # a major incident is resolved by its commander
        result = "recovery noted"
    elif s.status == RESOLVED and incident.status in OPEN_STATUSES:
        ctx.incident = lc.resolve(
            incident.ref,
            actor,
            code="auto-recovered",
            notes=s.text or "The source reported recovery.",
            cause="monitoring",
        )
        result = "resolved"
    elif s.status == ACKNOWLEDGED and incident.status == "new" and not (incident.major and not incident.assignee_id):
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
    return s.reporter_email or ctx.source_name or s.source
