"""Priority matrix, SLA targets and business-hours clocks. Times are injected; nothing sleeps."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.loader import config_from_dict
from gateway.core.errors import ConfigError
from gateway.incidents.sla import (
    WEEKDAYS,
    Calendar,
    SlaSection,
    business_time,
    due,
    elapsed,
    fraction_point,
    priority,
    targets_for,
)

BERLIN = ZoneInfo("Europe/Berlin")
H = timedelta(hours=1)
OFFICE = Calendar(name="office", timezone="Europe/Berlin", **{d: "09:00-17:00" for d in WEEKDAYS[:5]})


def berlin(*args) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def load(**data):
    return config_from_dict({"group": [{"name": "service-desk"}], **data})


# ---------------------------------------------------------------- priority matrix


@pytest.mark.parametrize(
    ("impact", "urgency", "expected"),
    [
        ("high", "high", "P1"),
        ("high", "medium", "P2"),
        ("medium", "high", "P2"),
        ("high", "low", "P3"),
        ("medium", "medium", "P3"),
        ("low", "high", "P3"),
        ("medium", "low", "P4"),
        ("low", "medium", "P4"),
        ("low", "low", "P5"),
    ],
)
def test_itil_matrix(impact, urgency, expected):
    assert priority(impact, urgency) == expected
    assert priority(impact, urgency, SlaSection().matrix) == expected


def test_custom_matrix_overrides_given_cells_only():
    sla = load(sla={"matrix": {"low": {"low": "P4"}, "high": {"low": "P2"}}}).sla
    assert priority("low", "low", sla.matrix) == "P4"
    assert priority("high", "low", sla.matrix) == "P2"
    assert priority("medium", "medium", sla.matrix) == "P3"


def test_defaults():
    sla = SlaSection()
    assert priority(sla.default_impact, sla.default_urgency, sla.matrix) == "P3"
    assert sla.always_on == ["P1", "P2"]
    assert (sla.target("P1").respond, sla.target("P1").resolve) == (timedelta(minutes=15), 4 * H)
    assert (sla.target("P5").respond, sla.target("P5").resolve) == (timedelta(days=2), timedelta(days=5))


def test_custom_targets_merge_with_defaults():
    sla = load(sla={"targets": {"P1": {"respond": "5m", "resolve": "2h"}}}).sla
    assert sla.target("P1").resolve == 2 * H
    assert sla.target("P2").resolve == 8 * H


@pytest.mark.parametrize(
    ("sla", "message"),
    [
        ({"matrix": {"high": {"high": "P0"}}}, "[sla] → matrix → high → high: must be one of P1..P5; got 'P0'"),
        ({"matrix": {"huge": {"high": "P1"}}}, "[sla] → matrix → huge: impact must be one of high, medium, low"),
        ({"targets": {"P9": {"respond": "1h", "resolve": "2h"}}}, "[sla] → targets → P9: not a priority"),
        ({"targets": {"P1": {"respond": "soon", "resolve": "2h"}}}, "[sla] → targets → P1 → respond: bad duration"),
        ({"always_on": ["P1", "P7"]}, "[sla] → always_on[1]: must be one of P1..P5"),
        ({"default_impact": "severe"}, "[sla] → default_impact: must be one of high, medium, low"),
        ({"warning_fraction": 1.5}, "[sla] → warning_fraction: must be between 0 and 1"),
    ],
)
def test_sla_config_errors(sla, message):
    with pytest.raises(ConfigError, match=None) as info:
        load(sla=sla)
    assert message in str(info.value)


# ---------------------------------------------------------------- calendars in the configuration


@pytest.mark.parametrize(
    ("calendar", "message"),
    [
        ({"name": "c"}, "[[calendar]] 'c': no working hours"),
        ({"name": "c", "monday": "9-17"}, "[[calendar]] 'c' → monday: bad working hours '9-17'"),
        ({"name": "c", "monday": "17:00-09:00"}, "the end must be after the start"),
        ({"name": "c", "monday": "09:00-13:00, 12:00-17:00"}, "must be in order and not overlap"),
        ({"name": "c", "monday": "09:00-25:00"}, "not a time of day"),
        ({"name": "c", "monday": "09:00-17:00", "timezone": "Mars/Base"}, "timezone: unknown time zone 'Mars/Base'"),
        ({"name": "c", "monday": "09:00-17:00", "holidays": ["2025-13-01"]}, "holidays[0]: not an ISO date"),
    ],
)
def test_calendar_config_errors(calendar, message):
    with pytest.raises(ConfigError) as info:
        load(calendar=[calendar])
    assert message in str(info.value)


def test_group_refers_to_unknown_calendar():
    with pytest.raises(ConfigError) as info:
        load(group=[{"name": "service-desk", "calendar": "ofice"}], calendar=[{"name": "office", "monday": "9:00"}])
    assert "monday" in str(info.value)  # the calendar itself is checked first
    with pytest.raises(ConfigError) as info:
        config_from_dict({"group": [{"name": "service-desk", "calendar": "ofice"}]})
    assert str(info.value) == "<config>: [[group]] 'service-desk' → calendar: no [[calendar]] named 'ofice'"


def test_calendar_from_config():
    config = load(
        group=[{"name": "service-desk", "calendar": "office"}],
        calendar=[{"name": "office", "timezone": "Europe/Berlin", "monday": "08:00-12:00, 13:00-17:00"}],
    )
    cal = config.calendar_named(config.group_named("service-desk").calendar)
    # Monday 11:00 + 2h: 1h before lunch, 1h after -> 14:00.
    assert due(berlin(2025, 1, 6, 11), 2 * H, cal) == berlin(2025, 1, 6, 14)


# ---------------------------------------------------------------- due and elapsed


def test_due_24x7():
    start = berlin(2025, 1, 3, 16)
    assert due(start, 4 * H, None) == berlin(2025, 1, 3, 20)


def test_due_24x7_across_dst_is_real_time():
    start = berlin(2025, 3, 29, 12)  # CET; the clocks jump 02:00 -> 03:00 on Sunday
    end = due(start, 24 * H, None)
    assert end == berlin(2025, 3, 30, 13)
    assert end.astimezone(UTC) - start.astimezone(UTC) == 24 * H


def test_due_over_the_weekend():
    # Friday 16:00 + 4h: 1h on Friday, 3h from 09:00 Monday.
    assert due(berlin(2025, 1, 3, 16), 4 * H, OFFICE) == berlin(2025, 1, 6, 12)
    eight = Calendar(name="early", timezone="Europe/Berlin", **{d: "08:00-17:00" for d in WEEKDAYS[:5]})
    assert due(berlin(2025, 1, 3, 16), 4 * H, eight) == berlin(2025, 1, 6, 11)


def test_due_ending_at_closing_time_stays_that_day():
    assert due(berlin(2025, 1, 3, 16), H, OFFICE) == berlin(2025, 1, 3, 17)


def test_due_from_outside_hours_starts_at_opening():
    assert due(berlin(2025, 1, 4, 10), H, OFFICE) == berlin(2025, 1, 6, 10)  # Saturday
    assert due(berlin(2025, 1, 6, 7), H, OFFICE) == berlin(2025, 1, 6, 10)  # Monday before opening
    assert due(berlin(2025, 1, 6, 20), H, OFFICE) == berlin(2025, 1, 7, 10)  # Monday night


def test_due_skips_holidays():
    cal = dataclasses.replace(OFFICE, holidays=["2025-12-25", "2025-12-26"])
    # Wednesday 24 Dec 16:00 + 4h: 1h, then Thursday and Friday are holidays -> Monday 29th 12:00.
    assert due(berlin(2025, 12, 24, 16), 4 * H, cal) == berlin(2025, 12, 29, 12)


def test_due_in_dst_change_week_berlin():
    # Friday 28 March 2025 16:00 CET + 4h -> Monday 31 March 12:00 CEST (the clocks changed on Sunday).
    result = due(berlin(2025, 3, 28, 16), 4 * H, OFFICE)
    assert result == berlin(2025, 3, 31, 12)
    assert result.utcoffset() == 2 * H
    assert result.astimezone(UTC) == datetime(2025, 3, 31, 10, tzinfo=UTC)
    # Autumn: Friday 24 Oct 16:00 CEST + 4h -> Monday 27 Oct 12:00 CET.
    assert due(berlin(2025, 10, 24, 16), 4 * H, OFFICE).astimezone(UTC) == datetime(2025, 10, 27, 11, tzinfo=UTC)


def test_round_the_clock_calendar_counts_real_hours_on_dst_day():
    allday = Calendar(name="all", timezone="Europe/Berlin", sunday="00:00-24:00")
    # Sunday 30 March 2025 has 23 hours in Berlin.
    assert business_time(berlin(2025, 3, 30, 0), berlin(2025, 3, 31, 0), allday) == 23 * H
    assert business_time(berlin(2025, 10, 26, 0), berlin(2025, 10, 27, 0), allday) == 25 * H


def test_result_in_time_zone_of_start():
    start = datetime(2025, 1, 3, 15, tzinfo=UTC)  # 16:00 in Berlin
    result = due(start, 4 * H, OFFICE)
    assert result.tzinfo is UTC and result == datetime(2025, 1, 6, 11, tzinfo=UTC)


def test_naive_and_negative_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        due(datetime(2025, 1, 1), H, None)
    with pytest.raises(ValueError, match="negative"):
        due(berlin(2025, 1, 1), -H, None)


def test_elapsed_business_time_minus_on_hold():
    start = berlin(2025, 1, 6, 9)  # Monday
    now = berlin(2025, 1, 7, 12)  # Tuesday: 8h + 3h of business time
    assert elapsed(start, now, OFFICE) == 11 * H
    on_hold = [(berlin(2025, 1, 6, 16), berlin(2025, 1, 7, 10))]  # 1h Monday + 1h Tuesday
    assert elapsed(start, now, OFFICE, on_hold) == 9 * H
    overlapping = [*on_hold, (berlin(2025, 1, 6, 15), berlin(2025, 1, 6, 17))]  # counts once
    assert elapsed(start, now, OFFICE, overlapping) == 8 * H
    still_on_hold = [(berlin(2025, 1, 7, 11), None)]
    assert elapsed(start, now, OFFICE, still_on_hold) == 10 * H
    assert elapsed(start, now, None, on_hold) == 27 * H - 18 * H


# ---------------------------------------------------------------- targets of an incident


def test_targets_for_business_hours_priority():
    opened = berlin(2025, 1, 3, 16)  # Friday
    t = targets_for(opened, "P3", opened, sla=SlaSection(), calendar=OFFICE)
    assert t.respond_by == berlin(2025, 1, 6, 12)  # 4h business
    assert t.resolve_by == berlin(2025, 1, 8, 16)  # 24h business = three working days


def test_p1_is_always_on_even_with_a_calendar():
    opened = berlin(2025, 1, 3, 16)  # Friday
    t = targets_for(opened, "P1", opened, sla=SlaSection(), calendar=OFFICE)
    assert (t.respond_by, t.resolve_by) == (berlin(2025, 1, 3, 16, 15), berlin(2025, 1, 3, 20))
    on_calendar = targets_for(opened, "P1", opened, sla=SlaSection(always_on=[]), calendar=OFFICE)
    assert on_calendar.resolve_by == berlin(2025, 1, 6, 12)


def test_on_hold_pause_shifts_resolve_by():
    opened, sla = berlin(2025, 1, 6, 9), SlaSection()
    plain = targets_for(opened, "P2", opened, sla=sla)
    assert plain.resolve_by == berlin(2025, 1, 6, 17)
    paused = targets_for(opened, "P2", opened, sla=sla, paused=90 * timedelta(minutes=1))
    assert paused.resolve_by == berlin(2025, 1, 6, 18, 30)
    assert paused.respond_by == plain.respond_by  # the respond clock does not pause
    # On hold since 10:00 and still on hold at 13:00: the clock has stood still for 3h so far.
    holding = targets_for(opened, "P2", berlin(2025, 1, 6, 13), sla=sla, on_hold_since=berlin(2025, 1, 6, 10))
    assert holding.resolve_by == berlin(2025, 1, 6, 20)


def test_on_hold_pause_with_calendar_counts_business_time_only():
    opened = berlin(2025, 1, 6, 9)  # Monday, P3 resolves in 24h business time = Wednesday 17:00
    sla = SlaSection()
    t = targets_for(opened, "P3", berlin(2025, 1, 7, 9), sla=sla, calendar=OFFICE, on_hold_since=berlin(2025, 1, 6, 16))
    # On hold from Monday 16:00 to Tuesday 09:00 is 1h of business time.
    assert t.resolve_by == berlin(2025, 1, 9, 10)


def test_warning_at_eighty_percent():
    opened = berlin(2025, 1, 6, 9)
    assert fraction_point(opened, 10 * H, 0.8, None) == berlin(2025, 1, 6, 17)
    assert fraction_point(opened, 10 * H, 0.8, OFFICE) == berlin(2025, 1, 6, 17)  # 8h: Monday closing
    assert fraction_point(opened, 20 * H, 0.8, OFFICE) == berlin(2025, 1, 7, 17)
    t = targets_for(opened, "P2", opened, sla=SlaSection())
    assert t.warn_at == opened + timedelta(hours=6, minutes=24)


# ---------------------------------------------------------------- properties

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
HOURS = ["", "", "09:00-17:00", "08:00-12:00, 13:00-17:30", "00:00-24:00", "22:00-24:00", "01:30-03:30"]


@st.composite
def calendars(draw):
    week = {d: draw(st.sampled_from(HOURS)) for d in WEEKDAYS}
    if not any(week.values()):
        week["monday"] = "09:00-17:00"
    holidays = draw(st.lists(st.dates(datetime(2024, 1, 1).date(), datetime(2026, 12, 31).date()), max_size=20))
    return Calendar(name="c", timezone=draw(st.sampled_from(ZONES)), holidays=[d.isoformat() for d in holidays], **week)


starts = st.datetimes(datetime(2024, 1, 1), datetime(2026, 6, 30), timezones=st.just(UTC))
targets = st.timedeltas(timedelta(0), timedelta(days=12))


@settings(max_examples=300, deadline=None)
@given(starts, targets, targets, calendars())
def test_due_is_monotonic_in_target(start, t1, t2, cal):
    lo, hi = sorted((t1, t2))
    assert due(start, lo, cal) <= due(start, hi, cal)


@settings(max_examples=300, deadline=None)
@given(starts, targets, calendars())
def test_elapsed_until_due_is_the_target(start, target, cal):
    assert elapsed(start, due(start, target, cal), cal, []) == target


@settings(max_examples=100, deadline=None)
@given(starts, targets)
def test_without_calendar_due_is_plain_addition(start, target):
    assert due(start, target, None) == start + target
    assert elapsed(start, start + target, None) == target
