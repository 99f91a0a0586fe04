"""Full-text search over incidents: the one query module (SQLite FTS5, PostgreSQL tsvector + GIN).

The index holds, per incident: ref (one token: INC-42 is "inc42"), title, body (description), updates
(the text of its events), reporter address and labels. The database keeps it in step by itself (triggers created by
:func:`install`, migration 11): whatever writes an incident or an event, the index follows in the
same transaction. Every text is cut at :data:`CAP` characters (the updates keep the first
:data:`CAP`), so one incident costs bounded work to index.

A search (:func:`parse`) is words in any order (each a prefix: ``dis`` finds "disk"),
``"exact phrases"`` and field filters: ``from:alice@example.org`` (or ``from:example.org``),
``group:network``, ``status:closed`` (``open``, ``any``), ``label:service=storage`` (or
``label:service``). Words become index tokens (runs of letters and digits) here, in Python, and
only those are written into the FTS5 / tsquery expression — the text a person typed never
reaches either syntax, so quotes, operators, NUL or 10 KB of text cannot be an injection or a
500 (too long is :class:`BadSearch`, a 400).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import peewee
from peewee import SQL, Expression, fn

from gateway.core.errors import InletError
from store.db import is_postgres
from store.models import OPEN_STATUSES, STATUSES, Contact, CorrelationKey, Incident

MAX_LENGTH = 500  # characters of search text
MAX_TERMS = 16  # words, phrases and filters
CAP = 65536  # characters of each indexed text
TABLE = "incident_search"
FIELDS = ("from", "group", "status", "label")
# Column weights: a ref or title hit ranks above one in the body, above one in updates, reporter or labels.
WEIGHTS = {"ref": 10.0, "title": 5.0, "body": 2.0, "updates": 1.0, "reporter": 1.0, "labels": 1.0}
# Similar incidents: at most this many text matches are ranked (the most recent), so a common word costs
# the same on a million incidents as on a thousand.
SIMILAR_CANDIDATES = 2000

_PART = re.compile(r'(?:([A-Za-z]+):)?(?:"([^"]*)"?|(\S+))')
_TOKEN = re.compile(r"[^\W_]+")


class BadSearch(InletError):
    """Search text Inlet will not run (too long, too many words, an unknown status)."""


@dataclass(frozen=True)
class Term:
    """Index tokens that must appear together, in order; ``prefix``: the last one may be a prefix."""

    tokens: tuple[str, ...]
    prefix: bool = False
    column: str = ""  # "" any column; "ref" for a reference; "reporter" or "labels" for the from: and label: filters


@dataclass(frozen=True)
class Search:
    terms: tuple[Term, ...] = ()
    statuses: tuple[str, ...] = ()  # from status: filters; empty: the browsing filter applies
    groups: tuple[str, ...] = ()
    senders: tuple[str, ...] = ()  # full addresses or domains, lower case
    labels: tuple[tuple[str, str | None], ...] = ()
    words: tuple[Term, ...] = field(default=(), compare=False)  # the terms typed (not the filters' narrowing)

    @property
    def empty(self) -> bool:
        return not (self.terms or self.statuses or self.groups or self.senders or self.labels)


def tokens(text: str) -> tuple[str, ...]:
    """The index tokens of ``text``: runs of letters and digits, lower case (as the index splits text)."""
    return tuple(t.lower() for t in _TOKEN.findall(text))


def parse(text: str) -> Search:
    """The search in ``text``; :class:`BadSearch` when it is too long or names an unknown status."""
    text = (text or "").replace("\x00", " ")
    if len(text) > MAX_LENGTH:
        raise BadSearch(f"search text is too long ({len(text):,} characters; at most {MAX_LENGTH})")
    terms: list[Term] = []
    statuses: list[str] = []
    groups: list[str] = []
    senders: list[str] = []
    labels: list[tuple[str, str | None]] = []
    parts = 0
    for match in _PART.finditer(text):
        name, quoted, bare = match.group(1), match.group(2), match.group(3)
        name = (name or "").lower()
        value = quoted if quoted is not None else bare
        parts += 1
        if parts > MAX_TERMS:
            raise BadSearch(f"too many words in the search (at most {MAX_TERMS})")
        if name not in FIELDS:
            whole = match.group(0) if name else value
            if _is_ref(whole):  # INC-42: the ref column holds it as one token, "inc42"
                terms.append(Term(("".join(tokens(whole)),), column="ref"))
                continue
            found = tokens(whole)
            if found:
                terms.append(Term(found, prefix=quoted is None and len(found[-1]) > 1))
            continue
        value = value.strip()
        if not value:
            continue
        if name == "status":
            statuses.extend(_status(value))
        elif name == "group":
            groups.append(value)
        elif name == "from":
            address = value.lower().lstrip("@")
            senders.append(address)
            if tokens(address):
                terms.append(Term(tokens(address), column="reporter"))
        else:
            key, has_value, label_value = value.partition("=")
            labels.append((key, label_value if has_value else None))
            narrowing = tokens(key) + tokens(label_value)
            if narrowing:
                terms.append(Term(narrowing, column="labels"))
    words = tuple(t for t in terms if not t.column)
    return Search(tuple(terms), tuple(statuses), tuple(groups), tuple(senders), tuple(labels), words)


def _is_ref(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z]+-[0-9]+", text))


def _status(value: str) -> tuple[str, ...]:
    name = value.lower().replace("-", "_").replace(" ", "_")
    if name == "open":
        return OPEN_STATUSES
    if name == "any":
        return STATUSES
    if name not in STATUSES:
        raise BadSearch(f"status:{value[:40]} is not a status: use one of open, any, {', '.join(STATUSES)}")
    return (name,)


# -- the expressions: only tokens (letters and digits) are ever written into them ----------------------------


def fts5_expression(terms: tuple[Term, ...], *, any_of: bool = False) -> str:
    """The FTS5 MATCH expression of ``terms`` (each a quoted phrase; AND, or OR with ``any_of``)."""
    parts = []
    for term in terms:
        phrase = '"' + " ".join(t.replace('"', '""') for t in term.tokens) + '"' + (" *" if term.prefix else "")
        parts.append(f"{term.column} : {phrase}" if term.column else phrase)
    return (" OR " if any_of else " AND ").join(parts)


def tsquery_text(terms: tuple[Term, ...], *, any_of: bool = False) -> str:
    """The to_tsquery('simple', ...) text of ``terms`` (phrases with <->; & between terms, or | with ``any_of``).

    A ref term is restricted to weight A (ref and title), a from:/label: term to weight D (reporter and labels)."""
    parts = []
    for term in terms:
        weight = _WEIGHT_LETTER.get(term.column, "")
        quoted = ["'" + t.replace("\\", "\\\\").replace("'", "''") + "'" for t in term.tokens]
        quoted = [q + (":" + weight if weight else "") for q in quoted]
        if term.prefix:
            quoted[-1] += "*" if weight else ":*"
        parts.append("(" + " <-> ".join(quoted) + ")")
    return (" | " if any_of else " & ").join(parts)


_WEIGHT_LETTER = {"ref": "A", "reporter": "D", "labels": "D"}
_PLAIN = re.compile(r"[a-z0-9]+")
PAIR_BYTES = 200  # a pair of longer words is not in the index (the phrase then finds it by its words alone)


def pairs_tsquery_text(terms: tuple[Term, ...]) -> str:
    """The tsquery (a literal, not parsed) of the word pairs the PostgreSQL index holds for ``terms``' phrases.

    The index's document holds, beside its words, every two words at consecutive positions as one lexeme
    ``_first_second``, without position (``_`` splits words, so no word is one, and no prefix matches one: a
    positionless lexeme matched by a prefix inside a phrase would fail the phrase). GIN keeps no positions, so a
    phrase alone is the AND of its words, each match rechecked: ``"disk full"`` read every incident with both
    words, most of them not the phrase. With its pairs, GIN gives the phrase's matches and little else. Only pairs
    of plain ASCII words, which PostgreSQL's parser and :func:`tokens` surely split alike; a prefix is in no pair."""
    pairs: dict[str, None] = {}
    for term in terms:
        words = term.tokens[:-1] if term.prefix else term.tokens
        for first, second in zip(words, words[1:], strict=False):
            if _PLAIN.fullmatch(first) and _PLAIN.fullmatch(second) and len(first) + len(second) <= PAIR_BYTES:
                pairs[f"'_{first}_{second}'"] = None
    return " & ".join(pairs)


def _hits(terms: tuple[Term, ...], *, any_of: bool = False, newest: int = 0):
    """A derived table (incident_id, score) of the incidents matching ``terms``; a lower score ranks higher.

    ``newest``: only the most recent that many matches (similar incidents)."""
    if is_postgres():
        index = peewee.Table(TABLE, ("incident_id", "document")).alias("idx")
        query = fn.to_tsquery("simple", tsquery_text(terms, any_of=any_of))
        pairs = "" if any_of else pairs_tsquery_text(terms)
        found = Expression(query, "&&", peewee.Cast(peewee.Value(pairs), "tsquery")) if pairs else query
        hits = index.select(
            index.incident_id.alias("incident_id"), (0 - fn.ts_rank(index.document, query)).alias("score")
        ).where(Expression(index.document, "@@", found))
        if newest:
            hits = hits.order_by(index.incident_id.desc()).limit(newest)
        return hits.alias("hits")
    index = peewee.Table(TABLE, ("rowid", "rank", TABLE)).alias("idx")
    hits = index.select(index.rowid.alias("incident_id"), index.rank.alias("score")).where(
        Expression(getattr(index, TABLE), "MATCH", fts5_expression(terms, any_of=any_of))
    )
    if newest:
        hits = hits.order_by(index.rowid.desc()).limit(newest)
    return hits.alias("hits")


def restrict(query, search: Search, *, ranked: bool = False):
    """``query`` (a select over Incident) narrowed to the incidents ``search`` finds; ordered best first with
    ``ranked``. The status filters are the caller's (:attr:`Search.statuses` replaces its browsing filter)."""
    if search.empty:
        return query.where(SQL("1 = 0"))
    if search.terms:
        hits = _hits(search.terms)
        query = query.join(hits, on=(hits.c.incident_id == Incident.id))
        if ranked:
            query = query.order_by(hits.c.score, Incident.id.desc())
    elif ranked:
        query = query.order_by(Incident.id.desc())
    if search.groups:
        query = query.where(Incident.group.in_(search.groups))
    for sender in search.senders:
        contacts = Contact.select(Contact.id)
        if "@" in sender:
            contacts = contacts.where(fn.LOWER(Contact.email) == sender)
        elif "." in sender:  # a domain: any address at it
            contacts = contacts.where(fn.LOWER(Contact.email).endswith("@" + sender))
        else:  # a mailbox name at any domain
            contacts = contacts.where(fn.LOWER(Contact.email).startswith(sender + "@"))
        query = query.where(Incident.reporter.in_(contacts))
    for key, value in search.labels:
        # labels are stored as JSON with sorted keys and ", " / ": " separators (store.models.JSONTextField)
        needle = json.dumps(key) + ": " + (json.dumps(value) if value is not None else "")
        position = fn.strpos if is_postgres() else fn.instr  # a plain substring: no LIKE wildcards to escape
        query = query.where(position(Incident.labels, peewee.Value(needle, converter=False)) > 0)
    return query


def similar(incident: Incident, *, include_security: bool, limit: int = 5) -> list[tuple[Incident, str]]:
    """Up to ``limit`` incidents opened before ``incident`` that look like it, each with why: the same alert
    fingerprint, the same reporter, then the closest text (its title's words). Security incidents only with
    ``include_security``."""
    found: dict[int, str] = {}

    def visible(query):
        query = query.where(Incident.id < incident.id)
        if found:
            query = query.where(Incident.id.not_in(list(found)))
        return query if include_security else query.where(Incident.security == False)  # noqa: E712

    fingerprints = CorrelationKey.select(CorrelationKey.value).where(
        (CorrelationKey.incident == incident.id) & (CorrelationKey.kind == "fingerprint")
    )
    same_alert = (
        Incident.select(Incident.id)
        .join(CorrelationKey, on=(CorrelationKey.incident == Incident.id))
        .where((CorrelationKey.kind == "fingerprint") & CorrelationKey.value.in_(fingerprints))
    )
    for row in visible(same_alert).distinct().order_by(Incident.id.desc()).limit(limit):
        found[row.id] = "same alert"
    if len(found) < limit and incident.reporter_id:
        query = Incident.select(Incident.id).where(Incident.reporter == incident.reporter_id)
        for row in visible(query).order_by(Incident.id.desc()).limit(limit - len(found)):
            found[row.id] = "same reporter"
    words = tuple(Term((t,)) for t in dict.fromkeys(tokens(incident.title)) if len(t) > 2 and not t.isdigit())
    if len(found) < limit and words:
        hits = _hits(words[:MAX_TERMS], any_of=True, newest=SIMILAR_CANDIDATES)
        query = Incident.select(Incident.id).join(hits, on=(hits.c.incident_id == Incident.id))
        for row in visible(query).order_by(hits.c.score, Incident.id.desc()).limit(limit - len(found)):
            found[row.id] = "similar text"
    rows = {row.id: row for row in Incident.select().where(Incident.id.in_(list(found)))} if found else {}
    return [(rows[key], why) for key, why in found.items() if key in rows]


# -- the index: created and backfilled by migration 11, kept in step by triggers -----------------------------


def install(database: peewee.Database) -> None:
    """Create the search index and its triggers, and index every incident not indexed yet (idempotent)."""
    statements = _POSTGRES if is_postgres(database) else _SQLITE
    for statement in statements:
        database.execute_sql(statement.replace("{CAP}", str(CAP)))


_SQLITE_WEIGHTS = ", ".join(str(w) for w in WEIGHTS.values())
_SQLITE_REPORTER = "(SELECT email FROM contact WHERE id = new.reporter_id)"
_SQLITE_UPDATES = (
    "(SELECT substr(group_concat(body, char(10)), 1, {CAP}) FROM "
    "(SELECT body FROM event WHERE incident_id = incident.id AND body != '' AND type != 'created' ORDER BY id))"
)
_SQLITE = (
    f"""CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5(
        ref, title, body, updates, reporter, labels, tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3')""",
    f"INSERT INTO {TABLE}({TABLE}, rank) VALUES ('rank', 'bm25({_SQLITE_WEIGHTS})')",
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_insert AFTER INSERT ON incident BEGIN
        INSERT INTO {TABLE}(rowid, ref, title, body, updates, reporter, labels)
        VALUES (new.id, replace(new.ref, '-', ''), substr(new.title, 1, {{CAP}}),
            substr(new.description, 1, {{CAP}}), '', {_SQLITE_REPORTER}, new.labels);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_update AFTER UPDATE ON incident
    WHEN new.ref IS NOT old.ref OR new.title IS NOT old.title OR new.description IS NOT old.description
        OR new.reporter_id IS NOT old.reporter_id OR new.labels IS NOT old.labels BEGIN
        UPDATE {TABLE} SET ref = replace(new.ref, '-', ''), title = substr(new.title, 1, {{CAP}}),
            body = substr(new.description, 1, {{CAP}}), reporter = {_SQLITE_REPORTER}, labels = new.labels
        WHERE rowid = new.id;
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_delete AFTER DELETE ON incident BEGIN
        DELETE FROM {TABLE} WHERE rowid = old.id;
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_event AFTER INSERT ON event
    WHEN new.body != '' AND new.type != 'created' BEGIN
        UPDATE {TABLE} SET updates = substr(updates || char(10) || new.body, 1, {{CAP}})
        WHERE rowid = new.incident_id AND length(updates) < {{CAP}};
    END""",
    f"""INSERT INTO {TABLE}(rowid, ref, title, body, updates, reporter, labels)
        SELECT incident.id, replace(incident.ref, '-', ''), substr(incident.title, 1, {{CAP}}),
            substr(incident.description, 1, {{CAP}}), coalesce({_SQLITE_UPDATES}, ''), contact.email, incident.labels
        FROM incident LEFT JOIN contact ON contact.id = incident.reporter_id
        WHERE incident.id NOT IN (SELECT rowid FROM {TABLE})""",
)

# ASCII punctuation becomes a space before PostgreSQL's parser sees the text, so it splits text into runs of
# letters and digits as FTS5's unicode61 does (and as tokens() does): an address is its words, not one token.
_PUNCTUATION = "!\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"  # and % (chr(37): psycopg2 reads % as a placeholder)
_POSTGRES = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        incident_id INTEGER PRIMARY KEY REFERENCES incident (id) ON DELETE CASCADE,
        updates TEXT NOT NULL DEFAULT '',
        document TSVECTOR NOT NULL)""",
    f"""CREATE OR REPLACE FUNCTION {TABLE}_words(value TEXT) RETURNS TSVECTOR LANGUAGE sql IMMUTABLE AS $$
        SELECT to_tsvector('simple', translate(left(coalesce(value, ''), {{CAP}}),
            $p${_PUNCTUATION}$p$ || chr(37), repeat(' ', {len(_PUNCTUATION) + 1})))
    $$""",
    # every two words at consecutive positions as one lexeme "_first_second", without position (pairs_tsquery_text)
    f"""CREATE OR REPLACE FUNCTION {TABLE}_pairs(document TSVECTOR) RETURNS TSVECTOR LANGUAGE sql IMMUTABLE AS $$
        SELECT coalesce(array_to_tsvector(array_agg(DISTINCT '_' || a.lexeme || '_' || b.lexeme)), ''::tsvector)
        FROM (SELECT lexeme, unnest(positions) AS position FROM unnest(document)) a
        JOIN (SELECT lexeme, unnest(positions) AS position FROM unnest(document)) b ON b.position = a.position + 1
        WHERE octet_length(a.lexeme) + octet_length(b.lexeme) <= {PAIR_BYTES}
            AND a.lexeme ~ '^[a-z0-9]+$' AND b.lexeme ~ '^[a-z0-9]+$'
    $$""",
    # the document of a row of the index, from its incident: computed whenever the row is written
    f"""CREATE OR REPLACE FUNCTION {TABLE}_document() RETURNS TRIGGER LANGUAGE plpgsql AS $$
    BEGIN
        SELECT setweight({TABLE}_words(replace(i.ref, '-', '') || ' ' || i.title), 'A')
            || setweight({TABLE}_words(i.description), 'B')
            || setweight({TABLE}_words(NEW.updates), 'C')
            || setweight({TABLE}_words(coalesce(c.email, '') || ' ' || i.labels), 'D')
        INTO NEW.document
        FROM incident i LEFT JOIN contact c ON c.id = i.reporter_id WHERE i.id = NEW.incident_id;
        NEW.document := NEW.document || {TABLE}_pairs(NEW.document);
        RETURN NEW;
    END $$""",
    f"""CREATE OR REPLACE TRIGGER {TABLE}_document BEFORE INSERT OR UPDATE ON {TABLE}
        FOR EACH ROW EXECUTE FUNCTION {TABLE}_document()""",
    f"""CREATE OR REPLACE FUNCTION {TABLE}_incident() RETURNS TRIGGER LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO {TABLE} (incident_id, document) VALUES (NEW.id, ''::tsvector);
        ELSIF (NEW.ref, NEW.title, NEW.description, NEW.reporter_id, NEW.labels)
                IS DISTINCT FROM (OLD.ref, OLD.title, OLD.description, OLD.reporter_id, OLD.labels) THEN
            UPDATE {TABLE} SET updates = updates WHERE incident_id = NEW.id;
        END IF;
        RETURN NULL;
    END $$""",
    f"""CREATE OR REPLACE TRIGGER {TABLE}_incident AFTER INSERT OR UPDATE ON incident
        FOR EACH ROW EXECUTE FUNCTION {TABLE}_incident()""",
    f"""CREATE OR REPLACE FUNCTION {TABLE}_event() RETURNS TRIGGER LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE {TABLE} SET updates = left(updates || E'\\n' || NEW.body, {{CAP}})
        WHERE incident_id = NEW.incident_id AND length(updates) < {{CAP}};
        RETURN NULL;
    END $$""",
    f"""CREATE OR REPLACE TRIGGER {TABLE}_event AFTER INSERT ON event
        FOR EACH ROW WHEN (NEW.body <> '' AND NEW.type <> 'created') EXECUTE FUNCTION {TABLE}_event()""",
    f"""INSERT INTO {TABLE} (incident_id, updates, document)
        SELECT i.id, coalesce(left(string_agg(e.body, E'\\n' ORDER BY e.id), {{CAP}}), ''), ''::tsvector
        FROM incident i LEFT JOIN event e ON e.incident_id = i.id AND e.body <> '' AND e.type <> 'created'
        WHERE NOT EXISTS (SELECT 1 FROM {TABLE} s WHERE s.incident_id = i.id)
        GROUP BY i.id""",
    # after the backfill: one build of the index is faster than a million inserts into it
    f"CREATE INDEX IF NOT EXISTS {TABLE}_document ON {TABLE} USING GIN (document)",
)


def reindex(database: peewee.Database) -> None:
    """Recompute every PostgreSQL document with the definitions of :func:`install` (migration 13: the word pairs
    of :func:`pairs_tsquery_text`), the GIN index dropped meanwhile and built once after. SQLite: nothing to do."""
    if not is_postgres(database):
        return
    install(database)
    database.execute_sql(f"DROP INDEX IF EXISTS {TABLE}_document")
    database.execute_sql(f"UPDATE {TABLE} SET updates = updates")  # the BEFORE UPDATE trigger computes the document
    database.execute_sql(_POSTGRES[-1])


def suspend(database: peewee.Database) -> None:
    """Drop the triggers (and PostgreSQL's GIN index) for a bulk load; :func:`install` then indexes the rows
    loaded meanwhile in one pass and puts them back. For bench/search.py: incidents written meanwhile by Inlet
    itself would be indexed without their later changes."""
    if is_postgres(database):
        database.execute_sql(f"DROP TRIGGER IF EXISTS {TABLE}_incident ON incident")
        database.execute_sql(f"DROP TRIGGER IF EXISTS {TABLE}_event ON event")
        database.execute_sql(f"DROP INDEX IF EXISTS {TABLE}_document")
    else:
        for name in ("insert", "update", "delete", "event"):
            database.execute_sql(f"DROP TRIGGER IF EXISTS {TABLE}_{name}")
