"""peewee models for the domain of DESIGN.md §4.

Times are timezone-aware UTC in Python and naive UTC in the database
(:class:`UTCDateTimeField`), so SQLite and PostgreSQL store the same values.
Only ``gateway/incidents/lifecycle.py`` writes incident fields; everything else reads.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime

import peewee

from store.db import db

# Incident statuses (DESIGN.md §4).
NEW = "new"
ACKNOWLEDGED = "acknowledged"
IN_PROGRESS = "in_progress"
ON_HOLD = "on_hold"
RESOLVED = "resolved"
CLOSED = "closed"
CANCELLED = "cancelled"
STATUSES = (NEW, ACKNOWLEDGED, IN_PROGRESS, ON_HOLD, RESOLVED, CLOSED, CANCELLED)
OPEN_STATUSES = (NEW, ACKNOWLEDGED, IN_PROGRESS, ON_HOLD)

# Inbound statuses (DESIGN.md §1).
PENDING = "pending"
PROCESSED = "processed"
IGNORED = "ignored"
FAILED = "failed"

ROLES = ("admin", "agent", "viewer")
LEVELS = ("high", "medium", "low")


class UTCDateTimeField(peewee.DateTimeField):
    """Aware UTC datetimes in Python, naive UTC in the database."""

    def db_value(self, value):
        if isinstance(value, datetime) and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return super().db_value(value)

    def python_value(self, value):
        value = super().python_value(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class JSONTextField(peewee.TextField):
    """JSON kept as text: portable across SQLite and PostgreSQL."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, sort_keys=True, default=str)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BytesField(peewee.BlobField):
    """Bytes in Python on both backends (psycopg2 returns memoryview)."""

    def python_value(self, value):
        return bytes(value) if isinstance(value, memoryview) else value


class BaseModel(peewee.Model):
    class Meta:
        database = db
        legacy_table_names = False

    def save(self, force_insert=False, only=None):
        """As peewee's, but a new row is inserted with a statement built once per set of columns.

        peewee builds an INSERT's SQL anew on every call, and processing one email wrote five to
        seven rows: building their SQL was a sixth of the pipeline's time (bench/smtp_intake.py).
        Updates, partial saves and rows with a primary key given go through peewee unchanged.
        """
        if only is not None or self._pk is not None or not self._meta.auto_increment:
            return super().save(force_insert=force_insert, only=only)
        values = self.__data__.copy()
        self._populate_unsaved_relations(values)
        values.pop(self._meta.primary_key.name, None)
        fields = self._meta.fields
        names = tuple(values)
        sql = _insert_sql(type(self), names, db.param)
        row = db.execute_sql(sql, [fields[name].db_value(values[name]) for name in names]).fetchone()
        self._pk = row[0]
        self._dirty -= set(names)
        self._dirty.discard(self._meta.primary_key.name)
        return 1

    @classmethod
    def first_where(cls, *, for_update: bool = False, **equal):
        """The row whose columns equal these values (the lowest id when several do), or None.

        As ``Model.get_or_none(Model.a == x, ...)``, with the SELECT built once per model and set of
        columns: building a SELECT of every column anew was most of the pipeline's time per message
        (bench/pipeline.py). ``for_update``: FOR UPDATE on PostgreSQL.
        """
        names = tuple(equal)
        sql = _select_sql(cls, names, db.param, for_update and isinstance(db.obj, peewee.PostgresqlDatabase))
        fields = cls._meta.fields
        row = db.execute_sql(sql, [fields[name].db_value(equal[name]) for name in names]).fetchone()
        return None if row is None else cls.from_row(row)

    @classmethod
    def update_by_id(cls, pk, **values) -> int:
        """``UPDATE ... SET these WHERE id = pk``, its SQL built once per model and set of columns."""
        names = tuple(values)
        fields = cls._meta.fields
        params = [fields[name].db_value(values[name]) for name in names]
        return db.execute_sql(_update_sql(cls, names, db.param), [*params, pk]).rowcount

    @classmethod
    def from_row(cls, row):
        """The instance of a row of :meth:`column_list` (every column, in field order), as peewee makes it."""
        instance = cls(__no_default__=1, **{
            field.name: field.python_value(value) for field, value in zip(cls._meta.sorted_fields, row, strict=True)
        })  # fmt: skip
        instance._dirty.clear()
        return instance

    @classmethod
    def column_list(cls, alias: str = "") -> str:
        """Every column, in field order, for a SELECT whose rows :meth:`from_row` reads."""
        return _column_list(cls, alias)


@functools.cache
def _update_sql(model: type[peewee.Model], names: tuple[str, ...], param: str) -> str:
    meta = model._meta
    assignments = ", ".join(f'"{meta.fields[name].column_name}" = {param}' for name in names)
    return f'UPDATE "{meta.table_name}" SET {assignments} WHERE "{meta.primary_key.column_name}" = {param}'


@functools.cache
def _column_list(model: type[peewee.Model], alias: str) -> str:
    prefix = f'"{alias}".' if alias else ""
    return ", ".join(f'{prefix}"{field.column_name}"' for field in model._meta.sorted_fields)


@functools.cache
def _select_sql(model: type[peewee.Model], names: tuple[str, ...], param: str, for_update: bool) -> str:
    meta = model._meta
    columns = _column_list(model, "")
    where = " AND ".join(f'"{meta.fields[name].column_name}" = {param}' for name in names)
    order = f' ORDER BY "{meta.primary_key.column_name}"' if meta.primary_key.name not in names else ""
    return f'SELECT {columns} FROM "{meta.table_name}" WHERE {where}{order} LIMIT 1' + (
        " FOR UPDATE" if for_update else ""
    )


@functools.cache
def _insert_sql(model: type[peewee.Model], names: tuple[str, ...], param: str) -> str:
    meta = model._meta
    columns = ", ".join(f'"{meta.fields[name].column_name}"' for name in names)
    values = ", ".join([param] * len(names))
    into = f'"{meta.table_name}" ({columns}) VALUES ({values})' if names else f'"{meta.table_name}" DEFAULT VALUES'
    return f'INSERT INTO {into} RETURNING "{meta.primary_key.column_name}"'


class User(BaseModel):
    name = peewee.CharField(max_length=100, unique=True)
    role = peewee.CharField(max_length=10, choices=[(r, r) for r in ROLES])
    password_hash = peewee.CharField(max_length=255)
    email = peewee.CharField(max_length=320, default="")
    api_token_hash = peewee.CharField(max_length=128, null=True, unique=True)
    active = peewee.BooleanField(default=True)
    created_at = UTCDateTimeField()
    session_version = peewee.IntegerField(default=0)  # bumped by logout and a new password: old sessions end
    # The user's own Apprise URLs, paged besides their email when a schedule they are on call for is paged
    # (gateway/schedules.py). Secrets: shown unmasked only to the user and to admins editing them; set through
    # gateway.accounts.set_channels, which validates them.
    channels = JSONTextField(default=list)


class GroupMember(BaseModel):
    """A user's membership of a ``[[group]]`` (migration 9): the one source of truth for who is in a group.

    ``by_config``: listed in the group's ``members`` in the configuration file (seeded at ``inlet db
    upgrade``, at start and at reload; dropped again when the file no longer lists it). ``by_hand``: added in
    the web UI, the API or with ``inlet group add-member`` (kept until removed the same way). A row lives
    while either holds (gateway/membership.py)."""

    group = peewee.CharField(max_length=100)
    user = peewee.CharField(max_length=100)
    by_config = peewee.BooleanField(default=False)
    by_hand = peewee.BooleanField(default=False)
    added_by = peewee.CharField(max_length=320, default="")
    added_at = UTCDateTimeField()

    class Meta:
        table_name = "group_member"
        indexes = ((("group", "user"), True), (("user",), False))


class AccountEvent(BaseModel):
    """One change to a user account (migration 9): who changed what, when; shown on the user's page."""

    user = peewee.CharField(max_length=100)  # the account changed (a name: users are never renamed)
    at = UTCDateTimeField()
    actor = peewee.CharField(max_length=320)
    action = peewee.CharField(max_length=32)  # created | role | password | disabled | enabled | group-added | ...
    detail = peewee.TextField(default="")

    class Meta:
        table_name = "account_event"
        indexes = ((("user", "at"), False),)


class Contact(BaseModel):
    """Someone who reports incidents or is told about them (not a login)."""

    email = peewee.CharField(max_length=320, unique=True)
    name = peewee.CharField(max_length=200, default="")
    undeliverable_until = UTCDateTimeField(null=True)
    created_at = UTCDateTimeField()


class Incident(BaseModel):
    number = peewee.IntegerField(unique=True)
    ref = peewee.CharField(max_length=32, unique=True)
    title = peewee.CharField(max_length=500)
    description = peewee.TextField(default="")
    status = peewee.CharField(max_length=16, default=NEW)
    category = peewee.CharField(max_length=100, default="")
    service = peewee.CharField(max_length=100, default="")
    impact = peewee.CharField(max_length=8, default="medium")
    urgency = peewee.CharField(max_length=8, default="medium")
    priority = peewee.CharField(max_length=4, default="P3")
    procedure = peewee.CharField(max_length=16, default="standard")
    group = peewee.CharField(max_length=100, default="")
    assignee = peewee.ForeignKeyField(User, null=True, backref="assigned", on_delete="SET NULL")
    reporter = peewee.ForeignKeyField(Contact, null=True, backref="reported", on_delete="SET NULL")
    source = peewee.CharField(max_length=32, default="manual")
    integration = peewee.CharField(max_length=100, default="")
    tags = JSONTextField(default=list)
    labels = JSONTextField(default=dict)
    major = peewee.BooleanField(default=False)
    security = peewee.BooleanField(default=False)
    escalated = peewee.BooleanField(default=False)
    status_page = peewee.CharField(max_length=16, default="")  # major: investigating|identified|monitoring|resolved
    drill = peewee.BooleanField(default=False)
    flapping = peewee.BooleanField(default=False)
    flap_count = peewee.IntegerField(default=0)
    respond_by = UTCDateTimeField(null=True)
    resolve_by = UTCDateTimeField(null=True)
    opened_at = UTCDateTimeField()
    acknowledged_at = UTCDateTimeField(null=True)
    resolved_at = UTCDateTimeField(null=True)
    closed_at = UTCDateTimeField(null=True)
    cancelled_at = UTCDateTimeField(null=True)
    on_hold_since = UTCDateTimeField(null=True)
    paused_seconds = peewee.IntegerField(default=0)
    updated_at = UTCDateTimeField()
    last_signal_at = UTCDateTimeField(null=True)
    signal_count = peewee.IntegerField(default=0)
    reopen_count = peewee.IntegerField(default=0)
    reassignment_count = peewee.IntegerField(default=0)
    resolution_code = peewee.CharField(max_length=64, default="")
    resolution_notes = peewee.TextField(default="")
    fix_type = peewee.CharField(max_length=16, default="")  # workaround | permanent
    cause_code = peewee.CharField(max_length=64, default="")
    cause_text = peewee.TextField(default="")
    closed_by = peewee.CharField(max_length=16, default="")  # reporter | agent | auto
    review = JSONTextField(null=True)  # post-incident review: cause, actions with owners
    decisions = JSONTextField(default=dict)  # which rule set which field
    parent = peewee.ForeignKeyField("self", null=True, backref="children", on_delete="SET NULL")

    class Meta:
        indexes = (
            (("status", "priority"), False),
            (("status", "security", "priority", "assignee"), False),  # the web queue's covering index
            (("group", "status"), False),
            (("opened_at",), False),
            # reports (gateway/reports/figures.py): what was acknowledged, resolved, closed or fell due in a period
            (("acknowledged_at",), False),
            (("resolved_at",), False),
            (("closed_at",), False),
            (("respond_by",), False),
            (("resolve_by",), False),
        )


class CorrelationKey(BaseModel):
    """A key that threads signals onto an incident (Message-ID, fingerprint, group key).

    ``open`` mirrors whether the incident is open, so the correlate step finds the
    incident of an open problem with one indexed lookup.
    """

    incident = peewee.ForeignKeyField(Incident, backref="keys", on_delete="CASCADE")
    kind = peewee.CharField(max_length=16)  # message-id | fingerprint | group
    value = peewee.CharField(max_length=512)
    open = peewee.BooleanField(default=True)
    state = peewee.CharField(max_length=16, default="")  # per-fingerprint state: firing | resolved
    created_at = UTCDateTimeField()

    class Meta:
        indexes = ((("kind", "value", "open"), False), (("incident", "kind"), False))


class Alert(BaseModel):
    """One alert (a fingerprint) of an alert incident, as its source last reported it (gateway/alert_members.py).

    The incident page lists these: every member of an alert group, not only the one that opened it.
    """

    incident = peewee.ForeignKeyField(Incident, backref="alerts", on_delete="CASCADE")
    fingerprint = peewee.CharField(max_length=512)
    status = peewee.CharField(max_length=16)  # firing | resolved
    title = peewee.CharField(max_length=500, default="")
    starts_at = UTCDateTimeField(null=True)
    ends_at = UTCDateTimeField(null=True)
    labels = JSONTextField(default=dict)
    annotations = JSONTextField(default=dict)
    links = JSONTextField(default=list)  # [[name, http(s) URL], ...]: source, panel, dashboard, runbook, silence
    first_seen_at = UTCDateTimeField()
    updated_at = UTCDateTimeField()

    class Meta:
        indexes = ((("incident", "fingerprint"), True),)


class Inbound(BaseModel):
    """The raw input exactly as received, kept before anything is acknowledged."""

    source = peewee.CharField(max_length=32)  # smtp | imap | import | webhook
    integration = peewee.CharField(max_length=100, default="")
    received_at = UTCDateTimeField()
    dedup_key = peewee.CharField(max_length=255, null=True, unique=True)
    status = peewee.CharField(max_length=16, default=PENDING)
    reason = peewee.TextField(default="")  # why ignored, or the error when failed
    raw = BytesField()
    headers = JSONTextField(default=dict)
    envelope_from = peewee.CharField(max_length=320, null=True)
    envelope_to = JSONTextField(default=list)
    peer = peewee.CharField(max_length=100, default="")
    mail_class = peewee.CharField(max_length=16, default="")
    decisions = JSONTextField(default=list)  # the pipeline's steps and rule hits
    incident = peewee.ForeignKeyField(Incident, null=True, backref="inbounds", on_delete="SET NULL")
    attempts = peewee.IntegerField(default=0)
    processed_at = UTCDateTimeField(null=True)

    class Meta:
        indexes = ((("status", "received_at"), False),)


class Event(BaseModel):
    """One change or message on an incident: the timeline and the audit log."""

    incident = peewee.ForeignKeyField(Incident, backref="events", on_delete="CASCADE")
    at = UTCDateTimeField()
    type = peewee.CharField(max_length=32)
    actor = peewee.CharField(max_length=320)
    visibility = peewee.CharField(max_length=8, default="internal")  # public | internal
    field = peewee.CharField(max_length=32, default="")
    old = peewee.TextField(null=True)
    new = peewee.TextField(null=True)
    body = peewee.TextField(default="")
    data = JSONTextField(default=dict)
    inbound = peewee.ForeignKeyField(Inbound, null=True, backref="events", on_delete="SET NULL")

    class Meta:
        indexes = ((("incident", "at"), False),)


class Attachment(BaseModel):
    incident = peewee.ForeignKeyField(Incident, null=True, backref="attachments", on_delete="CASCADE")
    inbound = peewee.ForeignKeyField(Inbound, null=True, backref="attachments", on_delete="CASCADE")
    event = peewee.ForeignKeyField(Event, null=True, backref="attachments", on_delete="SET NULL")
    filename = peewee.CharField(max_length=255)
    content_type = peewee.CharField(max_length=255)
    size = peewee.IntegerField()
    sha256 = peewee.CharField(max_length=64)
    data = BytesField(null=True)
    inline = peewee.BooleanField(default=False)
    content_id = peewee.CharField(max_length=255, null=True)
    skipped = peewee.CharField(max_length=255, null=True)


class Notification(BaseModel):
    """An outbox row: written with the change that caused it, delivered by a worker."""

    incident = peewee.ForeignKeyField(Incident, null=True, backref="notifications", on_delete="CASCADE")
    event = peewee.ForeignKeyField(Event, null=True, backref="notifications", on_delete="SET NULL")
    audience = peewee.CharField(max_length=32)  # reporter | group | escalation | stakeholder | test
    template = peewee.CharField(max_length=64)
    targets = JSONTextField(default=list)  # Apprise URLs or tags
    context = JSONTextField(default=dict)
    status = peewee.CharField(max_length=16, default=PENDING)  # pending | sent | failed | digested
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = UTCDateTimeField()
    results = JSONTextField(default=dict)  # per target: last outcome
    last_error = peewee.TextField(default="")
    created_at = UTCDateTimeField()
    sent_at = UTCDateTimeField(null=True)
    claimed_by = peewee.CharField(max_length=64, null=True)
    claimed_until = UTCDateTimeField(null=True)
    channel = peewee.CharField(max_length=32, null=True)  # digests only: the channel they collect for

    class Meta:
        indexes = ((("status", "next_attempt_at"), False), (("channel", "status"), False))


class NotificationAttempt(BaseModel):
    """One send of one outbox row to one channel: the delivery log (and the per-channel rate count)."""

    notification = peewee.ForeignKeyField(Notification, backref="attempt_log", on_delete="CASCADE")
    at = UTCDateTimeField()
    channel = peewee.CharField(max_length=32)  # hash of the target URL: no secrets in this table
    url = peewee.CharField(max_length=500)  # the target with its secrets masked
    ok = peewee.BooleanField()
    detail = peewee.TextField(default="")
    elapsed = peewee.FloatField(default=0.0)
    worker = peewee.CharField(max_length=64, default="")

    class Meta:
        indexes = ((("channel", "at"), False), (("notification", "at"), False))


class Timer(BaseModel):
    """A due action (escalation step, SLA warning, reminder, auto-close) as a row."""

    incident = peewee.ForeignKeyField(Incident, backref="timers", on_delete="CASCADE")
    kind = peewee.CharField(max_length=32)
    step = peewee.IntegerField(default=0)
    due_at = UTCDateTimeField()
    status = peewee.CharField(max_length=16, default=PENDING)  # pending | fired | cancelled
    data = JSONTextField(default=dict)
    fired_at = UTCDateTimeField(null=True)
    fired_by = peewee.CharField(max_length=64, null=True)

    class Meta:
        indexes = (
            (("status", "due_at"), False),
            (("incident", "kind", "step"), True),
        )


class OnCallOverride(BaseModel):
    """A user covers an on-call schedule for a span (gateway/schedules.py): wins over its rotations."""

    schedule = peewee.CharField(max_length=100)
    user = peewee.CharField(max_length=100)
    starts_at = UTCDateTimeField()
    ends_at = UTCDateTimeField()
    reason = peewee.CharField(max_length=500, default="")
    created_by = peewee.CharField(max_length=100)
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "oncall_override"
        indexes = ((("schedule", "ends_at"), False),)


# Problem statuses (ITIL problem management): open -> known_error -> resolved -> closed.
PROBLEM_OPEN = "open"
KNOWN_ERROR = "known_error"
PROBLEM_STATUSES = (PROBLEM_OPEN, KNOWN_ERROR, RESOLVED, CLOSED)


class Problem(BaseModel):
    """The cause behind one or more incidents, investigated so they do not recur (migration 4).

    ``security`` problems (made from a security incident) are seen only by who sees security incidents.
    """

    number = peewee.IntegerField(unique=True)
    ref = peewee.CharField(max_length=32, unique=True)
    title = peewee.CharField(max_length=500)
    description = peewee.TextField(default="")
    status = peewee.CharField(max_length=16, default=PROBLEM_OPEN)
    owner = peewee.ForeignKeyField(User, null=True, backref="problems", on_delete="SET NULL")
    workaround = peewee.TextField(default="")
    root_cause = peewee.TextField(default="")
    cause_code = peewee.CharField(max_length=64, default="")
    service = peewee.CharField(max_length=100, default="")
    security = peewee.BooleanField(default=False)
    created_by = peewee.CharField(max_length=320)
    created_at = UTCDateTimeField()
    updated_at = UTCDateTimeField()
    resolved_at = UTCDateTimeField(null=True)
    closed_at = UTCDateTimeField(null=True)

    class Meta:
        indexes = ((("status", "updated_at"), False),)


class ProblemIncident(BaseModel):
    """An incident linked to a problem (an incident may belong to several)."""

    problem = peewee.ForeignKeyField(Problem, backref="links", on_delete="CASCADE")
    incident = peewee.ForeignKeyField(Incident, backref="problem_links", on_delete="CASCADE")
    linked_by = peewee.CharField(max_length=320)
    linked_at = UTCDateTimeField()

    class Meta:
        indexes = ((("problem", "incident"), True), (("incident",), False))


class ProblemEvent(BaseModel):
    """One change of a problem: its timeline (``incident`` names the incident a link event is about)."""

    problem = peewee.ForeignKeyField(Problem, backref="events", on_delete="CASCADE")
    at = UTCDateTimeField()
    type = peewee.CharField(max_length=32)
    actor = peewee.CharField(max_length=320)
    field = peewee.CharField(max_length=32, default="")
    old = peewee.TextField(null=True)
    new = peewee.TextField(null=True)
    body = peewee.TextField(default="")
    incident = peewee.ForeignKeyField(Incident, null=True, backref="problem_events", on_delete="SET NULL")

    class Meta:
        indexes = ((("problem", "at"), False),)


class MailboxState(BaseModel):
    """The IMAP checkpoint of one configured mailbox: UIDVALIDITY and the last stored UID."""

    mailbox = peewee.CharField(max_length=100, unique=True)
    uidvalidity = peewee.BigIntegerField()
    last_uid = peewee.BigIntegerField(default=0)
    updated_at = UTCDateTimeField()


class MailboxHealth(BaseModel):
    """How the IMAP poller of one mailbox is doing (gateway/intake/mailbox_status.py), written by the imap role and
    read by every process (/readyz, the queue's header, the Configuration page): kept apart from the checkpoint.

    ``status``: connecting, connected (scanning), idle (waiting for news) or failing; ``since``: when it entered
    that status (while failing: the first failure of the run, not the latest); ``problem`` and ``last_error``:
    what failed, in words ("cannot log in", "the server refused the login: Authentication failed"), kept after a
    recovery with ``last_error_at``; ``last_poll_at``: the last complete scan of the folder."""

    mailbox = peewee.CharField(max_length=100, unique=True)
    status = peewee.CharField(max_length=16)
    since = UTCDateTimeField()
    problem = peewee.CharField(max_length=100, default="")
    last_error = peewee.TextField(default="")
    last_error_at = UTCDateTimeField(null=True)
    last_poll_at = UTCDateTimeField(null=True)


class HeartbeatState(BaseModel):
    """What Inlet knows of one heartbeat (gateway/incidents/heartbeats.py): its last beat, and since when it is
    expired (null: not expired). A beat is one UPDATE of this row; the timers role sets and clears ``expired_at``
    with conditional UPDATEs, so one process alone turns an expiry or a recovery into an Inbound."""

    name = peewee.CharField(max_length=200, unique=True)
    started_at = UTCDateTimeField()  # when Inlet first watched it: a heartbeat that never beat is due from here
    last_beat_at = UTCDateTimeField(null=True)
    beats = peewee.BigIntegerField(default=0)
    expired_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "heartbeat"


class Counter(BaseModel):
    """Named counters (incident numbers): incremented inside the creating transaction."""

    name = peewee.CharField(max_length=32, primary_key=True)
    value = peewee.BigIntegerField(default=0)


class RefusalCount(BaseModel):
    """Inputs the intake refused before storing them, by source and reason (gateway/intake/refusals.py): each
    listener process adds its in-memory counts here periodically, so a flood of refusals is not a write each."""

    source = peewee.CharField(max_length=32)
    reason = peewee.CharField(max_length=32)
    count = peewee.BigIntegerField(default=0)
    updated_at = UTCDateTimeField()

    class Meta:
        table_name = "refusal_count"
        indexes = ((("source", "reason"), True),)


class ReportRun(BaseModel):
    """One scheduled report sent for one period (gateway/reports/schedule.py): unique, so it is sent once."""

    name = peewee.CharField(max_length=100)
    period_start = UTCDateTimeField()
    period_end = UTCDateTimeField()
    claimed_by = peewee.CharField(max_length=64)  # the process that won the insert
    created_at = UTCDateTimeField()

    class Meta:
        indexes = ((("name", "period_start"), True),)


class SchemaVersion(BaseModel):
    version = peewee.IntegerField(primary_key=True)
    description = peewee.CharField(max_length=200)
    applied_at = UTCDateTimeField()


MODELS = (
    User,
    Contact,
    Incident,
    CorrelationKey,
    Inbound,
    Event,
    Attachment,
    Notification,
    NotificationAttempt,
    Timer,
    Counter,
    MailboxState,
    ReportRun,
)
