"""The tick of the pipeline worker of ``inlet serve``: pending Inbound rows through the pipeline, in units.

The thread that calls it is a :class:`gateway.core.threads.Worker` (built by ``store.wakeup.worker``): woken
at once when the intake writer of this process committed rows, or a commit in any process announced work
on the ``inbound`` channel (store/wakeup.py), else every poll interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.pipeline.driver import pending_ids

TRANSACTION_BATCH = 50  # Inbounds taken together (counted in one commit, applied in turns of TURN_BUDGET)
BUSY_BATCH = (
    5  # while intake has work in hand: short units between the waits for it (bench/e2e_latency.py --one-session)
)
REPORT_EVERY = 0.1  # seconds: within a unit the supervisor hears of the Inbound in hand at most this often


class _Reporter:
    """``report`` as the supervisor needs it, not once per Inbound: a line is a write to its pipe and wakes
    its process (three lines per Inbound were a quarter of the worker's samples under a webhook storm,
    py-spy, and cost the supervisor's process CPU besides). The Inbound in hand is said when a unit begins
    and then at most every ``REPORT_EVERY``, so the supervisor's time limit runs at most that early; idle
    is said before each wait (a wait may be long) and when the tick ends."""

    def __init__(self, report: Callable[[int | None], None]):
        self.report, self.said = report, 0.0  # when the Inbound in hand was last said; 0.0: idle was said

    def __call__(self, inbound_id: int | None) -> None:
        if inbound_id is None:
            return  # between Inbounds of a unit: the unit goes on, idle is said by idle()
        now = time.monotonic()
        if now - self.said >= REPORT_EVERY:
            self.report(inbound_id)
            self.said = now

    def idle(self) -> None:
        if self.said:
            self.report(None)
            self.said = 0.0


def pipeline_tick(
    pipeline,
    batch: int = 200,
    before_each: Callable[[float], None] | None = None,
    report: Callable[[int | None], None] | None = None,
    busy: Callable[[], bool] | None = None,
) -> Callable[[], int]:
    """A tick that runs the pipeline over pending Inbound rows, oldest first, in transactions of
    up to ``TRANSACTION_BATCH`` (:meth:`~gateway.pipeline.driver.Pipeline.run_batch`).

    ``before_each(seconds the previous Inbound took)`` is called before each transaction (e.g. to
    yield to intake), the first of a tick included. ``report(inbound id)`` names the Inbound in hand
    and ``report(None)`` says none is, so the supervisor can stop a run that overruns its time limit (said
    when a unit begins and at most every ``REPORT_EVERY`` within it, see :class:`_Reporter`).
    While ``busy()`` (intake has work in hand) the units are ``BUSY_BATCH`` Inbounds, else ``TRANSACTION_BATCH``.
    A tick that finds ``batch`` Inbounds pending (a full page: the worker is behind) neither waits nor
    shortens its units.
    """
    spent = [0.0]  # the last Inbound's time, across ticks: at a burst's start each tick finds only a row or two
    reporter = _Reporter(report) if report is not None else None

    def tick() -> int:
        ids = pending_ids(batch)
        start = 0
        # A full page pending: intake outpaces the worker, and waiting for it would only grow the backlog
        # (under a webhook storm a wait before every unit of 5 left the worker a fifth of its pace while
        # intake lasted). Then no waits and full units; intake still gets the write turn at the next
        # Inbound of a unit (store.db.turn_wanted).
        behind = len(ids) >= batch
        try:
            while start < len(ids):
                if before_each is not None and not behind:
                    if reporter is not None:
                        reporter.idle()
                    before_each(spent[0])
                size = BUSY_BATCH if not behind and busy is not None and busy() else TRANSACTION_BATCH
                chunk, start = ids[start : start + size], start + size
                started = time.monotonic()
                pipeline.run_batch(chunk, reporter)  # takes this process's SQLite write turn for its writes only
                spent[0] = (time.monotonic() - started) / len(chunk)
        finally:
            if reporter is not None:
                reporter.idle()
        return len(ids)

    return tick
