"""The ``inlet`` command line.

Every command takes ``-c/--config`` (default: ``$INLET_CONFIG``, then
``./config.toml``, then ``config.example.toml``). A user mistake prints one
line on stderr and exits non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import sys

import peewee

from gateway import __version__
from gateway.cli import account_commands as cli_accounts
from gateway.cli.common import _lifecycle, _load, _open_store
from gateway.cli.log_repeats import unlimit_repeats
from gateway.config.loader import Config, default_config_path, load_config
from gateway.core.errors import Conflict, InletError, NotFound, StoreUnavailable
from gateway.core.private_files import restrict_umask, too_open
from parsers.presets import PRESETS

EXIT_ERROR = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage mistakes: one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="configuration file (default: $INLET_CONFIG, ./config.toml, then config.example.toml)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="inlet", description="Inlet: incident intake gateway.")
    parser.add_argument("--version", action="version", version=f"inlet {__version__}")
    _config_option(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name, help, parent=commands, **kwargs):
        sub = parent.add_parser(name, help=help, description=help, **kwargs)
        _config_option(sub)
        return sub

    serve = command("serve", "Run intake, web UI, workers and timers until SIGINT/SIGTERM.")
    serve.add_argument(
        "--only", metavar="ROLES", help="comma-separated roles (default: all): web, smtp, imap, worker, timers, notify"
    )
    # internal: run the roles in this process, as a role process of the supervisor reporting on this fd
    serve.add_argument("--child", metavar="FD", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    check = command("check", "Validate a configuration file and run its rule tests.")
    check.add_argument("path", nargs="?", metavar="CONFIG", help="the file to check (default: as -c)")
    check.set_defaults(func=cmd_check)

    reload = command("reload", "Validate the configuration, then tell the running 'inlet serve' to reload it.")
    reload.add_argument("--pid", type=int, help="process id (default: from inlet.pid in inlet.data_dir)")
    reload.set_defaults(func=cmd_reload)

    demo = command("demo", "Send realistic emails and alerts through the SMTP and webhook intake of a running Inlet.")
    demo.set_defaults(func=cmd_demo)

    drill = command("drill", "Inject a marked synthetic incident into the running instance and follow it.")
    drill.add_argument("--procedure", choices=("major", "security", "standard"), default="standard")
    drill.add_argument("--group", help="group to allocate the drill incident to (default: the fallback group)")
    drill.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each step (default 30)")
    drill.add_argument("--keep", action="store_true", help="keep the drill incident instead of removing it")
    drill.set_defaults(func=cmd_drill)

    classify = command("classify", "Explain what the rules decide for an .eml or webhook JSON file (- for stdin).")
    classify.add_argument("file", metavar="FILE", help="the input file, or - to read stdin")
    classify.add_argument(
        "--kind",
        choices=("email", "json", "alertmanager", "grafana", "pagerduty", "generic", "sns", *PRESETS),
        help="input format",
    )
    classify.add_argument("--recipient", help="the address the input came to")
    classify.add_argument("--integration", help="the webhook integration it came through")
    classify.add_argument("--json", action="store_true", help="print one JSON object per signal")
    classify.set_defaults(func=cmd_classify)

    on_call = command("oncall", "Who is on call now and next, per schedule (or for one group or schedule).")
    on_call.add_argument("group", nargs="?", metavar="GROUP", help="a group or schedule name (default: every schedule)")
    on_call.add_argument("--at", metavar="TIME", help="ISO 8601 time (no offset: the schedule's zone; default: now)")
    on_call.add_argument("--json", action="store_true", help="print a JSON list")
    on_call.set_defaults(func=cmd_oncall)

    database = command("db", "Database schema.")
    db_commands = database.add_subparsers(dest="db_command", metavar="ACTION", parser_class=_Parser)
    db_commands.required = True
    command("upgrade", "Create or upgrade the schema (idempotent).", db_commands).set_defaults(func=cmd_db_upgrade)
    command("status", "Print the schema version.", db_commands).set_defaults(func=cmd_db_status)
    backup = command(
        "backup", "Copy the SQLite database to PATH, safe while serving (PostgreSQL: pg_dump).", db_commands
    )
    backup.add_argument("path", metavar="PATH", help="the backup file to write (refused if it exists)")
    backup.set_defaults(func=cmd_db_backup)

    user = command("user", "Users of the web UI and API.")
    user_commands = user.add_subparsers(dest="user_command", metavar="ACTION", parser_class=_Parser)
    user_commands.required = True
    add = command("add", "Create a user; prints a generated password unless --password-env is set.", user_commands)
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("admin", "agent", "viewer"))
    add.add_argument("--email", default="")
    add.add_argument("--password-env", metavar="VAR", help="take the password from this environment variable")
    add.set_defaults(func=cmd_user_add)
    boot = command(
        "bootstrap",
        "Create user 'admin' if there is no admin yet (password from $INLET_ADMIN_PASSWORD, else generated).",
        user_commands,
    )
    boot.set_defaults(func=cmd_user_bootstrap)
    command("list", "List users.", user_commands).set_defaults(func=cmd_user_list)
    cli_accounts.add_user_commands(command, user_commands)  # passwd, disable, enable, role, show
    token = command("token", "Issue a new API token for a user (replaces the old one; printed once).", user_commands)
    token.add_argument("name")
    token.set_defaults(func=cmd_user_token)
    chan = command(
        "channels",
        "Show (masked) or set a user's own paging channels: Apprise URLs paged besides their email when on call.",
        user_commands,
    )
    chan.add_argument("name")
    chan.add_argument("urls", nargs="*", metavar="URL", help="the new channels (they replace the old ones)")
    chan.add_argument("--clear", action="store_true", help="remove all of the user's channels")
    chan.set_defaults(func=cmd_user_channels)

    heartbeat = command("heartbeat", "Heartbeats: sources whose silence opens an incident.")
    heartbeat_commands = heartbeat.add_subparsers(dest="heartbeat_command", metavar="ACTION", parser_class=_Parser)
    heartbeat_commands.required = True
    beats = command("list", "List heartbeats: state, last beat, next due.", heartbeat_commands)
    beats.add_argument("--json", action="store_true", help="print a JSON array (the shape of /api/heartbeats)")
    beats.set_defaults(func=cmd_heartbeat_list)

    incident = command("incident", "Incidents.")
    incident_commands = incident.add_subparsers(dest="incident_command", metavar="ACTION", parser_class=_Parser)
    incident_commands.required = True
    create = command("create", "Register an incident by hand.", incident_commands)
    create.add_argument("--title", required=True)
    create.add_argument("--description", default="")
    create.add_argument("--impact", choices=("high", "medium", "low"), default="medium")
    create.add_argument("--urgency", choices=("high", "medium", "low"), default="medium")
    create.add_argument("--reporter", metavar="EMAIL", help="reporter's email address")
    create.add_argument("--category", default="")
    create.add_argument("--group", help="resolver group (default: the fallback group)")
    create.add_argument("--json", action="store_true", help="print the incident as JSON")
    create.set_defaults(func=cmd_incident_create)
    listing = command("list", "List incidents, newest first.", incident_commands)
    listing.add_argument("--status", action="append", help="only this status (repeatable)")
    listing.add_argument(
        "--search",
        metavar="TEXT",
        help='full-text search, best match first: words, "a phrase", from:, group:, status:, label:KEY=VALUE',
    )
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="print a JSON array (the documented shape)")
    listing.set_defaults(func=cmd_incident_list)
    show = command("show", "Show one incident with its timeline.", incident_commands)
    show.add_argument("ref")
    show.add_argument("--json", action="store_true", help="print one JSON object with 'events'")
    show.set_defaults(func=cmd_incident_show)
    escalate = command("escalate", "Escalate an incident: to another group or to management.", incident_commands)
    escalate.add_argument("ref")
    escalate.add_argument("--to", choices=("group", "management"), required=True, help="functional or hierarchical")
    escalate.add_argument("--group", help="the group to escalate to (with --to group)")
    escalate.add_argument("--reason", required=True)
    escalate.set_defaults(func=cmd_incident_escalate)
    cli_accounts.add_incident_assign(command, incident_commands)
    cli_accounts.add_group_commands(command, commands)

    notify = command("notify", "Notifications.")
    notify_commands = notify.add_subparsers(dest="notify_command", metavar="ACTION", parser_class=_Parser)
    notify_commands.required = True
    notify_test = command(
        "test",
        "Send a test message to an Apprise URL, an email:ADDRESS, or a configured group or stakeholder; "
        "print the outcome per URL (exit 1 if any failed).",
        notify_commands,
    )
    notify_test.add_argument("target", metavar="TARGET")
    notify_test.set_defaults(func=cmd_notify_test)

    importing = command("import", "Import an mbox file, a Maildir or a folder of .eml files (idempotent).")
    importing.add_argument("path", metavar="PATH")
    importing.set_defaults(func=cmd_import)

    inbound = command("inbound", "Received inputs (emails, webhook requests) and what became of them.")
    inbound_commands = inbound.add_subparsers(dest="inbound_command", metavar="ACTION", parser_class=_Parser)
    inbound_commands.required = True
    inbound_show = command("show", "Show one input: status, class, every decision, raw headers.", inbound_commands)
    inbound_show.add_argument("id", type=int)
    inbound_show.add_argument("--json", action="store_true", help="print one JSON object")
    inbound_show.set_defaults(func=cmd_inbound_show)
    _report_command(command)
    return parser


# ------------------------------------------------------------ helpers


# ------------------------------------------------------------ commands


def cmd_serve(args) -> int:
    from gateway.core.descriptors import raise_open_files_limit
    from gateway.service import ROLES, Service
    from gateway.supervisor import Supervisor

    raise_open_files_limit()  # at start, before any file or socket is opened (gateway/core/descriptors.py)
    config = _load(args)
    roles = {r.strip() for r in args.only.split(",") if r.strip()} if args.only else set(ROLES)
    unknown = roles - set(ROLES)
    if unknown:
        raise InletError(f"--only: unknown role {', '.join(sorted(unknown))}; roles are {', '.join(ROLES)}")
    if args.child is not None:  # one role process of the supervisor
        Service(config, roles=roles, status_fd=args.child).run_until_signalled()
        return 0
    _open_store(config).close()  # a store that is away or not upgraded: say so here, once, not per role process
    from gateway.preflight import ports_in_use

    for port in ports_in_use(config, roles):  # one line, not a role process's traceback per restart
        raise InletError(f"port {port} is in use — is Inlet already running?")
    return Supervisor(config, roles).run()


def cmd_check(args) -> int:

    path = args.path or default_config_path(getattr(args, "config", None))
    from gateway.explain import run_rule_tests
    from gateway.preflight import review

    config = load_config(path)
    refusals, warnings = review(config)
    for warning in config.ruleset.warnings + _open_files(config) + warnings:
        print(f"{path}: warning: {warning}", file=sys.stderr)
    failures = run_rule_tests(config)
    for failure in refusals + failures:
        print(f"{path}: {failure}", file=sys.stderr)
    if failures:
        print(f"{path}: {len(failures)} of {len(config.rule_test)} rule tests failed", file=sys.stderr)
    if failures or refusals:
        return EXIT_ERROR
    print(
        f"{path}: OK ({len(config.group)} groups, {len(config.escalation)} escalation policies, "
        f"{len(config.rule)} rules, {len(config.rule_test)} rule tests passed)"
    )
    return 0


def _open_files(config: Config) -> list[str]:
    """Local state that other users of the machine may read: the data folder, its files, the SQLite files."""
    from pathlib import Path

    from store.db import sqlite_files

    data = Path(config.inlet.data_dir)
    try:
        inside = sorted(p for p in data.iterdir() if p.is_file())
    except OSError:
        inside = []
    return too_open([data, *inside, *sqlite_files(config.database.url)])


def cmd_reload(args) -> int:
    import os
    import signal
    from pathlib import Path

    from gateway.service import PID_FILE

    config = _load(args)  # a bad file fails here, and the running process is not disturbed
    pid = args.pid
    if pid is None:
        pid_file = Path(config.inlet.data_dir) / PID_FILE
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            raise InletError(f"no running inlet found ({pid_file} missing or unreadable); use --pid") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise InletError(f"no process {pid}: is 'inlet serve' running?") from None
    except PermissionError:
        raise InletError(f"not allowed to signal process {pid}") from None
    print(f"{config.path}: OK; asked process {pid} to reload it")
    return 0


def cmd_demo(args) -> int:
    from gateway.cli.demo import run_demo

    run_demo(_load(args))
    return 0


def cmd_drill(args) -> int:
    from gateway.cli.run_drill import run_drill

    config = _load(args)
    _open_store(config)
    if args.group and config.group_named(args.group) is None:
        raise NotFound(f"no group {args.group!r} in {config.path}")
    results = run_drill(config, procedure=args.procedure, group=args.group, timeout=args.timeout, keep=args.keep)
    return 0 if results and all(r.ok for r in results) else EXIT_ERROR


def cmd_classify(args) -> int:
    from gateway.core.errors import ParseError
    from gateway.explain import explain, format_explanation, read_signals

    config = _load(args)
    if args.file == "-":
        raw = sys.stdin.buffer.read()
    else:
        try:
            with open(args.file, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            raise InletError(f"{args.file}: cannot read: {exc.strerror}") from None
    try:
        kind, signals = read_signals(raw, args.kind)
    except ParseError as exc:
        raise InletError(f"{args.file}: {exc}") from None
    results = [
        {"format": kind, **explain(config, s, recipient=args.recipient, integration=args.integration)} for s in signals
    ]
    if args.json:
        _print_json(results if len(results) != 1 else results[0])
    else:
        print("\n\n".join(format_explanation(r) for r in results) or "no signals in the input")
    return 0


def cmd_oncall(args) -> int:
    from datetime import UTC, datetime

    from gateway import schedules as oncall

    config = _load(args)
    names = [args.group] if args.group else [s.name for s in config.schedule]
    schedules = [oncall.schedule_for(config, name) for name in names]  # NotFound before the store opens
    _open_store(config)
    summaries = []
    for schedule in schedules:
        at = oncall.parse_time(args.at, schedule.zone) if args.at else datetime.now(UTC)
        summaries.append(oncall.summary(config, schedule.name, at))
    if args.json:
        _print_json(summaries)
        return 0
    for schedule, entry in zip(schedules, summaries, strict=True):
        now, upcoming = entry["now"], entry["next"]
        group = f"group {schedule.group}, " if schedule.group else ""
        print(f"{schedule.name} ({group}{schedule.timezone}) at {entry['at']}")
        print(f"  now:  {now['user']} ({now['source']})" if now else "  now:  nobody")
        if upcoming:
            local = datetime.fromisoformat(upcoming["from"].replace("Z", "+00:00")).astimezone(schedule.zone)
            print(f"  next: {upcoming['user'] or 'nobody'} from {local:%Y-%m-%d %H:%M %Z} ({upcoming['from']})")
        else:
            print("  next: no change in sight")
    return 0


def cmd_db_upgrade(args) -> int:
    from store.db import describe
    from store.migrations import LATEST, upgrade

    config = _load(args)
    database = _open_store(config, require_schema=False)
    applied = upgrade()
    for version, description in applied:
        print(f"applied {version}: {description}")
    from gateway.service import seed_members

    seed_members(config)  # [[group]] members into the database, the one source of membership
    from datetime import UTC, datetime

    from gateway.reports import rollup

    if rollup.state() is None:  # a new rollup (migration 10): built once, in the configured time zone
        days = rollup.rebuild(config.inlet.timezone, datetime.now(UTC))
        print(f"report rollup built: {days} days ({config.inlet.timezone})")
    print(f"{describe(database)}: schema at version {LATEST}")
    return 0


def cmd_db_status(args) -> int:
    from store.db import db, describe
    from store.migrations import LATEST, current_version

    database = _open_store(_load(args), require_schema=False)
    with db.connection_context():
        version = current_version()
    state = "up to date" if version == LATEST else f"needs 'inlet db upgrade' to {LATEST}"
    print(f"{describe(database)}: schema version {version} ({state})")
    return 0 if version == LATEST else EXIT_ERROR


def cmd_db_backup(args) -> int:
    """SQLite's online backup API: a consistent copy of the committed state while writers go on (WAL)."""
    import sqlite3
    from pathlib import Path

    from gateway.core.private_files import create_private_file
    from store.db import describe, is_postgres

    database = _open_store(_load(args), require_schema=False)
    if is_postgres(database):
        raise InletError(f"{describe(database)}: back up PostgreSQL with pg_dump (README, Operations)")
    target = Path(args.path)
    if target.exists():
        raise InletError(f"{target}: already exists; name a new file")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    create_private_file(partial)  # 0600: the backup holds everything the database does
    try:
        source = contextlib.closing(sqlite3.connect(database.database, timeout=30))
        with source as live, contextlib.closing(sqlite3.connect(partial)) as copy:
            live.backup(copy)  # all pages in one step: one read snapshot, writers are not held up
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal to carry
            (check,) = copy.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise InletError(f"{target}: the copy failed its integrity check: {check}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    print(f"{describe(database)}: backed up to {target} ({target.stat().st_size} bytes)")
    return 0


def _password_from(args) -> tuple[str, bool]:
    """(password, generated): from the environment variable --password-env names, else a new random one."""
    import os

    password = os.environ.get(args.password_env) if args.password_env else None
    if args.password_env and not password:
        raise InletError(f"environment variable {args.password_env} is not set")
    return (password, False) if password is not None else (secrets.token_urlsafe(12), True)


def cmd_user_add(args) -> int:
    from gateway.accounts import create_user

    config = _load(args)
    _open_store(config)
    password, generated = _password_from(args)
    create_user(args.name, args.role, password, email=args.email)
    print(f"created {args.role} user {args.name!r}" + (f" with password: {password}" if generated else ""))
    return 0


def cmd_user_bootstrap(args) -> int:
    import os

    from gateway.accounts import create_user, has_admin

    config = _load(args)
    _open_store(config)
    if has_admin():
        print("an admin user exists already")
        return 0
    password = os.environ.get("INLET_ADMIN_PASSWORD")
    generated = not password
    password = password or secrets.token_urlsafe(12)
    create_user("admin", "admin", password)
    if generated:
        print(f"created user 'admin' with password: {password}  (shown once; set INLET_ADMIN_PASSWORD to choose it)")
    else:
        print("created user 'admin' with the password from INLET_ADMIN_PASSWORD")
    return 0


def cmd_user_list(args) -> int:
    from store.models import User

    _open_store(_load(args))
    for user in User.select().order_by(User.name):
        print(f"{user.name}\t{user.role}\t{'active' if user.active else 'disabled'}\t{user.email}")
    return 0


def cmd_user_token(args) -> int:
    from gateway.accounts import issue_api_token

    _open_store(_load(args))
    print(issue_api_token(args.name))
    return 0


def cmd_user_channels(args) -> int:
    from gateway.accounts import set_channels
    from notifiers.apprise_adapter import masked
    from store.models import User

    _open_store(_load(args))
    if args.clear and args.urls:
        raise InletError("give URLs or --clear, not both")
    if args.clear or args.urls:
        user = set_channels(args.name, args.urls)
    else:
        user = User.get_or_none(User.name == args.name)
        if user is None:
            raise NotFound(f"no user {args.name!r}")
    print(f"{user.name}: {len(user.channels)} channel(s)" + "".join(f"\n  {masked(c)}" for c in user.channels))
    return 0


def cmd_incident_create(args) -> int:
    from store.documents import incident_document

    config = _load(args)
    _open_store(config)
    lifecycle = _lifecycle(config)
    group = args.group or config.fallback_group
    if config.group_named(group) is None:
        raise NotFound(f"no group {group!r} in {config.path}")
    incident = lifecycle.create(
        title=args.title,
        description=args.description,
        impact=args.impact,
        urgency=args.urgency,
        reporter_email=args.reporter,
        category=args.category,
        group=group,
        actor="cli",
    )
    if args.json:
        _print_json(incident_document(incident))
    else:
        print(f"{incident.ref}\t{incident.priority}\t{incident.group}\t{incident.title}")
    return 0


def cmd_incident_list(args) -> int:
    from store.documents import incident_document
    from store.models import STATUSES, Incident

    _open_store(_load(args))
    for status in args.status or ():
        if status not in STATUSES:
            raise InletError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    query = Incident.select().order_by(Incident.number.desc()).limit(args.limit)
    if args.search is not None:
        from store import search

        found = search.parse(args.search)  # BadSearch is an InletError: one line, exit 1
        query = search.restrict(Incident.select(), found, ranked=True).limit(args.limit)
        if found.statuses:
            query = query.where(Incident.status.in_(found.statuses))
    if args.status:
        query = query.where(Incident.status.in_(args.status))
    incidents = list(query)
    if args.json:
        _print_json([incident_document(i) for i in incidents])
        return 0
    for i in incidents:
        print(f"{i.ref}\t{i.status}\t{i.priority}\t{i.group or '-'}\t{i.title}")
    return 0


def cmd_heartbeat_list(args) -> int:
    from datetime import UTC, datetime

    from gateway.incidents.heartbeats import statuses
    from notifiers.words import moment

    config = _load(args)
    _open_store(config)
    found = statuses(config, datetime.now(UTC))
    if args.json:
        _print_json([s.document() for s in found])
        return 0
    if not found:
        print("no heartbeats: add [[heartbeat]] entries, or silent_after to a [[mailbox]]")
    for s in found:
        last = moment(s.last_beat_at) if s.last_beat_at else "never"
        print(f"{s.name}\t{s.state}\tlast beat {last}\tnext due {moment(s.due_at)}")
    return 0


def cmd_incident_show(args) -> int:
    from notifiers import words
    from store.documents import incident_document
    from store.models import Event

    config = _load(args)
    _open_store(config)
    incident = _lifecycle(config).get(args.ref)
    events = list(Event.select().where(Event.incident == incident).order_by(Event.at, Event.id))
    doc = incident_document(incident, events=events)
    if args.json:
        _print_json(doc)
        return 0
    print(f"{doc['ref']}  {doc['title']}")
    for key in ("status", "priority", "impact", "urgency", "category", "service", "group", "assignee", "reporter"):
        print(f"  {key:<10} {words.label(doc[key]) if key == 'status' else words.plain(doc[key])}")
    for key in ("opened_at", "acknowledged_at", "resolved_at", "closed_at", "respond_by", "resolve_by"):
        if doc[key]:
            print(f"  {key:<16} {doc[key]}")
    if doc["review"]:
        print(f"review by {doc['review'].get('by', '-')}: {doc['review'].get('cause', '')}")
        for a in doc["review"].get("actions", []):
            print(f"  {a.get('what', '')} — {a.get('owner', '')}" + (f" (due {a['due']})" if a.get("due") else ""))
    print("timeline:")
    for e in doc["events"]:
        field = e.get("field", "")
        change = f" {field}: {words.change(e['old'], field)} → {words.change(e['new'], field)}" if field else ""
        body = f" — {e['body']}" if e["body"] else ""
        print(f"  {e['at']}  {e['type']:<12} {e['actor']} ({e['visibility']}){change}{body}")
    return 0


def cmd_incident_escalate(args) -> int:
    config = _load(args)
    _open_store(config)
    kind = "functional" if args.to == "group" else "hierarchical"
    if kind == "functional" and not args.group:
        raise InletError("--to group needs --group NAME")
    incident = _lifecycle(config).escalate(args.ref, "cli", kind, args.reason, group=args.group)
    from gateway.incidents.escalation import last_outcome

    print(f"{incident.ref}\tescalated ({kind})\t{incident.group}\t{last_outcome(incident)}")
    return 0


def cmd_notify_test(args) -> int:
    from notifiers.delivery import send_test

    outcomes = send_test(_load(args), args.target)
    for outcome in outcomes:
        state = "OK" if outcome.ok else "FAILED"
        print(f"{state}\t{outcome.url}\t{outcome.elapsed:.2f}s" + (f"\t{outcome.detail}" if outcome.detail else ""))
    return 0 if all(o.ok for o in outcomes) else EXIT_ERROR


def cmd_import(args) -> int:
    from pathlib import Path

    from gateway.intake.mailbox_import import import_path, progress_bar
    from gateway.service import build_pipeline

    config = _load(args)
    _open_store(config)
    pipeline = build_pipeline(config, _lifecycle(config))
    counts = import_path(Path(args.path), pipeline, progress=progress_bar())
    total = sum(counts.values())
    print(
        f"imported {total} messages: {counts['created']} new incidents, {counts['updated']} updates, "
        f"{counts['ignored']} ignored, {counts['failed']} failed, {counts['duplicate']} already imported"
    )
    return 0


def cmd_inbound_show(args) -> int:
    from gateway.intake.inbound_view import inbound_document, print_inbound

    _open_store(_load(args))
    doc = inbound_document(args.id)
    if args.json:
        _print_json(doc)
    else:
        print_inbound(doc)
    return 0


# ------------------------------------------------------------ report (gateway/reports/figures.py)


def _report_command(command) -> None:
    report = command("report", "How incident management performed in a period: counts, MTTA/MTTR, SLA, backlog.")
    report.add_argument("--since", default="30d", help="30d, 12h, 2w, a date or an ISO time (default 30d)")
    report.add_argument("--until", default="now", help="as --since (default now)")
    report.add_argument("--tz", help="time zone of days and weeks (default inlet.timezone)")
    for name in ("group", "service", "category", "priority", "source", "procedure"):
        report.add_argument(f"--{name}", default="", help=f"only incidents of this {name}")
    report.add_argument("--format", choices=("text", "csv", "json", "html"), default="text")
    report.add_argument("--table", help="with --format csv: only this table")
    report.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of standard output")
    report.add_argument(
        "--rebuild", action="store_true", help="rebuild the report rollup (days of inlet.timezone) and exit"
    )
    report.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from gateway.core.clock import Clock
    from gateway.reports.figures import csv_tables, report, to_csv, to_text
    from gateway.reports.scope import scope_from

    config = _load(args)
    _open_store(config)
    now = Clock().now()
    if args.rebuild:
        from gateway.reports import rollup as report_rollup

        days = report_rollup.rebuild(config.inlet.timezone, now)
        print(f"report rollup rebuilt: {days} days of {config.inlet.timezone}")
        return 0
    scope = scope_from(vars(args), now=now, tz=config.inlet.timezone, security=True)
    result = report(scope, now=now, update_interval=config.procedures.major_reminder_interval)
    if args.format == "json":
        text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    elif args.format == "csv":
        tables = csv_tables(result)
        if args.table and args.table not in tables:
            raise InletError(f"no table {args.table!r}: one of {', '.join(tables)}")
        chosen = [args.table] if args.table else list(tables)
        text = "\n".join((f"# {name}\n" if not args.table else "") + to_csv(tables[name]) for name in chosen)
    elif args.format == "html":
        from web.reports import standalone_html

        text = standalone_html(result, title=f"{config.inlet.name} report")
    else:
        text = to_text(result)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _print_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    umask = restrict_umask()  # the database, its -wal/-shm, keys, pid file: owner-only whatever the caller's umask
    try:
        return args.func(args) or 0
    except (InletError, Conflict) as exc:
        print(f"inlet: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        print(f"inlet: error: {StoreUnavailable(f'database error: {exc}')}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `inlet incident list | head`
        sys.stderr.close()
        return 0
    finally:
        # main() called in-process (tests) leaves the caller's umask and log handlers as they were
        os.umask(umask)
        unlimit_repeats()


if __name__ == "__main__":
    sys.exit(main())
