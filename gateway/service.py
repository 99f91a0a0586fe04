"""The composition root: reads the configuration once and wires the parts.

``Service`` runs every component of ``inlet serve`` in one process (web/WSGI
today; intake servers and workers register here as they land) and stops them
cleanly on SIGINT/SIGTERM. Components are small objects with ``name``,
``start()``, ``stop()`` and ``where()`` (what to print about them).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

from gateway import alerts, steps
from gateway.clock import Clock
from gateway.config import Config, load_config
from gateway.errors import ConfigError
from gateway.intake import InboundWriter, IntakeActivity
from gateway.lifecycle import Lifecycle, Policy
from gateway.mail_settings import message_id_secret
from gateway.pipeline import Pipeline
from gateway.private_files import private_dir, write_private
from gateway.refusals import Refusals
from gateway.scheduled_reports import ReportScheduler
from gateway.worker import Worker, pipeline_tick
from store import wakeup
from store.db import open_database
from store.migrations import require_latest

log = logging.getLogger("inlet.service")
DELIVERY_YIELD = 0.05  # seconds a delivery round waits at most while intake has work in hand
PID_FILE = "inlet.pid"  # in inlet.data_dir: where `inlet reload` finds the running process

ROLES = ("web", "worker", "timers", "notify", "smtp", "imap")
# Sections a reload cannot apply to a running process (open connections, sockets, running pollers),
# as the file names them.
RESTART_SECTIONS = {
    "database": "[database]",
    "web": "[web]",
    "serve": "[serve]",
    "smtp": "[smtp]",
    "mailbox": "[[mailbox]]",
    "retention": "[retention]",  # read once by the timers role
}


def reloadable(running: Config) -> Config:
    """The configuration file read again, if a running process can apply it; else ConfigError."""
    new = load_config(running.path)
    for name, shown in RESTART_SECTIONS.items():
        if getattr(new, name) != getattr(running, name):
            raise ConfigError(f"{running.path}: {shown} changed: restart Inlet to apply it")
    return new


def build_lifecycle(config: Config, clock: Clock | None = None) -> Lifecycle:
    """The lifecycle with its hooks: procedures, escalation timers, who gets told what."""
    from gateway.escalation import Escalation
    from gateway.procedures import Procedures
    from notifiers.audiences import Audiences

    lifecycle = Lifecycle(ref_prefix=config.inlet.ref_prefix, clock=clock, policy=Policy(config))
    lifecycle.procedures = Procedures(lifecycle)
    lifecycle.escalation = Escalation(lifecycle)
    lifecycle.hooks += [lifecycle.procedures.on_change, lifecycle.escalation.on_change, Audiences(config)]
    return lifecycle


def build_timer_worker(lifecycle: Lifecycle):
    """The TimerWorker with the handler of each timer kind."""
    from gateway.escalation import ESCALATION, TimerWorker
    from gateway.procedures import AUTO_CLOSE, MAJOR_REMINDER

    handlers = {
        ESCALATION: lifecycle.escalation.fire,
        MAJOR_REMINDER: lifecycle.procedures.fire_reminder,
        AUTO_CLOSE: lifecycle.procedures.fire_auto_close,
    }
    return TimerWorker(handlers, lifecycle.clock)


def build_pipeline(config: Config, lifecycle: Lifecycle, clock: Clock | None = None) -> Pipeline:
    """The pipeline: one parser per Inbound source, then the signal steps in order."""
    from gateway import mail

    parse_mail = mail.MailParser(config)
    return Pipeline(
        config=config,
        lifecycle=lifecycle,
        parsers={
            alerts.SOURCE: alerts.parse_webhook_inbound,
            **{source: parse_mail for source in mail.MAIL_SOURCES},
        },
        # the email steps wrap the generic ones, as the alert steps do; other sources pass straight through
        signal_steps=mail.email_steps(
            [
                ("correlate", alerts.correlate),
                ("classify", steps.classify),
                ("allocate", steps.allocate),
                ("apply", alerts.apply),
            ]
        ),
        clock=clock or Clock(),
    )


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
        self.clock = clock or Clock()
        self.lifecycle = build_lifecycle(config, self.clock)
        self.pipeline = build_pipeline(config, self.lifecycle, self.clock)
        if self.roles & {"worker", "notify"}:
            message_id_secret(config)  # an empty or short key file stops the start, not every message
        self.components: list = []
        # Intake edges store through the writer; the pipeline worker picks the rows up. While intake
        # has work in hand each unit waits, at most 20x the last one's time (so it never starves):
        # a burst is acknowledged first and applied right after, steady traffic as it comes.
        poll = config.serve.poll_interval.total_seconds()
        self._status_fd = status_fd
        tick = pipeline_tick(
            self.pipeline,
            before_each=lambda spent: self.writer.wait_while_busy(20 * spent),
            report=self._report_step if status_fd is not None else None,
            busy=lambda: self.writer.busy(),
        )
        self.pipeline_worker = Worker("pipeline", tick, interval=poll, wake_on=wakeup.INBOUND)
        activity = (
            IntakeActivity(private_dir(config.inlet.data_dir)) if self.roles & {"smtp", "web", "worker"} else None
        )
        self.writer = InboundWriter(clock=self.clock, on_commit=self.pipeline_worker.wake, activity=activity)
        self.components.append(_Started(self.writer, "inbound writer"))
        if "worker" in self.roles:
            self.components.append(self.pipeline_worker)
        self.timers = build_timer_worker(self.lifecycle)
        self.scheduled_reports = ReportScheduler(lambda: self.config, self.clock)  # follows a reload
        if "timers" in self.roles:
            from gateway.retention import Retention

            retention = Retention(config.retention, self.clock)
            timers = lambda: self.timers.tick() + self.scheduled_reports.tick() + retention.tick()  # noqa: E731
            self.components.append(Worker("timers", timers, interval=poll))
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
        # What the listeners refuse is counted in memory and flushed now and then (gateway/refusals.py).
        self.refusals = Refusals(config.serve.refusals_flush_interval.total_seconds())
        if self.roles & {"smtp", "web"}:
            self.components.append(self.refusals)  # stopped after the listeners: their last refusals are written
        if "smtp" in self.roles and config.smtp.enabled:
            from gateway.smtp import SmtpServer

            self.smtp = SmtpServer(config, self.writer, self.refusals)
            self.components.append(self.smtp)
        if "imap" in self.roles and config.mailbox:
            from gateway.imap import MailboxPoller

            self.components.extend(MailboxPoller(config, box, self.writer, clock=self.clock) for box in config.mailbox)
        if "web" in self.roles:
            from web.app import create_app

            self.app = create_app(config, self)
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
        from notifiers.audiences import Audiences

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
        logging.getLogger().setLevel(new.inlet.log_level.upper())
        return new

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
