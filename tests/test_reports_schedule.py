"""Scheduled reports: their periods, the message through the outbox to real sinks, once per period across processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import peewee
import pytest

from gateway.config.loader import config_from_dict
from gateway.core.clock import FixedClock
from gateway.core.errors import ConfigError
from gateway.incidents.lifecycle import Lifecycle
from gateway.reports.mailing import ReportScheduler
from gateway.reports.schedule import ScheduledReport, last_period
from notifiers.delivery import Delivery
from store.db import db
from store.migrations import LATEST, REPORT_INDEXES, current_version, upgrade
from store.models import Notification, ReportRun, SchemaVersion
from tests.conftest import ROOT, base_config_dict, free_port, wait_for
from tests.sinks import HttpSink, SmtpSink


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    "every, at, now, expected",
    [
        # daily in Berlin (UTC+1 in winter): yesterday; before 08:00 local it is still the day before
        ("daily", "08:00", utc(2026, 3, 10, 7, 30), (utc(2026, 3, 8, 23), utc(2026, 3, 9, 23), utc(2026, 3, 10, 7))),
        ("daily", "08:00", utc(2026, 3, 10, 6, 30), (utc(2026, 3, 7, 23), utc(2026, 3, 8, 23), utc(2026, 3, 9, 7))),
        # the day clocks go forward (2026-03-29) is 23 hours long
        (
            "daily",
            "00:30",
            utc(2026, 3, 30, 12),
            (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22), utc(2026, 3, 29, 22, 30)),
        ),
        # weekly: Monday to Monday; on Monday before 'at' the week before last
        ("weekly", "09:00", utc(2026, 3, 18, 12), (utc(2026, 3, 8, 23), utc(2026, 3, 15, 23), utc(2026, 3, 16, 8))),
        ("weekly", "09:00", utc(2026, 3, 16, 7), (utc(2026, 3, 1, 23), utc(2026, 3, 8, 23), utc(2026, 3, 9, 8))),
        # monthly: the calendar month before (February: 28 days), summer time in April
        ("monthly", "08:00", utc(2026, 3, 2, 12), (utc(2026, 1, 31, 23), utc(2026, 2, 28, 23), utc(2026, 3, 1, 7))),
        ("monthly", "08:00", utc(2026, 5, 1, 5), (utc(2026, 2, 28, 23), utc(2026, 3, 31, 22), utc(2026, 4, 1, 6))),
    ],
)
def test_last_period(every, at, now, expected):
    assert last_period(ScheduledReport(name="r", every=every, at=at), now, "Europe/Berlin") == expected


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "r", "at": "8 o'clock", "emails": ["a@example.org"]}, "must be a time of day"),
        ({"name": "r", "timezone": "Mars/Base", "emails": ["a@example.org"]}, "unknown time zone"),
        ({"name": "r"}, "needs a target"),
        ({"name": "r", "emails": ["nobody"]}, "not an email address"),
        ({"name": "r", "group": "nope", "emails": ["a@example.org"]}, "no [[group]] named 'nope'"),
        ({"name": "r", "every": "hourly", "emails": ["a@example.org"]}, "hourly"),
    ],
)
def test_bad_entries_are_refused(entry, message):
    with pytest.raises(ConfigError, match="report") as error:
        config_from_dict(base_config_dict("sqlite:///x.db", report=[entry]))
    assert message in str(error.value)


def test_report_names_are_unique():
    with pytest.raises(ConfigError, match="duplicate name"):
        config_from_dict(base_config_dict("sqlite:///x.db", report=[{"name": "r", "emails": ["a@example.org"]}] * 2))


def test_sent_once_per_period_with_the_figures_and_the_link(store, tmp_path):
    http, smtp = HttpSink(free_port()).start(), SmtpSink(free_port()).start()
    try:
        config = store.config(
            inlet={"data_dir": str(tmp_path / "data"), "base_url": "https://inlet.example.org", "name": "Desk"},
            notifications={"from_address": "desk@example.org", "smtp_port": smtp.port, "apprise_throttle": "0s"},
            report=[
                {"name": "network daily", "every": "daily", "at": "07:00", "group": "network",
                 "notify": [f"json://{http.url}"], "emails": ["Owner@Example.org"]},
            ],
        )  # fmt: skip
        clock = FixedClock(utc(2026, 3, 9, 10))
        life = Lifecycle(clock=clock)
        ref = life.create(title="Switch down", actor="t", group="network", impact="high", urgency="high").ref
        clock.advance(minutes=10)
        life.acknowledge(ref, "t")
        clock.advance(hours=1)
        life.resolve(ref, "t", code="fixed", notes="replaced", cause="hardware")
        life.create(title="Printer", actor="t", group="service-desk")  # out of the report's scope

        clock._now = utc(2026, 3, 10, 6, 59)  # the 9th has ended, but its report goes out at 07:00
        scheduler = ReportScheduler(config, clock)
        assert scheduler.tick() == 1  # ... so this is the 8th's (empty) report
        clock._now = utc(2026, 3, 10, 7, 0)
        assert scheduler.tick() == 1
        assert scheduler.tick() == 0
        assert ReportScheduler(config, clock).tick() == 0  # another process: the database knows it was sent
        runs = [(r.name, r.period_start) for r in ReportRun.select().order_by(ReportRun.period_start)]
        assert runs == [("network daily", utc(2026, 3, 8)), ("network daily", utc(2026, 3, 9))]

        row = Notification.select().order_by(Notification.id.desc()).get()
        assert (row.audience, row.template) == ("report", "report")
        assert row.targets == [f"json://{http.url}", "email:owner@example.org"]
        Delivery(config, clock=clock).tick()
        wait_for(lambda: len(http.json()) == 2 and len(smtp.messages) == 2, message="both reports delivered")
        latest = [m for m in http.json() if "2026-03-09 to 2026-03-09" in m["title"]]
        assert latest[0]["title"] == 'Desk report "network daily": 2026-03-09 to 2026-03-09'
        body = latest[0]["message"]
        assert "Opened / resolved / closed: 1 / 1 / 0" in body
        assert "MTTA median / p90: 0.2 h / 0.2 h" in body and "MTTR median / p90: 1.2 h / 1.2 h" in body
        assert "Top causes: hardware (1)" in body
        assert (
            "https://inlet.example.org/reports?since=2026-03-09T00%3A00%3A00%2B00%3A00"
            "&until=2026-03-10T00%3A00%3A00%2B00%3A00&tz=UTC&group=network" in body
        )
        _, recipients, mail = smtp.messages[-1]
        assert recipients == ["owner@example.org"] and "network daily" in mail["Subject"]
    finally:
        http.stop()
        smtp.stop()


SENDER = textwrap.dedent(
    """
    import sys
    from datetime import datetime
    from gateway.core.clock import FixedClock
    from gateway.config.loader import load_config
    from gateway.reports.mailing import ReportScheduler
    from store.db import open_database

    config = load_config(sys.argv[1])
    open_database(config)
    scheduler = ReportScheduler(config, FixedClock(datetime.fromisoformat(sys.argv[2])))
    print("ready", flush=True)
    sys.stdin.readline()  # both processes start their rounds together
    sent = 0
    for _ in range(20):
        scheduler._sent.clear()  # as if each round were a fresh process
        sent += scheduler.tick()
    print(sent)
    """
)


def test_two_processes_send_each_period_once(pg_store):
    path = pg_store.write_config(
        report=[{"name": f"r{i}", "every": "daily", "at": "00:00", "emails": ["owner@example.org"]} for i in range(5)]
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SENDER, str(path), "2026-03-10T12:00:00+00:00"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    assert [p.stdout.readline().strip() for p in processes] == ["ready", "ready"]
    for p in processes:
        p.stdin.write("go\n")
        p.stdin.flush()
    sent = [int(p.communicate(timeout=60)[0].strip()) for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert sum(sent) == 5, sent
    assert ReportRun.select().count() == 5
    assert Notification.select().where(Notification.template == "report").count() == 5


def test_migrations_5_and_6_add_report_runs_and_indexes_to_an_older_database(store):
    with db.atomic():  # back to what version 4 had
        db.execute_sql('DROP TABLE "report_run"')
        SchemaVersion.delete().where(SchemaVersion.version >= 5).execute()
        for column in REPORT_INDEXES:
            db.execute_sql(f'DROP INDEX "incident_{column}"')
    assert current_version() == 4
    assert [v for v, _ in upgrade()][:2] == [5, 6] and current_version() == LATEST
    indexed = {tuple(index.columns) for index in db.get_indexes("incident")}
    assert {(column,) for column in REPORT_INDEXES} <= indexed
    ReportRun.create(name="r", period_start=utc(2026, 1, 1), period_end=utc(2026, 1, 2), claimed_by="x",
                     created_at=utc(2026, 1, 2))  # fmt: skip
    with pytest.raises(peewee.IntegrityError), db.atomic():
        ReportRun.create(name="r", period_start=utc(2026, 1, 1), period_end=utc(2026, 1, 2), claimed_by="y",
                         created_at=utc(2026, 1, 2))  # fmt: skip
