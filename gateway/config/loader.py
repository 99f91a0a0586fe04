"""Configuration: one TOML file -> frozen dataclasses, validated at load.

Each setting is declared once, with its type, default and help; the loader
refuses unknown keys, wrong types, bad durations, duplicate names and dangling
references, and every error names the file and the key path
(``[[group]] 'network' → escalation``). Secrets are never in the file: keys
ending in ``_env`` name the environment variable that holds them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from gateway.config.heartbeat_settings import Heartbeat, check_heartbeats
from gateway.config.integrations import Integration, Maintenance, check_integrations
from gateway.config.mail_alert_settings import MailAlert, check_mail_alerts
from gateway.config.mail_settings import Address, Mailbox, MailSection, SmtpSection, check_mail
from gateway.config.notification_settings import NotificationsSection, Stakeholder, check_notifications
from gateway.config.procedure_settings import ProceduresSection, check_procedures
from gateway.config.schema import KeyProblem, convert, setting
from gateway.core.errors import ConfigError
from gateway.incidents.sla import Calendar, SlaSection, check_sla
from gateway.reports.schedule import ScheduledReport, check_reports
from gateway.retention import RetentionSection
from gateway.rules import Rule, RuleSet, compile_rules
from gateway.schedules import PREFIX as SCHEDULE_PREFIX
from gateway.schedules import Schedule, check_schedules

# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class InletSection:
    name: str = setting("Inlet", help="Name of this service desk, shown in the UI and in messages.")
    base_url: str = setting(
        "http://127.0.0.1:8025", help="URL of the web UI as users reach it; links in messages point here."
    )
    ref_prefix: str = setting("INC", help="Prefix of incident references (INC-42).")
    timezone: str = setting("UTC", help="Time zone for display and business-hours calendars.")
    data_dir: str = setting("var", help="Folder for the SQLite database and other local state.")
    log_level: str = setting("info", help="Log level.", choices=("debug", "info", "warning", "error"))
    log_repeat_window: timedelta = setting(
        timedelta(minutes=1),
        help="An identical warning or error is logged once per this window, then with a count of its repeats.",
    )


@dataclass(frozen=True)
class DatabaseSection:
    url: str = setting(
        "sqlite:///var/inlet.db",
        help="sqlite:///path (embedded default) or postgresql://user@host:5432/db (to scale out).",
    )
    password_env: str = setting("", help="Environment variable holding the database password, if any.")
    pool_size: int = setting(10, help="PostgreSQL connection pool size per process.", minimum=1)
    busy_timeout: timedelta = setting(timedelta(seconds=10), help="How long SQLite waits for its write lock.")


@dataclass(frozen=True)
class WebSection:
    host: str = setting("127.0.0.1", help="Address the web UI and webhooks listen on (loopback unless you mean it).")
    port: int = setting(8025, help="Port of the web UI and webhooks.", minimum=0)
    threads: int = setting(8, help="WSGI worker threads.", minimum=1)
    processes: int = setting(
        1,
        help="Web server processes of `inlet serve`, sharing the port (SO_REUSEPORT, Linux: the kernel spreads "
        "connections); over 1, SMTP runs in a process of its own and the port must be fixed (not 0).",
        minimum=1,
    )
    secret_key_env: str = setting(
        "INLET_SECRET_KEY",
        help="Environment variable holding the session signing key (else one is generated in data_dir).",
    )
    secure_cookies: bool = setting(False, help="Mark cookies Secure (set true when served behind TLS).")
    max_body_size: int = setting(1_048_576, help="Largest accepted request body in bytes.", minimum=1)
    security_group: str = setting(
        "security", help="Group whose members (with admins) alone see security incidents; no such group: admins only."
    )
    login_attempts: int = setting(
        5, help="Failed logins allowed per address and per user name in login_window.", minimum=1
    )
    login_window: timedelta = setting(timedelta(minutes=5), help="Window of the login rate limit.")
    connection_limit: int = setting(
        1000, help="Most open HTTP connections; further clients wait in the listen queue.", minimum=1
    )
    idle_timeout: timedelta = setting(
        timedelta(seconds=60), help="A keep-alive connection idle this long between requests is closed."
    )
    request_timeout: timedelta = setting(
        timedelta(seconds=30), help="Longest one request (headers and body) may take to arrive; then closed."
    )
    drain_timeout: timedelta = setting(
        timedelta(seconds=10), help="On stop (SIGTERM): how long requests in progress may take to finish."
    )
    trusted_proxy: str = setting(
        "",
        help="Address of the reverse proxy whose X-Forwarded-For / X-Forwarded-Proto name the client "
        '("*" trusts any peer); empty: the peer address is the client and forwarding headers are dropped.',
    )
    reporter_link_key_env: str = setting(
        "INLET_REPORTER_LINK_KEY",
        help="Environment variable holding the key that signs the reporter links in mail (else generated in data_dir).",
    )
    reporter_link_lifetime: timedelta = setting(
        timedelta(days=30), help="How long the link in a reporter's mail opens their incident's page."
    )
    reporter_agent_name: str = setting(
        "", help="How the reporter's page names the agents who wrote (empty: the [inlet] name)."
    )
    queue_refresh: timedelta = setting(
        timedelta(seconds=10),
        help="How often an open queue page fetches its rows again and counts what is new (0s: never).",
    )


@dataclass(frozen=True)
class ServeSection:
    """How ``inlet serve`` runs its roles: one supervisor, a process per role (DESIGN.md §6)."""

    workers: int = setting(1, help="Pipeline worker processes (each processes one Inbound at a time).", minimum=1)
    step_time_limit: timedelta = setting(
        timedelta(seconds=30),
        help="Longest a worker may spend on one Inbound; over it the worker is stopped and the attempt counted.",
    )
    max_attempts: int = setting(
        3,
        help="Attempts at an Inbound (an exception, a crash, a time limit) before it is quarantined as failed.",
        minimum=1,
    )
    restart_backoff: timedelta = setting(
        timedelta(seconds=1), help="First wait before restarting a role process that died; doubles per quick death."
    )
    restart_backoff_max: timedelta = setting(timedelta(minutes=1), help="Longest wait before a restart.")
    shutdown_timeout: timedelta = setting(
        timedelta(seconds=20), help="How long role processes get to stop on SIGTERM before they are killed."
    )
    poll_interval: timedelta = setting(
        timedelta(seconds=1), help="How often idle roles look for work when no wakeup came (the fallback)."
    )
    refusals_flush_interval: timedelta = setting(
        timedelta(seconds=5),
        help="How often a listener process adds the inputs it refused to the store's counts (one short write, "
        "none when nothing was refused).",
    )


@dataclass(frozen=True)
class EscalationStep:
    after: timedelta = setting(help="Delay from the trigger (opened for 'unacknowledged', SLA start for the others).")
    when: str = setting(
        "unacknowledged",
        help="Condition that must still hold when the step fires.",
        choices=("unacknowledged", "unresolved", "resolve_sla_warning", "resolve_sla_breach"),
    )
    notify: list[str] = setting(
        factory=list, help="Apprise URLs or tags (contacts, group channels) to page; 'schedule:NAME': who is on call."
    )
    flag: bool = setting(False, help="Raise the escalated flag on the incident.")
    managers: bool = setting(False, help="Also page the group's managers (hierarchical escalation).")


@dataclass(frozen=True)
class EscalationPolicy:
    name: str = setting(help="Name that groups refer to.")
    steps: list[EscalationStep] = setting(factory=list, help="Steps, each fired at most once per incident.")


@dataclass(frozen=True)
class Group:
    name: str = setting(help="Resolver group name (unique).")
    description: str = setting("", help="What this group handles.")
    email: str = setting("", help="Address of the group, for people.")
    channels: list[str] = setting(factory=list, help="Apprise URLs the group is notified on.")
    members: list[str] = setting(factory=list, help="User names of the group's agents.")
    escalation: str = setting("", help="Name of the [[escalation]] policy for this group's incidents.")
    calendar: str = setting("", help="Name of the [[calendar]] of the group's working hours (empty: 24×7).")
    escalation_by_priority: dict[str, str] = setting(
        factory=dict, help="Priority -> [[escalation]] policy name, overriding 'escalation' for that priority."
    )
    managers: list[str] = setting(
        factory=list, help="Apprise URLs or tags of the group's management (hierarchical escalation)."
    )
    assign: str = setting(
        "",
        help="Assign new incidents to a member: round-robin, least-loaded, or empty (the group only).",
        choices=("", "round-robin", "least-loaded"),
    )

    def urls(self) -> list[str]:
        """The channels that are addresses, without the ``schedule:NAME`` ones (resolved when a row is written)."""
        return [c for c in self.channels if not c.startswith(SCHEDULE_PREFIX)]


@dataclass(frozen=True)
class RuleTest:
    """One [[rule_test]]: an input and what the rules should make of it (gateway/explain.py runs it)."""

    name: str = setting("", help="What the case shows (printed when it fails).")
    input: str = setting("", help="An .eml or webhook JSON file, relative to the configuration file.")
    subject: str = setting("", help="Inline input: the subject (when no 'input' file is given).")
    body: str = setting("", help="Inline input: the body text.")
    sender: str = setting("", help="Inline input: the reporter's address.")
    recipient: str = setting("", help="The address the input came to.")
    source: str = setting("email", help="Inline input: the signal's source (email, alertmanager, …, manual).")
    integration: str = setting("", help="The webhook integration name the input came through.")
    labels: dict[str, str] = setting(factory=dict, help="Inline input: labels.")
    category: str | None = setting(None, help="Expected category ('' for none).")
    service: str | None = setting(None, help="Expected service.")
    impact: str | None = setting(None, help="Expected impact.")
    urgency: str | None = setting(None, help="Expected urgency.")
    priority: str | None = setting(None, help="Expected priority (P1..P5).")
    group: str | None = setting(None, help="Expected group.")
    procedure: str | None = setting(None, help="Expected procedure (major, security, standard, low-impact).")


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``path`` is the file it came from."""

    inlet: InletSection = setting(factory=InletSection, help="General settings.")
    database: DatabaseSection = setting(factory=DatabaseSection, help="Where incidents are stored.")
    web: WebSection = setting(factory=WebSection, help="Web UI, REST API and webhooks.")
    serve: ServeSection = setting(factory=ServeSection, help="Role processes of `inlet serve`.")
    fallback_group: str = setting("service-desk", help="Group that gets what no rule allocates.")
    group: list[Group] = setting(factory=list, help="Resolver groups.")
    escalation: list[EscalationPolicy] = setting(factory=list, help="Escalation policies.")
    schedule: list[Schedule] = setting(factory=list, help="On-call schedules ('schedule:NAME' targets).")
    rule: list[Rule] = setting(factory=list, help="Classification rules, evaluated in file order.")
    sla: SlaSection = setting(factory=SlaSection, help="Priority matrix and SLA targets.")
    calendar: list[Calendar] = setting(factory=list, help="Business-hours calendars that groups refer to.")
    procedures: ProceduresSection = setting(
        factory=ProceduresSection, help="Major, security and low-impact procedures."
    )
    rule_test: list[RuleTest] = setting(factory=list, help="Rule tests that `inlet check` runs.")
    notifications: NotificationsSection = setting(factory=NotificationsSection, help="Outbox delivery and email.")
    stakeholder: list[Stakeholder] = setting(factory=list, help="Stakeholder subscriptions.")
    integration: list[Integration] = setting(factory=list, help="Webhook integrations: POST /hooks/<name>.")
    maintenance: list[Maintenance] = setting(factory=list, help="Maintenance windows: matching alerts page nobody.")
    heartbeat: list[Heartbeat] = setting(
        factory=list, help="Heartbeats: a source that goes silent opens one incident, resolved when it beats again."
    )
    smtp: SmtpSection = setting(factory=SmtpSection, help="The SMTP server that receives mail.")
    mail: MailSection = setting(factory=MailSection, help="Mail rules: loops, threading, throttle.")
    address: list[Address] = setting(factory=list, help="Addresses Inlet accepts mail for, with their defaults.")
    mailbox: list[Mailbox] = setting(factory=list, help="IMAP mailboxes Inlet polls.")
    mail_alert: list[MailAlert] = setting(
        factory=list, help="Alert e-mails of monitoring tools: they open and resolve incidents as webhook alerts do."
    )
    retention: RetentionSection = setting(
        factory=RetentionSection, help="Raw inputs and attachments of closed incidents."
    )
    report: list[ScheduledReport] = setting(factory=list, help="Scheduled reports, sent by the timers role.")
    path: str = field(default="", metadata={"internal": True})

    def group_named(self, name: str) -> Group | None:
        return next((g for g in self.group if g.name == name), None)

    def calendar_named(self, name: str) -> Calendar | None:
        return next((c for c in self.calendar if c.name == name), None)

    def policy_named(self, name: str) -> EscalationPolicy | None:
        return next((p for p in self.escalation if p.name == name), None)

    @functools.cached_property
    def ruleset(self) -> RuleSet:
        """The rules compiled once (regexes, keyword index); validated at load."""
        return compile_rules(self.rule)


# ---------------------------------------------------------------- loading


def default_config_path(explicit: str | None = None) -> Path:
    """``-c`` if given, else ``$INLET_CONFIG``, else ``./config.toml``, else ``config.example.toml``."""
    if explicit:
        return Path(explicit)
    if os.environ.get("INLET_CONFIG"):
        return Path(os.environ["INLET_CONFIG"])
    if Path("config.toml").exists():
        return Path("config.toml")
    return Path("config.example.toml")


def load_config(path: str | os.PathLike) -> Config:
    """Read, convert and validate a configuration file; raise ConfigError naming file and key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {_locate(exc, raw.decode('utf-8'))}") from None
    return anchored(config_from_dict(data, str(path)), path.resolve().parent)


def anchored(config: Config, folder: Path) -> Config:
    """Relative paths in a configuration file are relative to that file's folder (data_dir, a SQLite
    database, templates_dir, the TLS files, a mailbox's password_file), so a command run from elsewhere never
    makes a stray database."""

    def at(value: str) -> str:
        return value if not value or Path(value).is_absolute() else str(folder / value)

    url = config.database.url
    if url.startswith("sqlite:///") and ":memory:" not in url:
        url = "sqlite:///" + at(url[len("sqlite:///") :])
    return dataclasses.replace(
        config,
        inlet=dataclasses.replace(config.inlet, data_dir=at(config.inlet.data_dir)),
        database=dataclasses.replace(config.database, url=url),
        notifications=dataclasses.replace(config.notifications, templates_dir=at(config.notifications.templates_dir)),
        smtp=dataclasses.replace(config.smtp, tls_cert=at(config.smtp.tls_cert), tls_key=at(config.smtp.tls_key)),
        mailbox=[dataclasses.replace(box, password_file=at(box.password_file)) for box in config.mailbox],
    )


def _locate(exc: tomllib.TOMLDecodeError, text: str) -> str:
    """The parser's message with the line number and the offending line's text."""
    message = str(exc)
    lines = text.splitlines()
    match = re.search(r"at line (\d+)", message)
    number = int(match.group(1)) if match else len(lines)
    if not match:
        message = message.replace("(at end of document)", f"(at end of document, line {number})")
    if 0 < number <= len(lines):
        message += f": {lines[number - 1].strip()[:80]}"
    return message


def config_from_dict(data: dict, path: str = "<config>") -> Config:
    """Convert a parsed TOML document into a validated :class:`Config`."""
    try:
        config = convert(Config, data, ())
        config = dataclasses.replace(config, path=path)
        _check_references(config)
    except KeyProblem as exc:
        raise ConfigError(f"{path}: {exc.where()}: {exc.problem}") from None
    return config


def _check_references(config: Config) -> None:
    for key in ("idle_timeout", "request_timeout", "drain_timeout"):
        if getattr(config.web, key) <= timedelta(0):
            raise KeyProblem(("[web]", key), "must be longer than 0s")
    if config.web.queue_refresh < timedelta(0):
        raise KeyProblem(("[web]", "queue_refresh"), "must be 0s (never) or longer")
    groups = {g.name for g in config.group}
    policies = {p.name for p in config.escalation}
    if config.fallback_group not in groups:
        raise KeyProblem(("fallback_group",), f"no [[group]] named {config.fallback_group!r}")
    for g in config.group:
        if g.escalation and g.escalation not in policies:
            raise KeyProblem((f"[[group]] {g.name!r}", "escalation"), f"no [[escalation]] named {g.escalation!r}")
        for prio, name in g.escalation_by_priority.items():
            trail = (f"[[group]] {g.name!r}", "escalation_by_priority", prio)
            if prio not in config.sla.targets:
                raise KeyProblem(trail, f"unknown priority {prio!r}: use one of {', '.join(config.sla.targets)}")
            if name not in policies:
                raise KeyProblem(trail, f"no [[escalation]] named {name!r}")
    for p in config.escalation:
        for i, step in enumerate(p.steps):
            if not step.notify and not step.flag and not step.managers:
                raise KeyProblem(
                    (f"[[escalation]] {p.name!r}", f"steps[{i}]"),
                    "a step needs a target in 'notify' (or managers = true, or flag = true)",
                )
    for r in config.rule:
        if r.group and r.group not in groups:
            raise KeyProblem((f"[[rule]] {r.name!r}", "group"), f"no [[group]] named {r.group!r}")
    check_sla(config.sla, config.calendar)
    calendars = {c.name for c in config.calendar}
    for g in config.group:
        if g.calendar and g.calendar not in calendars:
            raise KeyProblem((f"[[group]] {g.name!r}", "calendar"), f"no [[calendar]] named {g.calendar!r}")
    check_procedures(config)
    for i, t in enumerate(config.rule_test):
        if t.group and t.group not in groups:
            raise KeyProblem((f"[[rule_test]] {t.name or i!r}", "group"), f"no [[group]] named {t.group!r}")
    check_notifications(config)
    check_integrations(config)
    check_mail(config)
    check_mail_alerts(config)
    check_heartbeats(config)
    check_schedules(config)
    check_reports(config)
    config.ruleset  # noqa: B018 -- compiles the rules now, so a bad regex is a load error
