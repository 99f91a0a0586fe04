"""The ``inlet`` command line.

Every command takes ``-c/--config`` (default: ``$INLET_CONFIG``, then
``./config.toml``, then ``config.example.toml``). A user mistake prints one
line on stderr and exits non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys

import peewee

from gateway import __version__
from gateway.config import Config, default_config_path, load_config
from gateway.errors import Conflict, InletError, NotFound, StoreUnavailable

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
    serve.add_argument("--only", metavar="ROLES", help="comma-separated roles to run (default: all): web")
    serve.set_defaults(func=cmd_serve)

    check = command("check", "Validate a configuration file and run its rule tests.")
    check.add_argument("path", nargs="?", metavar="CONFIG", help="the file to check (default: as -c)")
    check.set_defaults(func=cmd_check)

    database = command("db", "Database schema.")
    db_commands = database.add_subparsers(dest="db_command", metavar="ACTION", parser_class=_Parser)
    db_commands.required = True
    command("upgrade", "Create or upgrade the schema (idempotent).", db_commands).set_defaults(func=cmd_db_upgrade)
    command("status", "Print the schema version.", db_commands).set_defaults(func=cmd_db_status)

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
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="print a JSON array (the documented shape)")
    listing.set_defaults(func=cmd_incident_list)
    show = command("show", "Show one incident with its timeline.", incident_commands)
    show.add_argument("ref")
    show.add_argument("--json", action="store_true", help="print one JSON object with 'events'")
    show.set_defaults(func=cmd_incident_show)

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
    return parser


# ------------------------------------------------------------ helpers


def _load(args) -> Config:
    return load_config(default_config_path(getattr(args, "config", None)))


def _open_store(config: Config, *, require_schema: bool = True):
    from store.db import open_database
    from store.migrations import require_latest

    database = open_database(config)
    if require_schema:
        require_latest()
    return database


def _lifecycle(config: Config):
    from gateway.service import build_lifecycle

    return build_lifecycle(config)


# ------------------------------------------------------------ commands


def cmd_serve(args) -> int:
    from gateway.service import Service

    config = _load(args)
    roles = set(args.only.split(",")) if args.only else None
    service = Service(config, roles=roles)
    service.run_until_signalled()
    return 0


def cmd_check(args) -> int:
    from gateway.config import default_config_path

    path = args.path or default_config_path(getattr(args, "config", None))
    config = load_config(path)
    print(f"{path}: OK ({len(config.group)} groups, {len(config.escalation)} escalation policies)")
    return 0


def cmd_db_upgrade(args) -> int:
    from store.db import describe
    from store.migrations import LATEST, upgrade

    config = _load(args)
    database = _open_store(config, require_schema=False)
    applied = upgrade()
    for version, description in applied:
        print(f"applied {version}: {description}")
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


def cmd_user_add(args) -> int:
    import os

    from gateway.accounts import create_user

    config = _load(args)
    _open_store(config)
    password = os.environ.get(args.password_env) if args.password_env else None
    if args.password_env and not password:
        raise InletError(f"environment variable {args.password_env} is not set")
    generated = password is None
    password = password or secrets.token_urlsafe(12)
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
    if args.status:
        query = query.where(Incident.status.in_(args.status))
    incidents = list(query)
    if args.json:
        _print_json([incident_document(i) for i in incidents])
        return 0
    for i in incidents:
        print(f"{i.ref}\t{i.status}\t{i.priority}\t{i.group or '-'}\t{i.title}")
    return 0


def cmd_incident_show(args) -> int:
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
        print(f"  {key:<10} {doc[key] if doc[key] is not None else '-'}")
    for key in ("opened_at", "acknowledged_at", "resolved_at", "closed_at", "respond_by", "resolve_by"):
        if doc[key]:
            print(f"  {key:<16} {doc[key]}")
    print("timeline:")
    for e in doc["events"]:
        change = f" {e['field']}: {e['old']} → {e['new']}" if "field" in e else ""
        body = f" — {e['body']}" if e["body"] else ""
        print(f"  {e['at']}  {e['type']:<12} {e['actor']} ({e['visibility']}){change}{body}")
    return 0


def cmd_import(args) -> int:
    from pathlib import Path

    from gateway.mailbox_import import import_path, progress_bar
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
    from gateway.inbound_view import inbound_document, print_inbound

    _open_store(_load(args))
    doc = inbound_document(args.id)
    if args.json:
        _print_json(doc)
    else:
        print_inbound(doc)
    return 0


def _print_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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


if __name__ == "__main__":
    sys.exit(main())
