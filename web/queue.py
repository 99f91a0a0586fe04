"""The incident queue as a query: filters, sort orders and keyset pagination.

Shared by the queue page and ``GET /api/v1/incidents``. Pages are cut with a
keyset (the last row's sort key and id), never an OFFSET, so page 1,000 costs
what page 1 costs; every sort order has an index (store/models.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from peewee import JOIN, SQL, fn

from gateway.core.errors import InletError
from store import search
from store.models import OPEN_STATUSES, STATUSES, Contact, Incident, User
from web.auth import visible

SORTS = ("priority", "newest", "oldest", "relevance")  # relevance: with a search (store/search.py), best first
VIEWS = ("all", "mine", "unassigned")
STATUS_CHOICES = ("open", "any", *STATUSES)
FILTERS = ("status", "priority", "group", "category", "assignee", "source", "q", "view", "sort")
PAGE_SIZE = 50
MAX_PAGE = 200


class BadQuery(InletError):
    """A filter, sort or cursor value the queue does not know."""


@dataclass
class Page:
    rows: list
    next_cursor: str | None
    filters: dict = field(default_factory=dict)


def read_filters(args) -> dict:
    """The queue filters from request arguments, with defaults; unknown values raise BadQuery."""
    f = {name: (args.get(name) or "").replace("\x00", "").strip()[:200] for name in FILTERS}
    # a search is checked whole (too long is an error, not cut); it looks at every status unless one is asked for
    f["q"] = (args.get("q") or "").replace("\x00", "").strip()
    try:
        search.parse(f["q"])
    except search.BadSearch as exc:
        raise BadQuery(str(exc)) from exc
    f["status"] = f["status"] or ("any" if f["q"] else "open")
    f["sort"] = f["sort"] or ("relevance" if f["q"] else "priority")
    f["view"] = f["view"] or "all"
    for name, choices in (("status", STATUS_CHOICES), ("sort", SORTS), ("view", VIEWS)):
        if f[name] not in choices:
            raise BadQuery(f"{name} must be one of {', '.join(choices)}")
    if f["sort"] == "relevance" and not f["q"]:
        f["sort"] = "priority"
    return f


def fetch(user, filters: dict, *, cursor: str = "", limit: int = PAGE_SIZE) -> Page:
    """One page of the incidents ``user`` may see that match ``filters``.

    Two steps: the ids of the page from the (covering) index, then those rows with
    their assignee and reporter — so a million closed incidents are never read.
    """
    limit = max(1, min(limit, MAX_PAGE))
    sort = filters["sort"]
    ids = Incident.select(Incident.id, Incident.priority)
    ids = _after(visible(_filtered(ids, user, filters), user), sort, cursor)
    if sort == "priority":
        ids = ids.order_by(Incident.priority, Incident.id.desc())
    elif sort == "newest":
        ids = ids.order_by(Incident.id.desc())
    elif sort == "oldest":
        ids = ids.order_by(Incident.id)
    keys = [row.id for row in ids.limit(limit + 1)]
    more = len(keys) > limit
    keys = keys[:limit]
    found = {
        row.id: row
        for row in Incident.select(Incident, User, Contact)
        .join(User, JOIN.LEFT_OUTER, on=(Incident.assignee == User.id))
        .switch(Incident)
        .join(Contact, JOIN.LEFT_OUTER, on=(Incident.reporter == Contact.id))
        .where(Incident.id.in_(keys))
    } if keys else {}  # fmt: skip
    rows = [found[key] for key in keys if key in found]
    # a ranked search is one page, the best first: another sort pages through every match
    next_cursor = _cursor(rows[-1]) if more and rows and sort != "relevance" else None
    return Page(rows, next_cursor, filters)


def counts(user, filters: dict) -> dict[str, int]:
    """How many visible incidents match the filters, per open status (the queue's tabs)."""
    query = Incident.select(Incident.status, Incident.id)
    f = dict(filters, status="open", sort="priority")
    query = visible(_filtered(query, user, f), user)
    grouped = query.select(Incident.status, fn.COUNT(Incident.id).alias("n")).group_by(Incident.status)
    return {row.status: row.n for row in grouped}


def outside(user, filters: dict, *, cap: int = 1000) -> int:
    """How many more visible incidents a search finds outside the status filter (at most ``cap``)."""
    found = search.parse(filters.get("q", ""))
    if not filters.get("q") or found.statuses or filters["status"] == "any":
        return 0
    query = Incident.select(Incident.id)
    query = visible(_filtered(query, user, dict(filters, status="any", sort="priority")), user)
    shown = OPEN_STATUSES if filters["status"] == "open" else (filters["status"],)
    return query.where(Incident.status.not_in(shown)).limit(cap).count()


def _filtered(query, user, f: dict):
    found = search.parse(f["q"]) if f.get("q") else None
    status = f["status"]
    if found and found.statuses:  # status: in the search replaces the browsing filter
        query = query.where(Incident.status.in_(found.statuses))
    elif status == "open":
        query = query.where(Incident.status.in_(OPEN_STATUSES))
    elif status != "any":
        query = query.where(Incident.status == status)
    for name in ("priority", "group", "category", "source"):
        if f.get(name):
            query = query.where(getattr(Incident, name) == f[name])
    if f.get("assignee"):
        assignee = User.get_or_none(User.name == f["assignee"])
        query = query.where(Incident.assignee == (assignee.id if assignee else -1))
    if f["view"] == "mine":
        query = query.where(Incident.assignee == user.row.id)
    elif f["view"] == "unassigned":
        # COALESCE keeps SQLite on the status index: most closed incidents are unassigned too
        query = query.where(fn.COALESCE(Incident.assignee, 0) == 0)
    if found:
        query = search.restrict(query, found, ranked=f["sort"] == "relevance")
    return query


def whole_number(text: str) -> bool:
    """ASCII digits only, at most 18 (str.isdigit() also takes '²' and other digits int() refuses or the
    database cannot hold)."""
    return bool(_WHOLE.fullmatch(text or ""))


_WHOLE = re.compile(r"[0-9]{1,18}")
CURSOR = re.compile(r"P[0-9]{1,2}\.[0-9]{1,18}")


def _after(query, sort: str, cursor: str):
    """Rows after the cursor ``P<priority>.<id>`` (the last row of the previous page) in ``sort`` order."""
    if not cursor:
        return query
    if not CURSOR.fullmatch(cursor):
        raise BadQuery(f"invalid cursor {cursor[:40]!r}: pass the 'next' of the previous page")
    if sort == "relevance":  # a ranked search is one page: nothing comes after it
        return query.where(SQL("1 = 0"))
    priority, _, last = cursor.partition(".")
    last_id = int(last)
    if sort == "priority":
        return query.where((Incident.priority > priority) | ((Incident.priority == priority) & (Incident.id < last_id)))
    return query.where(Incident.id < last_id) if sort == "newest" else query.where(Incident.id > last_id)


def _cursor(row: Incident) -> str:
    return f"{row.priority}.{row.id}"
