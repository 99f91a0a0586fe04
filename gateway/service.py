"""The composition root: reads the configuration once and wires the parts.

``Service`` runs every component of ``inlet serve`` in one process (web/WSGI
today; intake servers and workers register here as they land) and stops them
cleanly on SIGINT/SIGTERM. Components are small objects with ``name``,
``start()``, ``stop()`` and ``where()`` (what to print about them).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway import membership
from gateway.audiences import Audiences
from gateway.config.loader import Config, load_config
from gateway.config.mail_settings import message_id_secret
from gateway.core.clock import Clock
from gateway.core.errors import ConfigError
from gateway.core.private_files import private_dir, write_private
from gateway.core.threads import Worker
from gateway.incidents.escalation import ESCALATION, Escalation
from gateway.incidents.heartbeats import SOURCE as HEARTBEAT_SOURCE
from gateway.incidents.heartbeats import HeartbeatTimer
from gateway.incidents.lifecycle import Lifecycle, Policy
from gateway.incidents.procedures import AUTO_CLOSE, MAJOR_REMINDER, Procedures
from gateway.incidents.timers import TimerWorker
from gateway.intake.refusals import Refusals
from gateway.intake.writer import InboundWriter, IntakeActivity
from gateway.pipeline import alert_members, alert_steps, heartbeat_steps, mail_alerts, mail_steps, signal_steps
from gateway.pipeline.driver import Pipeline, Steps
from gateway.pipeline.tick import pipeline_tick
from gateway.reports.mailing import ReportScheduler
from gateway.reports.rollup import RollupTimer
from store import wakeup
from store.db import db, open_database
from store.migrations import require_latest

log = logging.getLogger("inlet.service")
DELIVERY_YIELD = 0.05  # seconds a delivery round waits at most while intake has work in hand
PID_FILE = "inlet.pid"  # in inlet.data_dir: where `inlet reload` finds the running process

ROLES = ("web", "worker", "timers", "notify", "smtp", "imap")
# Sections a reload cannot apply to a running process (open connections, sockets), as the file names them.
# [[mailbox]] is not one: a reload restarts the pollers it affects (Service._reload_pollers).
RESTART_SECTIONS = {
    "database": "[database]",
    "web": "[web]",
    "serve": "[serve]",
    "smtp": "[smtp]",
    "retention": "[retention]",  # read once by the timers role
}


def reloadable(running: Config) -> Config:
    """The configuration file read again, if a running process can apply it; else ConfigError."""
    new = load_config(running.path)
    for name, shown in RESTART_SECTIONS.items():
        if getattr(new, name) != getattr(running, name):
            raise ConfigError(f"{running.path}: {shown} changed: restart Inlet to apply it")
    if new.mailbox and not running.mailbox:  # `inlet serve` planned no imap role process
        raise ConfigError(f"{running.path}: the first [[mailbox]] was added: restart Inlet to start polling it")
    return new


def seed_members(config: Config) -> None:
    """The file's ``[[group]] members`` into the database, the one source of membership (gateway/membership.py)."""
    with db.connection_context():
        added, dropped = membership.sync_config(config)
    for group, user in added:
        log.info("group %s: %s added (configuration file)", group, user)
    for group, user in dropped:
        log.info("group %s: %s removed (no longer in the configuration file)", group, user)


def build_lifecycle(config: Config, clock: Clock | None = None) -> Lifecycle:
    """The lifecycle with its collaborators (procedures, escalation timers) and who gets told what."""
    return Lifecycle(
        ref_prefix=config.inlet.ref_prefix,
        clock=clock,
        policy=Policy(config),
        procedures=Procedures(),
        escalation=Escalation(),
        hooks=[Audiences(config)],
    )


def build_timer_worker(lifecycle: Lifecycle) -> TimerWorker:
    """The TimerWorker with the handler of each timer kind (each handed the lifecycle)."""
    handlers = {
        ESCALATION: functools.partial(lifecycle.escalation.fire, lifecycle),
        MAJOR_REMINDER: functools.partial(lifecycle.procedures.fire_reminder, lifecycle),
        AUTO_CLOSE: functools.partial(lifecycle.procedures.fire_auto_close, lifecycle),
    }
    return TimerWorker(handlers, lifecycle.clock)


# The signal steps of each kind of input, in the order they run (gateway/pipeline/): the driver picks
# the list by the Inbound's source. A step that has fully applied a signal raises Finished: the rest of
# the list is skipped; the ``after`` steps run for every signal applied (created or updated).
EMAIL_STEPS = Steps(
    [
        ("mail-heartbeat", heartbeat_steps.beat_by_mail),
        ("mail-screen", mail_steps.screen),
        ("mail-thread", mail_steps.thread),
        ("correlate", signal_steps.correlate),
        ("classify", signal_steps.classify),
        ("allocate", signal_steps.allocate),
        ("apply", signal_steps.apply),
    ],
    after=[("mail-record", mail_steps.record)],
)
ALERT_STEPS = Steps(
    [
        ("alert-heartbeat", heartbeat_steps.beat_by_alert),
        ("correlate", alert_steps.correlate),
        ("maintenance", alert_steps.maintenance),
        ("classify", signal_steps.classify),
        ("allocate", signal_steps.allocate),
        ("apply", alert_steps.apply),
    ],
    after=[("alert-members", alert_members.record)],
)
# A heartbeat's expiry or recovery (gateway/incidents/heartbeats.py): an alert of its own, taken no beat from.
HEARTBEAT_STEPS = Steps([step for step in ALERT_STEPS.steps if step[0] != "alert-heartbeat"], ALERT_STEPS.after)


def build_pipeline(config: Config, lifecycle: Lifecycle, clock: Clock | None = None) -> Pipeline:
    """The pipeline: one parser and one step list per Inbound source."""
    parse_mail = mail_steps.MailParser(config)
    return Pipeline(
        config=config,
        lifecycle=lifecycle,
        parsers={
            alert_steps.SOURCE: alert_steps.parse_webhook_inbound,
            HEARTBEAT_SOURCE: heartbeat_steps.parse_heartbeat_inbound,
            **{source: parse_mail for source in mail_steps.MAIL_SOURCES},
        },
        steps={  # a copy each: a test may add a step to one pipeline
            alert_steps.SOURCE: ALERT_STEPS.copy(),
            HEARTBEAT_SOURCE: HEARTBEAT_STEPS.copy(),
            **{source: EMAIL_STEPS.copy() for source in mail_steps.MAIL_SOURCES},
            # a monitoring tool's alert mail that a [[mail_alert]] rule reads (gateway/pipeline/mail_alerts.py):
            # the mail parser hands it to the alert steps, exactly as a webhook alert
            mail_alerts.KIND: ALERT_STEPS.copy(),
        },
        clock=clock or Clock(),
    )


@dataclass
class Services:
    """What the web app, the intake edges and the workers of one process share.

    Built by :func:`build_services`, the one builder ``inlet serve`` and the tests use; the web app
    (``create_app(config, services)``) takes it and builds nothing of its own.
    """

    clock: Clock
    lifecycle: Lifecycle
    pipeline: Pipeline
    pipeline_worker: Worker  # woken when the writer commits rows (or a quarantined row is reprocessed)
    writer: InboundWriter
    refusals: Refusals


def build_services(
    config: Config,
    clock: Clock | None = None,
    *,
    activity: IntakeActivity | None = None,
    report: Callable[[int | None], None] | None = None,
) -> Services:
    """The lifecycle with its hooks, the pipeline and its worker, the intake writer, the refusal counts.

    Intake edges store through the writer; the pipeline worker picks the rows up. While intake has work
    in hand each unit waits, at most 20x the last one's time (so it never starves): a burst is
    acknowledged first and applied right after, steady traffic as it comes. ``report``: the supervisor's
    line about the Inbound in hand (gateway/supervisor.py).
    """
    clock = clock or Clock()
    lifecycle = build_lifecycle(config, clock)
    pipeline = build_pipeline(config, lifecycle, clock)
    tick = pipeline_tick(
        pipeline,
        before_each=lambda spent: writer.wait_while_busy(20 * spent),
        report=report,
        busy=lambda: writer.busy(),
    )
    poll = config.serve.poll_interval.total_seconds()
    pipeline_worker = wakeup.worker("pipeline", tick, interval=poll, wake_on=wakeup.INBOUND)
    writer = InboundWriter(clock=clock, on_commit=pipeline_worker.wake, activity=activity)
    refusals = Refusals(config.serve.refusals_flush_interval.total_seconds())
    return Services(clock, lifecycle, pipeline, pipeline_worker, writer, refusals)


class _Started:
    """Adapts a plain start/stop object to a component."""

    def __init__(self, thing, name: str):
        self.thing, self.name = thing, name

    def where(self) -> str:
        return self.name

    def start(self) -> None:
        self.thing.start()

    def stop(self) -> None:
        self.thing.stop()


class Service:
    """Everything ``inlet serve`` runs, for one configuration."""

    def __init__(
        self,
        config: Config,
        *,
        roles: set[str] | None = None,
        clock: Clock | None = None,
        status_fd: int | None = None,
    ):
        """``status_fd``: a pipe to the supervisor (gateway/supervisor.py) when this is one of its role processes."""
        unknown = (roles or set()) - set(ROLES)
        if unknown:
            raise ConfigError(f"--only: unknown role {', '.join(sorted(unknown))}; roles are {', '.join(ROLES)}")
        self.config = config
        self.roles = roles or set(ROLES)
        self.database = open_database(config)
        require_latest()
        seed_members(config)
        activity = (
            IntakeActivity(private_dir(config.inlet.data_dir)) if self.roles & {"smtp", "web", "worker"} else None
        )
        self._status_fd = status_fd
        self.services = build_services(
            config, clock, activity=activity, report=self._report_step if status_fd is not None else None
        )
        self.clock, self.lifecycle, self.pipeline = self.services.clock, self.services.lifecycle, self.services.pipeline
        self.pipeline_worker, self.writer = self.services.pipeline_worker, self.services.writer
        self.refusals = self.services.refusals
        if self.roles & {"worker", "notify"}:
            message_id_secret(config)  # an empty or short key file stops the start, not every message
        self.components: list = []
        poll = config.serve.poll_interval.total_seconds()
        self.components.append(_Started(self.writer, "inbound writer"))
        if "worker" in self.roles:
            self.components.append(self.pipeline_worker)
        self.timers = build_timer_worker(self.lifecycle)
        self.scheduled_reports = ReportScheduler(lambda: self.config, self.clock)  # follows a reload
        if "timers" in self.roles:
            from gateway.retention import Retention

            retention = Retention(config.retention, self.clock)
            rollup = RollupTimer(lambda: self.config, self.clock)  # the report rollup's closed days
            self.heartbeats = HeartbeatTimer(lambda: self.config, self.clock)  # expiries and recoveries
            timers = lambda: (  # noqa: E731
                self.timers.tick()
                + self.scheduled_reports.tick()
                + retention.tick()
                + rollup.tick()
                + self.heartbeats.tick()
            )
            self.components.append(wakeup.worker("timers", timers, interval=poll))
        self.app = None
        if "notify" in self.roles:
            from notifiers.delivery import Delivery

            # Behind intake too: a round waits while a listener has work in hand, at most DELIVERY_YIELD.
            self.delivery = Delivery(
                config,
                clock=self.clock,
                interval=poll,
                before_round=lambda: self.writer.wait_while_busy(DELIVERY_YIELD),
            )
            self.components.append(self.delivery)
        # What the listeners refuse is counted in memory and flushed now and then (gateway/intake/refusals.py).
        if self.roles & {"smtp", "web"}:
            self.components.append(self.refusals)  # stopped after the listeners: their last refusals are written
        if "smtp" in self.roles and config.smtp.enabled:
            from gateway.intake.smtp import SmtpServer

            self.smtp = SmtpServer(config, self.writer, self.refusals)
            self.components.append(self.smtp)
        self.pollers: dict = {}  # [[mailbox]] name -> its running MailboxPoller (a reload may replace it)
        if "imap" in self.roles and config.mailbox:
            self.pollers = {box.name: self._poller(config, box) for box in config.mailbox}
            self.components.extend(self.pollers.values())
        if "web" in self.roles:
            from web.app import create_app

            self.app = create_app(config, self.services)
            from gateway.web_server import WebServer

            self.components.append(WebServer(config, self.app, self.refusals))
        self._stopping = threading.Event()
        self._wakeup = threading.Event()
        self._reload_requested = False
        self._reload_lock = threading.Lock()

    def reload(self) -> Config:
        """Read the configuration file again and swap it in; intake connections stay open.

        A file that does not load (bad TOML, a bad regex, a dangling reference) or
        that changes a section only a restart can apply raises ConfigError, and the
        running configuration stays.
        """
        new = reloadable(self.config)
        try:
            seed_members(new)
        except Exception:  # the store is away: the new rules still apply; membership follows at the next reload
            log.exception("reload: the [[group]] members of the file could not be written to the database")
        fresh = build_pipeline(new, self.lifecycle, self.clock)  # parsers that keep options of the config
        with self._reload_lock:
            # Each reader picks the configuration up per unit of work; the swap is a few assignments.
            self.lifecycle.policy = Policy(new)
            self.lifecycle.hooks = [Audiences(new) if isinstance(h, Audiences) else h for h in self.lifecycle.hooks]
            self.pipeline.config, self.pipeline.parsers = new, fresh.parsers
            if getattr(self, "smtp", None) is not None:
                self.smtp.handler.config = new  # the addresses it accepts mail for
            if self.app is not None:
                self.app.config["INLET"] = new
            if getattr(self, "delivery", None) is not None:
                self.delivery.reconfigure(new)  # the channels of groups and stakeholders, the templates
            self.config = new
        if self.pollers:
            self._reload_pollers(new)
        logging.getLogger().setLevel(new.inlet.log_level.upper())
        return new

    def _poller(self, config: Config, box):
        from gateway.intake.imap import MailboxPoller

        return MailboxPoller(config, box, self.writer, clock=self.clock)

    def _reload_pollers(self, new: Config) -> None:
        """Restart the pollers a reload affects: a changed or removed [[mailbox]], a rotated password (its
        password_file now says something else), or one that is failing (it retries now, not after its
        back-off: the reload may be the fix). The others keep their connection."""
        from gateway.intake.imap import PasswordMissing, mailbox_password
        from gateway.intake.mailbox_status import CONNECTED, IDLE

        wanted = {box.name: box for box in new.mailbox}
        for name, poller in list(self.pollers.items()):
            box = wanted.get(name)
            try:
                rotated = box is not None and mailbox_password(box) != poller.password
            except PasswordMissing:
                rotated = True  # the new poller says so, in its state
            if box == poller.box and not rotated and poller.report.status in (CONNECTED, IDLE):
                continue
            why = "removed" if box is None else "changed" if box != poller.box else "password" if rotated else "retry"
            log.info("reload: mailbox %s: restarting its poller (%s)", name, why)
            poller.stop()
            index = self.components.index(poller)
            del self.pollers[name]
            if box is None:
                del self.components[index]
                continue
            self.pollers[name] = self.components[index] = self._poller(new, box)
            self.pollers[name].start()
        for name, box in wanted.items():
            if name not in self.pollers:
                log.info("reload: mailbox %s: starting its poller (new)", name)
                self.pollers[name] = self._poller(new, box)
                self.components.append(self.pollers[name])
                self.pollers[name].start()

    def start(self) -> None:
        for component in self.components:
            component.start()
            log.info("started %s", component.where())
            if hasattr(component, "port"):  # where people and tools reach Inlet: say it on the terminal
                print(f"inlet: {component.where()}", flush=True)

    def stop(self) -> None:
        for component in self.components:  # every listener stops accepting first, then each drains in turn
            if hasattr(component, "stop_accepting"):
                try:
                    component.stop_accepting()
                except Exception:
                    log.exception("stopping %s failed", component.name)
        for component in reversed(self.components):
            try:
                component.stop()
            except Exception:  # one component failing to stop must not keep the others running
                log.exception("stopping %s failed", component.name)
        if not self.database.is_closed():
            self.database.close()

    def run_until_signalled(self) -> None:
        """Start, wait for SIGINT or SIGTERM, stop.

        As a role process of the supervisor (``status_fd`` given): tell it when started, leave
        SIGINT to it (a terminal's Ctrl-C reaches the whole group; the supervisor says when to
        stop), stop when it goes away, and leave the pid file and the talking to it.
        """
        child = self._status_fd is not None
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        if child:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        parent = os.getppid()
        pid_file = Path(self.config.inlet.data_dir) / PID_FILE
        try:
            self.start()
            if child:
                self._tell(b"R\n")
            else:
                write_private(pid_file, f"{os.getpid()}\n".encode())
                print("inlet: running; stop with Ctrl-C (SIGINT) or SIGTERM; reload rules with SIGHUP", flush=True)
            while not self._stopping.is_set():
                self._wakeup.wait(1.0)
                self._wakeup.clear()
                if child and os.getppid() != parent:  # the supervisor is gone: so are we
                    log.warning("the supervisor (pid %s) is gone: stopping", parent)
                    break
                if self._reload_requested:
                    self._reload_requested = False
                    self._reload_and_say(quiet=child)
        finally:
            if not child:
                print("inlet: stopping", flush=True)
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
            if not child:
                pid_file.unlink(missing_ok=True)
                print("inlet: stopped", flush=True)

    def _report_step(self, inbound_id: int | None) -> None:
        self._tell(b"I\n" if inbound_id is None else b"B %d\n" % inbound_id)

    def _tell(self, line: bytes) -> None:
        """A line to the supervisor: R (started), B <inbound id> (busy with it), I (idle)."""
        try:
            os.write(self._status_fd, line)
        except OSError:  # the supervisor is gone; the main loop notices and stops
            pass

    def _reload_and_say(self, quiet: bool = False) -> None:
        try:
            new = self.reload()
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            if not quiet:
                print(f"inlet: reload refused, the running configuration stays: {exc}", flush=True)
            return
        log.info("reloaded configuration (%s rules, %s groups)", len(new.rule), len(new.group))
        if not quiet:
            print(f"inlet: reloaded configuration ({len(new.rule)} rules, {len(new.group)} groups)", flush=True)

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGHUP:
            self._reload_requested = True
        else:
            self._stopping.set()
        self._wakeup.set()
