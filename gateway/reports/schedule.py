"""Scheduled reports, their settings: ``[[report]]`` entries and the periods they cover.

Each entry names a schedule (``daily``, ``weekly`` from Monday, ``monthly``), the local
time of day it goes out (``at``, in ``timezone``), a scope (the filters of
gateway/reports/figures.py) and whom to tell (Apprise URLs, group or stakeholder names, email
addresses). Once a period has ended and its ``at`` has passed, the next tick of any
timers process claims the pair (report, period start) by inserting a ``report_run``
row — unique, so with several processes on PostgreSQL exactly one insert wins — and,
in the same transaction, writes the outbox row: the period's key figures and a link
to the Reports page of exactly that period. Only the latest finished period is
sent: a period missed while nothing ran is not sent late. The sending is
gateway/reports/mailing.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from gateway.config.schema import KeyProblem, setting
from gateway.reports.scope import zone

SCHEDULES = ("daily", "weekly", "monthly")


@dataclass(frozen=True)
class ScheduledReport:
    name: str = setting(help="Name of the report (unique): it is sent once per period under this name.")
    every: str = setting("weekly", help="daily, weekly (Monday to Monday) or monthly.", choices=SCHEDULES)
    at: str = setting("08:00", help="Local time of day (HH:MM) it is sent, once its period has ended.")
    timezone: str = setting("", help="Time zone of the periods and of 'at' (empty: [inlet] timezone).")
    group: str = setting("", help="Only incidents of this resolver group (empty: any).")
    service: str = setting("", help="Only incidents of this service (empty: any).")
    category: str = setting("", help="Only incidents of this category (empty: any).")
    priority: str = setting("", help="Only incidents of this priority (empty: any).")
    source: str = setting("", help="Only incidents from this source (empty: any).")
    procedure: str = setting("", help="Only incidents of this procedure (empty: any).")
    security: bool = setting(False, help="Count security incidents too (only for recipients who may know).")
    notify: list[str] = setting(factory=list, help="Apprise URLs, or names of groups or stakeholders.")
    emails: list[str] = setting(factory=list, help="Email addresses (e.g. the service owner).")


def check_reports(config) -> None:
    """Cross-checks of ``[[report]]``; raises KeyProblem."""
    for entry in config.report:
        where = f"[[report]] {entry.name!r}"
        try:
            _at(entry)
        except ValueError:
            raise KeyProblem((where, "at"), f"must be a time of day HH:MM; got {entry.at!r}") from None
        try:
            zone(entry.timezone or config.inlet.timezone)
        except Exception:
            raise KeyProblem((where, "timezone"), f"unknown time zone {entry.timezone!r}") from None
        if not entry.notify and not entry.emails:
            raise KeyProblem((where, "notify"), "needs a target in 'notify' or 'emails'")
        for address in entry.emails:
            if "@" not in address:
                raise KeyProblem((where, "emails"), f"{address!r} is not an email address")
        if entry.group and config.group_named(entry.group) is None:
            raise KeyProblem((where, "group"), f"no [[group]] named {entry.group!r}")


def _at(entry: ScheduledReport) -> time:
    return time.fromisoformat(entry.at)


def last_period(entry: ScheduledReport, now: datetime, tz: str) -> tuple[datetime, datetime, datetime]:
    """The latest period that has ended before ``now``: (start, end, when it is due to be sent), aware UTC."""
    local = zone(tz)
    today = now.astimezone(local).date()
    if entry.every == "daily":
        end = today
        start = end - timedelta(days=1)
    elif entry.every == "weekly":
        end = today - timedelta(days=today.weekday())
        start = end - timedelta(days=7)
    else:
        end = today.replace(day=1)
        start = (end - timedelta(days=1)).replace(day=1)
    send_at = datetime.combine(end, _at(entry), local).astimezone(UTC)
    if send_at > now:  # this period's sending time has not come yet: the one before is the latest due
        return last_period(entry, datetime.combine(start, time(12), local).astimezone(UTC), tz)
    return _utc(start, local), _utc(end, local), send_at


def _utc(day: date, local) -> datetime:
    return datetime.combine(day, time(0), local).astimezone(UTC)
