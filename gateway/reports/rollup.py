"""The report rollup: per local day, per dimension value, sums that compose across days (issue #14 point 4).

A year of incidents is ~1,000,000 rows; the org-wide report reads ~100 rollup rows per day
instead. One rollup row holds, for one local day (of the rollup's time zone), one security
flag and one (dimension, value) — dimension '' (everything), category, group, priority,
source, service or cause — the counts and sums of what happened that day: incidents opened
(major, first and last opening for the MTBF), acknowledged (sum of MTTA seconds), resolved
(sum of MTTR seconds; reopened, escalated, reassigned, first-time fix), closed, response and
resolution targets that fell due and were breached. Medians and p90 come from
``report_rollup_hist``: per day and security flag, how many MTTA / MTTR values fell in each
fixed log-scale bucket (:data:`EDGES`; a bucket's value is within :data:`ERROR_BOUND` of
every value in it), merged by summing counts.

One piece of SQL (:func:`_events`, then :data:`AGGREGATE` and :data:`HISTOGRAM`) turns incidents
into these rows: it builds the rollup for whole past days and computes, live, the partial days at
the edges of a period (today, and a ``since`` that is not a local midnight), so a rolled-up report
equals the live one (percentiles within the bound).

Kept in step by the database itself: triggers on ``incident`` append the UTC dates an
insert, a relevant update or a delete touches (old and new values) to ``report_dirty``;
:func:`refresh` recomputes the local days of those dates (before each rolled-up report and
on the timer worker's tick) and adds the days that have ended since. :func:`rebuild`
recomputes everything (``inlet report --rebuild``; migration 9 backfills in UTC, the default
inlet.timezone).
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, date, datetime, time, timedelta

from gateway.reports.scope import DIMENSIONS, TOP, Scope, _buckets, _local, _rate, _Sql, zone
from store.db import db, is_postgres
from store.migrations import ROLLUP_SUMS as SUMS
from store.models import CANCELLED, ON_HOLD

log = logging.getLogger(__name__)

ROLLUP_DIMS = ("", "category", "group", "priority", "source", "service", "cause")
CHUNK_DAYS = 31  # a rebuild computes a month per statement
REFRESH_DAYS = 62  # at most this many dirty or new days are recomputed before a report (the worker does the rest)

# Log-scale buckets of whole seconds: bucket b >= 1 holds [EDGES[b-1], EDGES[b]); bucket 0 holds values < 1.
RATIO = 2 ** (1 / 8)
EDGES = tuple(sorted({math.ceil(RATIO**k) for k in range(8 * 27)}))  # up to 2^27 s (4.2 years)


def _representative(b: int) -> int:
    """The value a bucket stands for: the geometric middle of its whole seconds."""
    if b == 0:
        return 0
    lo = EDGES[b - 1]
    if b == len(EDGES):
        return lo
    hi = EDGES[b] - 1
    return round(math.sqrt(lo * hi))


REPRESENTATIVE = tuple(_representative(b) for b in range(len(EDGES) + 1))
# The largest relative error of a bucket's value against any whole second in it (below 2^27 s).
ERROR_BOUND = max(
    max(abs(REPRESENTATIVE[b] - v) / v for v in (EDGES[b - 1], EDGES[b] - 1)) for b in range(1, len(EDGES))
)


def bucket_sql(x: str) -> str:
    """SQL for the bucket of the integer expression ``x``: a balanced CASE (8 comparisons)."""

    def pick(lo: int, hi: int) -> str:  # the number of EDGES <= x, known to be in [lo, hi]
        if lo == hi:
            return str(lo)
        middle = (lo + hi + 1) // 2
        return f"CASE WHEN {x} < {EDGES[middle - 1]} THEN {pick(lo, middle - 1)} ELSE {pick(middle, hi)} END"

    return pick(0, len(EDGES))


# ---------------------------------------------------------------- state


def state() -> tuple[str, date] | None:
    """(time zone, first day not built) of the rollup, or None when there is none."""
    row = db.execute_sql("SELECT tz, built_until FROM report_rollup_state WHERE id = 1").fetchone()
    return None if row is None else (row[0], date.fromisoformat(row[1]))


def usable(tz: str) -> date | None:
    """The first day the rollup does not hold when it holds days of ``tz`` (after a refresh), else None."""
    current = state()
    if current is None or current[0] != tz:
        return None
    return current[1]


def _midnight(day: date, tz: str) -> datetime:
    return datetime.combine(day, time(0), zone(tz)).astimezone(UTC)


def _local_date(moment: datetime, tz: str) -> date:
    return moment.astimezone(zone(tz)).date()


# ---------------------------------------------------------------- the one piece of SQL


def _events(q, lo: datetime, hi: datetime, due_until: datetime, tz: str) -> str:
    """One row per incident and thing that happened to it in [lo, hi) (targets: in [lo, min(hi, due_until)))."""
    scope = Scope(since=lo, until=hi, tz=tz)
    due = max(min(hi, due_until), lo)
    responded = "COALESCE(i.acknowledged_at, i.resolved_at)"
    selects = []

    def select(column: str, until: datetime, values: dict[str, str], cause: str = "''", opened: bool = False):
        row = {name: "0" for name in SUMS} | values
        first = "i.opened_at" if opened else "NULL"
        if q.pg and not opened:
            first = "CAST(NULL AS TIMESTAMP)"
        selects.append(
            f"SELECT {_local(q, scope, f'i.{column}', 'day')} AS day, i.security AS sec, "
            + "".join(f'i."{d}" AS "d_{d}", ' for d in ROLLUP_DIMS[1:-1])
            + f"{cause} AS d_cause, {first} AS fo, "
            + ", ".join(f"{v} AS {k}" for k, v in row.items())
            + f" FROM incident i WHERE i.drill = FALSE AND i.status <> '{CANCELLED}' "
            f"AND {q.within(f'i.{column}', lo, until)}"
        )

    # constants are literals (TRUE is 1 in SQLite): placeholders stay in text order (the day key's, then the window's)
    select("opened_at", hi, {"opened": "1", "major": "CASE WHEN i.major = TRUE THEN 1 ELSE 0 END"}, opened=True)
    select("acknowledged_at", hi, {"acked": "1", "mtta_sum": q.seconds("i.acknowledged_at", "i.opened_at")})
    first_time = "CASE WHEN i.reopen_count = 0 AND i.reassignment_count = 0 AND i.escalated = FALSE THEN 1 ELSE 0 END"
    select(
        "resolved_at",
        hi,
        {
            "resolved": "1",
            "mttr_sum": f"{q.seconds('i.resolved_at', 'i.opened_at')} - i.paused_seconds",
            "reopened": "CASE WHEN i.reopen_count > 0 THEN 1 ELSE 0 END",
            "escalated": "CASE WHEN i.escalated = TRUE THEN 1 ELSE 0 END",
            "reassigned": "CASE WHEN i.reassignment_count > 0 THEN 1 ELSE 0 END",
            "first_time": first_time,
        },
        cause="i.cause_code",
    )
    select("closed_at", hi, {"closed": "1"})
    late = f"CASE WHEN {responded} IS NULL OR {responded} > i.respond_by THEN 1 ELSE 0 END"
    select("respond_by", due, {"resp_due": "1", "resp_breached": late})
    # a clock stopped (on hold) before its target is not due yet
    held = f"i.status = '{ON_HOLD}' AND i.on_hold_since < i.resolve_by"
    breached = f"CASE WHEN {held} THEN 0 WHEN i.resolved_at IS NULL OR i.resolved_at > i.resolve_by THEN 1 ELSE 0 END"
    select("resolve_by", due, {"res_due": f"CASE WHEN {held} THEN 0 ELSE 1 END", "res_breached": breached})
    return " UNION ALL ".join(selects)


def _stage(windows: list[tuple[datetime, datetime]], due_until: datetime, tz: str) -> None:
    """Read the incidents' events in ``windows`` once, into the temporary table ``report_events``."""
    q = _Sql()
    events = " UNION ALL ".join(_events(q, lo, hi, due_until, tz) for lo, hi in windows)
    db.execute_sql("DROP TABLE IF EXISTS report_events")
    db.execute_sql(f"CREATE TEMPORARY TABLE report_events AS {events}", q.params)


def _temporary(name: str, select: str) -> None:
    db.execute_sql(f"DROP TABLE IF EXISTS {name}")
    db.execute_sql(f"CREATE TEMPORARY TABLE {name} AS {select}")


_DIMS = " UNION ALL ".join(f"SELECT '{d}' AS dim" for d in ROLLUP_DIMS)
_VALUE = "CASE d.dim " + " ".join(f"WHEN '{d}' THEN e.\"d_{d}\"" for d in ROLLUP_DIMS[1:]) + " ELSE '' END"
# Rollup rows (day, sec, dim, value, first and last opening, SUMS...) of the staged events: each event
# counts for '' and for each of its dimension values (cause: only resolutions with one).
AGGREGATE = (
    f"SELECT e.day AS day, e.sec AS sec, d.dim AS dim, {_VALUE} AS value, MIN(e.fo) AS fo, MAX(e.fo) AS lo, "
    + ", ".join(f"SUM(e.{name}) AS {name}" for name in SUMS)
    + f" FROM report_events e CROSS JOIN ({_DIMS}) d WHERE d.dim <> 'cause' OR e.d_cause <> '' "
    "GROUP BY e.day, e.sec, d.dim, value"
)
# Histogram rows (day, sec, metric, bucket, n) of the MTTA and MTTR values of the staged events.
_X = "CASE WHEN e.acked = 1 THEN e.mtta_sum ELSE e.mttr_sum END"
HISTOGRAM = (
    "SELECT day, sec, metric, b, COUNT(*) AS n FROM (SELECT e.day AS day, e.sec AS sec, "
    f"CASE WHEN e.acked = 1 THEN 'mtta' ELSE 'mttr' END AS metric, {bucket_sql(_X)} AS b FROM report_events e "
    "WHERE e.acked = 1 OR e.resolved = 1) h GROUP BY day, sec, metric, b"
)


# ---------------------------------------------------------------- building


COLUMNS = "day, security, dim, value, first_opened, last_opened, " + ", ".join(SUMS)


def _build_days(first: date, end: date, tz: str) -> None:
    """Recompute the rollup of local days [first, end) (whole days that have ended)."""
    day = first
    while day < end:
        stop = min(day + timedelta(days=CHUNK_DAYS), end)
        lo, hi = _midnight(day, tz), _midnight(stop, tz)
        q = _Sql()
        db.execute_sql(
            f"DELETE FROM report_rollup WHERE day >= {q.p(day.isoformat())} AND day < {q.p(stop.isoformat())}",
            q.params,
        )
        q = _Sql()
        db.execute_sql(
            f"DELETE FROM report_rollup_hist WHERE day >= {q.p(day.isoformat())} AND day < {q.p(stop.isoformat())}",
            q.params,
        )
        _stage([(lo, hi)], hi, tz)
        db.execute_sql(f"INSERT INTO report_rollup ({COLUMNS}) {AGGREGATE}")
        db.execute_sql(f"INSERT INTO report_rollup_hist (day, security, metric, bucket, n) {HISTOGRAM}")
        day = stop


def _lock() -> None:
    """One refresh or rebuild at a time (PostgreSQL; SQLite has one writer anyway)."""
    if is_postgres():
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", [0x1A7E_0014])


def _claim_dirty() -> list[date]:
    """Take the UTC dates incident changes marked (deleting their rows: a change committed later stays)."""
    rows = db.execute_sql("DELETE FROM report_dirty RETURNING day").fetchall()
    return sorted({date.fromisoformat(r[0]) for r in rows})


def rebuild(tz: str, now: datetime) -> int:
    """Recompute the whole rollup for local days of ``tz`` up to yesterday; return the days built."""
    with db.atomic():
        _lock()
        _claim_dirty()
        db.execute_sql("DELETE FROM report_rollup")
        db.execute_sql("DELETE FROM report_rollup_hist")
        today = _local_date(now, tz)
        earliest = db.execute_sql("SELECT MIN(opened_at) FROM incident").fetchone()[0]
        first = today
        if earliest is not None:
            if isinstance(earliest, str):
                earliest = datetime.fromisoformat(earliest)
            first = min(_local_date(earliest.replace(tzinfo=UTC), tz) - timedelta(days=1), today)
        _build_days(first, today, tz)
        _set_state(tz, today, now)
        for table in ("report_rollup", "report_rollup_hist"):  # the planner learns their size
            db.execute_sql(f"ANALYZE {table}")
    return (today - first).days


def _set_state(tz: str, built_until: date, now: datetime) -> None:
    db.execute_sql("DELETE FROM report_rollup_state")
    q = _Sql()
    db.execute_sql(
        f"INSERT INTO report_rollup_state (id, tz, built_until, built_at) VALUES (1, {q.p(tz)}, "
        f"{q.p(built_until.isoformat())}, {q.p(now)})",
        q.params,
    )


def refresh(now: datetime, limit: int | None = REFRESH_DAYS) -> int:
    """Recompute the days incident changes touched and add the days that ended; return the days computed.

    With ``limit``, gives up (leaving the rest marked) when more days than that need it: the timer worker
    refreshes without a limit, a report then computes live.
    """
    current = state()
    if current is None:
        return 0
    tz, built_until = current
    if _local_date(now, tz) <= built_until and not _rows("SELECT 1 FROM report_dirty LIMIT 1", []):
        return 0  # nothing marked, no day ended: no write
    with db.atomic():
        _lock()
        current = state()
        if current is None or current[0] != tz:
            return 0
        built_until = current[1]
        today = max(_local_date(now, tz), built_until)
        days: set[date] = set()
        for utc_day in _claim_dirty():
            start = datetime.combine(utc_day, time(0), UTC)
            for moment in (start, start + timedelta(days=1) - timedelta(seconds=1)):
                local = _local_date(moment, tz)
                if local < built_until:
                    days.add(local)
        days.update(built_until + timedelta(days=n) for n in range((today - built_until).days))
        if limit is not None and len(days) > limit:
            raise _TooMuch
        for first, end in _spans(sorted(days)):
            _build_days(first, end, tz)
        if today != built_until:
            _set_state(tz, today, now)
    return len(days)


class _TooMuch(Exception):
    pass


def try_refresh(now: datetime) -> bool:
    """Refresh before a report: False (nothing changed) when more than REFRESH_DAYS days need recomputing."""
    try:
        refresh(now)
    except _TooMuch:
        return False
    return True


def _spans(days: list[date]) -> list[tuple[date, date]]:
    spans: list[tuple[date, date]] = []
    for day in days:
        if spans and spans[-1][1] == day:
            spans[-1] = (spans[-1][0], day + timedelta(days=1))
        else:
            spans.append((day, day + timedelta(days=1)))
    return spans


class RollupTimer:
    """The timer worker's part: at most once a minute, recompute the days changes marked and add ended days.

    Never a rebuild (minutes at a million incidents would hold up the SLA timers): when inlet.timezone is not
    the rollup's, it says so once and reports compute live until ``inlet report --rebuild``.
    """

    INTERVAL = 60.0

    def __init__(self, config, clock):
        self._config = config
        self.clock = clock
        self._next = 0.0
        self._warned = ""

    def tick(self) -> int:
        now = self.clock.now()
        if now.timestamp() < self._next:
            return 0
        self._next = now.timestamp() + self.INTERVAL
        tz = self._config().inlet.timezone
        current = state()
        if current is None or current[0] != tz:
            if self._warned != tz:
                log.warning("the report rollup is not in %s: reports compute live until 'inlet report --rebuild'", tz)
                self._warned = tz
            return 0
        return refresh(now, limit=None)


# ---------------------------------------------------------------- reading


def rolled(scope, now: datetime, built_until: date) -> dict:
    """The metrics of an unfiltered ``scope`` from the rollup's whole days plus the edges computed live.

    Returns totals, by, mtta, mttr, sla, daily, weekly, rates and recurring causes and services, shaped
    as gateway/reports.py's live functions shape them.
    """
    tz = scope.tz
    first = _local_date(scope.since, tz)
    if _midnight(first, tz) < scope.since:
        first += timedelta(days=1)
    end = min(_local_date(scope.until, tz), built_until, _local_date(now, tz))
    due_until = min(scope.until, now)
    if first < end:
        lo, hi = _midnight(first, tz), _midnight(end, tz)
        windows = [w for w in ((scope.since, lo), (hi, scope.until)) if w[0] < w[1]]
    else:
        windows = [(scope.since, scope.until)]
    visible = "" if scope.security else " AND sec = FALSE"
    if windows:  # the edges, computed once for every statement below
        _stage(windows, due_until, tz)
        _temporary("report_edge", AGGREGATE)
        _temporary("report_edge_hist", HISTOGRAM)

    def source(q) -> str:
        parts = []
        if first < end:
            parts.append(
                f"SELECT day, security AS sec, dim, value, first_opened AS fo, last_opened AS lo, {', '.join(SUMS)} "
                f"FROM report_rollup WHERE day >= {q.p(first.isoformat())} AND day < {q.p(end.isoformat())}"
            )
        if windows:
            parts.append(f"SELECT day, sec, dim, value, fo, lo, {', '.join(SUMS)} FROM report_edge")
        return f"(SELECT * FROM ({' UNION ALL '.join(parts)}) u WHERE 1 = 1{visible}) r"

    def rows(build) -> list[tuple]:
        q = _Sql()
        return _rows(build(q), q.params)

    sums = ", ".join(f"SUM({name})" for name in SUMS)
    count = "CAST(SUM(opened) AS BIGINT)"
    mtbf = f"CASE WHEN {count} > 1 THEN {_Sql().seconds('MAX(lo)', 'MIN(fo)')} / ({count} - 1) END"
    grouped = rows(
        lambda q: (
            f"SELECT dim, value, SUM(CASE WHEN sec = TRUE THEN opened ELSE 0 END), {mtbf}, {sums} "
            f"FROM {source(q)} GROUP BY dim, value ORDER BY dim, value"
        )
    )
    result: dict = {"by": {d: [] for d in DIMENSIONS}}
    causes, services = [], []
    whole = dict.fromkeys(SUMS, 0)
    sla: dict = {"by_group": [], "by_priority": [], **_sla_row("", whole)}
    sla.pop("key")
    security = 0
    for dim, value, secure, between, *numbers in grouped:
        n = dict(zip(SUMS, (int(v or 0) for v in numbers), strict=True))
        if not dim:
            whole, security = n, int(secure or 0)
        if dim in DIMENSIONS and n["opened"] + n["resolved"] + n["closed"]:
            result["by"][dim].append(
                {"key": value, "opened": n["opened"], "resolved": n["resolved"], "closed": n["closed"]}
            )
        if dim in ("", "group", "priority"):
            row = _sla_row(value, n)
            if not dim:
                row.pop("key")
                sla.update(row)
            elif n["resp_due"] or n["res_due"]:
                sla[f"by_{dim}"].append(row)
        if dim == "cause" and n["resolved"]:
            causes.append({"cause": value, "incidents": n["resolved"]})
        if dim == "service" and value and n["opened"]:
            services.append(
                {"service": value, "incidents": n["opened"], "mtbf": None if between is None else int(between)}
            )
    for dim in DIMENSIONS:
        result["by"][dim].sort(key=lambda row: -row["opened"])  # stable: ties keep the database's order of keys
    causes.sort(key=lambda row: -row["incidents"])
    services.sort(key=lambda row: -row["incidents"])
    opened = whole["opened"]
    result["totals"] = {
        "opened": opened,
        "resolved": whole["resolved"],
        "closed": whole["closed"],
        "major": whole["major"],
        "security": security,
        "major_share": _rate(whole["major"], opened),
        "security_share": _rate(security, opened),
    }
    result["sla"] = sla
    resolved = whole["resolved"]
    result["rates"] = {
        "resolved": resolved,
        "reopened": whole["reopened"],
        "escalated": whole["escalated"],
        "reassigned": whole["reassigned"],
        "first_time_fix": whole["first_time"],
        "reopen_rate": _rate(whole["reopened"], resolved),
        "escalation_rate": _rate(whole["escalated"], resolved),
        "reassignment_rate": _rate(whole["reassigned"], resolved),
        "first_time_fix_rate": _rate(whole["first_time"], resolved),
    }
    result["causes"] = causes[:TOP]
    result["services"] = services
    for metric, n, total in (("mtta", "acked", "mtta_sum"), ("mttr", "resolved", "mttr_sum")):
        median, p90 = rows(lambda q, m=metric: _percentiles(q, m, first, end, windows, due_until, tz, visible))[0]
        result[metric] = {
            "count": whole[n],
            "mean": round(whole[total] / whole[n], 1) if whole[n] else None,
            "median": None if median is None else REPRESENTATIVE[int(median)],
            "p90": None if p90 is None else REPRESENTATIVE[int(p90)],
        }

    days = {
        k: {"day": k, "opened": 0, "resolved": 0, "mtta_mean": None, "mttr_mean": None}
        for k, _, _ in _buckets(scope, "day")
    }
    per_day = rows(
        lambda q: (
            "SELECT day, SUM(opened), SUM(acked), SUM(mtta_sum), SUM(resolved), SUM(mttr_sum) "
            f"FROM {source(q)} WHERE dim = '' GROUP BY day"
        )
    )
    for day, o, acked, mtta, r, mttr in per_day:
        if day in days:
            days[day].update(opened=int(o), resolved=int(r), mtta_mean=_mean(mtta, acked), mttr_mean=_mean(mttr, r))
    result["daily"] = list(days.values())

    weeks = {k: {"week": k, "opened": 0, "closed": 0, "ratio": None} for k, _, _ in _buckets(scope, "week")}
    week = (
        "TO_CHAR(date_trunc('week', CAST(day AS TIMESTAMP)), 'YYYY-MM-DD')"
        if is_postgres()
        else ("date(day, 'weekday 0', '-6 days')")
    )
    for key, o, c in rows(
        lambda q: f"SELECT {week} AS w, SUM(opened), SUM(closed) FROM {source(q)} WHERE dim = '' GROUP BY w"
    ):
        if key in weeks:
            weeks[key].update(opened=int(o), closed=int(c), ratio=round(int(o) / int(c), 4) if c else None)
    result["weekly"] = list(weeks.values())
    return result


def _rows(sql: str, params: list) -> list[tuple]:
    return list(db.execute_sql(sql, params).fetchall())


def _mean(total, n) -> float | None:
    return round(int(total) / int(n), 1) if n else None


def _sla_row(key: str, n: dict) -> dict:
    return {
        "key": key,
        "response_due": n["resp_due"],
        "response_breached": n["resp_breached"],
        "response_rate": _rate(n["resp_breached"], n["resp_due"]),
        "resolution_due": n["res_due"],
        "resolution_breached": n["res_breached"],
        "resolution_rate": _rate(n["res_breached"], n["res_due"]),
    }


def _percentiles(q, metric, first, end, windows, due_until, tz, visible) -> str:
    """Nearest-rank median and p90 buckets of ``metric`` from the merged histograms."""
    parts = []
    if first < end:
        parts.append(
            f"SELECT bucket AS b, n, security AS sec FROM report_rollup_hist WHERE metric = {q.p(metric)} "
            f"AND day >= {q.p(first.isoformat())} AND day < {q.p(end.isoformat())}"
        )
    if windows:
        parts.append(f"SELECT b, n, sec FROM report_edge_hist WHERE metric = {q.p(metric)}")
    return (
        f"WITH h AS (SELECT b, SUM(n) AS n FROM ({' UNION ALL '.join(parts)}) u WHERE 1 = 1{visible} GROUP BY b), "
        "c AS (SELECT b, SUM(n) OVER (ORDER BY b) AS cum, CAST(SUM(n) OVER () AS BIGINT) AS total FROM h) "
        "SELECT MIN(CASE WHEN cum >= (total + 1) / 2 THEN b END), "
        "MIN(CASE WHEN cum >= (9 * total + 9) / 10 THEN b END) FROM c"
    )
