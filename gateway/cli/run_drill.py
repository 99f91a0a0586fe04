"""Drills: test the procedures of a running Inlet, not just the code (``inlet drill``).

A drill injects a marked synthetic report through the real intake of a running
instance (``POST /hooks/<name>`` of the ``[[integration]]`` of kind ``drill``,
bearer token), then follows it: registered as an
incident flagged ``drill``, allocated (group, procedure), the escalation timer
scheduled, the first escalation step fired (its delay compressed: the drill
moves the timer's due time to now and the running timer worker fires it), the
notification hand-off (outbox rows written; the procedure's own effects, e.g.
the stakeholder broadcast of a major incident), and finally cleans up. Each
step prints PASS or FAIL with its time. Drill incidents carry ``drill = true``
so reports and metrics leave them out.

The transport is a small function ``transport(config, payload) -> inbound id``;
:func:`http_transport` is the one ``inlet drill`` uses.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from gateway.core.clock import Clock
from gateway.core.errors import InletError
from gateway.core.keys import secret
from gateway.incidents.lifecycle import Lifecycle
from notifiers.words import duration
from store.db import db
from store.models import PENDING, Inbound, Incident, Notification, Timer

Transport = Callable[[object, dict], int]  # sends the report, returns the Inbound id


@dataclass
class StepResult:
    name: str
    ok: bool
    seconds: float
    detail: str = ""

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name:<22} {self.seconds * 1000:8.0f} ms  {self.detail}"


def http_transport(config, payload: dict) -> int:
    """POST the drill report to the running instance's ``/hooks/<drill integration>``; the Inbound id.

    The real intake path: authentication, the intake writer's commit before ``202``,
    the pipeline worker. Raises InletError when no drill integration is configured,
    its token is not set, or the instance refuses the report.
    """
    integration = next((i for i in config.integration if i.kind == "drill"), None)
    if integration is None:
        raise InletError(f"{config.path}: no [[integration]] of kind 'drill' to send the drill report to")
    token = secret(integration.token_env) if integration.auth == "bearer" else None
    if not token:
        raise InletError(f"set {integration.token_env or 'the token_env'} of [[integration]] {integration.name!r}")
    host = "127.0.0.1" if config.web.host in ("", "0.0.0.0", "::") else config.web.host  # noqa: S104
    url = f"http://{host}:{config.web.port}/hooks/{integration.name}"
    request = urllib.request.Request(  # noqa: S310 -- our own endpoint
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return int(json.load(answer)["inbound_id"])
    except urllib.error.HTTPError as exc:
        raise InletError(f"{url} answered {exc.code}: {exc.read()[:200].decode('utf-8', 'replace')}") from None
    except OSError as exc:
        raise InletError(f"{url} unreachable: {exc}") from None


def run_drill(
    config,
    *,
    procedure: str = "standard",
    group: str | None = None,
    transport: Transport = http_transport,
    timeout: float = 30.0,
    keep: bool = False,
    report: Callable[[str], None] = print,
) -> list[StepResult]:
    """Run one drill against the instance that serves ``config``'s database; return the step results."""
    drill_id = uuid.uuid4().hex[:12]
    payload = {
        "drill_id": drill_id,
        "title": f"[DRILL {drill_id}] synthetic {procedure} incident",
        "text": "Inlet drill: a synthetic incident to test the procedure. No action needed.",
        "procedure": procedure,
        "group": group or "",
    }
    results: list[StepResult] = []
    start = time.monotonic()
    state: dict = {}

    def step(name: str, check: Callable[[], tuple[bool, str] | None]) -> bool:
        """Poll ``check`` (None: not yet) until it answers or the deadline passes."""
        began = time.monotonic()
        deadline = began + timeout
        outcome = None
        while outcome is None:
            with db.connection_context():
                outcome = check()
            if outcome is None:
                if time.monotonic() > deadline:
                    outcome = (False, f"nothing after {timeout:.0f}s")
                else:
                    threading.Event().wait(0.05)
        result = StepResult(name, outcome[0], time.monotonic() - began, outcome[1])
        results.append(result)
        report(result.line())
        return result.ok

    def injected():
        try:
            state["inbound_id"] = transport(config, payload)
        except InletError as exc:
            return False, str(exc)
        return True, f"drill {drill_id}: inbound {state['inbound_id']}"

    def registered():
        inbound = Inbound.get_or_none(Inbound.id == state["inbound_id"])
        if inbound is None or inbound.status == PENDING:
            return None
        if inbound.incident_id is None:
            return False, f"inbound {inbound.status}: {inbound.reason}"
        incident = Incident.get_by_id(inbound.incident_id)
        state["incident"] = incident
        return (incident.drill, f"{incident.ref}" + ("" if incident.drill else " is NOT flagged drill"))

    def allocated():
        incident = Incident.get_by_id(state["incident"].id)
        expected_group = group or config.fallback_group
        ok = incident.group == expected_group and incident.procedure == procedure
        return ok, f"group {incident.group}, procedure {incident.procedure}, {incident.priority}"

    def scheduled():
        timer = (
            Timer.select()
            .where((Timer.incident == state["incident"].id) & (Timer.kind == "escalation"))
            .order_by(Timer.step)
            .first()
        )
        if timer is None:
            return False, f"no escalation timer (has group {state['incident'].group!r} an escalation policy?)"
        state["timer"] = timer
        delay = timer.due_at - state["incident"].opened_at
        # Compress the delay: the running timer worker fires what is due now.
        Timer.update(due_at=Clock().now()).where((Timer.id == timer.id) & (Timer.status == PENDING)).execute()
        return True, f"step {timer.step + 1} due after {duration(delay)}, compressed to now"

    def escalated():
        timer = Timer.get_by_id(state["timer"].id)
        if timer.status == PENDING:
            return None
        return timer.status == "fired", f"{timer.status} by {timer.fired_by}"

    def handed_off():
        rows = list(Notification.select().where(Notification.incident == state["incident"].id))
        templates = sorted({f"{n.audience}/{n.template}" for n in rows})
        ok = any(n.audience == "escalation" for n in rows)
        if procedure == "major" and any(not s.procedures or "major" in s.procedures for s in config.stakeholder):
            ok = ok and any(n.template == "major_declared" for n in rows)
        if procedure == "security":
            ok = ok and not any(n.audience == "stakeholder" for n in rows)
        return ok, f"{len(rows)} outbox rows: {', '.join(templates) or 'none'}"

    def cleaned():
        incident = Incident.get_or_none(Incident.id == state["incident"].id)
        inbound = Inbound.get_or_none(Inbound.id == state["inbound_id"])
        if keep:
            return True, f"kept {incident.ref}" if incident else "nothing to keep"
        with db.atomic():
            if incident is not None:
                Lifecycle().remove_drill(incident)
            if inbound is not None:
                inbound.delete_instance(recursive=True, delete_nullable=True)
        return True, "drill incident, its timeline, timers and outbox rows removed"

    if step("inject", injected) and step("register", registered):
        if step("allocate", allocated) and step("schedule escalation", scheduled):
            step("first escalation step", escalated)
        step("notification hand-off", handed_off)
    if "incident" in state:
        step("clean up", cleaned)
    total = time.monotonic() - start
    passed = sum(r.ok for r in results)
    report(f"{'PASS' if all(r.ok for r in results) else 'FAIL'}  drill {drill_id}: {passed}/{len(results)} steps "
           f"in {total:.2f}s")  # fmt: skip
    return results
