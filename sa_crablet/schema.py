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

TABLE_PREFIX = "sa_crablet_"
EVENTS_TABLE = f"{TABLE_PREFIX}events"
VERSION_TABLE = f"{TABLE_PREFIX}alembic_version"
"""Alembic's version table for sa_crablet's own migrations (never the host's)."""

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
"""PostgreSQL setting that lifts the append-only guard for the current transaction:
``SET LOCAL sa_crablet.allow_mutation = 'on'`` (maintenance only)."""


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
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Xid8())
        return dialect.type_descriptor(BigInteger())


class TagArray(TypeDecorator[tuple[str, ...]]):
    """Tags: ``text[]`` on PostgreSQL (GIN-indexed), a JSON array on SQLite."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
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
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSON(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def bind_processor(self, dialect: Dialect) -> Any:
        serialize = super().bind_processor(dialect)
        if dialect.name != "sqlite" or serialize is None:
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


JSONB_PAYLOAD = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
"""The payload columns' type before revision ``0005_exact_payloads`` (``jsonb`` on
PostgreSQL): what the earlier migrations create, kept as it was."""

metadata = MetaData(naming_convention=NAMING_CONVENTION)

events = Table(
    EVENTS_TABLE,
    metadata,
    # Positions only ever grow: IDENTITY on PostgreSQL, AUTOINCREMENT on SQLite (never reused).
    Column(
        "position",
        BigInteger().with_variant(Integer(), "sqlite"),
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

Index(IX_EVENTS_TYPE, events.c.type, events.c.position)
Index(IX_EVENTS_TAGS, events.c.tags, postgresql_using="gin").ddl_if(dialect="postgresql")
Index(IX_EVENTS_TRANSACTION, events.c.transaction_id).ddl_if(dialect="postgresql")
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
    Column("last_position", BigInteger().with_variant(Integer(), "sqlite"), nullable=True),
    Column("event_count", Integer(), nullable=False),
)


# -- DDL that Core cannot express: defaults on xid8 and the append-only guard. ----------------
# The same statements are run by the Alembic migrations, so both paths build one schema.

PG_TRANSACTION_DEFAULT = (
    f"ALTER TABLE {EVENTS_TABLE} ALTER COLUMN transaction_id SET DEFAULT pg_current_xact_id()"
)

PG_GUARD_FUNCTION = f"""
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
PG_GUARD_TRIGGERS = (
    f"CREATE TRIGGER {TABLE_PREFIX}events_append_only BEFORE UPDATE OR DELETE ON {EVENTS_TABLE} "
    f"FOR EACH ROW EXECUTE FUNCTION {TABLE_PREFIX}refuse_mutation()",
    f"CREATE TRIGGER {TABLE_PREFIX}events_no_truncate BEFORE TRUNCATE ON {EVENTS_TABLE} "
    f"FOR EACH STATEMENT EXECUTE FUNCTION {TABLE_PREFIX}refuse_mutation()",
)
PG_DROP_GUARD = (
    f"DROP TRIGGER IF EXISTS {TABLE_PREFIX}events_no_truncate ON {EVENTS_TABLE}",
    f"DROP TRIGGER IF EXISTS {TABLE_PREFIX}events_append_only ON {EVENTS_TABLE}",
    f"DROP FUNCTION IF EXISTS {TABLE_PREFIX}refuse_mutation()",
)

SQLITE_GUARD_TRIGGERS = tuple(
    f"CREATE TRIGGER {TABLE_PREFIX}events_no_{op.lower()} BEFORE {op} ON {EVENTS_TABLE} "
    f"BEGIN SELECT RAISE(ABORT, 'sa_crablet events are append-only: {op} refused'); END"
    for op in ("UPDATE", "DELETE")
)
SQLITE_DROP_GUARD = tuple(
    f"DROP TRIGGER IF EXISTS {TABLE_PREFIX}events_no_{op.lower()}" for op in ("UPDATE", "DELETE")
)


PG_COMMANDS_TRANSACTION_DEFAULT = (
    f"ALTER TABLE {COMMANDS_TABLE} ALTER COLUMN transaction_id SET DEFAULT pg_current_xact_id()"
)


def postgresql_extra_ddl() -> tuple[str, ...]:
    return (PG_TRANSACTION_DEFAULT, PG_GUARD_FUNCTION, *PG_GUARD_TRIGGERS)


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


for _statement in postgresql_extra_ddl():
    event.listen(
        events,
        "after_create",
        DDL(_statement).execute_if(dialect="postgresql"),  # type: ignore[no-untyped-call]
    )
for _statement in sqlite_extra_ddl():
    event.listen(
        events,
        "after_create",
        DDL(_statement).execute_if(dialect="sqlite"),  # type: ignore[no-untyped-call]
    )
event.listen(
    commands,
    "after_create",
    DDL(PG_COMMANDS_TRANSACTION_DEFAULT).execute_if(dialect="postgresql"),  # type: ignore[no-untyped-call]
)
