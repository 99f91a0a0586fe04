"""Bulk actions on the queue's selected rows: acknowledge, assign, link as children of one incident.

All or none on permission: every incident the action touches (each selected one, and
for ``link`` the parent too) is checked before anything changes; when the user may
not act on one of them (or it does not exist, or they may not see it) nothing is
done and the refusal names each such reference. Once permitted, each incident goes
through the lifecycle on its own (its own transaction, its own events and
notifications): one whose state refuses the action (an incident already
acknowledged, a link that would make a cycle) is named with the reason and skipped,
the others are done.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.core.errors import Forbidden, InletError
from gateway.incidents.lifecycle import normalise_ref
from store.models import Incident
from web import actions

BULK_ACTIONS = ("acknowledge", "assign", "link")
MOST = 200  # rows a bulk action takes at once (a queue page holds at most 50)


class Refused(Forbidden):
    """The user may not act on some of the incidents: nothing was done."""

    def __init__(self, refused: list[str], missing: list[str]):
        self.refused, self.missing = refused, missing
        parts = []
        if refused:
            parts.append(f"you may not act on {', '.join(refused)}")
        if missing:
            parts.append(f"no incident {', '.join(missing)} that you can see")
        super().__init__(f"Nothing done: {'; '.join(parts)}.")


@dataclass
class Outcome:
    action: str
    done: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (ref, why)


def selected_refs(values: list[str]) -> list[str]:
    """The selected references, normalised, without repeats, by number; BadInput when none, too many or
    malformed."""
    refs: list[str] = []
    for value in values:
        value = (value or "").strip()
        if not actions.plausible_ref(value):
            raise actions.BadInput(f"{value[:40]!r} is not an incident reference")
        ref = normalise_ref(value)
        if ref not in refs:
            refs.append(ref)
    if not refs:
        raise actions.BadInput("select at least one incident")
    if len(refs) > MOST:
        raise actions.BadInput(f"select at most {MOST} incidents at once")
    # in the order they were opened, whatever order the rows were in: messages name them the same way
    return sorted(refs, key=lambda ref: (ref.rsplit("-", 1)[0], int(ref.rsplit("-", 1)[1])))


def run(lifecycle, user, action: str, refs: list[str], form: Mapping) -> Outcome:
    """Run ``action`` on each of ``refs`` as ``user`` (a SessionUser); see the module doc for the contract.

    Raises BadInput for an unknown action or missing field, Refused when a permission check fails.
    """
    if action not in BULK_ACTIONS:
        raise actions.BadInput(f"action must be one of {', '.join(BULK_ACTIONS)}")
    data: dict = {}
    touched = list(refs)
    if action == "assign":
        data = {name: actions.text_field(form, name, limit=100) for name in ("group", "assignee")}
        data["reason"] = actions.text_field(form, "reason", limit=500)
        if not data["group"] and not data["assignee"]:
            raise actions.BadInput("give a group, an assignee or both")
    elif action == "link":
        parent = actions.text_field(form, "parent", required=True, limit=32)
        if not actions.plausible_ref(parent):
            raise actions.BadInput(f"{parent[:40]!r} is not an incident reference")
        parent = normalise_ref(parent)
        if parent in refs:
            raise actions.BadInput(f"{parent} cannot be its own parent: unselect it")
        data = {"other": parent, "kind": "parent"}  # each selected incident's parent is `parent`
        touched.append(parent)
    _check(user, touched)
    outcome = Outcome(action)
    for ref in refs:
        try:
            actions.run(lifecycle, action, ref, user.name, data, user)
        except InletError as exc:
            outcome.skipped.append((ref, str(exc)))
        else:
            outcome.done.append(ref)
    return outcome


def _check(user, refs: list[str]) -> None:
    found = {i.ref: i for i in Incident.select().where(Incident.ref.in_(refs))}
    missing = [ref for ref in refs if ref not in found or not user.can_see(found[ref])]
    refused = [ref for ref in refs if ref not in missing and not user.can_act(found[ref])]
    if missing or refused:
        raise Refused(refused, missing)
