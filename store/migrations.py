"""Versioned schema migrations.

Each migration is ``(version, description, function(database))``, applied in
order inside a transaction and recorded in ``schema_version``. ``upgrade`` is
idempotent; ``inlet serve`` refuses to start unless ``current_version`` equals
:data:`LATEST`. Version 1 creates the tables from the models as they were at
version 1; later versions must use ``playhouse.migrate`` operations, never the
live models, so that an old database upgrades through every step.
"""

from __future__ import annotations

from datetime import UTC, datetime

import peewee
from playhouse.migrate import SchemaMigrator, migrate

from gateway.core.errors import SchemaOutdated
from store import models, search
from store.db import db


def _v1_initial(database: peewee.Database) -> None:
    database.create_tables(models.MODELS)
    models.Counter.insert(name="incident", value=0).on_conflict_ignore().execute()


def _v2_session_version(database: peewee.Database) -> None:
    """Users get a session generation: logout and a new password end every session of the user."""
    table = models.User._meta.table_name
    if "session_version" in {c.name for c in database.get_columns(table)}:
        return  # a database created at version 1 by today's models has it already
    migrator = SchemaMigrator.from_database(database)
    migrate(migrator.add_column(table, "session_version", peewee.IntegerField(default=0)))


def _v3_oncall_overrides(database: peewee.Database) -> None:
    """On-call overrides (gateway/schedules.py): a user covers a schedule for a span."""

    class OnCallOverride(peewee.Model):  # the table as at version 3, not the live model
        schedule = peewee.CharField(max_length=100)
        user = peewee.CharField(max_length=100)
        starts_at = peewee.DateTimeField()
        ends_at = peewee.DateTimeField()
        reason = peewee.CharField(max_length=500, default="")
        created_by = peewee.CharField(max_length=100)
        created_at = peewee.DateTimeField()

        class Meta:
            table_name = "oncall_override"
            indexes = ((("schedule", "ends_at"), False),)

    OnCallOverride._meta.set_database(database)
    database.create_tables([OnCallOverride], safe=True)


def _v4_problems(database: peewee.Database) -> None:
    """Problem records: problems, their linked incidents and their timeline; a counter for PRB numbers.
    And the indexes that keep /metrics' counts range scans (web/metrics.py)."""
    # create_tables builds these three from today's models; they must not change shape without a migration
    database.create_tables([models.Problem, models.ProblemIncident, models.ProblemEvent], safe=True)
    models.Counter.insert(name="problem", value=0).on_conflict_ignore().execute()
    for name, table, columns in METRICS_INDEXES:
        database.execute_sql(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ({columns})')


METRICS_INDEXES = (
    ("inbound_source_status", "inbound", '"source", "status"'),  # intake totals: an index-only count
    ("incident_status_priority_drill", "incident", '"status", "priority", "drill"'),  # incidents by status
    ("event_type_new", "event", '"type", "new"'),  # escalations by kind: an index-only count
    ("notification_attempt_ok_at", "notification_attempt", '"ok", "at"'),  # delivery failures
)


def _v5_report_runs(database: peewee.Database) -> None:
    """Scheduled reports: one row per report and period sent (created from the model as it was at version 5)."""

    class ReportRun(peewee.Model):
        name = peewee.CharField(max_length=100)
        period_start = models.UTCDateTimeField()
        period_end = models.UTCDateTimeField()
        claimed_by = peewee.CharField(max_length=64)
        created_at = models.UTCDateTimeField()

        class Meta:
            table_name = "report_run"
            indexes = ((("name", "period_start"), True),)

    with database.bind_ctx([ReportRun]):
        database.create_tables([ReportRun], safe=True)  # a database created at version 1 by today's models has it


REPORT_INDEXES = ("acknowledged_at", "resolved_at", "closed_at", "respond_by", "resolve_by")


def _v6_report_indexes(database: peewee.Database) -> None:
    """Reports select incidents by when they were acknowledged, resolved, closed or fell due (gateway/reports/)."""
    migrator = SchemaMigrator.from_database(database)
    existing = {tuple(index.columns) for index in database.get_indexes("incident")}
    migrate(*(migrator.add_index("incident", (c,)) for c in REPORT_INDEXES if (c,) not in existing))


def _v7_user_channels(database: peewee.Database) -> None:
    """Users get their own paging channels (Apprise URLs, a JSON list): schedules page them when on call."""
    table = models.User._meta.table_name
    if "channels" in {c.name for c in database.get_columns(table)}:
        return  # a database created at version 1 by today's models has it already
    migrator = SchemaMigrator.from_database(database)
    migrate(migrator.add_column(table, "channels", peewee.TextField(default="[]")))


def _v8_refusal_counts(database: peewee.Database) -> None:
    """Counts of refused inputs by source and reason (gateway/intake/; created as the table was at version 8)."""

    class RefusalCount(peewee.Model):
        source = peewee.CharField(max_length=32)
        reason = peewee.CharField(max_length=32)
        count = peewee.BigIntegerField(default=0)
        updated_at = models.UTCDateTimeField()

        class Meta:
            table_name = "refusal_count"
            indexes = ((("source", "reason"), True),)

    with database.bind_ctx([RefusalCount]):
        database.create_tables([RefusalCount], safe=True)


def _v9_accounts(database: peewee.Database) -> None:
    """Group membership in the database (seeded from ``[[group]] members``, changed in the UI and CLI) and
    the log of account changes (created as the tables were at version 9)."""

    class GroupMember(peewee.Model):
        group = peewee.CharField(max_length=100)
        user = peewee.CharField(max_length=100)
        by_config = peewee.BooleanField(default=False)
        by_hand = peewee.BooleanField(default=False)
        added_by = peewee.CharField(max_length=320, default="")
        added_at = models.UTCDateTimeField()

        class Meta:
            table_name = "group_member"
            indexes = ((("group", "user"), True), (("user",), False))

    class AccountEvent(peewee.Model):
        user = peewee.CharField(max_length=100)
        at = models.UTCDateTimeField()
        actor = peewee.CharField(max_length=320)
        action = peewee.CharField(max_length=32)
        detail = peewee.TextField(default="")

        class Meta:
            table_name = "account_event"
            indexes = ((("user", "at"), False),)

    with database.bind_ctx([GroupMember, AccountEvent]):
        database.create_tables([GroupMember, AccountEvent], safe=True)


def _v10_report_rollup(database: peewee.Database) -> None:
    """The report rollup (gateway/reports/rollup.py): per-day sums and histograms, the dates incident changes
    touched (kept by triggers on incident), its state."""

    class Rollup(peewee.Model):
        day = peewee.CharField(max_length=10)
        security = peewee.BooleanField()
        dim = peewee.CharField(max_length=16)
        value = peewee.TextField()
        first_opened = peewee.DateTimeField(null=True)
        last_opened = peewee.DateTimeField(null=True)

        class Meta:
            table_name = "report_rollup"
            primary_key = False
            indexes = ((("day", "dim"), False),)

    for name in ROLLUP_SUMS:
        Rollup._meta.add_field(name, peewee.BigIntegerField(default=0))

    class RollupHist(peewee.Model):
        day = peewee.CharField(max_length=10)
        security = peewee.BooleanField()
        metric = peewee.CharField(max_length=4)
        bucket = peewee.IntegerField()
        n = peewee.BigIntegerField()

        class Meta:
            table_name = "report_rollup_hist"
            primary_key = False
            indexes = ((("day",), False),)

    class Dirty(peewee.Model):
        day = peewee.CharField(max_length=10)

        class Meta:
            table_name = "report_dirty"

    class RollupState(peewee.Model):
        id = peewee.IntegerField(primary_key=True)
        tz = peewee.CharField(max_length=64)
        built_until = peewee.CharField(max_length=10)
        built_at = models.UTCDateTimeField()

        class Meta:
            table_name = "report_rollup_state"

    tables = [Rollup, RollupHist, Dirty, RollupState]
    with database.bind_ctx(tables):
        database.create_tables(tables, safe=True)
    for statement in rollup_triggers(isinstance(database, peewee.PostgresqlDatabase)):
        database.execute_sql(statement)
    # Empty until built: reports compute live meanwhile. `inlet db upgrade` builds it next (in the
    # configured time zone), as does `inlet report --rebuild`.


# The rollup's sums (gateway/reports/rollup.py SUMS) and what an incident change must mark: its days, old and new.
ROLLUP_SUMS = (
    "opened", "major", "acked", "mtta_sum", "resolved", "mttr_sum", "closed", "reopened", "escalated",
    "reassigned", "first_time", "resp_due", "resp_breached", "res_due", "res_breached",
)  # fmt: skip
ROLLUP_TIMES = ("opened_at", "acknowledged_at", "resolved_at", "closed_at", "respond_by", "resolve_by")
ROLLUP_WATCHED = ROLLUP_TIMES + (
    "status", "drill", "security", "major", "category", "group", "priority", "source", "service", "procedure",
    "on_hold_since", "paused_seconds", "reopen_count", "reassignment_count", "escalated", "cause_code",
)  # fmt: skip


def rollup_triggers(postgres: bool) -> list[str]:
    """Triggers that append the UTC dates an incident insert, relevant update or delete touches to report_dirty."""
    if postgres:

        def dates(row):
            return " UNION ".join(f"SELECT to_char({row}.\"{c}\", 'YYYY-MM-DD')" for c in ROLLUP_TIMES)

        changed = " OR ".join(f'OLD."{c}" IS DISTINCT FROM NEW."{c}"' for c in ROLLUP_WATCHED)
        function = (
            "CREATE OR REPLACE FUNCTION report_mark_dirty() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF TG_OP <> 'INSERT' THEN INSERT INTO report_dirty (day) SELECT d FROM ({dates('OLD')}) s (d) "
            "WHERE d IS NOT NULL; END IF; "
            f"IF TG_OP <> 'DELETE' THEN INSERT INTO report_dirty (day) SELECT d FROM ({dates('NEW')}) s (d) "
            "WHERE d IS NOT NULL; END IF; RETURN NULL; END $$"
        )
        return [
            function,
            "DROP TRIGGER IF EXISTS report_dirty_insert_delete ON incident",
            "CREATE TRIGGER report_dirty_insert_delete AFTER INSERT OR DELETE ON incident "
            "FOR EACH ROW EXECUTE FUNCTION report_mark_dirty()",
            "DROP TRIGGER IF EXISTS report_dirty_update ON incident",
            f"CREATE TRIGGER report_dirty_update AFTER UPDATE ON incident FOR EACH ROW WHEN ({changed}) "
            "EXECUTE FUNCTION report_mark_dirty()",
        ]

    def insert(rows):
        selects = " UNION ".join(f'SELECT substr({r}."{c}", 1, 10) AS d' for r in rows for c in ROLLUP_TIMES)
        return f"INSERT INTO report_dirty (day) SELECT d FROM ({selects}) WHERE d IS NOT NULL;"

    changed = " OR ".join(f'OLD."{c}" IS NOT NEW."{c}"' for c in ROLLUP_WATCHED)
    return [
        f"CREATE TRIGGER IF NOT EXISTS report_dirty_insert AFTER INSERT ON incident BEGIN {insert(['NEW'])} END",
        f"CREATE TRIGGER IF NOT EXISTS report_dirty_delete AFTER DELETE ON incident BEGIN {insert(['OLD'])} END",
        f"CREATE TRIGGER IF NOT EXISTS report_dirty_update AFTER UPDATE ON incident WHEN {changed} "
        f"BEGIN {insert(['OLD', 'NEW'])} END",
    ]


def _v11_search(database: peewee.Database) -> None:
    """Full-text search (store/search.py): the index, the triggers that keep it in step, every incident indexed."""
    search.install(database)


def _v12_alerts(database: peewee.Database) -> None:
    """The member alerts of alert incidents (gateway/pipeline/alert_members.py; the table as at version 12)."""

    class Alert(peewee.Model):
        incident = peewee.ForeignKeyField(models.Incident, on_delete="CASCADE")
        fingerprint = peewee.CharField(max_length=512)
        status = peewee.CharField(max_length=16)
        title = peewee.CharField(max_length=500, default="")
        starts_at = models.UTCDateTimeField(null=True)
        ends_at = models.UTCDateTimeField(null=True)
        labels = peewee.TextField(default="{}")
        annotations = peewee.TextField(default="{}")
        links = peewee.TextField(default="[]")
        first_seen_at = models.UTCDateTimeField()
        updated_at = models.UTCDateTimeField()

        class Meta:
            table_name = "alert"
            indexes = ((("incident", "fingerprint"), True),)

    # not the referenced models: leaving the context would unbind the live Incident model from the proxy
    with database.bind_ctx([Alert], bind_refs=False, bind_backrefs=False):
        database.create_tables([Alert], safe=True)
    # the foreign key registered this migration's Alert as a dependent of the live Incident model: unregister
    # it, or Incident.delete_instance(recursive=True) would try to delete through this unbound class
    Alert._meta.remove_ref(Alert.incident)


def _v13_search_pairs(database: peewee.Database) -> None:
    """PostgreSQL's search documents hold their word pairs, so a phrase is found by the index, not by rechecking
    every incident with its words (store/search.py pairs_tsquery_text); every document recomputed."""
    search.reindex(database)


def _v14_mailbox_health(database: peewee.Database) -> None:
    """How each IMAP poller is doing, for every process to read (gateway/intake/mailbox_status.py; the table as at
    version 14)."""

    class MailboxHealth(peewee.Model):
        mailbox = peewee.CharField(max_length=100, unique=True)
        status = peewee.CharField(max_length=16)
        since = models.UTCDateTimeField()
        problem = peewee.CharField(max_length=100, default="")
        last_error = peewee.TextField(default="")
        last_error_at = models.UTCDateTimeField(null=True)
        last_poll_at = models.UTCDateTimeField(null=True)

        class Meta:
            table_name = "mailbox_health"

    with database.bind_ctx([MailboxHealth]):
        database.create_tables([MailboxHealth], safe=True)


def _v15_heartbeats(database: peewee.Database) -> None:
    """Heartbeats (gateway/incidents/heartbeats.py): one row each (the table as at version 15)."""

    class HeartbeatState(peewee.Model):
        name = peewee.CharField(max_length=200, unique=True)
        started_at = models.UTCDateTimeField()
        last_beat_at = models.UTCDateTimeField(null=True)
        beats = peewee.BigIntegerField(default=0)
        expired_at = models.UTCDateTimeField(null=True)

        class Meta:
            table_name = "heartbeat"

    with database.bind_ctx([HeartbeatState]):
        database.create_tables([HeartbeatState], safe=True)


MIGRATIONS = [
    (1, "initial schema", _v1_initial),
    (2, "user session version", _v2_session_version),
    (3, "on-call overrides", _v3_oncall_overrides),
    (4, "problem records", _v4_problems),
    (5, "scheduled report runs", _v5_report_runs),
    (6, "report indexes", _v6_report_indexes),
    (7, "user channels", _v7_user_channels),
    (8, "refusal counts", _v8_refusal_counts),
    (9, "group membership and account log", _v9_accounts),
    (10, "report rollup", _v10_report_rollup),
    (11, "full-text search", _v11_search),
    (12, "member alerts of alert incidents", _v12_alerts),
    (13, "word pairs in the PostgreSQL search index", _v13_search_pairs),
    (14, "mailbox health", _v14_mailbox_health),
    (15, "heartbeats", _v15_heartbeats),
]
LATEST = MIGRATIONS[-1][0]


def current_version() -> int:
    """The schema version of the connected database (0 when empty)."""
    if not db.table_exists(models.SchemaVersion._meta.table_name):
        return 0
    row = models.SchemaVersion.select(peewee.fn.MAX(models.SchemaVersion.version)).scalar()
    return row or 0


def upgrade() -> list[tuple[int, str]]:
    """Apply every migration newer than the database; return what was applied."""
    applied = []
    with db.connection_context():
        db.create_tables([models.SchemaVersion])
        for version, description, apply in MIGRATIONS:
            with db.atomic():
                if models.SchemaVersion.get_or_none(models.SchemaVersion.version == version):
                    continue
                apply(db.obj)
                models.SchemaVersion.create(version=version, description=description, applied_at=datetime.now(UTC))
                applied.append((version, description))
    return applied


def require_latest() -> None:
    """Raise SchemaOutdated with what to run unless the schema is at :data:`LATEST`."""
    with db.connection_context():
        version = current_version()
    if version < LATEST:
        raise SchemaOutdated(
            f"database schema is at version {version}, this Inlet needs {LATEST}: run 'inlet db upgrade'"
        )
    if version > LATEST:
        raise SchemaOutdated(
            f"database schema is at version {version}, newer than this Inlet ({LATEST}): upgrade Inlet"
        )
