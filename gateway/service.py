"""The composition root: reads the configuration once and wires the parts.

``Service`` runs every component of ``inlet serve`` in one process (web/WSGI
today; intake servers and workers register here as they land) and stops them
cleanly on SIGINT/SIGTERM. Components are small objects with ``name``,
``start()``, ``stop()`` and ``where()`` (what to print about them).
"""

from __future__ import annotations

import logging
import signal
import threading

from gateway import steps
from gateway.clock import Clock
from gateway.config import Config
from gateway.intake import InboundWriter
from gateway.lifecycle import Lifecycle, Policy
from gateway.pipeline import Pipeline
from gateway.worker import Worker, pipeline_tick
from store.db import open_database
from store.migrations import require_latest

log = logging.getLogger("inlet.service")

ROLES = ("web", "worker", "smtp", "imap")


def build_lifecycle(config: Config, clock: Clock | None = None) -> Lifecycle:
    """The lifecycle with the hooks the configuration asks for."""
    return Lifecycle(ref_prefix=config.inlet.ref_prefix, clock=clock, policy=Policy(config))


def build_pipeline(config: Config, lifecycle: Lifecycle, clock: Clock | None = None) -> Pipeline:
    """The pipeline: one parser per Inbound source, then the signal steps in order."""
    from gateway import mail

    parse_mail = mail.MailParser(config)
    return Pipeline(
        config=config,
        lifecycle=lifecycle,
        parsers={source: parse_mail for source in mail.MAIL_SOURCES},
        signal_steps=mail.email_steps(
            [
                ("correlate", steps.correlate),
                ("classify", steps.classify),
                ("allocate", steps.allocate),
                ("apply", steps.apply),
            ]
        ),
        clock=clock or Clock(),
    )


class WebServer:
    """The Flask app on waitress, in a thread of its own."""

    name = "web"

    def __init__(self, config: Config, app):
        from waitress import create_server

        self.server = create_server(
            app,
            map={},
            host=config.web.host,
            port=config.web.port,
            threads=config.web.threads,
            ident="inlet",
            clear_untrusted_proxy_headers=True,
        )
        self.thread = threading.Thread(target=self.server.run, name="web", daemon=True)

    @property
    def port(self) -> int:
        return self.server.effective_port

    def where(self) -> str:
        return f"web UI and webhooks on http://{self.server.effective_host}:{self.port}/"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        from waitress import wasyncore

        self.server.task_dispatcher.shutdown()
        wasyncore.close_all(self.server._map)
        self.thread.join(timeout=10)


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

    def __init__(self, config: Config, *, roles: set[str] | None = None, clock: Clock | None = None):
        unknown = (roles or set()) - set(ROLES)
        if unknown:
            from gateway.errors import ConfigError

            raise ConfigError(f"--only: unknown role {', '.join(sorted(unknown))}; roles are {', '.join(ROLES)}")
        self.config = config
        self.roles = roles or set(ROLES)
        self.database = open_database(config)
        require_latest()
        self.clock = clock or Clock()
        self.lifecycle = build_lifecycle(config, self.clock)
        self.pipeline = build_pipeline(config, self.lifecycle, self.clock)
        self.components: list = []
        # Intake edges store through the writer; the pipeline worker picks the rows up.
        self.pipeline_worker = Worker("pipeline", pipeline_tick(self.pipeline))
        self.writer = InboundWriter(clock=self.clock, on_commit=self.pipeline_worker.wake)
        self.components.append(_Started(self.writer, "inbound writer"))
        if "worker" in self.roles:
            self.components.append(self.pipeline_worker)
        if "smtp" in self.roles and config.smtp.enabled:
            from gateway.smtp import SmtpServer

            self.smtp = SmtpServer(config, self.writer)
            self.components.append(self.smtp)
        if "imap" in self.roles and config.mailbox:
            from gateway.imap import MailboxPoller

            self.components.extend(MailboxPoller(config, box, self.writer, clock=self.clock) for box in config.mailbox)
        if "web" in self.roles:
            from web.app import create_app

            self.app = create_app(config, self)
            self.components.append(WebServer(config, self.app))
        self._stopping = threading.Event()

    def start(self) -> None:
        for component in self.components:
            component.start()
            log.info("started %s", component.where())
            print(f"inlet: {component.where()}", flush=True)

    def stop(self) -> None:
        for component in reversed(self.components):
            try:
                component.stop()
            except Exception:  # one component failing to stop must not keep the others running
                log.exception("stopping %s failed", component.name)
        if not self.database.is_closed():
            self.database.close()

    def run_until_signalled(self) -> None:
        """Start, wait for SIGINT or SIGTERM, stop."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            print("inlet: running; stop with Ctrl-C (SIGINT) or SIGTERM", flush=True)
            while not self._stopping.wait(1.0):
                pass
        finally:
            print("inlet: stopping", flush=True)
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
            print("inlet: stopped", flush=True)

    def _on_signal(self, signum, frame) -> None:
        self._stopping.set()
