"""gateway/reports/figures.py: every metric against a hand-computed data set, on SQLite and PostgreSQL.

The period is four local days of Europe/Berlin around the switch to summer time
(2026-03-29 is 23 hours long): since 2026-03-27 00:00 CET = 03-26 23:00 UTC,
until 2026-03-31 00:00 CEST = 03-30 22:00 UTC. The report is taken at 04-01 12:00 UTC.
Default SLA targets: P1 15m/4h, P2 1h/8h, P3 4h/1d, P4 1d/3d, P5 2d/5d.

Incidents (times UTC; groups are where the incident ended up):

A  P3 net  network vpn  email  alice  opened 03-27 08:00, ack 08:30, hold 09:00–11:00, resolved 12:00 (config),
                                      closed 13:00
B  P1 db   network vpn  email  alice  opened 03-27 23:30 (03-28 local), ack 03-28 00:00 (late), escalated net→db 00:10,
                                      resolved 05:00 (late; config)
C  P3 net  database db  email  bob    opened 03-28 10:00, ack 10:10, reassigned db→net 10:20, resolved 11:00, reopened
                                      12:00, resolved 14:00 (disk); fingerprint fp-disk
D  drill, E cancelled: never counted
F  P1 net  outage vpn   manual        major; opened 03-29 00:30, ack 00:40, public updates 00:50, 01:05, 01:10, 02:20,
                                      resolved 02:45 (power): 4 updates due (every 30 min), 3 on time
G  P3 sec  phishing mail email mallory security; opened 03-30 08:00, ack 09:00, open
H  P4 db   database db  manual        opened 03-25 10:00 (before), never acknowledged:
                                      resolve target 03-28 10:00 breached
I  P3 net  network vpn  email  bob    opened 03-30 21:30 (23:30 local), ack 21:45, on hold since 22:00
J  P2 db   database db  webhook       opened 03-27 00:00, ack 00:30, on hold since 01:00
                                      (its resolve clock stopped before due)
K  P3 net  network      manual        opened 03-30 23:00 (03-31 local: after the period), open
L  P5 db   database db  alertmanager  opened 03-26 23:30 (03-27 00:30 local), ack 03-27 00:00, resolved 06:30 (disk),
                                      closed 07:00; fingerprint fp-disk
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from gateway.cli.main import main
from gateway.core.clock import FixedClock
from gateway.core.errors import ConfigError
from gateway.incidents.lifecycle import Lifecycle
from gateway.reports import rollup as report_rollup
from gateway.reports.figures import Scope, csv_tables, report, to_csv
from gateway.reports.rollup import ERROR_BOUND
from gateway.reports.scope import parse_moment
from store.models import User

SINCE = datetime(2026, 3, 26, 23, 0, tzinfo=UTC)
UNTIL = datetime(2026, 3, 30, 22, 0, tzinfo=UTC)
NOW = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


def _at(clock: FixedClock, text: str) -> None:
    clock._now = datetime.fromisoformat(f"2026-{text}").replace(tzinfo=UTC)


def build(clock: FixedClock) -> None:
    life = Lifecycle(clock=clock)

    def resolve(ref, when, cause):
        _at(clock, when)
        life.resolve(ref, "agent", code="fixed", notes="fixed", cause=cause)

    def step(when, action, ref, *args, **kwargs):
        _at(clock, when)
        getattr(life, action)(ref, "agent", *args, **kwargs)

    def create(when, **kwargs):
        _at(clock, when)
        kwargs.setdefault("impact", "medium")
        kwargs.setdefault("urgency", "medium")
        return life.create(actor="test", **kwargs).ref

    a = create("03-27T08:00", title="A", group="net", category="network", service="vpn", source="email",
               reporter_email="alice@example.org", keys=[("fingerprint", "fp-once")])  # fmt: skip
    step("03-27T08:30", "acknowledge", a)
    step("03-27T09:00", "hold", a, "waiting for the reporter")
    step("03-27T11:00", "resume", a)
    resolve(a, "03-27T12:00", "config")
    step("03-27T13:00", "close", a)

    b = create("03-27T23:30", title="B", group="net", category="network", service="vpn", source="email",
               reporter_email="alice@example.org", impact="high", urgency="high")  # fmt: skip
    step("03-28T00:00", "acknowledge", b)
    step("03-28T00:10", "escalate", b, "functional", "needs the DBAs", group="db")
    resolve(b, "03-28T05:00", "config")

    c = create("03-28T10:00", title="C", group="db", category="database", service="db", source="email",
               reporter_email="bob@example.org", keys=[("fingerprint", "fp-disk")])  # fmt: skip
    step("03-28T10:10", "acknowledge", c)
    _at(clock, "03-28T10:20")
    life.assign(c, "agent", group="net")
    resolve(c, "03-28T11:00", "disk")
    step("03-28T12:00", "reopen", c, "still broken")
    resolve(c, "03-28T14:00", "disk")

    d = create("03-28T09:00", title="D", group="net", category="network", service="vpn", drill=True)
    step("03-28T09:05", "acknowledge", d)
    resolve(d, "03-28T09:10", "drill")
    e = create("03-28T09:30", title="E", group="net", category="network", service="vpn", source="email",
               reporter_email="alice@example.org")  # fmt: skip
    step("03-28T09:45", "cancel", e, "duplicate")

    User.create(name="cmd", role="agent", password_hash="-", created_at=NOW)
    f = create("03-29T00:30", title="F", group="net", category="outage", service="vpn", major=True,
               impact="high", urgency="high")  # fmt: skip
    _at(clock, "03-29T00:35")
    life.assign(f, "agent", assignee="cmd")
    step("03-29T00:40", "acknowledge", f)
    for when in ("00:50", "01:05", "01:10", "02:20"):
        _at(clock, f"03-29T{when}")
        life.note(f, "cmd", f"update at {when}", public=True)
    _at(clock, "03-29T01:20")
    life.note(f, "cmd", "an internal note is no update")
    resolve(f, "03-29T02:45", "power")

    g = create("03-30T08:00", title="G", group="sec", category="phishing", service="mail", source="email",
               reporter_email="mallory@example.org", security=True)  # fmt: skip
    step("03-30T09:00", "acknowledge", g)

    create("03-25T10:00", title="H", group="db", category="database", service="db", impact="low")

    i = create("03-30T21:30", title="I", group="net", category="network", service="vpn", source="email",
               reporter_email="bob@example.org")  # fmt: skip
    step("03-30T21:45", "acknowledge", i)
    step("03-30T22:00", "hold", i, "waiting for the supplier")

    j = create("03-27T00:00", title="J", group="db", category="database", service="db", source="webhook",
               impact="high")  # fmt: skip
    step("03-27T00:30", "acknowledge", j)
    step("03-27T01:00", "hold", j, "waiting for the supplier")

    create("03-30T23:00", title="K", group="net", category="network", source="manual")

    el = create("03-26T23:30", title="L", group="db", category="database", service="db", source="alertmanager",
                impact="low", urgency="low", keys=[("fingerprint", "fp-disk")])  # fmt: skip
    step("03-27T00:00", "acknowledge", el)
    resolve(el, "03-27T06:30", "disk")
    step("03-27T07:00", "close", el)


def _by(rows):
    return {row["key"]: (row["opened"], row["resolved"], row["closed"]) for row in rows}


def _sla(rows):
    return {
        row["key"]: (row["response_due"], row["response_breached"], row["resolution_due"], row["resolution_breached"])
        for row in rows
    }


def _close(got: int, want: int) -> bool:
    """A percentile from the rollup's histograms: within its stated bound of the exact one."""
    return abs(got - want) <= ERROR_BOUND * want


@pytest.mark.parametrize("rolled", [False, True], ids=["live", "rollup"])
def test_every_metric_of_a_hand_computed_period(store, rolled):
    if rolled:  # built before the incidents: the triggers mark their days, the report catches up
        report_rollup.rebuild("Europe/Berlin", NOW)
    build(FixedClock())
    result = report(Scope(since=SINCE, until=UNTIL, tz="Europe/Berlin"), now=NOW)
    assert ("rollup" in result["definitions"]["percentiles"]) is rolled
    if rolled:
        for name, (median, p90) in {"mtta": (1800, 3600), "mttr": (14400, 25200)}.items():
            assert _close(result[name].pop("median"), median) and _close(result[name].pop("p90"), p90), result[name]
            result[name].update(median=median, p90=p90)

    assert result["totals"] == {
        "opened": 8, "resolved": 5, "closed": 2, "major": 1, "security": 1, "major_share": 0.125,
        "security_share": 0.125,
    }  # fmt: skip
    assert _by(result["by"]["category"]) == {
        "database": (3, 2, 1), "network": (3, 2, 1), "outage": (1, 1, 0), "phishing": (1, 0, 0)
    }  # fmt: skip
    assert [row["key"] for row in result["by"]["category"]] == ["database", "network", "outage", "phishing"]
    assert _by(result["by"]["group"]) == {"net": (4, 3, 1), "db": (3, 2, 1), "sec": (1, 0, 0)}
    assert _by(result["by"]["priority"]) == {"P3": (4, 2, 1), "P1": (2, 2, 0), "P2": (1, 0, 0), "P5": (1, 1, 1)}
    assert _by(result["by"]["source"]) == {
        "email": (5, 3, 1), "alertmanager": (1, 1, 1), "manual": (1, 1, 0), "webhook": (1, 0, 0)
    }  # fmt: skip
    assert _by(result["by"]["service"]) == {"vpn": (4, 3, 1), "db": (3, 2, 1), "mail": (1, 0, 0)}

    assert result["mtta"] == {"count": 8, "mean": 1612.5, "median": 1800, "p90": 3600}
    assert result["mttr"] == {"count": 5, "mean": 14940.0, "median": 14400, "p90": 25200}

    sla = result["sla"]
    assert (sla["response_due"], sla["response_breached"], sla["response_rate"]) == (7, 1, 0.1429)
    assert (sla["resolution_due"], sla["resolution_breached"], sla["resolution_rate"]) == (5, 2, 0.4)
    assert _sla(sla["by_group"]) == {"db": (3, 1, 2, 2), "net": (3, 0, 3, 0), "sec": (1, 0, 0, 0)}
    assert _sla(sla["by_priority"]) == {
        "P1": (2, 1, 2, 1), "P2": (1, 0, 0, 0), "P3": (3, 0, 2, 0), "P4": (0, 0, 1, 1), "P5": (1, 0, 0, 0)
    }  # fmt: skip

    backlog = result["backlog"]
    assert (backlog["open"], backlog["age_median"], backlog["age_p90"]) == (5, 187200, 612000)
    assert [b["count"] for b in backlog["buckets"]] == [0, 3, 1, 1]

    assert result["daily"] == [
        {"day": "2026-03-27", "opened": 3, "resolved": 2, "mtta_mean": 1800.0, "mttr_mean": 16200.0},
        {"day": "2026-03-28", "opened": 2, "resolved": 2, "mtta_mean": 1200.0, "mttr_mean": 17100.0},
        {"day": "2026-03-29", "opened": 1, "resolved": 1, "mtta_mean": 600.0, "mttr_mean": 8100.0},
        {"day": "2026-03-30", "opened": 2, "resolved": 0, "mtta_mean": 2250.0, "mttr_mean": None},
    ]
    assert result["weekly"] == [
        {"week": "2026-03-23", "opened": 6, "closed": 2, "ratio": 3.0},
        {"week": "2026-03-30", "opened": 2, "closed": 0, "ratio": None},
    ]
    assert result["rates"] == {
        "resolved": 5, "reopened": 1, "escalated": 1, "reassigned": 2, "first_time_fix": 3, "reopen_rate": 0.2,
        "escalation_rate": 0.2, "reassignment_rate": 0.4, "first_time_fix_rate": 0.6,
    }  # fmt: skip
    recurring = result["recurring"]
    assert recurring["causes"] == [
        {"cause": "config", "incidents": 2}, {"cause": "disk", "incidents": 2}, {"cause": "power", "incidents": 1}
    ]  # fmt: skip
    assert recurring["fingerprints"] == [{"fingerprint": "fp-disk", "incidents": 2, "signals": 2}]
    assert recurring["senders"] == [
        {"sender": "alice@example.org", "incidents": 2}, {"sender": "bob@example.org", "incidents": 2}
    ]  # fmt: skip
    assert recurring["services"] == [
        {"service": "vpn", "incidents": 4, "mtbf": 102600},
        {"service": "db", "incidents": 3, "mtbf": 62100},
        {"service": "mail", "incidents": 1, "mtbf": None},
    ]
    assert result["major_updates"] == {"interval": 1800, "due": 4, "on_time": 3, "compliance": 0.75}


def test_filters_and_hidden_security_incidents(store):
    build(FixedClock())
    hidden = report(Scope(since=SINCE, until=UNTIL, tz="Europe/Berlin", security=False), now=NOW)
    assert (hidden["totals"]["opened"], hidden["totals"]["security"]) == (7, 0)
    assert "sec" not in _by(hidden["by"]["group"])
    assert hidden["backlog"]["open"] == 4

    db_only = report(Scope(since=SINCE, until=UNTIL, tz="Europe/Berlin", group="db"), now=NOW)
    assert db_only["totals"]["opened"] == 3  # B, J, L
    assert db_only["mttr"] == {"count": 2, "mean": 22500.0, "median": 19800, "p90": 25200}
    assert db_only["recurring"]["services"] == [{"service": "db", "incidents": 2, "mtbf": 1800}, {
        "service": "vpn", "incidents": 1, "mtbf": None}]  # fmt: skip

    utc_days = report(Scope(since=SINCE, until=UNTIL, tz="UTC", service="vpn", source="email"), now=NOW)
    assert [(d["day"], d["opened"]) for d in utc_days["daily"]] == [
        ("2026-03-26", 0), ("2026-03-27", 2), ("2026-03-28", 0), ("2026-03-29", 0), ("2026-03-30", 1)
    ]  # fmt: skip


def _without_percentiles(result: dict) -> dict:
    """The report less what may differ between the rollup and the live computation: percentiles (checked
    within the bound) and the definitions (which say where the percentiles came from)."""
    result = json.loads(json.dumps(result))
    result.pop("definitions")
    for name in ("mtta", "mttr"):
        result[name].pop("median"), result[name].pop("p90")
    return result


def test_the_rollup_equals_the_live_computation_after_changes(store):
    """Reopen, reassignment, hold, resume, cancel and escalation of incidents of days the rollup holds."""
    clock = FixedClock()
    build(clock)
    report_rollup.rebuild("Europe/Berlin", NOW)
    life = Lifecycle(clock=clock)
    from store.models import Incident

    refs = {i.title: i.ref for i in Incident.select(Incident.title, Incident.ref)}
    _at(clock, "03-31T09:00")
    life.reopen(refs["C"], "agent", "it is back")
    life.assign(refs["B"], "agent", group="sec")
    life.hold(refs["G"], "agent", "waiting for the user")
    life.resume(refs["J"], "agent")
    life.cancel(refs["K"], "agent", "duplicate")
    life.escalate(refs["I"], "agent", "functional", "needs the DBAs", group="db")
    _at(clock, "03-31T10:00")
    life.resolve(refs["C"], "agent", code="fixed", notes="fixed", cause="config")
    scopes = [
        Scope(since=SINCE, until=UNTIL, tz="Europe/Berlin"),
        Scope(since=SINCE, until=UNTIL, tz="Europe/Berlin", security=False),
        # edges that are not local midnights, and a period up to now (today computed live)
        Scope(since=datetime(2026, 3, 27, 5, 17, tzinfo=UTC), until=NOW, tz="Europe/Berlin"),
        Scope(since=datetime(2026, 3, 20, tzinfo=UTC), until=datetime(2026, 4, 30, tzinfo=UTC), tz="Europe/Berlin"),
    ]
    for scope in scopes:
        rolled = report(scope, now=NOW)
        live = report(scope, now=NOW, rollup=False)
        assert "rollup" in rolled["definitions"]["percentiles"]
        assert _without_percentiles(rolled) == _without_percentiles(live)
        for name in ("mtta", "mttr"):
            for which in ("median", "p90"):
                got, want = rolled[name][which], live[name][which]
                assert (got is None and want is None) or _close(got, want), (scope, name, which, got, want)
    assert report_rollup.refresh(NOW) == 0  # caught up: nothing left marked


def test_empty_period_and_csv(store):
    result = report(Scope(since=SINCE, until=UNTIL), now=NOW)
    assert result["totals"]["opened"] == 0
    assert result["mtta"] == {"count": 0, "mean": None, "median": None, "p90": None}
    assert result["sla"]["response_rate"] is None
    assert result["major_updates"]["compliance"] is None
    text = to_csv(csv_tables(result)["daily"])
    assert text.splitlines()[0] == "day,opened,resolved,mtta_mean,mttr_mean"
    assert len(text.splitlines()) == 6


def test_parse_moment_and_bad_scopes():
    now = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    assert parse_moment("30d", now) == now - timedelta(days=30)
    assert parse_moment("12h", now) == now - timedelta(hours=12)
    assert parse_moment("2026-03-29", now, "Europe/Berlin") == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert parse_moment("2026-07-01T08:00", now, "Europe/Berlin") == datetime(2026, 7, 1, 6, 0, tzinfo=UTC)
    for bad in ("yesterday", "30x", "2026-13-01"):
        with pytest.raises(ConfigError, match="is not a time"):
            parse_moment(bad, now)
    with pytest.raises(ConfigError, match="empty"):
        Scope(since=now, until=now)
    with pytest.raises(ConfigError, match="time zone"):
        Scope(since=SINCE, until=UNTIL, tz="Mars/Olympus")
    with pytest.raises(ConfigError, match="longer"):
        Scope(since=now - timedelta(days=2000), until=now)


def test_cli_report_in_every_format(store, capsys, tmp_path):
    build(FixedClock())
    path = store.write_config()
    period = ["--since", "2026-03-27", "--until", "2026-03-31", "--tz", "Europe/Berlin"]

    def run(*args):
        code = main(["-c", str(path), "report", *period, *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("--format", "json")
    assert code == 0
    document = json.loads(out)
    assert document["totals"]["opened"] == 8 and document["mttr"]["median"] == 14400
    assert document["period"] == {"since": "2026-03-26T23:00:00+00:00", "until": "2026-03-30T22:00:00+00:00",
                                  "tz": "Europe/Berlin"}  # fmt: skip

    code, out, _ = run("--group", "db", "--service", "db")
    assert code == 0
    assert "filters: group=db, service=db" in out
    lines = out.splitlines()
    totals = lines[lines.index("TOTALS") + 2].split()
    assert totals[:3] == ["2", "1", "1"]  # J and L opened; L resolved and closed

    code, out, _ = run("--format", "csv", "--table", "daily")
    assert code == 0
    assert out.splitlines()[:2] == ["day,opened,resolved,mtta_mean,mttr_mean", "2026-03-27,3,2,1800.0,16200.0"]
    code, out, _ = run("--format", "csv")
    assert out.startswith("# totals\nopened,resolved,closed,") and "\n# by_service\n" in out

    target = tmp_path / "report.html"
    assert run("--format", "html", "-o", str(target))[0] == 0
    assert "new Chart(" in target.read_text() and "2026-03-28" in target.read_text()

    code, _, err = run("--format", "csv", "--table", "nope")
    assert code == 1 and "no table 'nope'" in err
    code = main(["-c", str(path), "report", "--since", "last week"])
    assert code == 1 and "is not a time" in capsys.readouterr().err


def test_cli_rebuild_and_the_timer_keep_the_rollup(store, capsys):
    """``inlet report --rebuild`` builds the rollup in inlet.timezone; the timer worker catches up with changes."""
    clock = FixedClock()
    build(clock)
    path = store.write_config(inlet={"timezone": "Europe/Berlin"})
    assert main(["-c", str(path), "report", "--rebuild"]) == 0
    assert "days of Europe/Berlin" in capsys.readouterr().out
    assert report_rollup.state()[0] == "Europe/Berlin"

    from gateway.config.loader import load_config
    from store.models import Incident

    config = load_config(path)
    timer = report_rollup.RollupTimer(lambda: config, clock)
    ref = Incident.get(Incident.title == "C").ref
    _at(clock, "03-31T09:00")
    Lifecycle(clock=clock).reopen(ref, "agent", "back again")  # C was resolved on 03-28: that day changes
    assert report_rollup._rows("SELECT COUNT(*) FROM report_dirty", [])[0][0] > 0
    assert timer.tick() > 0  # recomputed the days the reopening touched
    assert timer.tick() == 0  # not again within the minute
    assert report_rollup._rows("SELECT COUNT(*) FROM report_dirty", [])[0][0] == 0
    scope = Scope(since=SINCE, until=UNTIL, tz="Europe/Berlin")
    state_before = report_rollup.state()
    assert _without_percentiles(report(scope, now=NOW)) == _without_percentiles(report(scope, now=NOW, rollup=False))
    assert report(scope, now=NOW)["rates"]["reopened"] == 0  # C's resolution left the period with its reopening
    assert report_rollup.state() == state_before

    other = report_rollup.RollupTimer(lambda: load_config(store.write_config(inlet={"timezone": "UTC"})), clock)
    assert other.tick() == 0  # another time zone: no rebuild on the timer (reports compute live)
    assert "rollup" not in report(Scope(since=SINCE, until=UNTIL, tz="UTC"), now=NOW)["definitions"]["percentiles"]
