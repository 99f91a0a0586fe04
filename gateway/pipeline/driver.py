"""The pipeline driver: Inbound -> parse -> Signal(s) -> the step list of its kind of input.

A pipeline is one parser and one list of named steps per Inbound source, run by one
small driver (the Mailman idea); the composition root (gateway/service.py) declares
the lists (``EMAIL_STEPS``, ``ALERT_STEPS``). The parser turns the Inbound into
signals; the steps of its source's :class:`Steps` run once per signal, in order. A step
is a function ``step(ctx)`` that reads and sets fields of the :class:`Context`; it
never asks which source it serves. Only the driver catches the two control signals:
:class:`Discard` (the signal is recorded as ``ignored`` with the reason) and
:class:`Finished` (the step has fully applied the signal: the rest of the list is
skipped, its ``after`` steps still run). Every step records what it decided
(``ctx.decide``) and the driver records which steps ran, so ``inlet inbound show``
can say why an input became a new incident, an update, or was ignored.

The signal steps of one Inbound run in one transaction together with the
Inbound's status change: an input is applied exactly once or not at all.

One bad input never stops the line (DESIGN.md §2.2, §6): taking an Inbound counts
an attempt in a commit of its own, before any work, so an attempt that never
finishes (the worker crashed, was killed, or overran its time limit) counts too;
any exception while processing it rolls its transaction back and is recorded
with :func:`record_failure`; after ``[serve] max_attempts`` attempts the Inbound
is quarantined (``failed`` with the error) and the worker goes on with the next.

The worker takes Inbounds in batches (:meth:`Pipeline.run_batch`): their first attempts are
counted in one commit, and their work is applied in one transaction per ``TURN_BUDGET`` of work,
a savepoint per Inbound, instead of two commits per Inbound. An Inbound that fails inside a batch is
rolled back to its savepoint and run again alone once the others are committed; an Inbound
tried before (its attempt count above zero) always runs alone, so a batch that never finished
(a worker stopped over its time limit) costs each of its other Inbounds one attempt, never more.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import peewee

from gateway.config.integrations import Integration
from gateway.config.loader import Config
from gateway.config.mail_alert_settings import MailAlert
from gateway.core.clock import Clock
from gateway.core.errors import ParseError
from gateway.incidents.lifecycle import Lifecycle
from gateway.rules import Decision
from parsers.email import EmailOptions
from parsers.signal import Signal, plain_signal
from store.db import CLAIM_INBOUND, claimed, claimed_all, db, is_postgres, local_write_turn, turn_wanted
from store.models import FAILED, IGNORED, PENDING, PROCESSED, Event, Inbound, Incident

log = logging.getLogger("inlet.pipeline")

# How long one transaction of a batch may run before it commits and the next begins: on SQLite it holds
# the write turn all along, and every SMTP acknowledgement and webhook answer of every process needs it.
TURN_BUDGET = 0.010


class Discard(Exception):  # noqa: N818 -- a control signal, not an error
    """Stop processing this input (or signal): it is recorded as ignored, with the reason."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class Finished(Exception):  # noqa: N818 -- a control signal, not an error
    """The step has fully applied this signal (``ctx.outcome`` says how): the rest of the list is skipped."""


@dataclass
class Context:
    """What the steps share while processing one Inbound."""

    inbound: Inbound
    config: Config
    lifecycle: Lifecycle
    clock: Clock
    signals: list[Signal] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)
    # per Inbound, set by its parser:
    defaults: dict = field(default_factory=dict)  # the source's allocation defaults ([[address]], [[integration]])
    recipient: str = ""  # email: the [[address]] the message came to
    email_options: EmailOptions | None = None  # email: the parser's view of this installation
    # webhook: the [[integration]] it came to; a mail alert: its [[mail_alert]] rule (the same alert policy)
    integration: Integration | MailAlert | None = None
    kind: str = ""  # the step list to run when not its source's own (a mail alert runs the alert steps)
    # per Inbound, kept by the steps:
    created: set[int] = field(default_factory=set)  # ids of the incidents its signals opened
    reason: str = ""  # why the last ignored signal was ignored (the Inbound's reason when all were)
    # per signal, reset by the driver:
    signal: Signal | None = None
    index: int = 0
    incident: Incident | None = None
    match: str = ""  # how correlate found the incident: message-id, subject, fingerprint, group
    classification: Decision | None = None
    allocation: dict = field(default_factory=dict)  # group, procedure, impact, urgency, …
    outcome: str = ""  # created | updated | ignored
    hook_context: dict = field(default_factory=dict)  # hints for the lifecycle hooks, e.g. acknowledge_reporter
    page: bool = True  # False: no paging for this signal (a maintenance window)
    event: Event | None = None  # email: the Event a step wrote for the message (its view and attachments go on it)
    link_to: str = ""  # email: the earlier incident a new one is linked to
    participant: bool = False  # email: the sender takes part in the incident it threads onto
    step: str = ""  # the step running now: named in the error when it fails

    @property
    def source_name(self) -> str:
        """The name the signal came through: its [[integration]] or [[mail_alert]], else the Inbound's
        (a mailbox); rules' ``integration`` condition and the incident's integration read it."""
        return self.integration.name if self.integration is not None else self.inbound.integration

    def mark(self) -> tuple[int, set[int], str]:
        """What the steps may change beyond the current signal, to :meth:`rewind` to before a retry."""
        return len(self.decisions), set(self.created), self.reason

    def rewind(self, mark: tuple[int, set[int], str]) -> None:
        decided, created, reason = mark
        del self.decisions[decided:]
        self.created, self.reason, self.step = set(created), reason, ""

    def decide(self, step: str, **what) -> None:
        """Record a decision of a step (for ``inlet inbound show`` and the audit)."""
        entry = {"step": step, **what}
        if self.signal is not None:
            entry.setdefault("signal", self.index)
        self.decisions.append(entry)


Step = Callable[[Context], None]


@dataclass
class Steps:
    """The signal steps of one kind of input: ``steps`` in order, until one raises :class:`Finished`;
    then, for a signal applied (created or updated), the ``after`` steps."""

    steps: list[tuple[str, Step]]
    after: list[tuple[str, Step]] = field(default_factory=list)

    def copy(self) -> Steps:
        return Steps(list(self.steps), list(self.after))


@dataclass
class Pipeline:
    """A parser and a step list per Inbound source; ``run`` processes one pending Inbound."""

    config: Config
    lifecycle: Lifecycle
    parsers: dict[str, Callable[[Context], list[Signal]]]
    steps: dict[str, Steps]
    clock: Clock = field(default_factory=Clock)

    def run(self, inbound_id: int) -> str | None:
        """Process one Inbound if it is still pending; return its new status (None if taken elsewhere).

        Never raises for a fault of this input: an exception rolls its work back and is recorded
        (:meth:`record_failure`; the Inbound stays ``pending`` for another attempt, or is quarantined
        as ``failed``). Only an error recording that (the database is gone) reaches the caller.
        """
        # Claimed for the whole run (PostgreSQL): another process skips it rather than count a second
        # attempt and parse it again while this one works on it.
        with claimed(CLAIM_INBOUND, inbound_id) as mine:
            return self._run(inbound_id) if mine else None

    def _run(self, inbound_id: int) -> str | None:
        inbound = Inbound.get_or_none(Inbound.id == inbound_id)
        if inbound is None or inbound.status != PENDING:
            return None
        if not self._count_attempt(inbound):
            return FAILED if inbound.status == FAILED else None
        return self._run_counted(inbound)

    def _run_counted(self, inbound: Inbound) -> str | None:
        """Process an Inbound whose attempt is counted, in a transaction of its own; as :meth:`run`."""
        inbound_id = inbound.id
        ctx = Context(inbound, self.config, self.lifecycle, self.clock)
        try:
            return self._process(ctx)
        except Exception as exc:  # the transaction is rolled back: nothing of this input is applied
            where = f"step {ctx.step!r} of signal {ctx.index}: " if ctx.step else ""
            log.exception("inbound %s: %sprocessing failed (attempt %s)", inbound_id, where, inbound.attempts)
            ctx.decide("pipeline", result="failed", error=f"{where}{exc!r}"[:2000])
            return self.record_failure(inbound_id, f"{where}{type(exc).__name__}: {exc}", ctx.decisions)

    def run_batch(self, inbound_ids: list[int], report: Callable[[int | None], None] | None = None) -> dict:
        """Process these Inbounds (those still pending), several per transaction; {id: new status or None}.

        First attempts go together: counted in one commit, parsed outside any write turn, applied in
        transactions of at most ``TURN_BUDGET`` of work with a savepoint per Inbound (one that fails is
        rolled back alone and run again by itself after the others are committed). Inbounds tried
        before run alone (:meth:`run`).
        ``report(id)`` names the Inbound in hand, ``report(None)`` says none is (for the supervisor).
        Never raises for a fault of an input, as :meth:`run`.
        """
        results: dict[int, str | None] = {}
        # Read whole before any write: on SQLite a statement still being read keeps its snapshot, and a write
        # of the same connection after another's commit fails at once ("database is locked", no busy wait).
        rows = list(
            Inbound.select().where(Inbound.id.in_(inbound_ids) & (Inbound.status == PENDING)).order_by(Inbound.id)
        )
        fresh: list[Inbound] = []
        for row in rows:  # in order: a later input may depend on an earlier one (threading, throttling)
            if not row.attempts:
                fresh.append(row)
                continue
            results.update(self._run_together(fresh, report))
            fresh = []
            results[row.id] = self._attempt(row, report, count=True)
        results.update(self._run_together(fresh, report))
        return results

    def _run_together(self, rows: list[Inbound], report) -> dict:
        """First attempts of several Inbounds: claimed (as :meth:`run` claims one) for the whole batch, so
        another process does not take one of them as a retry while this one works on it; counted in one
        commit, applied in transactions of ``TURN_BUDGET``."""
        with claimed_all(CLAIM_INBOUND, [row.id for row in rows]) as mine:
            return self._run_claimed([row for row in rows if row.id in mine], report)

    def _run_claimed(self, rows: list[Inbound], report) -> dict:
        results: dict[int, str | None] = {}
        taken = self._count_first_attempts(rows)
        alone: list[Inbound] = []
        if taken:
            contexts = []
            for inbound in taken:
                if report is not None:
                    report(inbound.id)
                ctx = Context(inbound, self.config, self.lifecycle, self.clock)
                contexts.append((ctx, self._parse(ctx)))
            try:
                while contexts:  # one transaction per TURN_BUDGET of work: intake never waits for long
                    done, contexts = self._apply_batch(contexts, alone, report)
                    results.update(done)
            except Exception as exc:  # this transaction is rolled back: each of its Inbounds runs again, alone
                log.warning("a batch of %s inbounds was rolled back (%r); running each alone", len(contexts), exc)
                alone.extend(ctx.inbound for ctx, _ in contexts)
            finally:
                if report is not None:
                    report(None)
        for inbound in alone:  # their attempt is counted already: this is the same attempt, alone
            results[inbound.id] = self._attempt(inbound, report)
        return results

    def _attempt(self, inbound: Inbound, report, *, count: bool = False) -> str | None:
        if report is not None:
            report(inbound.id)
        try:
            return self.run(inbound.id) if count else self._run_counted(inbound)
        finally:
            if report is not None:
                report(None)

    def _count_first_attempts(self, rows: list[Inbound]) -> list[Inbound]:
        """Count the first attempt of these never-tried Inbounds in one commit; those taken."""
        if not rows:
            return []
        ids = [row.id for row in rows]
        with local_write_turn(), db.atomic():
            query = Inbound.select(Inbound.id).where(
                Inbound.id.in_(ids) & (Inbound.status == PENDING) & (Inbound.attempts == 0)
            )
            if is_postgres():  # another worker process counting them now: leave them to it
                query = query.for_update(skip_locked=True)
            claimed = {row.id for row in query}
            if claimed:
                Inbound.update(attempts=Inbound.attempts + 1).where(Inbound.id.in_(list(claimed))).execute()
        taken = [row for row in rows if row.id in claimed]
        for row in taken:
            row.attempts += 1
        return taken

    def _apply_batch(self, contexts: list, alone: list, report) -> tuple[dict, list]:
        """Apply parsed Inbounds in one transaction, a savepoint each; those that fail go to ``alone``.
        Returns the results and the contexts left for the next transaction (over ``TURN_BUDGET``).

        On SQLite the transaction is deferred (see _process): if another writer committed first, the
        first write fails at once and the batch runs again; the last try holds the turn from the start.
        """
        saved = [ctx.mark() for ctx, _ in contexts]
        failed_before = len(alone)
        for last in (False, False, True):
            try:
                return self._apply_all(contexts, alone, report, deferred=not last and not is_postgres())
            except peewee.OperationalError as exc:
                if last or is_postgres() or "locked" not in str(exc):
                    raise
                log.debug("another writer committed first; applying the batch again")
                del alone[failed_before:]
                for (ctx, _), mark in zip(contexts, saved, strict=True):
                    ctx.rewind(mark)
        return {}, []

    def _apply_all(self, contexts: list, alone: list, report, *, deferred: bool) -> tuple[dict, list]:
        results: dict[int, str | None] = {}
        rest: list = []
        started = time.monotonic()
        with contextlib.ExitStack() as turn:
            if not deferred:
                turn.enter_context(local_write_turn())
            turn.enter_context(db.atomic(lock_type="DEFERRED") if deferred else db.atomic())
            mine = _lock_pending([ctx.inbound.id for ctx, _ in contexts])
            for position, (ctx, refused) in enumerate(contexts):
                if position and (time.monotonic() - started > TURN_BUDGET or turn_wanted()):
                    rest = contexts[position:]  # commit now: the write turn is held briefly, every time
                    break
                inbound_id = ctx.inbound.id
                if inbound_id not in mine:
                    results[inbound_id] = None  # another process applied it meanwhile
                    continue
                if report is not None:
                    report(inbound_id)
                try:
                    with db.atomic():  # a savepoint: a failing Inbound undoes only its own writes
                        if refused is not None:
                            results[inbound_id] = self._finish(ctx, *refused)
                        else:
                            results[inbound_id] = self._apply_steps(ctx)
                except (peewee.OperationalError, peewee.InterfaceError):
                    raise  # the database, not this input: the whole batch runs again (alone)
                except Exception as exc:
                    log.info("inbound %s failed in a batch (%r): running it again alone", inbound_id, exc)
                    alone.append(ctx.inbound)
        return results, rest

    @property
    def max_attempts(self) -> int:
        return self.config.serve.max_attempts

    def record_failure(self, inbound_id: int, error: str, decisions: list | None = None) -> str | None:
        """Record that an attempt at an Inbound failed with ``error``; see :func:`record_failure`."""
        return record_failure(inbound_id, error, self.max_attempts, self.clock.now(), decisions)

    def _process(self, ctx: Context) -> str | None:
        inbound = ctx.inbound
        refused = self._parse(ctx)  # outside the write turn: parsing takes no lock
        if refused is not None:
            with local_write_turn():
                return self._finish(ctx, *refused)
        # On SQLite the signal steps run in a deferred transaction: the write turn (store.db), which intake
        # needs for every acknowledgement, is taken at the first write, not while rules run — a pattern
        # that pins this worker pins no one else, and the supervisor stops it. If another writer committed
        # since the transaction's snapshot, the first write fails at once and the steps run again; the
        # last try holds the turn from the start, so the worker always gets through.
        parsed = ctx.mark()
        for last in (False, False, True):
            try:
                return self._apply(ctx, deferred=not last and not is_postgres())
            except peewee.OperationalError as exc:
                if last or is_postgres() or "locked" not in str(exc):
                    raise
                log.debug("inbound %s: another writer committed first; applying again", inbound.id)
                ctx.rewind(parsed)
        return None

    def _count_attempt(self, inbound: Inbound) -> bool:
        """Count this attempt in a commit of its own, before any work: an attempt that never finishes
        (the worker crashed, or was stopped after ``[serve] step_time_limit``) still counts. False when
        the row is no longer pending, or its attempts are used up: then it is quarantined (failed)."""
        limit = self.max_attempts
        with local_write_turn():
            taken = (
                Inbound.update(attempts=Inbound.attempts + 1)
                .where((Inbound.id == inbound.id) & (Inbound.status == PENDING) & (Inbound.attempts < limit))
                .execute()
            )
            if taken:
                inbound.attempts += 1
                return True
            reason = (
                f"gave up after {limit} attempts that did not finish "
                "(the worker crashed or overran [serve] step_time_limit)"
            )
            if inbound.reason:  # what record_failure kept of an earlier attempt
                reason += f"; last error: {inbound.reason}"
            failed = (
                Inbound.update(status=FAILED, reason=reason[:2000], processed_at=self.clock.now())
                .where((Inbound.id == inbound.id) & (Inbound.status == PENDING))
                .execute()
            )
        if failed:
            log.error("inbound %s: %s", inbound.id, reason)
            inbound.status = FAILED
        return False

    def _parse(self, ctx: Context) -> tuple[str, str] | None:
        """Fill ``ctx.signals``; the (status, reason) to record instead when the input cannot be parsed."""
        inbound = ctx.inbound
        try:
            parse = self.parsers.get(inbound.source)
            if parse is None or inbound.source not in self.steps:
                raise ParseError(f"no parser for inputs from {inbound.source!r}")
            ctx.signals = [plain_signal(signal) for signal in parse(ctx)]  # text every store can keep
            ctx.decide("parse", signals=len(ctx.signals))
        except Discard as stop:
            ctx.decide("parse", result="ignored", reason=stop.reason)
            return IGNORED, stop.reason
        except ParseError as exc:
            ctx.decide("parse", result="failed", error=str(exc))
            return FAILED, f"parse error: {exc}"
        except Exception as exc:  # a bug in a parser must quarantine the input, not lose it
            log.exception("inbound %s: parse failed", inbound.id)
            ctx.decide("parse", result="failed", error=repr(exc))
            return FAILED, f"parse failed: {exc!r}"
        return None

    def _apply(self, ctx: Context, *, deferred: bool = False) -> str | None:
        """Run the signal steps and record the outcome, in one transaction (SQLite: deferred, see run)."""
        inbound_id = ctx.inbound.id
        with contextlib.ExitStack() as turn:
            if not deferred:
                turn.enter_context(local_write_turn())
            turn.enter_context(db.atomic(lock_type="DEFERRED") if deferred else db.atomic())
            if not _lock_pending([inbound_id]):
                return None  # another process applied it meanwhile
            return self._apply_steps(ctx)

    def _apply_steps(self, ctx: Context) -> str:
        """Run the signal steps of a taken Inbound and record its outcome (inside the caller's transaction)."""
        inbound_id = ctx.inbound.id
        steps = self.steps[ctx.kind or ctx.inbound.source]
        outcomes = []
        for index, signal in enumerate(ctx.signals):
            self._reset(ctx, index, signal)
            ran: list[str] = []
            # No savepoint per signal: a discarded signal keeps what its steps wrote before the Discard (as it
            # did when a savepoint here was released around the caught Discard), and any other exception
            # fails the whole Inbound, undone by its own savepoint or transaction (two statements fewer each).
            try:
                self._run_steps(ctx, steps, ran)
            except Discard as stop:
                ctx.decide("pipeline", result="ignored", reason=stop.reason)
                ctx.outcome = "ignored"
                ctx.reason = stop.reason
            ctx.step = ""
            ctx.decide("steps", ran=ran)
            outcomes.append(ctx.outcome or "ignored")
            log.info("inbound %s signal %s: %s %s", inbound_id, index, ctx.outcome, ctx.incident and ctx.incident.ref)
        if outcomes and all(o == "ignored" for o in outcomes):
            return self._finish(ctx, IGNORED, ctx.reason or "nothing to apply")
        if not outcomes:
            return self._finish(ctx, IGNORED, "no signals in the input")
        return self._finish(ctx, PROCESSED, "")

    def _run_steps(self, ctx: Context, steps: Steps, ran: list[str]) -> None:
        """The steps of the list until one finishes the signal, then (for an applied signal) the after steps."""
        try:
            for name, step in steps.steps:
                ctx.step = name
                ran.append(name)
                step(ctx)
        except Finished:
            pass
        if ctx.outcome in ("created", "updated"):
            for name, step in steps.after:
                ctx.step = name
                ran.append(name)
                step(ctx)

    def _reset(self, ctx: Context, index: int, signal: Signal) -> None:
        ctx.signal, ctx.index = signal, index
        ctx.incident, ctx.match, ctx.classification, ctx.outcome = None, "", None, ""
        ctx.allocation, ctx.hook_context, ctx.page = {}, {}, True
        ctx.event, ctx.link_to, ctx.participant = None, "", False

    def _finish(self, ctx: Context, status: str, reason: str) -> str:
        incident = ctx.incident if status == PROCESSED else None
        values = {
            "status": status,
            "reason": reason[:2000],
            "mail_class": ctx.inbound.mail_class,  # what a mail parser found, even when it failed later
            "decisions": ctx.decisions,
            "incident": incident.id if incident is not None else None,
            "processed_at": self.clock.now(),
        }
        Inbound.update_by_id(ctx.inbound.id, **values)
        return status


def record_failure(
    inbound_id: int, error: str, max_attempts: int, now: datetime, decisions: list | None = None
) -> str | None:
    """Record that an attempt at a pending Inbound failed with ``error``; its new status, None if not pending.

    The attempt itself was counted when the Inbound was taken (:meth:`Pipeline.run`), so this does
    not count again: a supervisor that stopped a worker over its time limit may call it to say why.
    Below ``max_attempts`` the Inbound stays ``pending`` (the next tick tries it again); at the
    limit it is quarantined: ``failed`` with the error, in the quarantine view, reprocessable.
    """
    with local_write_turn(), db.atomic():
        row = Inbound.select(Inbound.attempts).where((Inbound.id == inbound_id) & (Inbound.status == PENDING))
        row = row.first()
        if row is None:
            return None
        if row.attempts >= max_attempts:
            status, reason = FAILED, f"failed {row.attempts} times; last error: {error}"
        else:
            status, reason = PENDING, f"attempt {row.attempts} of {max_attempts} failed: {error}"
        changes = {"status": status, "reason": reason[:2000], "processed_at": now if status == FAILED else None}
        if decisions is not None:
            changes["decisions"] = decisions
        Inbound.update(**changes).where((Inbound.id == inbound_id) & (Inbound.status == PENDING)).execute()
    (log.error if status == FAILED else log.warning)("inbound %s: %s", inbound_id, reason)
    return status


def _lock_pending(inbound_ids: list[int]) -> set[int]:
    """Those of these Inbounds still pending, locked for this transaction (PostgreSQL: rows another
    process has locked are skipped; SQLite: the write turn keeps everyone else out).

    Once per transaction of a batch: its SQL is built once per number of ids (peewee building the
    ``IN`` query each time was a seventh of the worker's time under a webhook storm)."""
    sql = _lock_pending_sql(len(inbound_ids), db.param, is_postgres())
    return {row[0] for row in db.execute_sql(sql, [*inbound_ids, PENDING]).fetchall()}


@functools.cache
def _lock_pending_sql(count: int, param: str, postgres: bool) -> str:
    marks = ", ".join([param] * count)
    sql = f'SELECT "id" FROM "inbound" WHERE "id" IN ({marks}) AND "status" = {param}'
    return sql + " FOR UPDATE SKIP LOCKED" if postgres else sql


def pending_ids(limit: int = 100, after: int = 0) -> list[int]:
    """Ids of pending Inbound rows, oldest first (rows locked by another process are skipped)."""
    query = (
        Inbound.select(Inbound.id)
        .where((Inbound.status == PENDING) & (Inbound.id > after))
        .order_by(Inbound.id)
        .limit(limit)
    )
    return [row.id for row in query]
