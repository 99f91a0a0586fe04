"""Timer rows of an incident (escalation steps, major-incident reminders, auto-close): made pending, cancelled.

Firing them is the TimerWorker's (gateway/escalation.py); what each kind does is its handler's.
"""

from __future__ import annotations

from datetime import datetime

from store.models import PENDING, Incident, Timer


def upsert_timer(incident: Incident, kind: str, step: int, due: datetime, data: dict | None = None) -> None:
    """Make the timer (incident, kind, step) pending at ``due``, unless it fired already."""
    timer = Timer.get_or_none((Timer.incident == incident) & (Timer.kind == kind) & (Timer.step == step))
    if timer is None:
        Timer.create(incident=incident, kind=kind, step=step, due_at=due, status=PENDING, data=data or {})
    elif timer.status != "fired":
        Timer.update(due_at=due, status=PENDING, data=data or {}).where(Timer.id == timer.id).execute()


def cancel_timers(
    incident: Incident, kinds: tuple[str, ...], steps: list[int] | None = None, *, keep: list[int] | None = None
) -> int:
    """Cancel the pending timers of these kinds: of ``steps`` only, or all but the steps to ``keep``."""
    query = Timer.update(status="cancelled").where(
        (Timer.incident == incident) & (Timer.kind.in_(kinds)) & (Timer.status == PENDING)
    )
    if steps is not None:
        query = query.where(Timer.step.in_(steps))
    if keep is not None:
        query = query.where(Timer.step.not_in(keep))
    return query.execute()
