"""Pure statement builders: values in, SQLAlchemy Core statements out. No I/O.

Per-dialect differences live here; :mod:`sa_crablet.store` only executes what this module
builds, so an async sibling can reuse every statement unchanged. A query as a boolean
expression (:mod:`sa_crablet._clauses`) and the command log's statements
(:mod:`sa_crablet._command_statements`) live in modules of their own and are re-exported here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    CompoundSelect,
    Insert,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal_column,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from sa_crablet._clauses import (
    EVENT_COLUMNS,
    POSTGRESQL,
    SQLITE,
    XID8,
    TagsContain,
    TagsContainAfter,
    item_clause,
    query_clause,
)
from sa_crablet._command_statements import (
    COMMAND_COLUMNS,
    insert_command,
    record_appended_command,
    select_command,
    select_command_of_event,
    select_events_of_command,
)
from sa_crablet._locks import LockPlan
from sa_crablet.query import Head, Query
from sa_crablet.schema import TagArray, events, sqlite_payload

# -- shapes: hot-path statements are built once per structure, values are parameters ------------
#
# Building a Core statement costs far more than executing a cached one, so the store asks for
# statements by *shape* (which items have types and tags, what kind of head) and passes the
# values as parameters. SQLAlchemy then also finds the compiled form in its cache.

QueryShape = tuple[tuple[bool, bool], ...] | None
"""Per item: (has types, has tags); ``None`` for ``Query.all()``."""
HeadShape = tuple[str, bool, bool, bool] | None
"""``None`` (no head), ``("position", False, False, at start)`` or ``("snapshot", has xip,
has own, at start)``; "at start": the head's position is 0 (its read found nothing)."""


def query_shape(query: Query) -> QueryShape:
    if query.match_all:
        return None
    return tuple((bool(item.types), bool(item.tags)) for item in query.items)


def head_shape(head: Head | None, dialect: str) -> HeadShape:
    if head is None:
        return None
    at_start = head.position == 0
    if head.snapshot is None or dialect != POSTGRESQL:
        return ("position", False, False, at_start)
    return ("snapshot", bool(head.snapshot.xip), head.snapshot.own is not None, at_start)


def query_params(query: Query) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for i, item in enumerate(query.items):
        if item.types:
            params[f"types_{i}"] = list(item.types)
        if item.tags:
            params[f"tags_{i}"] = list(item.tags)
    return params


def head_params(head: Head | None, dialect: str) -> dict[str, Any]:
    if head is None:
        return {}
    params: dict[str, Any] = {"after_position": head.position}
    snap = head.snapshot
    if snap is not None and dialect == POSTGRESQL:
        params["after_xmax"] = str(snap.xmax)
        if snap.xip:
            params["after_xip"] = [str(x) for x in snap.xip]
        if snap.own is not None:
            params["after_own"] = str(snap.own)
    return params


def _shaped_query_clause(
    shape: QueryShape, dialect: str, table: Any = events, after: bool = False
) -> ColumnElement[bool]:
    """``after``: the statement also requires ``position > after_position`` (a head that
    is a bare position), which SQLite's tag look-up can use as well."""
    if shape is None:
        return true()
    items: list[ColumnElement[bool]] = []
    for i, (has_types, has_tags) in enumerate(shape):
        parts: list[ColumnElement[bool]] = []
        if has_types and dialect == POSTGRESQL:
            # One array parameter: the statement text is the same for any number of types,
            # so it compiles once and psycopg can send it as is (no expanding IN).
            wanted = bindparam(f"types_{i}", type_=ARRAY(String))
            parts.append(table.c.type == func.any(wanted))
        elif has_types:
            parts.append(table.c.type.in_(bindparam(f"types_{i}", expanding=True)))
        if has_tags:
            tags = bindparam(f"tags_{i}", type_=TagArray())
            if after and dialect != POSTGRESQL:
                bound = bindparam("after_position", type_=BigInteger)
                parts.append(TagsContainAfter(table, tags, bound))
            else:
                parts.append(TagsContain(table, tags))
        items.append(and_(*parts))
    return or_(*items)


def _by_position(head: HeadShape) -> bool:
    return head is not None and head[0] == "position"


def _shaped_after_clause(shape: HeadShape, table: Any = events) -> ColumnElement[bool]:
    """Events that a head did not cover: a higher position or, on PostgreSQL, a writer that
    was still in flight when the head's snapshot was taken (whatever its position), other
    than the reader's own transaction (its writes before the read were seen)."""
    if shape is None:
        return true()
    kind, has_xip, has_own, _at_start = shape
    later: ColumnElement[bool] = table.c.position > bindparam("after_position", type_=BigInteger)
    if kind == "position":
        return later
    xid = table.c.transaction_id
    unseen: ColumnElement[bool] = xid >= cast(bindparam("after_xmax", type_=String), XID8)
    if has_xip:
        in_flight = cast(bindparam("after_xip", type_=ARRAY(String)), ARRAY(XID8))
        unseen = or_(unseen, xid == func.any(in_flight))
    if has_own:
        unseen = and_(unseen, xid != cast(bindparam("after_own", type_=String), XID8))
    clause: ColumnElement[bool] = or_(later, unseen)
    return clause


@lru_cache(maxsize=512)
def conflict_statement(dialect: str, query: QueryShape, head: HeadShape) -> Select[Any]:
    """The first event that makes an append condition fail: one matching the query that the
    head did not cover. The appending transaction's own events count like any other, except
    those its read saw (``Snapshot.own``), so "unique within one transaction" holds.

    One row (``position``) if there is such an event, none otherwise.

    After a head, ``ORDER BY position LIMIT 1``: the check starts from the head and stops
    at the first match. With no head, or a head at 0 (a read that found nothing: the usual
    "register once" check), ``position > 0`` bounds nothing, and a LIMIT (or a plain
    ``min()``, which PostgreSQL turns into one) invites a fast-start plan that walks the
    primary key hoping for an early match: on a tag nobody has used yet, the whole table.
    There the check is the minimum of an expression instead, planned for its total cost:
    look the tag up, find nothing.
    """
    condition = (
        _shaped_query_clause(query, dialect, after=_by_position(head)),
        _shaped_after_clause(head),
    )
    if head is None or head[3]:
        first = func.min(events.c.position + literal_column("0"))
        return select(first.label("position")).where(*condition).having(func.count() > 0)
    return select(events.c.position).where(*condition).order_by(events.c.position).limit(1)


# -- reads ---------------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def read_statement(
    dialect: str,
    query: QueryShape,
    head: HeadShape,
    backwards: bool,
    limited: bool,
    resumed: bool = False,
) -> Select[Any]:
    """Matching events in position order; parameter ``limit`` when ``limited``, and only
    past parameter ``resume`` (a position already delivered) when ``resumed``.

    On PostgreSQL (unless ``resumed``: a later page keeps its first page's snapshot) the
    first columns are ``pg_current_snapshot()`` and the reader's own transaction id (if it
    has one), taken by the *same* statement as the rows (a snapshot
    taken by another statement would be either unsafe or too strict), and the rows are LEFT
    JOINed to it so an empty result still carries it. The rows keep the LATERAL subquery's
    order (a nested loop over one outer row; cursors never run parallel plans), and the
    store checks that order as rows arrive.
    """
    order = events.c.position.desc() if backwards else events.c.position.asc()
    rows = (
        select(*(events.c[name] for name in EVENT_COLUMNS))
        .where(_shaped_query_clause(query, dialect, after=_by_position(head)))
        .where(_shaped_after_clause(head))
        .order_by(order)
    )
    if resumed:
        resume = bindparam("resume", type_=BigInteger)
        rows = rows.where(events.c.position < resume if backwards else events.c.position > resume)
    if limited:
        rows = rows.limit(bindparam("limit", type_=BigInteger))
    if dialect != POSTGRESQL or resumed:
        return rows  # a resumed read keeps the snapshot its first page took
    snap = select(
        cast(func.pg_current_snapshot(), String).label("snapshot"),
        cast(func.pg_current_xact_id_if_assigned(), String).label("own"),
    ).subquery("snap")
    inner = rows.lateral("e")
    return select(
        snap.c.snapshot, snap.c.own, *(inner.c[name] for name in EVENT_COLUMNS)
    ).select_from(snap.outerjoin(inner, true()))


def read_params(query: Query, head: Head | None, limit: int | None, dialect: str) -> dict[str, Any]:
    params = query_params(query) | head_params(head, dialect)
    if limit is not None:
        params["limit"] = limit
    return params


# -- appends -------------------------------------------------------------------------------------


def _locks_taken() -> Any:
    """A scalar subquery that takes the transaction-scoped advisory locks of parameters
    ``keys`` and ``exclusive`` (see :func:`lock_params`), in the order given, and counts them.

    One statement takes them all in ascending key order, so two appends can never wait for
    each other in opposite orders (no deadlock between single appends). The lists travel as
    text: bound client side (as the direct path sends these statements), arrays of numbers
    cost psycopg far more to quote than one string.
    """
    keys = func.string_to_array(bindparam("keys", type_=String), ",")
    exclusive = func.string_to_array(bindparam("exclusive", type_=String), ",")
    locks = (
        func.unnest(cast(keys, ARRAY(BigInteger)), cast(exclusive, ARRAY(Boolean)))
        .table_valued("k", "x")
        .render_derived(name="lk")
    )
    return select(
        func.count(
            case(
                (locks.c.x, cast(func.pg_advisory_xact_lock(locks.c.k), String)),
                else_=cast(func.pg_advisory_xact_lock_shared(locks.c.k), String),
            )
        )
    ).scalar_subquery()


@lru_cache(maxsize=1)
def lock_select() -> Select[Any]:
    """Take the advisory locks of :func:`lock_params` and report the isolation level. A
    check that must see what the locks waited for runs in a *later* statement: this one's
    snapshot was taken before the locks were granted."""
    return select(func.current_setting("transaction_isolation"), _locks_taken())


def lock_params(plan: LockPlan) -> dict[str, str]:
    """The parameters of :func:`lock_select` (and of an unconditional insert on
    PostgreSQL) for a lock plan."""
    return {
        "keys": ",".join(map(str, plan.keys)),
        "exclusive": ",".join("t" if x else "f" for x in plan.exclusive),
    }


UNCONDITIONAL = "unconditional"


@lru_cache(maxsize=512)
def insert_statement(dialect: str, query: QueryShape | str, head: HeadShape) -> Insert:
    """Insert a batch, given as one JSON parameter ``batch`` (a list of
    ``[type, tags, data_json, metadata_json]``), in order, unless the condition matches
    (``query`` is :data:`UNCONDITIONAL` for none). Parameter ``command_id`` links the events
    to the command that produced them (or NULL). Returns the new positions.

    With a condition (SQLite), the check and the insert are one statement: nothing is
    written when it fails, and the host transaction stays usable.

    Unconditional on PostgreSQL, the statement first takes the advisory locks of parameters
    ``keys`` / ``exclusive`` (:func:`lock_params`, shared keys for the events written): an
    uncorrelated condition becomes a one-time filter that PostgreSQL evaluates before it
    produces the first row, so the locks are held before any position is drawn. No check
    follows, so taking them in the same statement is enough (see :mod:`sa_crablet._locks`).
    """
    source = _insert_source(dialect)
    if query != UNCONDITIONAL:
        assert not isinstance(query, str)
        source = source.where(~conflict_statement(dialect, query, head).exists())
    elif dialect == POSTGRESQL:
        source = source.where(_locks_taken() >= 0)
    return events.insert().from_select(_INSERTED, source).returning(events.c.position)


def _insert_source(dialect: str) -> Select[Any]:
    """The rows of parameter ``batch``, in order, as the events table's columns."""
    if dialect == POSTGRESQL:
        rows = func.jsonb_array_elements(cast(bindparam("batch", type_=String), JSONB))
        batch = rows.table_valued("value", with_ordinality="n").render_derived(name="b")
        element = batch.c.value
        columns = [
            element.op("->>")(literal_column("0")),
            func.array(
                select(func.jsonb_array_elements_text(element.op("->")(literal_column("1"))))
                .correlate(batch)
                .scalar_subquery()
            ),
            # The payloads travel as JSON text inside the batch and are stored as that text.
            cast(element.op("->>")(literal_column("2")), events.c.data.type),
            cast(element.op("->>")(literal_column("3")), events.c.metadata.type),
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
        type_, tags, data, metadata = (
            func.json_extract(element, literal_column(f"'$[{i}]'")) for i in range(4)
        )
        # Metadata is always an object, never the bare number sqlite_payload() guards against.
        columns = [
            type_,
            tags,
            sqlite_payload(data),
            metadata,
            null(),
            func.strftime("%Y-%m-%d %H:%M:%f000", "now"),
            bindparam("command_id", type_=String),
        ]
        order = batch.c.key
    return select(*columns).select_from(batch).order_by(order)


@lru_cache(maxsize=1)
def sqlite_write_lock() -> Insert:
    """SQLite: an insert of nothing, which still opens a write transaction and so takes the
    database's write lock, as an append would: on a transaction whose snapshot went stale it
    fails as the append would, and afterwards nobody else can append until it ends."""
    return events.insert().from_select(["type", "tags"], select(null(), null()).where(false()))


_INSERTED = ["type", "tags", "data", "metadata", "transaction_id", "recorded_at", "command_id"]


@lru_cache(maxsize=512)
def checked_insert_statement(query: QueryShape, head: HeadShape) -> CompoundSelect[Any]:
    """PostgreSQL's conditional append in one statement: rows ``(position, false)`` for
    the events inserted, or one row ``(conflicting position, true)`` and nothing written.

    The check runs once (a CTE read by the INSERT and by the result), so a rejection
    reports the first conflicting event without a second statement, on the same snapshot.

    Parameter ``isolation_checked``: unless it is true, nothing is inserted outside READ
    COMMITTED. That lets the store send this statement together with the lock statement
    (one round trip) before it knows the isolation level: at a fixed-snapshot level the
    statement does nothing, and the store checks on a fresh snapshot and runs it again.
    """
    conflict = conflict_statement(POSTGRESQL, query, head).cte("conflict")
    source = _insert_source(POSTGRESQL)
    read_committed = func.current_setting("transaction_isolation") == "read committed"
    guarded = source.where(
        ~select(conflict.c.position).exists(),
        or_(bindparam("isolation_checked", type_=Boolean), read_committed),
    )
    inserted = (
        events.insert().from_select(_INSERTED, guarded).returning(events.c.position).cte("ins")
    )
    return union_all(
        select(inserted.c.position, false().label("conflict")),
        select(conflict.c.position, true().label("conflict")),
    )


# -- the same statements with their values bound, for inspection (EXPLAIN, docs) ----------------


def after_clause(head: Head | None, dialect: str, table: Any = events) -> ColumnElement[bool]:
    """What ``head`` did not cover, as an expression with its values bound."""
    clause = _shaped_after_clause(head_shape(head, dialect), table)
    bound: ColumnElement[bool] = clause.params(head_params(head, dialect))
    return bound


def conflict_select(query: Query, head: Head | None, dialect: str) -> Select[Any]:
    """:func:`conflict_statement` with the values of ``query`` and ``head`` bound."""
    statement = conflict_statement(dialect, query_shape(query), head_shape(head, dialect))
    return statement.params(query_params(query) | head_params(head, dialect))


def read_select(
    query: Query, head: Head | None, *, backwards: bool, limit: int | None, dialect: str
) -> Select[Any]:
    """:func:`read_statement` with its values bound."""
    statement = read_statement(
        dialect, query_shape(query), head_shape(head, dialect), backwards, limit is not None
    )
    return statement.params(read_params(query, head, limit, dialect))


def insert_events(dialect: str, condition_query: Query | None, head: Head | None) -> Insert:
    """:func:`insert_statement` for this condition. Its values stay parameters: those of
    :func:`query_params` and :func:`head_params`, besides ``batch`` and ``command_id``."""
    if condition_query is None:
        return insert_statement(dialect, UNCONDITIONAL, None)
    return insert_statement(dialect, query_shape(condition_query), head_shape(head, dialect))


__all__ = [
    "COMMAND_COLUMNS",
    "EVENT_COLUMNS",
    "UNCONDITIONAL",
    "checked_insert_statement",
    "conflict_statement",
    "head_params",
    "head_shape",
    "insert_statement",
    "query_params",
    "query_shape",
    "read_params",
    "read_statement",
    "POSTGRESQL",
    "SQLITE",
    "TagsContain",
    "TagsContainAfter",
    "after_clause",
    "conflict_select",
    "insert_command",
    "record_appended_command",
    "insert_events",
    "item_clause",
    "lock_params",
    "lock_select",
    "query_clause",
    "read_select",
    "select_command",
    "select_command_of_event",
    "select_events_of_command",
]
