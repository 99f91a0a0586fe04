"""Repeated warnings and errors are logged once per window, with a count, never once per event.

A dead database, a full descriptor table or a channel that refuses every message turns one error
path into thousands of identical lines (each with a traceback) that fill the disk and hide everything
else. :class:`RepeatFilter` sits on the log handlers that ``inlet`` installs, so it holds for Inlet's
own loggers and for the libraries' (waitress's accept errors, asyncio's, Apprise's) alike: the first
record of a kind passes; the same kind within ``[inlet] log_repeat_window`` is counted, not written;
the first one after the window passes with the count of those held back (and without a traceback: the
first one had it). So a kind writes at most one line per window, whatever the rate of events. A kind
is the logger, the level, the message template (digits of an already formatted message count as one)
and the exception type. INFO and DEBUG pass untouched.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

_DIGITS = re.compile(r"\d+")
MAX_KINDS = 1000  # distinct kinds remembered; beyond it the oldest windows are forgotten


class RepeatFilter(logging.Filter):
    """Let one record of each kind through per ``window`` seconds; count the others."""

    def __init__(self, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.window = window
        self._clock = clock
        self._kinds: dict[tuple, list] = {}  # kind -> [window start, records held back]
        # One lock: a record passes here once, after the logging call decided to emit it (cheap, rare).
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or self.window <= 0:
            return True
        kind = _kind(record)
        now = self._clock()
        with self._lock:
            seen = self._kinds.get(kind)
            if seen is not None and now - seen[0] < self.window:
                seen[1] += 1
                return False
            self._kinds[kind] = [now, 0]
            if len(self._kinds) > MAX_KINDS:
                self._forget(now)
        if seen is not None and seen[1]:
            _summarise(record, seen[1], self.window)
        return True

    def _forget(self, now: float) -> None:
        expired = [k for k, (start, held) in self._kinds.items() if now - start >= self.window and not held]
        for kind in expired or sorted(self._kinds, key=lambda k: self._kinds[k][0])[: MAX_KINDS // 2]:
            del self._kinds[kind]


def _kind(record: logging.LogRecord) -> tuple:
    template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
    if not record.args:  # formatted by the caller (f-string): ids and counts differ, the error does not
        template = _DIGITS.sub("#", template[:500])
    error = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
    return record.name, record.levelno, template, error


def _summarise(record: logging.LogRecord, held: int, window: float) -> None:
    """The record that opens a new window after repeats: its text, the repeats counted, no traceback."""
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        text += f" ({type(error).__name__}: {error})"
    text += f" [{held} more like this not logged since the last one shown; one line per {window:g}s]"
    record.msg, record.args = text, None
    record.exc_info, record.exc_text = None, None


def limit_repeats(window: float, logger: logging.Logger | None = None) -> None:
    """Put a RepeatFilter with ``window`` seconds on every handler of ``logger`` (default: root); idempotent."""
    for handler in (logger or logging.getLogger()).handlers:
        present = next((f for f in handler.filters if isinstance(f, RepeatFilter)), None)
        if present is None:
            handler.addFilter(RepeatFilter(window))
        else:
            present.window = window


def unlimit_repeats(logger: logging.Logger | None = None) -> None:
    """Take the RepeatFilters off every handler of ``logger`` (default: root) again."""
    for handler in (logger or logging.getLogger()).handlers:
        for present in [f for f in handler.filters if isinstance(f, RepeatFilter)]:
            handler.removeFilter(present)
