"""The incident queue as a query: filters, sort orders and keyset pagination.

Shared by the queue page and ``GET /api/v1/incidents``. Pages are cut with a
keyset (the last row's sort key and id), never an OFFSET, so page 1,000 costs
what page 1 costs. Priority, newest and oldest have an index (store/models.py);
``sla`` (the running SLA clock's due time, soonest first) and ``updated`` sort
the rows the filters select (the open ones by default: the status index).
The ``breached`` view holds the open incidents whose running SLA clock is past due.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from peewee import JOIN, SQL, Case, Value, fn

from gateway.core.errors import InletError
from store import search
from store.models import OPEN_STATUSES, STATUSES, Contact, Incident, User
from web.auth import visible

SORTS = ("priority", "sla", "updated", "newest", "oldest", "relevance")  # relevance: with a search, best first
SORT_LABELS = {
    "priority": "priority",
    "sla": "SLA due",
    "updated": "last updated",
    "newest": "opened, newest first",
    "oldest": "opened, oldest first",
    "relevance": "relevance (a search)",
}
VIEWS = ("all", "mine", "unassigned", "breached")
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


def fetch(user, filters: dict, *, cursor: str = "", limit: int = PAGE_SIZE, now: datetime | None = None) -> Page:
    """One page of the incidents ``user`` may see that match ``filters``.

    Two steps: the ids of the page from the (covering) index, then those rows with
    their assignee and reporter — so a million closed incidents are never read.
    """
    limit = max(1, min(limit, MAX_PAGE))
    sort = filters["sort"]
    ids = Incident.select(Incident.id, Incident.priority)
    ids = _after(visible(_filtered(ids, user, filters, now), user), sort, cursor)
    if sort == "priority":
        ids = ids.order_by(Incident.priority, Incident.id.desc())
    elif sort == "sla":
        ids = ids.order_by(_sla_key(), Incident.id)
    elif sort == "updated":
        ids = ids.order_by(Incident.updated_at.desc(), Incident.id.desc())
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
    next_cursor = _cursor(rows[-1], sort) if more and rows and sort != "relevance" else None
    return Page(rows, next_cursor, filters)


def newest_id(user, filters: dict, now: datetime | None = None) -> int:
    """The highest id among the visible incidents that match the filters (0: none): the queue's "seen" mark."""
    unranked = dict(filters, sort="priority")  # an aggregate: no order by relevance
    query = visible(_filtered(Incident.select(fn.MAX(Incident.id)), user, unranked, now), user)
    return query.scalar() or 0


def newer(user, filters: dict, seen: int, now: datetime | None = None) -> int:
    """How many visible incidents matching the filters arrived after the one with id ``seen`` ("N new")."""
    unranked = dict(filters, sort="priority")  # a count: no order by relevance
    query = visible(_filtered(Incident.select(Incident.id), user, unranked, now), user)
    return query.where(Incident.id > seen).count()


def counts(user, filters: dict, now: datetime | None = None) -> dict[str, int]:
    """How many visible incidents match the filters, per open status (the queue's tabs)."""
    query = Incident.select(Incident.status, Incident.id)
    f = dict(filters, status="open", sort="priority")
    query = visible(_filtered(query, user, f, now), user)
    grouped = query.select(Incident.status, fn.COUNT(Incident.id).alias("n")).group_by(Incident.status)
    return {row.status: row.n for row in grouped}


def outside(user, filters: dict, *, cap: int = 1000, now: datetime | None = None) -> int:
    """How many more visible incidents a search finds outside the status filter (at most ``cap``)."""
    found = search.parse(filters.get("q", ""))
    if not filters.get("q") or found.statuses or filters["status"] == "any":
        return 0
    query = Incident.select(Incident.id)
    query = visible(_filtered(query, user, dict(filters, status="any", sort="priority"), now), user)
    shown = OPEN_STATUSES if filters["status"] == "open" else (filters["status"],)
    return query.where(Incident.status.not_in(shown)).limit(cap).count()


def _filtered(query, user, f: dict, now: datetime | None = None):
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
    elif f["view"] == "breached":
        moment = Incident.respond_by.db_value(now or datetime.now(UTC))  # naive UTC, as stored
        query = query.where(Incident.status.in_(OPEN_STATUSES) & (sla_due() < moment))
    if found:
        query = search.restrict(query, found, ranked=f["sort"] == "relevance")
    return query


def whole_number(text: str) -> bool:
    """ASCII digits only, at most 18 (str.isdigit() also takes '²' and other digits int() refuses or the
    database cannot hold)."""
    return bool(_WHOLE.fullmatch(text or ""))


_WHOLE = re.compile(r"[0-9]{1,18}")
CURSOR = re.compile(r"(P[0-9]{1,2}|T[0-9]{1,18})\.[0-9]{1,18}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NEVER = datetime(9999, 12, 31, tzinfo=UTC)  # the SLA sort key of an incident with no clock running: last


def sla_due() -> Case:
    """When the running SLA clock is due, as SQL (NULL: none runs): respond-by until acknowledged, then
    resolve-by; none once resolved, closed or cancelled. The same rule as web.render.sla_due."""
    return Case(
        None,
        [
            (Incident.status.in_(("resolved", "closed", "cancelled")), None),
            (Incident.acknowledged_at.is_null() & Incident.respond_by.is_null(False), Incident.respond_by),
        ],
        Incident.resolve_by,
    )


def _sla_key():
    return fn.COALESCE(sla_due(), Value(Incident.respond_by.db_value(NEVER)))


def _after(query, sort: str, cursor: str):
    """Rows after the cursor (the last row of the previous page: ``P<priority>.<id>``, or for the time
    sorts ``T<microseconds since 1970>.<id>``) in ``sort`` order."""
    if not cursor:
        return query
    if not CURSOR.fullmatch(cursor):
        raise BadQuery(f"invalid cursor {cursor[:40]!r}: pass the 'next' of the previous page")
    if sort == "relevance":  # a ranked search is one page: nothing comes after it
        return query.where(SQL("1 = 0"))
    key, _, last = cursor.partition(".")
    last_id = int(last)
    if (key[0] == "P") != (sort in ("priority", "newest", "oldest")) and sort not in ("newest", "oldest"):
        return query  # a cursor of another sort order: the first page of this one (the ids sorts need only the id)
    if sort == "priority":
        return query.where((Incident.priority > key) | ((Incident.priority == key) & (Incident.id < last_id)))
    if sort in ("sla", "updated"):
        # past NEVER (the key of "no clock") no row can follow: clamp rather than overflow
        moment = Incident.respond_by.db_value(_EPOCH + timedelta(microseconds=min(int(key[1:]), _micros(NEVER))))
        if sort == "sla":
            return query.where((_sla_key() > moment) | ((_sla_key() == moment) & (Incident.id > last_id)))
        return query.where((Incident.updated_at < moment) | ((Incident.updated_at == moment) & (Incident.id < last_id)))
    return query.where(Incident.id < last_id) if sort == "newest" else query.where(Incident.id > last_id)


def _cursor(row: Incident, sort: str) -> str:
    if sort == "sla":
        due = row_sla_due(row) or NEVER
        return f"T{_micros(due)}.{row.id}"
    if sort == "updated":
        return f"T{_micros(row.updated_at)}.{row.id}"
    return f"{row.priority}.{row.id}"


def row_sla_due(row: Incident) -> datetime | None:
    """:func:`sla_due` of a loaded row."""
    if row.status in ("resolved", "closed", "cancelled"):
        return None
    if row.acknowledged_at is None and row.respond_by is not None:
        return row.respond_by
    return row.resolve_by


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)
