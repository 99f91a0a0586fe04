"""The ``inlet`` commands for accounts and teams: ``user passwd|disable|enable|role|show``, ``group
list|add-member|remove-member`` and ``incident assign`` (gateway/cli.py registers them).

Each change goes through gateway/accounts.py or gateway/membership.py, as the web UI's do, and is
written to the user's account log with the actor ``cli``. Membership lives in the database: a change
here counts for the running ``inlet serve`` at its next request, no reload needed.
"""

from __future__ import annotations

import getpass
import secrets
import sys

from gateway.cli.common import _lifecycle, _load, _open_store
from gateway.core.errors import InletError

ACTOR = "cli"


def add_user_commands(command, user_commands) -> None:
    """``user passwd`` (alias ``password``), ``disable``, ``enable``, ``role`` and ``show``."""
    passwd = command(
        "passwd",
        "Set a user's password: asked twice on a terminal, else the first line of stdin (scripts); "
        "--password-env or --generate instead. Ends every session of the user.",
        user_commands,
        aliases=["password"],
    )
    passwd.add_argument("name")
    source = passwd.add_mutually_exclusive_group()
    source.add_argument("--password-env", metavar="VAR", help="take the password from this environment variable")
    source.add_argument("--generate", action="store_true", help="generate a password and print it once")
    passwd.set_defaults(func=cmd_user_passwd)
    for name, active in (("disable", False), ("enable", True)):
        sub = command(
            name,
            "Disable a user: their sessions end and their API token stops working."
            if not active
            else "Enable a disabled user again (they sign in anew).",
            user_commands,
        )
        sub.add_argument("name")
        sub.set_defaults(func=cmd_user_active, active=active)
    role = command("role", "Give a user another role.", user_commands)
    role.add_argument("name")
    role.add_argument("role", choices=("admin", "agent", "viewer"))
    role.set_defaults(func=cmd_user_role)
    show = command("show", "Show a user: role, state, groups and the log of changes to the account.", user_commands)
    show.add_argument("name")
    show.set_defaults(func=cmd_user_show)


def add_group_commands(command, commands) -> None:
    """``group list``, ``group add-member GROUP USER``, ``group remove-member GROUP USER``."""
    group = command("group", "Resolver groups and their members (kept in the database).", commands)
    group_commands = group.add_subparsers(dest="group_command", metavar="ACTION", parser_class=type(group))
    group_commands.required = True
    command(
        "list", "List the groups with their members ((config): listed in [[group]] members).", group_commands
    ).set_defaults(func=cmd_group_list)
    for name, func, help in (
        ("add-member", cmd_group_add, "Add a user to a group (counts at once, no restart)."),
        ("remove-member", cmd_group_remove, "Remove a user from a group (not one the configuration file lists)."),
    ):
        sub = command(name, help, group_commands)
        sub.add_argument("group", metavar="GROUP")
        sub.add_argument("user", metavar="USER")
        sub.set_defaults(func=func)


def add_incident_assign(command, incident_commands) -> None:
    assign = command(
        "assign",
        "Assign an incident to a user (an agent of its group or an admin) and/or move it to another group.",
        incident_commands,
    )
    assign.add_argument("ref")
    assign.add_argument("--to", metavar="USER", help="the new assignee")
    assign.add_argument("--group", help="the new group")
    assign.add_argument("--reason", default="")
    assign.set_defaults(func=cmd_incident_assign)


def _store(args):
    config = _load(args)
    _open_store(config)
    return config


def read_password(name: str, stdin=None) -> str:
    """A password for ``name``: asked twice without echo on a terminal, else the first line of ``stdin``."""
    stdin = stdin or sys.stdin
    if stdin.isatty():
        first = getpass.getpass(f"New password for {name}: ")
        if getpass.getpass("Again: ") != first:
            raise InletError("the two passwords differ; nothing changed")
        return first
    line = stdin.readline()
    password = line[:-1] if line.endswith("\n") else line
    password = password[:-1] if password.endswith("\r") else password
    if not password:
        raise InletError("no password on standard input (give it as the first line, or use --generate)")
    return password


def cmd_user_passwd(args) -> int:
    import os

    from gateway.accounts import set_password

    _store(args)
    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            raise InletError(f"environment variable {args.password_env} is not set")
    elif args.generate:
        password = secrets.token_urlsafe(12)
    else:
        password = read_password(args.name)
    set_password(args.name, password, actor=ACTOR)
    shown = f": {password}" if args.generate else ""
    print(f"new password for {args.name!r}{shown}; their sessions are ended")
    return 0


def cmd_user_active(args) -> int:
    from gateway.accounts import set_active

    _store(args)
    set_active(args.name, args.active, actor=ACTOR)
    state = "enabled" if args.active else "disabled: their sessions are ended and their API token refused"
    print(f"{args.name!r} {state}")
    return 0


def cmd_user_role(args) -> int:
    from gateway.accounts import set_role

    _store(args)
    set_role(args.name, args.role, actor=ACTOR)
    print(f"{args.name!r} is now {args.role}")
    return 0


def cmd_user_show(args) -> int:
    from gateway import accounts, membership
    from gateway.core.clock import iso
    from gateway.core.errors import NotFound
    from store.models import User

    _store(args)
    user = User.get_or_none(User.name == args.name)
    if user is None:
        raise NotFound(f"no user {args.name!r}")
    print(f"{user.name}\t{user.role}\t{'active' if user.active else 'disabled'}\t{user.email or '-'}")
    print(f"  groups: {', '.join(sorted(membership.groups_of(user.name))) or '-'}")
    print("  changes:")
    for event in accounts.history(user.name):
        print(f"  {iso(event.at)}  {event.action:<13} by {event.actor}" + (f": {event.detail}" if event.detail else ""))
    return 0


def cmd_group_list(args) -> int:
    from gateway import membership

    config = _store(args)
    rows = membership.table()
    for group in config.group:
        members = [f"{r.user} (config)" if r.by_config else r.user for r in rows.get(group.name, [])]
        print(f"{group.name}\t{', '.join(members) or '-'}")
    return 0


def cmd_group_add(args) -> int:
    from gateway import membership

    config = _store(args)
    membership.add_member(config, args.group, args.user, ACTOR)
    print(f"{args.user} is now a member of {args.group}")
    return 0


def cmd_group_remove(args) -> int:
    from gateway import membership

    config = _store(args)
    membership.remove_member(config, args.group, args.user, ACTOR)
    print(f"{args.user} is no longer a member of {args.group}")
    return 0


def cmd_incident_assign(args) -> int:
    config = _store(args)
    if not args.to and not args.group:
        raise InletError("give --to USER, --group GROUP or both")
    if args.group and config.group_named(args.group) is None:
        raise InletError(f"no group {args.group!r} in {config.path}")
    incident = _lifecycle(config).assign(args.ref, ACTOR, group=args.group, assignee=args.to, reason=args.reason)
    assignee = incident.assignee.name if incident.assignee else "-"
    print(f"{incident.ref}\t{incident.group}\t{assignee}")
    return 0
