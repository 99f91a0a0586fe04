"""How incident management performs: the metrics of a period, computed in SQL (DESIGN.md §1 "the process is measured").

All the SQL of the reports lives in this module. Every figure is an aggregate or a
window function in the database — no Python loop over incident rows — and the same
statements run on SQLite and PostgreSQL (durations are whole seconds, percentiles
are nearest-rank, so both give identical numbers).

What counts (the definitions the UI, the API and the CLI show):

- Drills and cancelled incidents never count. Filters (group, category, service,
  priority, source, procedure) are equalities on the incident as it is now; security
  incidents count only when the scope says so (who may see them).
- *opened / resolved / closed*: incidents whose opened_at / resolved_at / closed_at
  falls in [since, until). A reopened incident counts as resolved when it was last resolved.
- *MTTA*: acknowledged_at − opened_at over incidents acknowledged in the period.
  *MTTR*: resolved_at − opened_at − time on hold (paused_seconds) over incidents
  resolved in the period. Each as mean, median and p90 (nearest rank: the smallest
  value with at least 50 % / 90 % of the values at or below it), in seconds.
- *SLA breach rate*: breached ÷ targets that fell due in [since, min(until, now)).
  Response: respond_by fell due; breached when neither acknowledged nor resolved by then.
  Resolution: resolve_by fell due (an incident on hold whose clock stopped before its
  target is not due); breached when not resolved by then.
- *backlog*: incidents open at ``now`` (period ignored), with age median / p90 and
  buckets < 1 d, 1–3 d, 3–7 d, ≥ 7 d.
- *per day / per week*: local days and weeks (Monday) of the report's time zone,
  clipped to the period; DST days are 23 or 25 hours long.
- *rates* are over the incidents resolved in the period: reopened at least once,
  escalated, reassigned at least once, and first-time fix (none of the three).
- *recurring*: cause codes of incidents resolved in the period; fingerprints and
  senders shared by two or more incidents opened in the period; per service the
  incidents opened and the MTBF (mean time between the openings: (last − first) ÷ (n − 1)).
- *major-incident updates*: each major incident opened in the period owes one public
  update per ``interval`` of its life (until resolved, or the end of the period); a due
  update is on time when at least one public update was posted in its interval.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta

from gateway.reports import rollup as report_rollup
from gateway.reports.scope import (
    AGE_BUCKETS,
    DIMENSIONS,
    TOP,
    Scope,
    _buckets,
    _per_bucket,
    _rate,
    _rows,
    _Sql,
    _stats,
    _stats_dict,
)
from store.models import ON_HOLD, OPEN_STATUSES


def report(
    scope: Scope, *, now: datetime, update_interval: timedelta = timedelta(minutes=30), rollup: bool = True
) -> dict:
    """Every metric of ``scope`` as of ``now``: a JSON-ready dict (durations in seconds, rates 0..1).

    Unfiltered reports in the rollup's time zone read gateway/reports/rollup.py's per-day sums (percentiles
    within its ERROR_BOUND); ``rollup=False`` computes everything from the incidents.
    """
    due_until = min(scope.until, now)
    result = {
        "period": {
            "since": scope.since.isoformat(timespec="seconds"),
            "until": scope.until.isoformat(timespec="seconds"),
            "tz": scope.tz,
        },
        "filters": scope.filters(),
        "security_included": scope.security,
        "generated_at": now.isoformat(timespec="seconds"),
        "definitions": {
            "percentiles": "nearest rank",
            "mtta": "acknowledged − opened, incidents acknowledged in the period",
            "mttr": "resolved − opened − time on hold, incidents resolved in the period",
        },
    }
    built_until = _rollup_until(scope, now) if rollup else None
    if built_until is None:
        result["totals"], result["by"] = _counts(scope)
        result["mtta"] = _mtta(scope)
        result["mttr"] = _mttr(scope)
        result["sla"] = _sla(scope, due_until)
        result["daily"] = _daily(scope)
        result["weekly"] = _weekly(scope)
        result["rates"] = _rates(scope)
        result["recurring"] = _recurring(scope)
    else:
        rolled = report_rollup.rolled(scope, now, built_until)
        for name in ("totals", "by", "mtta", "mttr", "sla", "daily", "weekly", "rates"):
            result[name] = rolled[name]
        result["recurring"] = _recurring(scope, rolled=rolled)
    result["definitions"]["percentiles"] = (
        "nearest rank" if built_until is None else f"nearest rank, within {report_rollup.ERROR_BOUND:.2%} (rollup)"
    )
    result["backlog"] = _backlog(scope, now)
    result["major_updates"] = _major_updates(scope, now, update_interval)
    return result


def _rollup_until(scope: Scope, now: datetime) -> date | None:
    """The rollup serves an unfiltered report in its time zone (after catching up with the incidents' changes)."""
    if scope.filters() or report_rollup.usable(scope.tz) is None or not report_rollup.try_refresh(now):
        return None
    return report_rollup.usable(scope.tz)


def _counts(scope: Scope) -> tuple[dict, dict]:
    """Totals and the counts by each dimension, from one read of the period's incidents (a materialised CTE)."""
    q = _Sql()

    def flag(column: str, also: str = "") -> str:
        """1 when ``column`` is in the period (and the boolean column ``also`` is true); parameters in text order."""
        within = q.within(column, scope.since, scope.until)
        extra = f" AND i.{also} = {q.p(True)}" if also else ""
        return f"CASE WHEN {within}{extra} THEN 1 ELSE 0 END"

    dims = ", ".join(f'i."{d}" AS d_{d}' for d in DIMENSIONS)
    period = (
        f"SELECT {dims}, {flag('i.opened_at')} AS o, {flag('i.resolved_at')} AS r, {flag('i.closed_at')} AS c, "
        f"{flag('i.opened_at', 'major')} AS om, {flag('i.opened_at', 'security')} AS os "
        f"FROM incident i WHERE {q.base(scope)} AND ({_touched(q, scope)})"
    )
    parts = [
        f"SELECT '{d}' AS d, d_{d} AS k, SUM(o) AS o, SUM(r), SUM(c), 0, 0 FROM p GROUP BY d_{d}" for d in DIMENSIONS
    ]
    parts.append("SELECT '' AS d, '' AS k, SUM(o) AS o, SUM(r), SUM(c), SUM(om), SUM(os) FROM p")
    sql = f"WITH p AS MATERIALIZED ({period}) SELECT * FROM ({' UNION ALL '.join(parts)}) u ORDER BY d, o DESC, k"
    by: dict[str, list[dict]] = {d: [] for d in DIMENSIONS}
    totals: dict = {}
    for d, key, o, r, c, major, security in _rows(sql, q.params):
        o, r, c = int(o or 0), int(r or 0), int(c or 0)
        if d:
            by[d].append({"key": key, "opened": o, "resolved": r, "closed": c})
            continue
        major, security = int(major or 0), int(security or 0)
        totals = {
            "opened": o,
            "resolved": r,
            "closed": c,
            "major": major,
            "security": security,
            "major_share": _rate(major, o),
            "security_share": _rate(security, o),
        }
    return totals, by


def _touched(q: _Sql, scope: Scope) -> str:
    """Opened, resolved or closed in the period."""
    return " OR ".join(q.within(f"i.{c}", scope.since, scope.until) for c in ("opened_at", "resolved_at", "closed_at"))


def _mtta(scope: Scope) -> dict:
    q = _Sql()
    values = (
        f"SELECT {q.seconds('i.acknowledged_at', 'i.opened_at')} AS x FROM incident i "
        f"WHERE {q.base(scope)} AND {q.within('i.acknowledged_at', scope.since, scope.until)}"
    )
    return _stats_dict(_rows(_stats(q, values), q.params)[0])


def _mttr(scope: Scope) -> dict:
    q = _Sql()
    values = (
        f"SELECT {q.seconds('i.resolved_at', 'i.opened_at')} - i.paused_seconds AS x FROM incident i "
        f"WHERE {q.base(scope)} AND {q.within('i.resolved_at', scope.since, scope.until)}"
    )
    return _stats_dict(_rows(_stats(q, values), q.params)[0])


def _sla(scope: Scope, due_until: datetime) -> dict:
    """Response and resolution breaches, overall, by group and by priority: one read of the targets due."""
    if due_until <= scope.since:
        due_until = scope.since  # nothing can have fallen due: every window below is empty
    q = _Sql()
    responded = "COALESCE(i.acknowledged_at, i.resolved_at)"
    flags = (
        f'SELECT i."group" AS g, i.priority AS pr, '
        f"CASE WHEN {q.within('i.respond_by', scope.since, due_until)} THEN 1 ELSE 0 END AS rd, "
        f"CASE WHEN {responded} IS NULL OR {responded} > i.respond_by THEN 1 ELSE 0 END AS rb, "
        # a clock stopped (on hold) before its target is not due yet
        f"CASE WHEN {q.within('i.resolve_by', scope.since, due_until)} AND NOT (i.status = {q.p(ON_HOLD)} "
        "AND i.on_hold_since < i.resolve_by) THEN 1 ELSE 0 END AS sd, "
        "CASE WHEN i.resolved_at IS NULL OR i.resolved_at > i.resolve_by THEN 1 ELSE 0 END AS sb "
        f"FROM incident i WHERE {q.base(scope)} AND ({q.within('i.respond_by', scope.since, due_until)} "
        f"OR {q.within('i.resolve_by', scope.since, due_until)})"
    )
    sums = "SUM(rd), SUM(rd * rb), SUM(sd), SUM(sd * sb)"
    parts = [
        f"SELECT '' AS d, '' AS k, {sums} FROM s",
        f"SELECT 'group' AS d, g AS k, {sums} FROM s GROUP BY g",
        f"SELECT 'priority' AS d, pr AS k, {sums} FROM s GROUP BY pr",
    ]
    sql = f"WITH s AS MATERIALIZED ({flags}) SELECT * FROM ({' UNION ALL '.join(parts)}) u ORDER BY d, k"
    result: dict = {"by_group": [], "by_priority": []}
    for d, k, r_due, r_breached, s_due, s_breached in _rows(sql, q.params):
        r_due, r_breached, s_due, s_breached = (int(v or 0) for v in (r_due, r_breached, s_due, s_breached))
        row = {
            "key": k or "",
            "response_due": r_due,
            "response_breached": r_breached,
            "response_rate": _rate(r_breached, r_due),
            "resolution_due": s_due,
            "resolution_breached": s_breached,
            "resolution_rate": _rate(s_breached, s_due),
        }
        if not d:
            row.pop("key")
            result.update(row)
        elif r_due or s_due:
            result[f"by_{d}"].append(row)
    return result


def _backlog(scope: Scope, now: datetime) -> dict:
    q = _Sql()
    # SQLite's statistics cannot tell that few incidents are open: without the hint it reads the whole table
    hint = "" if q.pg else " INDEXED BY incident_status_priority_drill"
    values = (
        f"SELECT {q.seconds(q.p(now), 'i.opened_at')} AS x FROM incident i{hint} "
        f"WHERE {q.base(scope)} AND i.status IN ({', '.join(q.p(s) for s in OPEN_STATUSES)})"
    )
    buckets = ", ".join(
        f"SUM(CASE WHEN x >= {lo}{f' AND x < {hi}' if hi is not None else ''} THEN 1 ELSE 0 END)"
        for _, lo, hi in AGE_BUCKETS
    )
    sql = (
        f"WITH v AS ({values}), "
        "r AS (SELECT x, ROW_NUMBER() OVER (ORDER BY x) AS rn, COUNT(*) OVER () AS n FROM v) "
        "SELECT COUNT(*), MAX(CASE WHEN rn = (n + 1) / 2 THEN x END), "
        f"MAX(CASE WHEN rn = (9 * n + 9) / 10 THEN x END), {buckets} FROM r"
    )
    row = _rows(sql, q.params)[0]
    return {
        "open": int(row[0] or 0),
        "age_median": None if row[1] is None else int(row[1]),
        "age_p90": None if row[2] is None else int(row[2]),
        "buckets": [
            {"age": label, "count": int(n or 0)} for (label, _, _), n in zip(AGE_BUCKETS, row[3:], strict=True)
        ],
    }


def _daily(scope: Scope) -> list[dict]:
    """Per local day: opened, resolved, and mean MTTA / MTTR of what was acknowledged / resolved that day."""
    buckets = _buckets(scope, "day")
    days = {k: {"day": k, "opened": 0, "resolved": 0, "mtta_mean": None, "mttr_mean": None} for k, _, _ in buckets}
    q = _Sql()
    for k, n in _rows(_per_bucket(q, scope, "opened_at", "day", "COUNT(i.id)"), q.params):
        days[k]["opened"] = int(n)
    q = _Sql()
    mtta = f"AVG({q.seconds('i.acknowledged_at', 'i.opened_at')})"
    for k, mean in _rows(_per_bucket(q, scope, "acknowledged_at", "day", mtta), q.params):
        days[k]["mtta_mean"] = None if mean is None else round(float(mean), 1)
    q = _Sql()
    mttr = f"COUNT(i.id), AVG({q.seconds('i.resolved_at', 'i.opened_at')} - i.paused_seconds)"
    for k, n, mean in _rows(_per_bucket(q, scope, "resolved_at", "day", mttr), q.params):
        days[k]["resolved"] = int(n)
        days[k]["mttr_mean"] = None if mean is None else round(float(mean), 1)
    return list(days.values())


def _weekly(scope: Scope) -> list[dict]:
    buckets = _buckets(scope, "week")
    weeks = {k: {"week": k, "opened": 0, "closed": 0, "ratio": None} for k, _, _ in buckets}
    for column, name in (("opened_at", "opened"), ("closed_at", "closed")):
        q = _Sql()
        for k, n in _rows(_per_bucket(q, scope, column, "week", "COUNT(i.id)"), q.params):
            weeks[k][name] = int(n)
    for week in weeks.values():
        week["ratio"] = round(week["opened"] / week["closed"], 4) if week["closed"] else None
    return list(weeks.values())


def _rates(scope: Scope) -> dict:
    q = _Sql()
    sql = (
        "SELECT COUNT(*), SUM(CASE WHEN i.reopen_count > 0 THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN i.escalated = {q.p(True)} THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN i.reassignment_count > 0 THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN i.reopen_count = 0 AND i.reassignment_count = 0 AND i.escalated = {q.p(False)} "
        "THEN 1 ELSE 0 END) "
        f"FROM incident i WHERE {q.base(scope)} AND {q.within('i.resolved_at', scope.since, scope.until)}"
    )
    n, reopened, escalated, reassigned, first_time = (int(v or 0) for v in _rows(sql, q.params)[0])
    return {
        "resolved": n,
        "reopened": reopened,
        "escalated": escalated,
        "reassigned": reassigned,
        "first_time_fix": first_time,
        "reopen_rate": _rate(reopened, n),
        "escalation_rate": _rate(escalated, n),
        "reassignment_rate": _rate(reassigned, n),
        "first_time_fix_rate": _rate(first_time, n),
    }


def _recurring(scope: Scope, rolled: dict | None = None) -> dict:
    if rolled is None:
        q = _Sql()
        causes = _rows(
            f"SELECT i.cause_code, COUNT(*) AS n FROM incident i WHERE {q.base(scope)} "
            f"AND {q.within('i.resolved_at', scope.since, scope.until)} AND i.cause_code <> '' "
            f"GROUP BY i.cause_code ORDER BY n DESC, i.cause_code LIMIT {TOP}",
            q.params,
        )
    q = _Sql()
    fingerprints = _rows(
        "SELECT k.value, COUNT(DISTINCT i.id) AS n, SUM(i.signal_count) FROM correlation_key k "
        f"JOIN incident i ON i.id = k.incident_id WHERE k.kind = {q.p('fingerprint')} AND {q.base(scope)} "
        f"AND {q.within('i.opened_at', scope.since, scope.until)} "
        f"GROUP BY k.value HAVING COUNT(DISTINCT i.id) > 1 ORDER BY n DESC, k.value LIMIT {TOP}",
        q.params,
    )
    q = _Sql()
    # counted per reporter first (an email is one contact): the contacts of repeat senders only are read
    senders = _rows(
        f"SELECT c.email, t.n FROM (SELECT i.reporter_id AS r, COUNT(*) AS n FROM incident i WHERE {q.base(scope)} "
        f"AND {q.within('i.opened_at', scope.since, scope.until)} AND i.reporter_id IS NOT NULL "
        f"GROUP BY i.reporter_id HAVING COUNT(*) > 1) t JOIN contact c ON c.id = t.r "
        f"ORDER BY t.n DESC, c.email LIMIT {TOP}",
        q.params,
    )
    if rolled is not None:
        return {
            "causes": rolled["causes"],
            "fingerprints": [
                {"fingerprint": f, "incidents": int(n), "signals": int(s or 0)} for f, n, s in fingerprints
            ],
            "senders": [{"sender": s, "incidents": int(n)} for s, n in senders],
            "services": rolled["services"],
        }
    q = _Sql()
    span = q.seconds("MAX(i.opened_at)", "MIN(i.opened_at)")
    services = _rows(
        f"SELECT i.service, COUNT(*) AS n, CASE WHEN COUNT(*) > 1 THEN {span} / (COUNT(*) - 1) END "
        f"FROM incident i WHERE {q.base(scope)} AND {q.within('i.opened_at', scope.since, scope.until)} "
        f"AND i.service <> '' GROUP BY i.service ORDER BY n DESC, i.service",
        q.params,
    )
    return {
        "causes": [{"cause": c, "incidents": int(n)} for c, n in causes],
        "fingerprints": [{"fingerprint": f, "incidents": int(n), "signals": int(s or 0)} for f, n, s in fingerprints],
        "senders": [{"sender": s, "incidents": int(n)} for s, n in senders],
        "services": [
            {"service": s, "incidents": int(n), "mtbf": None if m is None else int(m)} for s, n, m in services
        ],
    }


def _major_updates(scope: Scope, now: datetime, interval: timedelta) -> dict:
    step = max(int(interval.total_seconds()), 1)
    q = _Sql()
    horizon = min(scope.until, now)
    end = f"CASE WHEN i.resolved_at IS NOT NULL AND i.resolved_at < {q.p(horizon)} THEN i.resolved_at ELSE "
    end += f"{q.p(horizon)} END"
    sql = (
        f"WITH m AS (SELECT i.id, i.opened_at, {q.seconds(end, 'i.opened_at')} / {step} AS due FROM incident i "
        f"WHERE {q.base(scope)} AND i.major = {q.p(True)} AND {q.within('i.opened_at', scope.since, scope.until)}), "
        # CROSS JOIN: SQLite reads the few major incidents first, then their events by index (never every event)
        f"u AS (SELECT DISTINCT m.id, {q.seconds('e.at', 'm.opened_at')} / {step} AS slot, m.due FROM m "
        f"CROSS JOIN event e WHERE e.incident_id = m.id AND e.type = {q.p('update')} "
        f"AND e.visibility = {q.p('public')}) "
        "SELECT (SELECT SUM(CASE WHEN due > 0 THEN due ELSE 0 END) FROM m), "
        "(SELECT COUNT(*) FROM u WHERE slot >= 0 AND slot < due)"
    )
    due, on_time = (int(v or 0) for v in _rows(sql, q.params)[0])
    return {"interval": step, "due": due, "on_time": on_time, "compliance": _rate(on_time, due)}


# ---------------------------------------------------------------- output


def csv_tables(result: dict) -> dict[str, list[dict]]:
    """The report as named tables (rows of flat dicts): what the CSV downloads and ``--format csv`` write."""
    tables = {
        "totals": [result["totals"]],
        "mtta_mttr": [{"metric": name, **result[name]} for name in ("mtta", "mttr")],
        "daily": result["daily"],
        "weekly": result["weekly"],
        "sla": [{k: v for k, v in result["sla"].items() if not k.startswith("by_")}],
        "sla_by_group": result["sla"]["by_group"],
        "sla_by_priority": result["sla"]["by_priority"],
        "backlog": [{k: v for k, v in result["backlog"].items() if k != "buckets"}],
        "backlog_age": result["backlog"]["buckets"],
        "rates": [result["rates"]],
        "top_causes": result["recurring"]["causes"],
        "fingerprints": result["recurring"]["fingerprints"],
        "senders": result["recurring"]["senders"],
        "services": result["recurring"]["services"],
        "major_updates": [result["major_updates"]],
    }
    for name in DIMENSIONS:
        tables[f"by_{name}"] = result["by"][name]
    return tables


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def to_text(result: dict) -> str:
    """The report as readable tables for a terminal."""
    period = result["period"]
    lines = [f"Inlet report {period['since']} … {period['until']} ({period['tz']})"]
    if result["filters"]:
        lines.append("filters: " + ", ".join(f"{k}={v}" for k, v in result["filters"].items()))
    lines.append("drills and cancelled incidents excluded; durations in seconds; percentiles nearest-rank")
    for name, rows in csv_tables(result).items():
        lines += ["", name.replace("_", " ").upper(), *_aligned(rows)]
    return "\n".join(lines) + "\n"


def _aligned(rows: list[dict]) -> list[str]:
    if not rows:
        return ["  (none)"]
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    return [line.rstrip()] + ["  " + "  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
