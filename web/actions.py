"""Every lifecycle action the UI and the API offer, as one table.

Each action reads its fields from a mapping (a form or a JSON body) and calls
the lifecycle (gateway/incidents/lifecycle.py) — the only code that changes incidents.
``escalate`` and ``review`` are offered only when the lifecycle has them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.core.errors import InletError
from gateway.incidents.lifecycle import FIX_TYPES, LINK_KINDS
from store.models import LEVELS

DECLARABLE = ("major", "security")
REF = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,20}-[0-9]{1,12}")


def plausible_ref(ref: str) -> bool:
    """Looks like an incident reference (anything else cannot exist: answer 404 without a query)."""
    return bool(REF.fullmatch(ref or ""))


class BadInput(InletError):
    """A field of an action is missing or has a value the action does not take."""


@dataclass(frozen=True)
class Action:
    name: str
    title: str
    fields: tuple[tuple[str, str, bool], ...]  # (name, JSON type, required)
    run: Callable  # (lifecycle, ref, actor, data, access) -> Incident | Event
    needs: str = ""  # the lifecycle method it needs when that is optional
    records: bool = False  # it adds an event (answered 201 with the event), not a change of the incident


def text_field(data: Mapping, name: str, *, required: bool = False, limit: int = 20000) -> str:
    value = data.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise BadInput(f"{name} must be a string")
    value = value.replace("\x00", "").strip()  # PostgreSQL text cannot hold NUL
    if required and not value:
        raise BadInput(f"{name} is required")
    if len(value) > limit:
        raise BadInput(f"{name} is longer than {limit} characters")
    return value


def choice_field(data: Mapping, name: str, choices, default: str | None = None) -> str:
    value = text_field(data, name) or default
    if value is None:
        raise BadInput(f"choose {name}: {', '.join(choices)}")
    if value not in choices:
        raise BadInput(f"{name} must be one of {', '.join(choices)}")
    return value


def flag_field(data: Mapping, name: str) -> bool:
    value = data.get(name, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "on", "yes", "0", "false", "off", "no", ""):
        return value.lower() in ("1", "true", "on", "yes")
    raise BadInput(f"{name} must be a boolean")


def _update(lc, ref, actor, d, access):
    fields = {}
    for name in ("title", "category", "service"):
        if name in d and (text_field(d, name) or name != "title"):
            fields[name] = text_field(d, name, limit=500)
    for name in ("impact", "urgency"):
        if text_field(d, name):
            fields[name] = choice_field(d, name, LEVELS)
    if not fields:
        raise BadInput("nothing to change: give title, category, service, impact or urgency")
    return lc.update(ref, actor, reason=text_field(d, "reason", required=True), **fields)


def _assign(lc, ref, actor, d, access):
    group = text_field(d, "group") or None
    assignee = text_field(d, "assignee") or None
    if group is None and assignee is None:
        raise BadInput("give a group, an assignee or both")
    return lc.assign(ref, actor, group=group, assignee=assignee, reason=text_field(d, "reason"))


def _review(lc, ref, actor, d, access):
    actions = d.get("actions", [])
    if isinstance(actions, str):  # the form sends one action per line: "what; owner; due"
        rows = [line.split(";") for line in actions.splitlines() if line.strip()]
        actions = [{"what": r[0].strip(), "owner": _at(r, 1), "due": _at(r, 2)} for r in rows]
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        raise BadInput("actions must be a list of {what, owner, due}")
    return lc.review(ref, actor, cause=text_field(d, "cause", required=True), actions=actions)


def _declare(lc, ref, actor, d, access):
    """Mark the incident major or security: the lifecycle starts that procedure (broadcast, paging, review)."""
    flag = choice_field(d, "procedure", DECLARABLE)
    return lc.update(ref, actor, reason=text_field(d, "reason", required=True), **{flag: True})


def _at(row: list, index: int) -> str:
    return row[index].strip() if len(row) > index else ""


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action("acknowledge", "Acknowledge", (), lambda lc, ref, actor, d, access: lc.acknowledge(ref, actor)),
        Action("start", "Start work", (), lambda lc, ref, actor, d, access: lc.start(ref, actor)),
        Action("take", "Take", (), lambda lc, ref, actor, d, access: lc.assign(ref, actor, assignee=actor)),
        Action(
            "assign",
            "Assign",
            (("group", "string", False), ("assignee", "string", False), ("reason", "string", False)),
            _assign,
        ),
        Action(
            "update",
            "Change classification",
            (
                ("title", "string", False),
                ("category", "string", False),
                ("service", "string", False),
                ("impact", "string", False),
                ("urgency", "string", False),
                ("reason", "string", True),
            ),
            _update,
        ),
        Action(
            "note",
            "Internal note",
            (("body", "string", True),),
            lambda lc, ref, actor, d, access: lc.note(ref, actor, text_field(d, "body", required=True)),
            records=True,
        ),
        Action(
            "reply",
            "Reply to reporter",
            (("body", "string", True),),
            lambda lc, ref, actor, d, access: lc.reply(ref, actor, text_field(d, "body", required=True)),
            records=True,
        ),
        Action(
            "update_public",
            "Public update",
            (("body", "string", True),),
            lambda lc, ref, actor, d, access: lc.note(ref, actor, text_field(d, "body", required=True), public=True),
            records=True,
        ),
        Action(
            "hold",
            "Put on hold",
            (("reason", "string", True),),
            lambda lc, ref, actor, d, access: lc.hold(ref, actor, text_field(d, "reason", required=True)),
        ),
        Action(
            "resume",
            "Resume",
            (("body", "string", False),),
            lambda lc, ref, actor, d, access: lc.resume(ref, actor, text_field(d, "body")),
        ),
        Action(
            "resolve",
            "Resolve",
            (
                ("code", "string", True),
                ("notes", "string", True),
                ("cause", "string", True),
                ("fix", "string", True),
                ("cause_text", "string", False),
                ("cascade", "boolean", False),
            ),
            lambda lc, ref, actor, d, access: lc.resolve(
                ref,
                actor,
                code=text_field(d, "code", required=True, limit=64),
                notes=text_field(d, "notes", required=True),
                cause=text_field(d, "cause", required=True, limit=64),
                fix=choice_field(d, "fix", FIX_TYPES),  # no default: a workaround and a fix mean different work
                cause_text=text_field(d, "cause_text"),
                cascade=flag_field(d, "cascade"),  # children are resolved with it only when asked
                access=access,
            ),
        ),
        Action("close", "Close", (), lambda lc, ref, actor, d, access: lc.close(ref, actor, by="agent")),
        Action(
            "reopen",
            "Reopen",
            (("reason", "string", True),),
            lambda lc, ref, actor, d, access: lc.reopen(ref, actor, text_field(d, "reason", required=True)),
        ),
        Action(
            "cancel",
            "Cancel",
            (("reason", "string", True),),
            lambda lc, ref, actor, d, access: lc.cancel(ref, actor, text_field(d, "reason", required=True)),
        ),
        Action(
            "link",
            "Link",
            (("other", "string", True), ("kind", "string", True)),
            lambda lc, ref, actor, d, access: lc.link(
                ref,
                actor,
                text_field(d, "other", required=True, limit=32),
                choice_field(d, "kind", LINK_KINDS),  # no default: parent, child and related do different things
                access=access,
            ),
        ),
        Action(
            "declare",
            "Mark major or security",
            (("procedure", "string", True), ("reason", "string", True)),
            _declare,
        ),
        Action(
            "escalate",
            "Escalate",
            (("kind", "string", False), ("reason", "string", True), ("group", "string", False)),
            lambda lc, ref, actor, d, access: lc.escalate(
                ref,
                actor,
                choice_field(d, "kind", ("functional", "hierarchical"), "functional"),
                text_field(d, "reason", required=True),
                group=text_field(d, "group") or None,
            ),
            needs="escalate",
        ),
        Action(
            "review",
            "Post-incident review",
            (("cause", "string", True), ("actions", "array", False)),
            _review,
            needs="review",
        ),
    )
}


def available(lifecycle) -> dict[str, Action]:
    """The actions this lifecycle supports (``escalate``/``review`` only once the engine provides them)."""
    return {name: a for name, a in ACTIONS.items() if not a.needs or callable(getattr(lifecycle, a.needs, None))}


def run(lifecycle, name: str, ref: str, actor: str, data: Mapping, access=None):
    """Run action ``name`` as ``actor`` with the rights ``access`` (the signed-in user: the lifecycle
    checks with it any second incident an action touches); BadInput for unknown actions or fields,
    lifecycle errors (NotFound, Forbidden, TransitionError) pass through."""
    action = available(lifecycle).get(name)
    if action is None:
        raise BadInput(f"unknown action {name!r}")
    return action.run(lifecycle, ref, actor, data, access)
