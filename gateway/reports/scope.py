"""The scope of a report (period, filters, time zone) and the SQL it makes: shared by the live figures
(gateway/reports/figures.py) and the per-day rollup (gateway/reports/rollup.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.core.errors import ConfigError
from store.db import db, is_postgres
from store.models import CANCELLED

FILTERS = ("group", "category", "service", "priority", "source", "procedure")
DIMENSIONS = ("category", "group", "priority", "source", "service")
AGE_BUCKETS = (
    ("< 1 d", 0, 86400),
    ("1–3 d", 86400, 3 * 86400),
    ("3–7 d", 3 * 86400, 7 * 86400),
    ("≥ 7 d", 7 * 86400, None),
)
TOP = 10
MAX_DAYS = 800  # a report spans at most a little over two years (one bucket per day)
_RELATIVE = re.compile(r"^(\d{1,4})([hdw])$")


@dataclass(frozen=True)
class Scope:
    """What a report covers: the period [since, until), optional filters, and visibility."""

    since: datetime
    until: datetime
    tz: str = "UTC"
    group: str = ""
    category: str = ""
    service: str = ""
    priority: str = ""
    source: str = ""
    procedure: str = ""
    security: bool = True  # count security incidents (only for who may see them)

    def __post_init__(self):
        if self.until <= self.since:
            raise ConfigError("the report period is empty: until must be after since")
        if self.until - self.since > timedelta(days=MAX_DAYS):
            raise ConfigError(f"the report period is longer than {MAX_DAYS} days")
        zone(self.tz)

    def filters(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in FILTERS if getattr(self, name)}


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {name!r}") from None


def parse_moment(text: str, now: datetime, tz: str = "UTC") -> datetime:
    """``30d``, ``12h``, ``2w`` (before ``now``), ``now``, a date (local midnight) or an ISO datetime → aware UTC."""
    text = (text or "").strip()
    if text == "now":
        return now
    match = _RELATIVE.match(text)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return now - {"h": timedelta(hours=amount), "d": timedelta(days=amount), "w": timedelta(weeks=amount)}[unit]
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), time(0))
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a time: use e.g. 30d, 12h, 2w, 2026-11-01 or 2026-11-01T08:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone(tz))
    return moment.astimezone(UTC)


def scope_from(args: dict, *, now: datetime, tz: str, security: bool, default_since: str = "30d") -> Scope:
    """A Scope from request or command-line values (``since``, ``until``, the filters); ConfigError when bad."""
    tz = args.get("tz") or tz
    since = parse_moment(args.get("since") or default_since, now, tz)
    until = parse_moment(args.get("until") or "now", now, tz)
    values = {name: _filter_value(name, args.get(name) or "") for name in FILTERS}
    return Scope(since=since, until=until, tz=tz, security=security, **values)


def _filter_value(name: str, value: str) -> str:
    """A filter as given, stripped; ConfigError for what no name in the store can hold (NUL, which PostgreSQL
    text refuses, a lone surrogate, or over 200 characters)."""
    value = value.strip()
    if len(value) > 200 or "\x00" in value or any("\ud800" <= c <= "\udfff" for c in value):
        raise ConfigError(f"{name}: not a {name} name (NUL, a lone surrogate or over 200 characters)")
    return value


# ---------------------------------------------------------------- SQL building


class _Sql:
    """Collects parameters in the order their placeholders appear."""

    def __init__(self):
        self.params: list = []
        self.pg = is_postgres()

    def p(self, value) -> str:
        if isinstance(value, datetime):
            value = value.astimezone(UTC).replace(tzinfo=None)
        self.params.append(value)
        return db.param

    def seconds(self, end: str, start: str) -> str:
        """Whole seconds from ``start`` to ``end`` (SQL expressions of naive UTC timestamps)."""
        if self.pg:
            return f"CAST(ROUND(EXTRACT(EPOCH FROM ({end} - {start}))) AS BIGINT)"
        return f"CAST(ROUND((julianday({end}) - julianday({start})) * 86400) AS INTEGER)"

    def within(self, column: str, since: datetime, until: datetime) -> str:
        return f"({column} >= {self.p(since)} AND {column} < {self.p(until)})"

    def base(self, scope: Scope, alias: str = "i") -> str:
        """Drills and cancelled out; the scope's filters and visibility in."""
        parts = [f"{alias}.drill = {self.p(False)}", f"{alias}.status <> {self.p(CANCELLED)}"]
        for name, value in scope.filters().items():
            parts.append(f'{alias}."{name}" = {self.p(value)}')
        if not scope.security:
            parts.append(f"{alias}.security = {self.p(False)}")
        return " AND ".join(parts)


def _rows(sql: str, params: list) -> list[tuple]:
    return list(db.execute_sql(sql, params).fetchall())


def _stats(q: _Sql, values_sql: str) -> str:
    """count, mean, median and p90 of the column ``x`` of ``values_sql`` (nearest rank)."""
    return (
        f"WITH v AS ({values_sql}), "
        "r AS (SELECT x, ROW_NUMBER() OVER (ORDER BY x) AS rn, COUNT(*) OVER () AS n FROM v WHERE x IS NOT NULL) "
        "SELECT COUNT(*), AVG(x), MAX(CASE WHEN rn = (n + 1) / 2 THEN x END), "
        "MAX(CASE WHEN rn = (9 * n + 9) / 10 THEN x END) FROM r"
    )


def _stats_dict(row) -> dict:
    count, mean, median, p90 = row
    return {
        "count": int(count or 0),
        "mean": None if mean is None else round(float(mean), 1),
        "median": None if median is None else int(median),
        "p90": None if p90 is None else int(p90),
    }


def _rate(part, whole) -> float | None:
    return round(part / whole, 4) if whole else None


def _buckets(scope: Scope, unit: str) -> list[tuple[str, datetime, datetime]]:
    """Local days or weeks (from Monday) of the scope's time zone, clipped to the period, as UTC instants."""
    tz = zone(scope.tz)
    day = scope.since.astimezone(tz).date()
    if unit == "week":
        day -= timedelta(days=day.weekday())
    step = timedelta(days=7 if unit == "week" else 1)
    result = []
    while True:
        lo = datetime.combine(day, time(0), tz).astimezone(UTC)
        if lo >= scope.until:
            break
        hi = datetime.combine(day + step, time(0), tz).astimezone(UTC)
        if hi > scope.since:
            result.append((day.isoformat(), max(lo, scope.since), min(hi, scope.until)))
        day += step
    return result


def _offsets(scope: Scope) -> list[tuple[datetime, int]]:
    """The time zone's UTC offset over the period: (from when, seconds east of UTC), first from ``since``.

    Walks the period a day at a time and bisects each change to the second (DST moves twice a year).
    """
    tz = zone(scope.tz)

    def offset(moment: datetime) -> int:
        return int(moment.astimezone(tz).utcoffset().total_seconds())

    segments = [(scope.since, offset(scope.since))]
    moment = scope.since
    while moment < scope.until:
        following = min(moment + timedelta(days=1), scope.until)
        if offset(following) != segments[-1][1]:
            lo, hi = moment, following
            while hi - lo > timedelta(seconds=1):
                middle = lo + (hi - lo) / 2
                lo, hi = (middle, hi) if offset(middle) == segments[-1][1] else (lo, middle)
            segments.append((hi, offset(hi)))
        moment = following
    return segments


def _local(q: _Sql, scope: Scope, column: str, unit: str) -> str:
    """SQL for the local day (or the Monday of the local week) of ``column``, as text YYYY-MM-DD.

    The offset comes from a CASE over the period's DST segments, so no time zone database is needed in
    SQL and both databases give the same key; SQLite's date modifiers shift whole seconds exactly.
    """
    segments = _offsets(scope)
    sign = "" if q.pg else "+"  # SQLite's modifier needs the sign, PostgreSQL's interval takes either

    def unit_of(seconds: int) -> str:
        return f"{seconds:{sign}d} seconds"

    if len(segments) == 1:
        shift = q.p(unit_of(segments[0][1]))
    else:
        cases = " ".join(
            f"WHEN {column} < {q.p(start)} THEN {q.p(unit_of(before))}"
            for (start, _), (_, before) in zip(segments[1:], segments[:-1], strict=True)
        )
        shift = f"CASE {cases} ELSE {q.p(unit_of(segments[-1][1]))} END"
    if q.pg:
        shifted = f"({column} + CAST({shift} AS INTERVAL))"
        day = f"date_trunc('week', {shifted})" if unit == "week" else shifted
        return f"TO_CHAR({day}, 'YYYY-MM-DD')"
    return f"date({column}, {shift}, 'weekday 0', '-6 days')" if unit == "week" else f"date({column}, {shift})"


def _per_bucket(q: _Sql, scope: Scope, column: str, unit: str, select: str) -> str:
    """One row per local day or week that has incidents whose ``column`` falls in the period."""
    key = _local(q, scope, f"i.{column}", unit)
    return (
        f"SELECT {key} AS k, {select} FROM incident i WHERE {q.within(f'i.{column}', scope.since, scope.until)} "
        f"AND {q.base(scope)} GROUP BY k"
    )


# ---------------------------------------------------------------- the report
