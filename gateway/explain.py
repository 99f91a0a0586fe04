"""Explain and test the rules: ``inlet classify FILE`` and the ``[[rule_test]]`` cases of ``inlet check``.

Both run the same pure functions as the pipeline (the rules, ``steps.allocation_for``,
the priority matrix and the SLA targets), without a database.
"""

from __future__ import annotations

import json
from pathlib import Path

from gateway.config.loader import RuleTest
from gateway.config.schema import format_duration
from gateway.core.errors import InletError, ParseError
from gateway.incidents import sla
from gateway.pipeline.mail_alerts import alert_of, rule_for
from gateway.pipeline.mail_steps import receiving_address
from gateway.pipeline.signal_steps import allocation_for
from parsers.email import EmailOptions, parse_email
from parsers.signal import Signal
from parsers.webhooks import KINDS, parse_webhook

EXPECTED = ("category", "service", "impact", "urgency", "priority", "group", "procedure")


def read_signals(raw: bytes, kind: str | None = None):
    """(kind, signals) of an input file: an email (RFC 5322) or a webhook JSON body (format detected)."""
    if kind is None:
        kind = "json" if raw.lstrip()[:1] in (b"{", b"[") else "email"
    if kind == "email":
        return "email", [parse_email(raw, EmailOptions())]
    try:
        payload = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError(f"not JSON: {exc}") from None
    if kind != "json":
        return kind, parse_webhook(kind, payload)
    errors = []
    for name in KINDS:  # generic last: it accepts almost anything
        try:
            return name, parse_webhook(name, payload)
        except ParseError as exc:
            errors.append(f"{name}: {exc}")
    raise ParseError("no webhook format reads this JSON: " + "; ".join(errors))


def explain(config, signal, *, recipient: str | None = None, integration: str | None = None) -> dict:
    """What the pipeline would decide for one signal, with the reason for each field."""
    defaults, mail_alert = {}, None
    if signal.source == "email":  # as intake does (gateway/pipeline/mail_steps.py): the [[address]] it came to
        found = receiving_address(config, signal, [recipient] if recipient else [])
        if found is not None:
            recipient, defaults = found
        read = rule_for(config, signal, recipient or "")
        if read is not None:  # a monitoring tool's alert mail (gateway/pipeline/mail_alerts.py)
            rule, groups = read
            alert = alert_of(rule, signal, groups)
            mail_alert = {"rule": rule.name, "groups": groups, "status": alert.status if alert else "ignore"}
            if alert is not None:
                mail_alert["fingerprint"] = alert.fingerprint
                signal, integration, defaults = alert, rule.name, {**defaults, **rule.defaults()}
    elif integration:  # as webhook intake does (gateway/pipeline/alert_steps.py): the integration's defaults
        entry = next((i for i in config.integration if i.name == integration), None)
        defaults = entry.defaults() if entry is not None else {}
    decision = config.ruleset.classify(signal, recipient=recipient, integration=integration)
    allocation, why = allocation_for(config, decision, signal, defaults)
    prio = sla.priority(allocation["impact"], allocation["urgency"], config.sla.matrix)
    group = config.group_named(allocation["group"])
    calendar = config.calendar_named(group.calendar) if group and group.calendar else None
    target = config.sla.target(prio)
    calendar_used = sla.effective_calendar(prio, calendar, config.sla)
    result = {
        "title": signal.title,
        "source": signal.source,
        **{k: allocation[k] for k in ("category", "service", "impact", "urgency", "group", "procedure")},
        "priority": prio,
        "major": allocation["major"],
        "security": allocation["security"],
        "tags": allocation["tags"],
        "sla": {
            "respond": format_duration(target.respond),
            "resolve": format_duration(target.resolve),
            "calendar": calendar_used.name if calendar_used else "24x7",
        },
        "why": {
            **why,
            "priority": f"matrix impact={allocation['impact']} × urgency={allocation['urgency']}",
            "sla": f"sla.targets.{prio}" + (f", calendar {calendar_used.name!r}" if calendar_used else ", 24x7"),
        },
        "matched": list(decision.matched),
    }
    if mail_alert is not None:
        result["mail_alert"] = mail_alert
    return result


def format_explanation(result: dict) -> str:
    lines = [f"{result['title']}  ({result['source']})"]
    for key in ("category", "service", "impact", "urgency", "priority", "group", "procedure"):
        value = result[key] or "-"
        lines.append(f"  {key:<10} {value:<16} {result['why'].get(key, '')}")
    s = result["sla"]
    lines.append(f"  {'sla':<10} {'respond ' + s['respond'] + ', resolve ' + s['resolve']:<16} {result['why']['sla']}")
    lines.append(f"  matched    {', '.join(result['matched']) or 'no rule'}")
    if "mail_alert" in result:
        alert = result["mail_alert"]
        read = ", ".join(f"{name}: {value}" for name, value in alert["groups"].items())
        lines.append(f"  mail alert {alert['rule']}: {alert['status']} ({read})")
    return "\n".join(lines)


def _case_signal(case: RuleTest, base: Path):
    if case.input:
        path = (base / case.input).resolve()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InletError(f"rule test {case.name or case.input!r}: cannot read {path}: {exc.strerror}") from None
        _kind, signals = read_signals(raw)
        if not signals:
            raise InletError(f"rule test {case.name or case.input!r}: {path} holds no signal")
        return signals[0]
    return Signal(
        source=case.source,
        title=case.subject,
        text=case.body,
        reporter_email=case.sender or None,
        labels=dict(case.labels),
    )


def run_rule_tests(config) -> list[str]:
    """Run the ``[[rule_test]]`` cases; return one readable failure text per failing case."""
    base = Path(config.path).parent if config.path else Path(".")
    failures = []
    for i, case in enumerate(config.rule_test):
        label = case.name or case.input or case.subject or f"#{i + 1}"
        try:
            result = explain(
                config, _case_signal(case, base), recipient=case.recipient or None, integration=case.integration or None
            )
        except ParseError as exc:
            failures.append(f"rule test {label!r}: cannot read the input: {exc}")
            continue
        diff = [
            f"    {key}: expected {expected!r}, got {result[key]!r}  ({result['why'].get(key, 'no rule')})"
            for key in EXPECTED
            if (expected := getattr(case, key)) is not None and (result[key] or "") != expected
        ]
        if diff:
            failures.append(f"rule test {label!r} failed:\n" + "\n".join(diff))
    return failures
