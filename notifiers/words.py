"""Plain words for people: the one set of Jinja filters that pages and mail templates use.

No Python value reaches a person: a duration reads "15 min" (not ``0:15:00``),
a flag "yes"/"no" (not ``True``), nothing at all "—" (not ``None``), a status
"in progress" (not ``in_progress``). :func:`install` puts the filters on a Jinja
environment (web/render.py for pages, notifiers/render.py for mail) and makes
its ``finalize`` turn any stray value into words, so a template that forgets a
filter still shows no repr.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

NOTHING = "—"
# Event.old / Event.new keep str(value): these are how Python wrote the values people must not see.
_STORED = {"True": "yes", "False": "no", "None": NOTHING, "": NOTHING}


def duration(value: timedelta | int | float | None) -> str:
    """A span of time in words: 45 s, 15 min, 1 h, 1 h 30 min, 2 d, 2 d 3 h (a timedelta or seconds)."""
    if value is None or value == "":
        return NOTHING
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else float(value))
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 60:
        text = f"{seconds} s"
    elif seconds < 3600:
        text = f"{seconds // 60} min"
    elif seconds < 86400:
        hours, minutes = divmod(seconds // 60, 60)
        text = f"{hours} h" + (f" {minutes} min" if minutes else "")
    else:
        days, hours = divmod(seconds // 3600, 24)
        text = f"{days} d" + (f" {hours} h" if hours else "")
    return sign + text


def label(value) -> str:
    """A status, kind or other name as a word: 'in_progress' -> 'in progress'; nothing -> '—'."""
    if value is None or value == "":
        return NOTHING
    return str(value).replace("_", " ")


def yesno(value) -> str:
    """A flag as 'yes' or 'no' (stored text 'True'/'False' too)."""
    if isinstance(value, str):
        return _STORED.get(value, value)
    return "yes" if value else "no"


def moment(value: datetime | date | str | None) -> str:
    """A point in time for text: '2026-12-03 15:04 UTC' (a date: '2026-12-03'; ISO text: its local time)."""
    if value is None or value == "":
        return NOTHING
    if isinstance(value, str):  # ISO text keeps its own offset (a report's period is in its time zone)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return parsed.strftime("%Y-%m-%d %H:%M") if "T" in value else parsed.date().isoformat()
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return value.isoformat()


def plain(value) -> str:
    """Any value as words: the filter for a value whose type a template cannot know."""
    if value is None:
        return NOTHING
    if isinstance(value, bool):
        return yesno(value)
    if isinstance(value, timedelta):
        return duration(value)
    if isinstance(value, datetime | date):
        return moment(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict):
        return ", ".join(f"{k}={plain(v)}" for k, v in value.items()) or NOTHING
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(plain(v) for v in value) or NOTHING
    return str(value) if value != "" else NOTHING


def change(value: str | None, field: str = "") -> str:
    """One side of a recorded change (Event.old/new, kept as text) in words.

    'False' -> 'no', 'None' -> '—', a status 'in_progress' -> 'in progress', a duration
    stored as seconds or '0:15:00' -> '15 min'.
    """
    if value is None or value in _STORED:
        return _STORED.get(value or "", NOTHING)
    if field in ("status", "escalation", "kind", "priority_reason", "fix_type"):
        return label(value)
    if _looks_like_timedelta(value):
        days = int(value.split(" ")[0]) if ", " in value else 0
        hours, minutes, seconds = (float(part) for part in value.split(", ")[-1].split(":"))
        return duration(timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds))
    return value


_TIMEDELTA = re.compile(r"(-?\d+ days?, )?\d+:\d\d:\d\d(\.\d+)?")


def _looks_like_timedelta(value: str) -> bool:
    """str(timedelta): '0:15:00', '1 day, 2:00:00'."""
    return _TIMEDELTA.fullmatch(value) is not None


def finalize_with(inner: Callable) -> Callable:
    """A Jinja ``finalize`` that first turns stray values into words, then applies ``inner``.

    ``None`` prints as nothing (a form field's value stays empty), flags as yes/no, durations and
    times as words; strings and Markup go to ``inner`` untouched.
    """

    def finalize(value):
        if value is None:
            return ""
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            value = plain(value)
        return inner(value)

    return finalize


FILTERS = {
    "duration": duration,
    "label": label,
    "yesno": yesno,
    "moment": moment,
    "plain": plain,
    "change": change,
}


def install(env, inner: Callable) -> None:
    """Give a Jinja environment the filters and a ``finalize`` (``inner``: the environment's own)."""
    env.filters.update(FILTERS)
    env.finalize = finalize_with(inner)
