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
    and ``report(None)`` says none is, so the supervisor can stop a run that overruns its time limit.
    While ``busy()`` (intake has work in hand) the units are ``BUSY_BATCH`` Inbounds, else ``TRANSACTION_BATCH``.
    """
    spent = [0.0]  # the last Inbound's time, across ticks: at a burst's start each tick finds only a row or two

    def tick() -> int:
        ids = pending_ids(batch)
        start = 0
        while start < len(ids):
            if before_each is not None:
                before_each(spent[0])
            size = BUSY_BATCH if busy is not None and busy() else TRANSACTION_BATCH
            chunk, start = ids[start : start + size], start + size
            started = time.monotonic()
            pipeline.run_batch(chunk, report)  # takes this process's SQLite write turn for its writes only
            spent[0] = (time.monotonic() - started) / len(chunk)
        return len(ids)

    return tick
