"""Pure statement builders: values in, SQLAlchemy Core statements out. No I/O.

Per-dialect differences live here; :mod:`sa_crablet.store` only executes what this module
builds, so an async sibling can reuse every statement unchanged.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Insert,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    func,
    null,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from sa_crablet.query import Head, Query, QueryItem
from sa_crablet.schema import EVENT_TAGS_TABLE, TagArray, commands, events

POSTGRESQL = "postgresql"
SQLITE = "sqlite"

# -- Query -> boolean expression ----------------------------------------------------------------


class TagsContain(ColumnElement[bool]):
    """The event holds every tag in ``tags``: ``@>`` over ``text[]`` on PostgreSQL (GIN),
    a look-up in the (tag, position) side table on SQLite. Tags are bound as one parameter."""

    inherit_cache = True
    type = Boolean()
    # A predicate, not a boolean value: never render it as "... = 1" on SQLite (that would
    # hide the IN from SQLite's planner).
    _is_implicitly_boolean = True
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy's own convention
        ("column", InternalTraversal.dp_clauseelement),
        ("position", InternalTraversal.dp_clauseelement),
        ("tags", InternalTraversal.dp_clauseelement),
        ("count", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, table: Any, tags: tuple[str, ...]) -> None:
        self.column = table.c.tags
        self.position = table.c.position
        self.tags = bindparam(None, list(tags), type_=TagArray())
        self.count = len(tags)


@compiles(TagsContain, POSTGRESQL)
def _tags_contain_pg(element: TagsContain, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} @> {compiler.process(element.tags, **kw)}"


@compiles(TagsContain)
def _tags_contain_side_table(element: TagsContain, compiler: SQLCompiler, **kw: Any) -> str:
    # Positions having every wanted tag: (tag, position) is the side table's primary key,
    # so each wanted tag is an index range; tags are de-duplicated, so the count is exact.
    position = compiler.process(element.position, **kw)
    wanted = compiler.process(element.tags, **kw)
    return (
        f"{position} IN (SELECT position FROM {EVENT_TAGS_TABLE} "
        f"WHERE tag IN (SELECT value FROM json_each({wanted})) "
        f"GROUP BY position HAVING count(*) = {int(element.count)})"
    )


def item_clause(item: QueryItem, table: Any = events) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []
    if item.types:
        parts.append(table.c.type.in_(item.types))
    if item.tags:
        parts.append(TagsContain(table, item.tags))
    return and_(*parts)


def query_clause(query: Query, table: Any = events) -> ColumnElement[bool]:
    """A ``Query`` as a boolean expression over the events table (or an alias of it).

    Compose it into your own statements: ``select(events).where(query_clause(q))``.
    """
    if query.match_all:
        return true()
    return or_(*(item_clause(item, table) for item in query.items))


# -- after: exclusive positions, and gap safety through snapshots --------------------------------


def after_clause(head: Head | None, dialect: str, table: Any = events) -> ColumnElement[bool]:
    """Events that ``head`` did not cover: a higher position or, on PostgreSQL, a writer
    that was still in flight when the head's snapshot was taken (whatever its position)."""
    if head is None:
        return true()
    later: ColumnElement[bool] = table.c.position > head.position
    if head.snapshot is None or dialect != POSTGRESQL:
        return later
    snap = head.snapshot
    xid = table.c.transaction_id
    unseen: ColumnElement[bool] = xid >= cast(str(snap.xmax), _XID8)
    if snap.xip:
        in_flight = cast(bindparam(None, [str(x) for x in snap.xip], ARRAY(String)), ARRAY(_XID8))
        unseen = or_(unseen, xid == func.any(in_flight))
    if snap.own is not None:
        unseen = and_(unseen, xid != cast(str(snap.own), _XID8))
    clause: ColumnElement[bool] = or_(later, unseen)
    return clause


class _Xid8Type(String):
    """Cast target for ``xid8`` literals (bound as text, cast in SQL)."""

    cache_ok = True


@compiles(_Xid8Type, POSTGRESQL)
def _xid8_type(element: _Xid8Type, compiler: Any, **kw: Any) -> str:
    return "XID8"


_XID8 = _Xid8Type()


def conflict_select(query: Query, head: Head | None, dialect: str) -> Select[Any]:
    """The first event that makes an append condition fail: one matching the query that
    ``head`` did not cover. The appending transaction's own events count like any other,
    except those its read saw (``Snapshot.own``), so "unique within one transaction" holds.
    """
    return (
        select(events.c.position)
        .where(query_clause(query), after_clause(head, dialect))
        .order_by(events.c.position)
        .limit(1)
    )


# -- reads ---------------------------------------------------------------------------------------

EVENT_COLUMNS = ("position", "type", "tags", "data", "metadata", "recorded_at")


def read_select(
    query: Query, head: Head | None, *, backwards: bool, limit: int | None, dialect: str
) -> Select[Any]:
    """Matching events in position order.

    On PostgreSQL the first columns are ``pg_current_snapshot()`` and the reader's own
    transaction id (if it has one), taken by the *same*
    statement as the rows (a snapshot taken by another statement would be either unsafe or
    too strict), and the rows are LEFT JOINed to it so an empty result still carries it.
    """
    order = events.c.position.desc() if backwards else events.c.position.asc()
    rows = (
        select(*(events.c[name] for name in EVENT_COLUMNS))
        .where(query_clause(query), after_clause(head, dialect))
        .order_by(order)
    )
    if limit is not None:
        rows = rows.limit(limit)
    if dialect != POSTGRESQL:
        return rows
    snap = select(
        cast(func.pg_current_snapshot(), String).label("snapshot"),
        cast(func.pg_current_xact_id_if_assigned(), String).label("own"),
    ).subquery("snap")
    inner = rows.lateral("e")
    return select(
        snap.c.snapshot, snap.c.own, *(inner.c[name] for name in EVENT_COLUMNS)
    ).select_from(snap.outerjoin(inner, true()))


# -- appends -------------------------------------------------------------------------------------


def lock_select() -> Select[Any]:
    """Take transaction-scoped advisory locks, in the order given, and report the isolation
    level. Parameters: ``keys`` (sorted ``bigint[]``) and ``exclusive`` (``bool[]``).

    One statement takes them all in ascending key order, so two appends can never wait for
    each other in opposite orders (no deadlock between single appends).
    """
    locks = (
        func.unnest(
            bindparam("keys", type_=ARRAY(BigInteger)), bindparam("exclusive", type_=ARRAY(Boolean))
        )
        .table_valued("k", "x")
        .render_derived(name="lk")
    )
    taken = select(
        func.count(
            case(
                (locks.c.x, cast(func.pg_advisory_xact_lock(locks.c.k), String)),
                else_=cast(func.pg_advisory_xact_lock_shared(locks.c.k), String),
            )
        )
    ).scalar_subquery()
    return select(func.current_setting("transaction_isolation"), taken)


def insert_events(dialect: str, condition_query: Query | None, head: Head | None) -> Insert:
    """Insert a batch, given as one JSON parameter ``batch`` (a list of
    ``[type, tags, data_json, metadata_json]``), in order, unless the condition matches.
    Parameter ``command_id`` links the events to the command that produced them (or NULL).

    The check and the insert are one statement: nothing is written when it fails, and the
    host transaction stays usable. Returns the new positions.
    """
    if dialect == POSTGRESQL:
        rows = func.jsonb_array_elements(cast(bindparam("batch", type_=String), JSONB))
        batch = rows.table_valued("value", with_ordinality="n").render_derived(name="b")
        element = batch.c.value
        columns = [
            element.op("->>")(0),
            func.array(
                select(func.jsonb_array_elements_text(element.op("->")(1)))
                .correlate(batch)
                .scalar_subquery()
            ),
            cast(element.op("->>")(2), JSONB),
            cast(element.op("->>")(3), JSONB),
            func.pg_current_xact_id(),
            func.statement_timestamp(),
            bindparam("command_id", type_=String),
        ]
        order = batch.c.n
    else:
        batch = func.json_each(bindparam("batch", type_=String)).table_valued(
            "key", "value", name="b"
        )
        element = batch.c.value
        columns = [func.json_extract(element, f"$[{i}]") for i in range(4)] + [
            null(),
            func.strftime("%Y-%m-%d %H:%M:%f000", "now"),
            bindparam("command_id", type_=String),
        ]
        order = batch.c.key
    source = select(*columns).select_from(batch).order_by(order)
    if condition_query is not None:
        source = source.where(~conflict_select(condition_query, head, dialect).exists())
    names = ["type", "tags", "data", "metadata", "transaction_id", "recorded_at", "command_id"]
    return events.insert().from_select(names, source).returning(events.c.position)


# -- the command log -----------------------------------------------------------------------------


def insert_command(dialect: str) -> Insert:
    """Record a command unless its id is already recorded; RETURNING tells which happened.

    Parameters: ``id``, ``type``, ``data``, ``metadata``, ``last_position``,
    ``event_count``. A concurrent transaction inserting the same id makes this statement
    wait for it, then do nothing if it committed: exactly one execution per id.
    """
    insert = postgresql_insert if dialect == POSTGRESQL else sqlite_insert
    return (
        insert(commands)
        .values(
            id=bindparam("id"),
            type=bindparam("type"),
            data=bindparam("data"),
            metadata=bindparam("metadata"),
            last_position=bindparam("last_position"),
            event_count=bindparam("event_count"),
        )
        .on_conflict_do_nothing(index_elements=[commands.c.id])
        .returning(commands.c.id)
    )


def select_command() -> Select[Any]:
    return select(commands).where(commands.c.id == bindparam("id"))


def select_command_of_event() -> Select[Any]:
    return (
        select(commands)
        .join(events, events.c.command_id == commands.c.id)
        .where(events.c.position == bindparam("position"))
    )


def select_events_of_command() -> Select[Any]:
    return (
        select(*(events.c[name] for name in EVENT_COLUMNS))
        .where(events.c.command_id == bindparam("id"))
        .order_by(events.c.position)
    )


__all__ = [
    "EVENT_COLUMNS",
    "POSTGRESQL",
    "SQLITE",
    "TagsContain",
    "after_clause",
    "conflict_select",
    "insert_command",
    "insert_events",
    "item_clause",
    "lock_select",
    "query_clause",
    "read_select",
    "select_command",
    "select_command_of_event",
    "select_events_of_command",
]
