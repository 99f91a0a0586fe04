"""Scheduled reports, the sending: the timers role's tick sends each due ``[[report]]`` once per period.

See gateway/reports/schedule.py for the entries and their periods. The claim is a
``report_run`` row, unique per (report, period start) and inserted in the same
transaction as the outbox row: with several processes exactly one insert wins.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from urllib.parse import urlencode

import peewee

from gateway.core.clock import Clock
from gateway.reports.figures import Scope, report
from gateway.reports.schedule import ScheduledReport, last_period
from gateway.reports.scope import zone
from notifiers.mailer import email_target
from notifiers.outbox import enqueue
from store.db import db
from store.models import ReportRun

log = logging.getLogger("inlet.reports")

TEMPLATE = "report"


class ReportScheduler:
    """Sends due ``[[report]]`` entries; called from the timers role's tick. ``config`` is a callable
    (the running configuration, so a reload applies) or a Config."""

    def __init__(self, config, clock: Clock | None = None):
        self._config: Callable = config if callable(config) else (lambda: config)
        self.clock = clock or Clock()
        self._sent: set[tuple[str, datetime]] = set()  # known sent in this process: no database round trip

    def tick(self) -> int:
        config = self._config()
        if not config.report:
            return 0
        now = self.clock.now()
        done = 0
        for entry in config.report:
            tz = entry.timezone or config.inlet.timezone
            start, end, _ = last_period(entry, now, tz)
            if (entry.name, start) in self._sent:
                continue
            try:
                done += self._send(config, entry, tz, start, end, now)
            except (peewee.OperationalError, peewee.InterfaceError):
                raise  # the database is away: the worker backs off and tries again
            except Exception:  # one broken entry must not stop the others or the timers
                log.exception("scheduled report %r failed", entry.name)
                continue
            self._sent.add((entry.name, start))
        return done

    def _send(self, config, entry: ScheduledReport, tz: str, start: datetime, end: datetime, now: datetime) -> int:
        with db.atomic():
            token = uuid.uuid4().hex
            ReportRun.insert(
                name=entry.name, period_start=start, period_end=end, claimed_by=token, created_at=now
            ).on_conflict_ignore().execute()
            # On PostgreSQL a second insert of the same pair waits for the first transaction, then does nothing.
            winner = (
                ReportRun.select(ReportRun.claimed_by)
                .where((ReportRun.name == entry.name) & (ReportRun.period_start == start))
                .scalar()
            )
            if winner != token:
                return 0  # another process (or an earlier run) sent this period
            filters = {name: getattr(entry, name) for name in ("group", "service", "category", "priority", "source")}
            filters["procedure"] = entry.procedure
            scope = Scope(since=start, until=end, tz=tz, security=entry.security, **filters)
            result = report(scope, now=now, update_interval=config.procedures.major_reminder_interval)
            query = {"since": start.isoformat(), "until": end.isoformat(), "tz": tz}
            query |= {k: v for k, v in filters.items() if v}
            enqueue(
                audience="report",
                template=TEMPLATE,
                targets=[*entry.notify, *(email_target(address) for address in entry.emails)],
                now=now,
                context={
                    "report": entry.name,
                    "every": entry.every,
                    "since": start.astimezone(zone(tz)).date().isoformat(),
                    "until": (end.astimezone(zone(tz)) - timedelta(seconds=1)).date().isoformat(),
                    "filters": ", ".join(f"{k} = {v}" for k, v in filters.items() if v),
                    "figures": summary(result),
                    "report_link": f"{config.inlet.base_url.rstrip('/')}/reports?{urlencode(query)}",
                },
            )
        log.info("scheduled report %r for %s sent", entry.name, start.isoformat())
        return 1


def summary(result: dict) -> list[list[str]]:
    """The key figures of a report as (label, value) lines for a message."""

    def hours(seconds) -> str:
        return "-" if seconds is None else f"{seconds / 3600:.1f} h"

    def pct(rate) -> str:
        return "-" if rate is None else f"{rate * 100:.1f} %"

    t, sla, backlog = result["totals"], result["sla"], result["backlog"]
    return [
        ["Opened / resolved / closed", f"{t['opened']} / {t['resolved']} / {t['closed']}"],
        ["Major / security", f"{t['major']} / {t['security']}"],
        ["MTTA median / p90", f"{hours(result['mtta']['median'])} / {hours(result['mtta']['p90'])}"],
        ["MTTR median / p90", f"{hours(result['mttr']['median'])} / {hours(result['mttr']['p90'])}"],
        ["Response SLA breached", f"{pct(sla['response_rate'])} of {sla['response_due']}"],
        ["Resolution SLA breached", f"{pct(sla['resolution_rate'])} of {sla['resolution_due']}"],
        ["Open now (age median)", f"{backlog['open']} ({hours(backlog['age_median'])})"],
        ["First-time fix", pct(result["rates"]["first_time_fix_rate"])],
        ["Top causes", ", ".join(f"{c['cause']} ({c['incidents']})" for c in result["recurring"]["causes"][:3]) or "-"],
    ]
