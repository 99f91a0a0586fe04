"""Priority and SLA: the ITIL matrix, respond/resolve targets, business-hours clocks.

Configuration::

    [sla]
    default_impact = "medium"      # when no rule sets impact / urgency: a normal P3
    default_urgency = "medium"
    always_on = ["P1", "P2"]       # these run 24×7 even for a group with a calendar
    warning_fraction = 0.8         # "resolve SLA at 80 %"
    matrix.high = { high = "P1", medium = "P2", low = "P3" }   # impact -> urgency -> priority
    targets.P1 = { respond = "15m", resolve = "4h" }           # given cells/priorities override the defaults

    [[calendar]]
    name = "office"
    timezone = "Europe/Berlin"
    monday = "09:00-17:00"         # also "08:00-12:00, 13:00-17:00"; "" or absent: closed
    holidays = ["2025-12-25"]

Business time is real elapsed time inside working hours (a 09:00-17:00 day is 8 h,
also on a DST change day), in the calendar's time zone. Targets are amounts of
business time: with 09:00-17:00 hours, ``resolve = "1d"`` (24 h) is three working
days; write ``"8h"`` for one. Groups without a calendar, and the ``always_on``
priorities, run 24×7. On hold pauses the resolve clock (never the respond clock). Every function is pure and
takes aware datetimes; results are in the time zone of ``start``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.config.schema import KeyProblem, setting
from gateway.rules import LEVELS

PRIORITIES = ("P1", "P2", "P3", "P4", "P5")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

ITIL_MATRIX: dict[str, dict[str, str]] = {
    "high": {"high": "P1", "medium": "P2", "low": "P3"},
    "medium": {"high": "P2", "medium": "P3", "low": "P4"},
    "low": {"high": "P3", "medium": "P4", "low": "P5"},
}


@dataclass(frozen=True)
class SlaTarget:
    respond: timedelta = setting(help="Time to the first response (acknowledge).")
    resolve: timedelta = setting(help="Time to resolution (the clock pauses while on hold).")


DEFAULT_TARGETS: dict[str, SlaTarget] = {
    "P1": SlaTarget(timedelta(minutes=15), timedelta(hours=4)),
    "P2": SlaTarget(timedelta(hours=1), timedelta(hours=8)),
    "P3": SlaTarget(timedelta(hours=4), timedelta(days=1)),
    "P4": SlaTarget(timedelta(days=1), timedelta(days=3)),
    "P5": SlaTarget(timedelta(days=2), timedelta(days=5)),
}


@dataclass(frozen=True)
class SlaSection:
    """Priority matrix and targets. Given cells and priorities override the ITIL defaults."""

    matrix: dict[str, dict[str, str]] = setting(
        factory=dict, help="Impact -> urgency -> priority (P1..P5); cells not given keep the ITIL default."
    )
    targets: dict[str, SlaTarget] = setting(
        factory=dict, help="Respond and resolve targets per priority; priorities not given keep the default."
    )
    default_impact: str = setting("medium", help="Impact when no rule sets it.", choices=LEVELS)
    default_urgency: str = setting("medium", help="Urgency when no rule sets it.", choices=LEVELS)
    always_on: list[str] = setting(
        factory=lambda: ["P1", "P2"], help="Priorities whose clock runs 24×7 even in a group with a calendar."
    )
    warning_fraction: float = setting(0.8, help="Fraction of the resolve target at which to warn (0..1).", minimum=0)

    def __post_init__(self):
        # Merge over the defaults once, so every reader sees the full 3×3 matrix and five targets.
        matrix = {i: {**row, **self.matrix.get(i, {})} for i, row in ITIL_MATRIX.items()}
        matrix.update({i: row for i, row in self.matrix.items() if i not in matrix})  # kept for check_sla
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "targets", {**DEFAULT_TARGETS, **self.targets})

    def target(self, priority: str) -> SlaTarget:
        return self.targets[priority]


@dataclass(frozen=True)
class Calendar:
    """Working hours in one time zone; groups refer to it by name."""

    name: str = setting(help="Calendar name that groups refer to (unique).")
    timezone: str = setting("UTC", help="IANA time zone of the working hours, e.g. Europe/Berlin.")
    monday: str = setting("", help='Working hours, e.g. "09:00-17:00" or "08:00-12:00, 13:00-17:00"; empty: closed.')
    tuesday: str = setting("", help="Working hours on Tuesday.")
    wednesday: str = setting("", help="Working hours on Wednesday.")
    thursday: str = setting("", help="Working hours on Thursday.")
    friday: str = setting("", help="Working hours on Friday.")
    saturday: str = setting("", help="Working hours on Saturday.")
    sunday: str = setting("", help="Working hours on Sunday.")
    holidays: list[str] = setting(factory=list, help='Closed days, ISO dates ("2025-12-25").')

    @functools.cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @functools.cached_property
    def week(self) -> tuple[tuple[tuple[time, time | None], ...], ...]:
        """Per weekday (Monday first), the working spans; an end of None means midnight (24:00)."""
        return tuple(parse_hours(getattr(self, day)) for day in WEEKDAYS)

    @functools.cached_property
    def closed_days(self) -> frozenset[date]:
        return frozenset(date.fromisoformat(d) for d in self.holidays)


_SPAN = re.compile(r"^(\d\d):(\d\d)\s*-\s*(\d\d):(\d\d)$")


def parse_hours(text: str) -> tuple[tuple[time, time | None], ...]:
    """``"08:00-12:00, 13:00-17:00"`` -> ordered spans; raise ValueError saying what is wrong."""
    spans: list[tuple[time, time | None]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _SPAN.match(part)
        if not match:
            raise ValueError(f'bad working hours {part!r}: use "HH:MM-HH:MM", e.g. "09:00-17:00"')
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
            raise ValueError(f"bad working hours {part!r}: not a time of day")
        begin, end = time(h1, m1), (None if h2 == 24 else time(h2, m2))
        if end is not None and end <= begin:
            raise ValueError(f"bad working hours {part!r}: the end must be after the start")
        if spans and (spans[-1][1] is None or begin < spans[-1][1]):
            raise ValueError(f"bad working hours {part!r}: spans must be in order and not overlap")
        spans.append((begin, end))
    return tuple(spans)


def check_sla(sla: SlaSection, calendars: list[Calendar]) -> None:
    """Validate [sla] and every [[calendar]]; raise KeyProblem naming the key."""
    for impact, row in sla.matrix.items():
        if impact not in LEVELS:
            raise KeyProblem(("[sla]", "matrix", impact), f"impact must be one of {', '.join(LEVELS)}")
        for urgency, prio in row.items():
            if urgency not in LEVELS:
                raise KeyProblem(("[sla]", "matrix", impact, urgency), f"urgency must be one of {', '.join(LEVELS)}")
            if prio not in PRIORITIES:
                raise KeyProblem(("[sla]", "matrix", impact, urgency), f"must be one of P1..P5; got {prio!r}")
    for prio in sla.targets:
        if prio not in PRIORITIES:
            raise KeyProblem(("[sla]", "targets", prio), "not a priority: use P1..P5")
    for i, prio in enumerate(sla.always_on):
        if prio not in PRIORITIES:
            raise KeyProblem(("[sla]", f"always_on[{i}]"), f"must be one of P1..P5; got {prio!r}")
    if not 0 < sla.warning_fraction <= 1:
        raise KeyProblem(("[sla]", "warning_fraction"), f"must be between 0 and 1, got {sla.warning_fraction}")
    for cal in calendars:
        here = f"[[calendar]] {cal.name!r}"
        try:
            ZoneInfo(cal.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise KeyProblem((here, "timezone"), f"unknown time zone {cal.timezone!r}") from None
        for day in WEEKDAYS:
            try:
                parse_hours(getattr(cal, day))
            except ValueError as exc:
                raise KeyProblem((here, day), str(exc)) from None
        if not any(getattr(cal, day).strip() for day in WEEKDAYS):
            raise KeyProblem((here,), 'no working hours: give at least one weekday, e.g. monday = "09:00-17:00"')
        for i, text in enumerate(cal.holidays):
            try:
                date.fromisoformat(text)
            except ValueError:
                raise KeyProblem((here, f"holidays[{i}]"), f"not an ISO date (YYYY-MM-DD): {text!r}") from None


# ---------------------------------------------------------------- priority


def priority(impact: str, urgency: str, matrix: Mapping[str, Mapping[str, str]] = ITIL_MATRIX) -> str:
    """Impact × urgency -> ``"P1"`` .. ``"P5"`` (KeyError for a level not in the matrix)."""
    return matrix[impact][urgency]


# ---------------------------------------------------------------- business time


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"SLA times must be timezone-aware, got {moment!r}")
    return moment.astimezone(UTC)


def _spans(calendar: Calendar, since: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Working spans (UTC start, UTC end) in order, from the calendar day that holds ``since``."""
    zone, week, closed = calendar.zone, calendar.week, calendar.closed_days
    day = since.astimezone(zone).date()
    # Ten years of days: a guard against a calendar that is always closed (config rejects it).
    for _ in range(3660):
        if day not in closed:
            for begin, end in week[day.weekday()]:
                a = datetime.combine(day, begin, tzinfo=zone).astimezone(UTC)
                b_day, b_time = (day, end) if end is not None else (day + timedelta(days=1), time(0))
                b = datetime.combine(b_day, b_time, tzinfo=zone).astimezone(UTC)
                if b > a:
                    yield a, b
        day += timedelta(days=1)
    raise ValueError(f"calendar {calendar.name!r} has no working time in ten years")


def due(start: datetime, target: timedelta, calendar: Calendar | None) -> datetime:
    """The moment ``target`` of business time after ``start`` (24×7 when calendar is None).

    Nights, closed weekdays and holidays are skipped; a target that ends exactly at
    closing time is due at closing time, not next morning.
    """
    if target < timedelta(0):
        raise ValueError(f"negative SLA target {target}")
    begin = _utc(start)
    if calendar is None or target == timedelta(0):
        return (begin + target).astimezone(start.tzinfo)
    remaining = target
    for a, b in _spans(calendar, begin):
        if b <= begin:
            continue
        s = max(a, begin)
        if remaining <= b - s:
            return (s + remaining).astimezone(start.tzinfo)
        remaining -= b - s
    raise AssertionError("unreachable: _spans raises when it runs out")


def business_time(start: datetime, end: datetime, calendar: Calendar | None) -> timedelta:
    """Business time between two moments (zero when end is not after start)."""
    a0, b0 = _utc(start), _utc(end)
    if b0 <= a0:
        return timedelta(0)
    if calendar is None:
        return b0 - a0
    total = timedelta(0)
    for a, b in _spans(calendar, a0):
        if a >= b0:
            break
        overlap = min(b, b0) - max(a, a0)
        if overlap > timedelta(0):
            total += overlap
    return total


def elapsed(
    start: datetime,
    now: datetime,
    calendar: Calendar | None,
    paused_intervals: Iterable[tuple[datetime, datetime | None]] = (),
) -> timedelta:
    """Business time from start to now, minus the business time of on-hold intervals.

    An interval ending in None is still open (on hold until now). Overlapping
    intervals count once.
    """
    clipped = []
    for a, b in paused_intervals:
        lo, hi = max(_utc(a), _utc(start)), min(_utc(b) if b is not None else _utc(now), _utc(now))
        if hi > lo:
            clipped.append((lo, hi))
    clipped.sort()
    merged: list[list[datetime]] = []
    for lo, hi in clipped:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    paused = sum((business_time(lo, hi, calendar) for lo, hi in merged), timedelta(0))
    return business_time(start, now, calendar) - paused


def fraction_point(start: datetime, target: timedelta, fraction: float, calendar: Calendar | None) -> datetime:
    """The moment ``fraction`` of ``target`` is used up (e.g. 0.8: the resolve SLA warning)."""
    return due(start, target * fraction, calendar)


# ---------------------------------------------------------------- targets of an incident


@dataclass(frozen=True)
class SlaDue:
    """The due times of one incident."""

    priority: str
    respond_by: datetime
    resolve_by: datetime
    warn_at: datetime  # resolve target × warning_fraction, shifted by on-hold time like resolve_by


def effective_calendar(prio: str, calendar: Calendar | None, sla: SlaSection) -> Calendar | None:
    """The calendar the clock of a priority runs on: None (24×7) for the always-on priorities."""
    return None if prio in sla.always_on else calendar


def targets_for(
    opened_at: datetime,
    prio: str,
    now: datetime,
    *,
    sla: SlaSection,
    calendar: Calendar | None = None,
    paused: timedelta = timedelta(0),
    on_hold_since: datetime | None = None,
) -> SlaDue:
    """Respond-by and resolve-by of an incident opened at ``opened_at`` with priority ``prio``.

    ``paused`` is the business time spent on hold in finished intervals (what
    :func:`business_time` gives for each); while the incident is on hold
    (``on_hold_since``), the clock stands still, so resolve_by moves later with
    ``now``. The respond clock never pauses.
    """
    cal = effective_calendar(prio, calendar, sla)
    target = sla.target(prio)
    held = paused
    if on_hold_since is not None:
        held += business_time(on_hold_since, now, cal)
    return SlaDue(
        priority=prio,
        respond_by=due(opened_at, target.respond, cal),
        resolve_by=due(opened_at, target.resolve + held, cal),
        warn_at=due(opened_at, target.resolve * sla.warning_fraction + held, cal),
    )
