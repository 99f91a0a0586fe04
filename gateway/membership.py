"""Who is in which resolver group: the database is the one source of truth (table ``group_member``).

Two ways in, one table:

- **by config**: the ``members`` of each ``[[group]]`` in the configuration file are seeded into the table
  by :func:`sync_config` — at ``inlet db upgrade``, when ``inlet serve`` starts and at every reload — and
  marked as managed by the file. A name the file no longer lists loses that mark at the next sync.
- **by hand**: an admin adds or removes a member in the web UI (Users page), the API or with ``inlet group
  add-member|remove-member``; it takes effect at the next request, no restart, and no sync touches it.

A membership lives while either mark holds: a reload never drops a membership made by hand, and a
membership the file manages cannot be removed by hand (the message says to edit the file and reload).
Groups themselves (channels, escalation, calendars) stay in the configuration file. Every change is
written to the account log of the user (:func:`gateway.accounts.record`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.accounts import record
from gateway.core.errors import Conflict, InletError, NotAssignable, NotFound
from store.db import db
from store.models import GroupMember, User

CONFIG_ACTOR = "configuration"


def groups_of(user: str) -> frozenset[str]:
    """The names of the groups ``user`` is a member of (one indexed query)."""
    query = GroupMember.select(GroupMember.group).where(GroupMember.user == user)
    return frozenset(row.group for row in query)


def members_of(group: str) -> list[str]:
    """The user names in ``group``, in the order they joined (the file's order for the seeded ones)."""
    query = GroupMember.select(GroupMember.user).where(GroupMember.group == group).order_by(GroupMember.id)
    return [row.user for row in query]


def is_member(user: str, group: str) -> bool:
    return GroupMember.select().where((GroupMember.user == user) & (GroupMember.group == group)).exists()


def table() -> dict[str, list[GroupMember]]:
    """Every membership row by group, in joining order."""
    rows: dict[str, list[GroupMember]] = {}
    for row in GroupMember.select().order_by(GroupMember.id):
        rows.setdefault(row.group, []).append(row)
    return rows


def sync_config(config, now: datetime | None = None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Make the ``by_config`` marks follow the file's ``[[group]] members``; (added, dropped) pairs of
    (group, user) that joined or left a group by it. Memberships made by hand are never dropped.

    Idempotent and safe to run from several processes at once (each role process of ``inlet serve``
    runs it when it starts and reloads): inserts ignore a row another process wrote first.
    """
    now = now or datetime.now(UTC)
    wanted = {(g.name, member) for g in config.group for member in g.members}
    added, dropped = [], []
    with db.atomic():
        current = {(r.group, r.user): r for r in GroupMember.select()}
        for group in config.group:
            for member in group.members:
                row = current.get((group.name, member))
                if row is None:
                    inserted = (
                        GroupMember.insert(
                            group=group.name, user=member, by_config=True, added_by=CONFIG_ACTOR, added_at=now
                        )
                        .on_conflict_ignore()
                        .as_rowcount()  # 0 when another process inserted it first
                        .execute()
                    )
                    if inserted:
                        added.append((group.name, member))
                elif not row.by_config:
                    GroupMember.update(by_config=True).where(GroupMember.id == row.id).execute()
        for key, row in current.items():
            if row.by_config and key not in wanted:
                if row.by_hand:
                    GroupMember.update(by_config=False).where(GroupMember.id == row.id).execute()
                elif GroupMember.delete().where((GroupMember.id == row.id) & ~GroupMember.by_hand).execute():
                    dropped.append(key)
        for group, user in added:
            record(user, CONFIG_ACTOR, "group-added", f"{group} (listed in {config.path})", at=now)
        for group, user in dropped:
            record(user, CONFIG_ACTOR, "group-removed", f"{group} (no longer listed in {config.path})", at=now)
    return added, dropped


def add_member(config, group: str, user: str, actor: str, now: datetime | None = None) -> GroupMember:
    """``user`` joins ``group`` by hand (takes effect at once). NotFound for an unknown group or user;
    InletError for a viewer (a viewer never works incidents); Conflict when already a member by hand."""
    now = now or datetime.now(UTC)
    if config.group_named(group) is None:
        known = ", ".join(g.name for g in config.group)
        raise NotFound(f"no group {group!r} in {config.path}: one of {known}")
    account = User.get_or_none(User.name == user)
    if account is None:
        raise NotFound(f"no user {user!r}")
    if account.role == "viewer":
        raise InletError(f"{user} is a viewer and cannot work incidents: give them the agent role first")
    with db.atomic():
        row = GroupMember.get_or_none((GroupMember.group == group) & (GroupMember.user == user))
        if row is not None and row.by_hand:
            raise Conflict(f"{user} is a member of {group} already")
        if row is None:
            GroupMember.insert(group=group, user=user, by_hand=True, added_by=actor, added_at=now).execute()
        else:  # listed in the file: now also kept by hand, should the file drop it
            GroupMember.update(by_hand=True).where(GroupMember.id == row.id).execute()
        record(
            user,
            actor,
            "group-added",
            group if row is None else f"{group} (kept if the configuration file drops it)",
            at=now,
        )
    return GroupMember.get((GroupMember.group == group) & (GroupMember.user == user))


def remove_member(config, group: str, user: str, actor: str, now: datetime | None = None) -> None:
    """``user`` leaves ``group`` (at once). NotFound when not a member; Conflict when the configuration
    file lists them (it would put them back at the next reload: the message says where to remove them)."""
    with db.atomic():
        row = GroupMember.get_or_none((GroupMember.group == group) & (GroupMember.user == user))
        if row is None:
            raise NotFound(f"{user} is not a member of {group}")
        if row.by_config:
            raise Conflict(
                f"{user} is in {group} by the configuration file: remove them from [[group]] {group!r} "
                f"members in {config.path}, then run 'inlet reload'"
            )
        GroupMember.delete().where(GroupMember.id == row.id).execute()
        record(user, actor, "group-removed", group, at=now)


def check_assignable(name: str, group: str, security: bool, security_group: str) -> User:
    """The user ``name``, if they may work an incident of ``group`` (``security``: a security incident);
    else NotAssignable saying why: viewers and disabled users never; a security incident only admins and
    members of ``security_group`` (``[web] security_group``), who alone may see it. An agent of another
    group may be assigned (a hand-over); ``group`` names the incident's group in the message."""
    user = User.get_or_none(User.name == name)
    if user is None:
        raise NotFound(f"no user {name!r}")
    if not user.active:
        raise NotAssignable(f"{name} is disabled and cannot be assigned an incident")
    if user.role not in ("admin", "agent"):
        raise NotAssignable(
            f"{name} is a {user.role} and cannot work incidents: only agents and admins can be assigned"
        )
    if security and user.role != "admin" and security_group not in groups_of(name):
        raise NotAssignable(
            f"{name} may not see security incidents (not in group {security_group}) and cannot be assigned "
            f"this {group or ''} incident".replace("  ", " ")
        )
    return user
