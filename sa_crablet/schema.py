"""The event store's tables as SQLAlchemy Core objects.

Every table name carries the ``sa_crablet_`` prefix so it cannot collide with a host
application's tables, and every index and constraint is named through the naming convention
(error translation and migrations refer to those names).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    Dialect,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    case,
    cast,
    event,
    func,
    literal_column,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import base as postgresql_base
from sqlalchemy.sql.ddl import DDL
from sqlalchemy.types import TypeDecorator, TypeEngine, UserDefinedType

from sa_crablet._json import load_stored

POSTGRESQL = "postgresql"
SQLITE = "sqlite"
"""The dialect names (``dialect.name``) the store knows."""

TABLE_PREFIX = "sa_crablet_"
EVENTS_TABLE = f"{TABLE_PREFIX}events"
VERSION_TABLE = f"{TABLE_PREFIX}alembic_version"
"""Alembic's version table for sa_crablet's own migrations (never the host's)."""
HEAD_REVISION = "0005_exact_payloads"
"""The latest of the packaged migrations: what these tables correspond to (a test keeps it
equal to the migrations' head)."""
BASE_REVISION = "base"
"""Alembic's name for "no migration applied"."""

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

IX_EVENTS_TYPE = "ix_sa_crablet_events_type_position"
IX_EVENTS_TAGS = "ix_sa_crablet_events_tags"
IX_EVENTS_TRANSACTION = "ix_sa_crablet_events_transaction_id"
IX_EVENTS_COMMAND = "ix_sa_crablet_events_command_id"
COMMANDS_TABLE = f"{TABLE_PREFIX}commands"
MAX_COMMAND_ID_LENGTH = 255
POSTGRESQL_ONLY_INDEXES = frozenset({IX_EVENTS_TAGS, IX_EVENTS_TRANSACTION})
"""Indexes built on PostgreSQL only (``ddl_if``), which Alembic's autogenerate does not
honour by itself: see :func:`sa_crablet.migrate.autogenerate_filter`."""

APPEND_ONLY_SQLSTATE = "CR001"
"""SQLSTATE raised by the PostgreSQL trigger that refuses UPDATE, DELETE and TRUNCATE."""
ALLOW_MUTATION_SETTING = "sa_crablet.allow_mutation"
"""PostgreSQL setting that, for the owner of the tables only, lifts the append-only guard. It
must hold the current transaction's id (``pg_current_xact_id()``), so a value left behind by a
session-level ``SET`` lifts nothing for a later transaction. Set it through
:func:`sa_crablet.allow_mutation` (maintenance only)."""


class Xid8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id type."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "XID8"


# Reflection knows xid8 then (instead of NullType and a warning), so Alembic's autogenerate
# compares the column's type like any other. A native type in a later SQLAlchemy wins.
postgresql_base.ischema_names.setdefault("xid8", Xid8)


class TransactionId(TypeDecorator[int]):
    """The writer's transaction id: ``xid8`` on PostgreSQL, an unused integer elsewhere."""

    impl = BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == POSTGRESQL:
            return dialect.type_descriptor(Xid8())
        return dialect.type_descriptor(BigInteger())


class TagArray(TypeDecorator[tuple[str, ...]]):
    """Tags: ``text[]`` on PostgreSQL (GIN-indexed), a JSON array on SQLite."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == POSTGRESQL:
            return dialect.type_descriptor(ARRAY(Text))
        return dialect.type_descriptor(JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else list(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> tuple[str, ...]:
        return tuple(value) if value else ()


class Payload(TypeDecorator[Any]):
    """JSON payloads: ``json`` on PostgreSQL, JSON text on SQLite.

    PostgreSQL's ``json`` (not ``jsonb``) keeps the text as written, so what is read is
    what was appended: ``1e16`` stays a float, ``-0.0`` keeps its sign, object keys keep
    their order (``jsonb`` would give ``10000000000000000``, ``0.0`` and its own order).
    Read back with :func:`sa_crablet._json.load_json` (any depth) unless the engine has
    its own ``json_deserializer``.
    """

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == POSTGRESQL:
            return dialect.type_descriptor(postgresql.JSON(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def bind_processor(self, dialect: Dialect) -> Any:
        serialize = super().bind_processor(dialect)
        if dialect.name != SQLITE or serialize is None:
            return serialize

        def bind(value: Any) -> Any:
            text = serialize(value)
            if isinstance(text, str) and text[:1] in _NUMBER_START:
                return text.encode()  # see sqlite_payload()
            return text

        return bind

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        # Drivers that decode JSON themselves (psycopg) get their loader from the runner;
        # for the others (SQLite) Core would call json.loads, which recurses.
        if dialect.supports_native_json_deserialization or dialect._json_deserializer:
            return super().result_processor(dialect, coltype)
        return load_stored


_NUMBER_START = frozenset("-0123456789")


def sqlite_payload(text: ColumnElement[Any]) -> ColumnElement[Any]:
    """SQLite: payload JSON ``text`` as a payload column stores it.

    A column declared ``JSON`` has NUMERIC affinity: SQLite would store the text of a bare
    number as a number, ``1.0`` as the integer 1, ``-0.0`` as 0, ``2**63`` as a float. Such
    text (and only such: any other JSON starts with ``{ [ "`` or a letter) is stored as a
    BLOB of itself, which no affinity touches; reads decode either.
    """
    first = func.unicode(text)  # the code point of the first character
    number = first.between(literal_column(str(ord("-"))), literal_column(str(ord("9"))))
    return case((number, cast(text, LargeBinary)), else_=text)


JSONB_PAYLOAD = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), POSTGRESQL)
"""The payload columns' type before revision ``0005_exact_payloads`` (``jsonb`` on
PostgreSQL): what the earlier migrations create, kept as it was."""

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""The ``MetaData`` holding sa_crablet's tables, :data:`events` and :data:`commands` (with the
naming convention of their constraints and indexes)."""

events = Table(
    EVENTS_TABLE,
    metadata,
    # Positions only ever grow: IDENTITY on PostgreSQL, AUTOINCREMENT on SQLite (never reused).
    Column(
        "position",
        BigInteger().with_variant(Integer(), SQLITE),
        Identity(always=True),
        primary_key=True,
        autoincrement=True,
    ),
    Column("type", String(255), nullable=False),
    Column("tags", TagArray(), nullable=False),
    Column("data", Payload(), nullable=True),
    Column("metadata", Payload(), nullable=True),
    # Which transaction wrote the row; read heads compare it with a snapshot (gap safety).
    Column("transaction_id", TransactionId(), nullable=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The command whose execution appended the event (NULL for plain appends).
    Column("command_id", String(MAX_COMMAND_ID_LENGTH), nullable=True),
    sqlite_autoincrement=True,
)
"""The events table, ``sa_crablet_events`` (exported as ``sa_crablet.events_table``): one row
per event, its ``position`` growing with every append, never reused. Append-only: a database
trigger refuses ``UPDATE`` and ``DELETE`` (see :func:`sa_crablet.allow_mutation`)."""

Index(IX_EVENTS_TYPE, events.c.type, events.c.position)
Index(IX_EVENTS_TAGS, events.c.tags, postgresql_using="gin").ddl_if(dialect=POSTGRESQL)
Index(IX_EVENTS_TRANSACTION, events.c.transaction_id).ddl_if(dialect=POSTGRESQL)
Index(IX_EVENTS_COMMAND, events.c.command_id)

commands = Table(
    COMMANDS_TABLE,
    metadata,
    # The caller's idempotency key, or a generated UUID: executing an id twice is a no-op.
    Column("id", String(MAX_COMMAND_ID_LENGTH), primary_key=True),
    Column("type", String(255), nullable=False),
    Column("data", Payload(), nullable=True),
    Column("metadata", Payload(), nullable=True),
    Column("transaction_id", TransactionId(), nullable=True),
    Column("executed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The outcome, returned again when the same id is executed again.
    Column("last_position", BigInteger().with_variant(Integer(), SQLITE), nullable=True),
    Column("event_count", Integer(), nullable=False),
)
"""The commands table, ``sa_crablet_commands`` (exported as ``sa_crablet.commands_table``): one
row per executed command, keyed by its id, with its outcome (``last_position``,
``event_count``). Append-only like the events table."""


# -- DDL that Core cannot express: defaults on xid8 and the append-only guard. ----------------
# The same statements are run by the Alembic migrations, so both paths build one schema.

PG_TRANSACTION_DEFAULT = (
    f"ALTER TABLE {EVENTS_TABLE} ALTER COLUMN transaction_id SET DEFAULT pg_current_xact_id()"
)

PG_GUARD_FUNCTION_0001 = f"""
CREATE OR REPLACE FUNCTION {TABLE_PREFIX}refuse_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('{ALLOW_MUTATION_SETTING}', true), '') = 'on' THEN
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION USING
        MESSAGE = 'sa_crablet events are append-only: ' || TG_OP || ' refused',
        ERRCODE = '{APPEND_ONLY_SQLSTATE}',
              HINT = 'for maintenance, SET LOCAL {ALLOW_MUTATION_SETTING} = ''on''';
END;
$$
"""
"""The guard function as revision ``0001_events`` created it (any role could lift it with the
setting); ``0004_append_only_guard`` replaces it with :data:`PG_GUARD_FUNCTION`, and that
revision's downgrade puts this one back."""

# A change goes through only for a role with the privileges of the table's owner (the owner,
# a member of the owning role, a superuser), who could disable or drop the trigger anyway: so
# UPDATE, DELETE or TRUNCATE granted to any other role never reaches a stored row. And only
# in the transaction the setting names: a session-level SET left on a pooled connection
# lifts nothing for the next transaction.
PG_GUARD_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {TABLE_PREFIX}refuse_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('{ALLOW_MUTATION_SETTING}', true) = pg_current_xact_id()::text
        AND pg_has_role(current_user,
            (SELECT c.relowner FROM pg_catalog.pg_class AS c WHERE c.oid = TG_RELID), 'USAGE')
    THEN
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION USING
        MESSAGE = TG_TABLE_NAME || ' is append-only: ' || TG_OP || ' refused',
        ERRCODE = '{APPEND_ONLY_SQLSTATE}',
        HINT = 'maintenance: sa_crablet.allow_mutation(session), as the owner of the table';
END;
$$
"""


def _pg_guard_triggers(table: str) -> tuple[str, ...]:
    return (
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {TABLE_PREFIX}refuse_mutation()",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {TABLE_PREFIX}refuse_mutation()",
    )


def _pg_drop_guard_triggers(table: str) -> tuple[str, ...]:
    return (
        f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
    )


def _sqlite_guard_triggers(
    table: str, noun: str, *, if_not_exists: bool = False
) -> tuple[str, ...]:
    create = "CREATE TRIGGER IF NOT EXISTS" if if_not_exists else "CREATE TRIGGER"
    return tuple(
        f"{create} {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'sa_crablet {noun} are append-only: {op} refused'); END"
        for op in ("UPDATE", "DELETE")
    )


def _sqlite_drop_guard_triggers(table: str) -> tuple[str, ...]:
    return tuple(f"DROP TRIGGER IF EXISTS {table}_no_{op}" for op in ("update", "delete"))


PG_GUARD_TRIGGERS = _pg_guard_triggers(EVENTS_TABLE)
PG_DROP_GUARD = (
    *_pg_drop_guard_triggers(EVENTS_TABLE),
    f"DROP FUNCTION IF EXISTS {TABLE_PREFIX}refuse_mutation()",
)
PG_COMMANDS_GUARD_TRIGGERS = _pg_guard_triggers(COMMANDS_TABLE)
PG_DROP_COMMANDS_GUARD = _pg_drop_guard_triggers(COMMANDS_TABLE)

SQLITE_GUARD_TRIGGERS = _sqlite_guard_triggers(EVENTS_TABLE, "events")
SQLITE_DROP_GUARD = _sqlite_drop_guard_triggers(EVENTS_TABLE)
SQLITE_COMMANDS_GUARD_TRIGGERS = _sqlite_guard_triggers(COMMANDS_TABLE, "commands")
SQLITE_DROP_COMMANDS_GUARD = _sqlite_drop_guard_triggers(COMMANDS_TABLE)
SQLITE_DROP_ALL_GUARD = (*SQLITE_DROP_GUARD, *SQLITE_DROP_COMMANDS_GUARD)
"""Both tables' guard triggers on SQLite, which ``allow_mutation()`` drops ..."""
SQLITE_RESTORE_ALL_GUARD = (
    *_sqlite_guard_triggers(EVENTS_TABLE, "events", if_not_exists=True),
    *_sqlite_guard_triggers(COMMANDS_TABLE, "commands", if_not_exists=True),
)
"""... and recreates (unless a rollback already brought them back)."""


PG_COMMANDS_TRANSACTION_DEFAULT = (
    f"ALTER TABLE {COMMANDS_TABLE} ALTER COLUMN transaction_id SET DEFAULT pg_current_xact_id()"
)


def postgresql_extra_ddl() -> tuple[str, ...]:
    """The raw PostgreSQL DDL of revision ``0001_events``: the guard function in its first
    form (:data:`PG_GUARD_FUNCTION_0001`) and the events table's triggers."""
    return (PG_TRANSACTION_DEFAULT, PG_GUARD_FUNCTION_0001, *PG_GUARD_TRIGGERS)


PG_GUARD_0004 = (PG_GUARD_FUNCTION, *PG_COMMANDS_GUARD_TRIGGERS)
"""What revision ``0004_append_only_guard`` adds on PostgreSQL: the owner-only guard
function (replacing the first one) and the commands table's triggers."""


# SQLite has no GIN: a side table indexes (tag, position), kept in step by triggers, so tag
# queries look positions up by index instead of scanning every event's JSON array.
EVENT_TAGS_TABLE = f"{TABLE_PREFIX}event_tags"
SQLITE_TAG_INDEX = (
    f"CREATE TABLE {EVENT_TAGS_TABLE} (tag TEXT NOT NULL, position INTEGER NOT NULL, "
    f"CONSTRAINT pk_{EVENT_TAGS_TABLE} PRIMARY KEY (tag, position)) WITHOUT ROWID",
    f"CREATE TRIGGER {TABLE_PREFIX}events_tags_insert AFTER INSERT ON {EVENTS_TABLE} BEGIN "
    f"INSERT INTO {EVENT_TAGS_TABLE} (tag, position) "
    f"SELECT value, NEW.position FROM json_each(NEW.tags); END",
    # Only reachable through allow_mutation (maintenance): keep the index exact anyway.
    f"CREATE TRIGGER {TABLE_PREFIX}events_tags_delete AFTER DELETE ON {EVENTS_TABLE} BEGIN "
    f"DELETE FROM {EVENT_TAGS_TABLE} WHERE position = OLD.position "
    f"AND tag IN (SELECT value FROM json_each(OLD.tags)); END",
    f"CREATE TRIGGER {TABLE_PREFIX}events_tags_update AFTER UPDATE OF tags, position "
    f"ON {EVENTS_TABLE} BEGIN "
    f"DELETE FROM {EVENT_TAGS_TABLE} WHERE position = OLD.position "
    f"AND tag IN (SELECT value FROM json_each(OLD.tags)); "
    f"INSERT INTO {EVENT_TAGS_TABLE} (tag, position) "
    f"SELECT value, NEW.position FROM json_each(NEW.tags); END",
)
SQLITE_TAG_INDEX_BACKFILL = (
    f"INSERT INTO {EVENT_TAGS_TABLE} (tag, position) "
    f"SELECT t.value, e.position FROM {EVENTS_TABLE} AS e, json_each(e.tags) AS t"
)
SQLITE_DROP_TAG_INDEX = (
    f"DROP TRIGGER IF EXISTS {TABLE_PREFIX}events_tags_update",
    f"DROP TRIGGER IF EXISTS {TABLE_PREFIX}events_tags_delete",
    f"DROP TRIGGER IF EXISTS {TABLE_PREFIX}events_tags_insert",
    f"DROP TABLE IF EXISTS {EVENT_TAGS_TABLE}",
)


def sqlite_extra_ddl() -> tuple[str, ...]:
    return (*SQLITE_GUARD_TRIGGERS, *SQLITE_TAG_INDEX)


# metadata.create_all() builds what the revisions build up to head. Each table's DDL creates
# the guard function (CREATE OR REPLACE), so either table can also be created on its own.
_AFTER_CREATE: dict[Table, dict[str, tuple[str, ...]]] = {
    events: {
        POSTGRESQL: (PG_TRANSACTION_DEFAULT, PG_GUARD_FUNCTION, *PG_GUARD_TRIGGERS),
        SQLITE: sqlite_extra_ddl(),
    },
    commands: {
        POSTGRESQL: (PG_COMMANDS_TRANSACTION_DEFAULT, *PG_GUARD_0004),
        SQLITE: SQLITE_COMMANDS_GUARD_TRIGGERS,
    },
}
for _table, _by_dialect in _AFTER_CREATE.items():
    for _dialect, _statements in _by_dialect.items():
        for _statement in _statements:
            event.listen(
                _table,
                "after_create",
                DDL(_statement).execute_if(dialect=_dialect),  # type: ignore[no-untyped-call]
            )
