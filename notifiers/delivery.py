"""Outbox delivery: claim due rows, render, send, record (DESIGN.md §2.4).

One tick claims up to ``batch`` due rows (on PostgreSQL with ``FOR UPDATE
SKIP LOCKED``, and a lease in ``claimed_by``/``claimed_until`` so a crashed
worker's rows come back), renders each row's template once, expands its
targets (Apprise URLs, ``email:`` addresses, names of groups or stakeholders)
and sends on a thread pool: one task per channel, so a channel gets its
messages in order while channels are served at once — a slow channel holds
one thread, never the outbox. Every send is recorded as a NotificationAttempt;
each row keeps the last outcome per channel in ``results`` so a retry sends
only to the channels that have not succeeded. Failures retry with exponential
backoff and equal jitter; after ``max_attempts`` the row is ``failed`` and an
internal Event is written on its incident.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import make_msgid

import jinja2

from gateway.core.clock import Clock, iso
from gateway.core.errors import NotFound
from notifiers import apprise_adapter, digest
from notifiers import mailer as mail
from notifiers.apprise_adapter import Outcome, channel_key
from notifiers.render import Rendered, Renderer, Trusted, incident_values
from notifiers.reporter_links import ReporterLinks
from store import wakeup
from store.db import db, is_postgres
from store.models import FAILED, PENDING, Event, Incident, Notification, NotificationAttempt

log = logging.getLogger("inlet.notify")

SENT, DIGESTED = "sent", "digested"
RETRY = "retry"


@dataclass
class _Job:
    """One claimed row: what to send where, and what came of it."""

    row: Notification
    message: Rendered | None = None
    sends: list[tuple[str, str]] = field(default_factory=list)  # (target URL, channel)
    outcomes: list[tuple[str, Outcome]] = field(default_factory=list)  # (channel, outcome)
    digested: dict[str, tuple[str, int]] = field(default_factory=dict)  # channel -> (masked url, digest id)


class Delivery:
    """The ``notify`` component of ``inlet serve``: a worker thread around :meth:`tick`."""

    name = "notify"

    def __init__(
        self,
        config,
        *,
        clock: Clock | None = None,
        worker_id: str | None = None,
        interval: float = 1.0,
        before_round: Callable[[], None] | None = None,
    ):
        self.config, self.settings = config, config.notifications
        self.before_round = before_round  # e.g. wait (briefly) while intake has work in hand
        self.clock = clock or Clock()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self) % 100000}"
        self.renderer = Renderer(self.settings.templates_dir)
        self.pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="notify-send")
        self.worker = wakeup.worker("notify", self.tick, interval=interval, wake_on=wakeup.NOTIFICATION)

    def reconfigure(self, config) -> None:
        """Send with a reloaded configuration from the next round on: its channels, templates and relay
        (``concurrency`` is the pool's size and needs a restart)."""
        self.config, self.settings = config, config.notifications
        self.renderer = Renderer(self.settings.templates_dir)

    # ------------------------------------------------------------ component

    def where(self) -> str:
        return f"notification delivery ({self.settings.concurrency} sends at once)"

    def start(self) -> None:
        self.worker.start()

    def wake(self) -> None:
        self.worker.wake()

    def stop(self) -> None:
        self.worker.stop()
        self.pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------ one round

    def tick(self) -> int:
        """Deliver the rows due now; return how many rows were handled."""
        if self.before_round is not None:
            self.before_round()
        rows = self.claim()
        if not rows:
            return 0
        now = self.clock.now()
        jobs = [self._prepare(row, now) for row in rows]
        self._plan_rates(jobs, now)
        # One task per channel: a channel gets its messages in order, different channels at once.
        by_channel: dict[str, list[tuple[_Job, str]]] = {}
        for job in jobs:
            if job.message is not None:
                for target, channel in job.sends:
                    by_channel.setdefault(channel, []).append((job, target))
        futures = [self.pool.submit(self._send_in_order, channel, sends) for channel, sends in by_channel.items()]
        for future in futures:
            for job, channel, outcome in future.result():
                job.outcomes.append((channel, outcome))
        done = self.clock.now()
        for job in jobs:
            self._record(job, done)
        return len(rows)

    def claim(self) -> list[Notification]:
        """Lease up to ``batch`` due rows to this worker."""
        now = self.clock.now()
        with db.atomic():
            query = (
                Notification.select()
                .where(
                    (Notification.status == PENDING)
                    & (Notification.next_attempt_at <= now)
                    & (Notification.claimed_until.is_null() | (Notification.claimed_until < now))
                )
                .order_by(Notification.next_attempt_at, Notification.id)
                .limit(self.settings.batch)
            )
            if is_postgres():
                query = query.for_update(skip_locked=True)
            rows = list(query)
            for row in rows:
                if row.claimed_by:  # a lease that ran out: its worker died or hung mid-delivery
                    self._interrupted(row, now)
            if rows:
                until = now + self.settings.lease
                Notification.update(claimed_by=self.worker_id, claimed_until=until).where(
                    Notification.id.in_([r.id for r in rows])
                ).execute()
        return rows

    def _interrupted(self, row: Notification, now: datetime) -> None:
        """Record the lost round as a failed attempt: it may have sent, so the retry may be a duplicate."""
        row.attempts += 1
        NotificationAttempt.create(
            notification=row,
            at=now,
            channel="",
            url="",
            ok=False,
            detail=f"interrupted: the claim of {row.claimed_by} ran out; a retry may deliver a duplicate",
            worker=self.worker_id,
        )
        Notification.update(attempts=row.attempts).where(Notification.id == row.id).execute()

    # ------------------------------------------------------------ steps

    def _prepare(self, row: Notification, now: datetime) -> _Job:
        job = _Job(row)
        try:
            job.message = self._render(row)
        except (jinja2.TemplateError, KeyError) as exc:
            job.outcomes.append(("template", Outcome(row.template, row.template, False, f"template: {exc}", 0, True)))
            return job
        for target in row.targets:
            urls = expand(self.config, target)
            if urls is None:
                detail = f"no Apprise URL, group or stakeholder named {target!r}"
                job.outcomes.append((channel_key(target), Outcome(target, target, False, detail, 0.0, True)))
                continue
            if not urls:
                detail = f"{target!r} has no channels configured"
                job.outcomes.append((channel_key(target), Outcome(target, target, False, detail, 0.0, True)))
            for url in urls:
                channel = channel_key(url)
                if (row.results or {}).get(channel, {}).get("status") not in (SENT, DIGESTED):
                    job.sends.append((url, channel))
        if not row.targets:
            job.outcomes.append(("none", Outcome("", "", False, "no targets", 0.0, True)))
        return job

    def _render(self, row: Notification) -> Rendered:
        desk, base_url = self.config.inlet.name, self.config.inlet.base_url
        if row.template == digest.DIGEST:
            items = []
            for item in Notification.select().where(Notification.id.in_(row.context.get("items", []))):
                message = self._render(item)
                ref = item.incident.ref if item.incident_id else ""
                link = Trusted(f"{base_url.rstrip('/')}/incidents/{ref}" if ref else base_url)
                items.append({"subject": message.subject, "link": link, "id": item.id})
            return self.renderer.render(digest.DIGEST, {"desk": desk, "items": items, "ref": ""})
        incident = row.incident if row.incident_id else None
        values = incident_values(incident, base_url=base_url, desk=desk, audience=row.audience, context=row.context)
        if row.audience == "reporter" and incident is not None and incident.reporter_id:
            # the reporter has no account: their link opens a page of this one incident (notifiers/reporter_links.py)
            token = self.reporter_links.token(incident, self.clock.now())
            values["link"] = Trusted(f"{base_url.rstrip('/')}/r/{token}")
        return self.renderer.render(row.template, values)

    @functools.cached_property
    def reporter_links(self) -> ReporterLinks:
        return ReporterLinks.for_config(self.config)

    def _plan_rates(self, jobs: list[_Job], now: datetime) -> None:
        """Fold what goes over a channel's rate limit into its digest (not digests, reporter mail, security)."""
        start, end = digest.window(now, self.settings.rate_window)
        used: Counter = Counter()
        for job in jobs:
            row = job.row
            exempt = row.template == digest.DIGEST or (row.incident_id and row.incident.security)
            keep = []
            for url, channel in job.sends:
                if exempt or mail.is_email_target(url):
                    keep.append((url, channel))
                    continue
                if channel not in used:
                    used[channel] = digest.sent_since(channel, start)
                if used[channel] < self.settings.rate_limit:
                    used[channel] += 1
                    keep.append((url, channel))
                else:
                    digest_id = digest.fold(row.id, url, channel, due=end, now=now)
                    job.digested[channel] = (apprise_adapter.masked(url), digest_id)
            job.sends = keep

    def _send_in_order(self, channel: str, sends: list[tuple[_Job, str]]) -> list[tuple[_Job, str, Outcome]]:
        """Send to one channel in row order; once a send fails, the rest wait for their retry.

        So a dead channel costs one timeout per round, not one per row. A slow
        but working channel stops after 3 × send_timeout (at most half the
        lease); what is left is deferred (not an attempt, due again at once),
        so a round never outlives its claim and other channels wait at most
        that long for the next round.
        """
        done, failure = [], None
        budget = min(self.settings.lease.total_seconds() / 2, 3 * self.settings.send_timeout.total_seconds())
        budget_ends = time.monotonic() + budget
        for job, target in sends:
            if failure is not None:
                detail = f"not tried: an earlier send to this channel failed this round ({failure.detail})"
                outcome = Outcome(target, failure.url, False, detail[:1000])
            elif time.monotonic() > budget_ends:
                url = apprise_adapter.masked(target)
                outcome = Outcome(target, url, False, "deferred: the round's time ran out", deferred=True)
            else:
                outcome = self._send(job, target)
                if not outcome.ok and not outcome.permanent:
                    failure = outcome
            done.append((job, channel, outcome))
        return done

    def _send(self, job: _Job, target: str) -> Outcome:
        row = job.row
        return send_one(
            self.config, target, job.message, row.context or {}, now=self.clock.now(), template=row.template
        )

    def _record(self, job: _Job, now: datetime) -> None:
        """Write the attempts and the row's new state in one transaction.

        One short transaction per row, not one per round: on SQLite a round-long
        transaction would hold the write lock the intake needs.
        """
        with db.atomic():
            query = Notification.select().where(Notification.id == job.row.id)
            if is_postgres():
                query = query.for_update()
            row = query.get()
            if row.claimed_by != self.worker_id:  # our lease ran out and another worker took the row
                log.warning("notification %s: lease lost to %s; results not recorded", row.id, row.claimed_by)
                return
            results = dict(row.results or {})
            tried = [(channel, outcome) for channel, outcome in job.outcomes if not outcome.deferred]
            for channel, outcome in job.outcomes:
                if outcome.deferred:
                    results[channel] = {"url": outcome.url, "status": RETRY, "detail": outcome.detail, "at": iso(now)}
            if job.outcomes and not tried and not job.digested:  # nothing was tried: not an attempt, due again now
                row.results, row.claimed_by, row.claimed_until, row.next_attempt_at = results, None, None, now
                row.save()
                return
            row.attempts += 1
            for channel, outcome in tried:
                NotificationAttempt.create(
                    notification=row,
                    at=now,
                    channel=channel,
                    url=outcome.url[:500],
                    ok=outcome.ok,
                    detail=outcome.detail,
                    elapsed=outcome.elapsed,
                    worker=self.worker_id,
                )
                status = SENT if outcome.ok else FAILED if outcome.permanent else RETRY
                results[channel] = {"url": outcome.url, "status": status, "detail": outcome.detail, "at": iso(now)}
            for channel, (url, digest_id) in job.digested.items():
                results[channel] = {"url": url, "status": DIGESTED, "digest": digest_id, "at": iso(now)}
            retrying = [c for c, r in results.items() if r["status"] == RETRY]
            if retrying and row.attempts >= self.settings.max_attempts:
                for channel in retrying:
                    results[channel]["status"] = FAILED
                retrying = []
            failed = [r for r in results.values() if r["status"] == FAILED]
            row.results, row.claimed_by, row.claimed_until = results, None, None
            row.last_error = "; ".join(f"{r['url']}: {r['detail']}" for r in results.values() if r.get("detail"))[:2000]
            if retrying:
                row.next_attempt_at = now + self.backoff(row.attempts)
            elif failed:
                row.status = FAILED
                self._failed_event(row, failed, now)
            else:
                row.status = DIGESTED if any(r["status"] == DIGESTED for r in results.values()) else SENT
                row.sent_at = now
            row.save()

    def backoff(self, attempts: int) -> timedelta:
        """Delay after the ``attempts``-th attempt: doubling from ``backoff``, capped, with equal jitter."""
        base = self.settings.backoff.total_seconds() * 2 ** max(0, attempts - 1)
        delay = min(base, self.settings.backoff_max.total_seconds())
        return timedelta(seconds=delay / 2 + random.uniform(0, delay / 2))

    def _failed_event(self, row: Notification, failed: list[dict], now: datetime) -> None:
        log.warning("notification %s (%s to %s) failed: %s", row.id, row.template, row.audience, row.last_error)
        if not row.incident_id:
            return
        body = "; ".join(f"{r['url']}: {r['detail']}" for r in failed)
        Event.create(
            incident=Incident.get_by_id(row.incident_id),
            at=now,
            type="notification_failed",
            actor="inlet",
            visibility="internal",
            body=f"{row.template} to {row.audience} could not be delivered after {row.attempts} attempts: {body}",
            data={"notification": row.id},
        )


def expand(config, target: str) -> list[str] | None:
    """The URLs a row's target stands for: itself, a group's channels, a stakeholder's URLs; None if unknown."""
    if "://" in target or mail.is_email_target(target):
        return [target]
    group = config.group_named(target)
    if group is not None:  # its schedule:NAME channels were resolved when the row was written (audiences)
        return group.urls()
    stakeholder = next((s for s in config.stakeholder if s.name == target), None)
    return list(stakeholder.notify) if stakeholder is not None else None


def send_one(config, target: str, message: Rendered, context: dict, *, now: datetime, template: str = "") -> Outcome:
    """Send one rendered message to one URL: ``email:`` through the SMTP relay, the rest through Apprise."""
    settings = config.notifications
    if mail.is_email_target(target):
        return mail.send(
            config,
            target,
            message,
            message_id=context.get("message_id") or make_msgid(domain=config.mail.message_id_domain),
            references=context.get("references", ()),
            now=now,
            reply=template == "acknowledgement",  # it answers the reporter's message
        )
    return apprise_adapter.send(
        target,
        message,
        throttle=settings.apprise_throttle.total_seconds(),
        timeout=settings.send_timeout.total_seconds(),
        mail_headers=mail.automatic_headers(config),
    )


def send_test(config, target: str) -> list[Outcome]:
    """Send the ``test`` template to ``target`` now (no outbox): an admin's check of a channel.

    ``target`` is an Apprise URL, ``email:ADDRESS``, or the name of a group
    or stakeholder; raises NotFound for an unknown name or one without URLs.
    """
    urls = expand(config, target)
    if urls is None:
        raise NotFound(f"{target!r} is not an Apprise URL, email:ADDRESS, group or stakeholder in {config.path}")
    if not urls:
        raise NotFound(f"{target!r} has no channels configured")
    message = Renderer(config.notifications.templates_dir).render("test", {"desk": config.inlet.name, "ref": ""})
    now = Clock().now()
    with ThreadPoolExecutor(max(1, min(len(urls), config.notifications.concurrency))) as pool:
        return list(pool.map(lambda url: send_one(config, url, message, {}, now=now), urls))
