"""Time, injected: SLA, escalation and auto-close take a clock so tests move it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    """The real clock: aware UTC datetimes."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock(Clock):
    """A clock that stands still until a test moves it."""

    def __init__(self, start: datetime | None = None):
        self._now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | None = None, **kwargs) -> datetime:
        self._now += delta or timedelta(**kwargs)
        return self._now


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with milliseconds and a 'Z', or None: the one format of times in JSON output.

    Milliseconds, so latencies (acknowledged -> incident opened -> notified) can be measured from outside.
    """
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
