"""What a scope selects: a query (by shape) as a boolean expression over the events table,
what a head did not cover, and the conflict check built from both. Pure builders."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    String,
    and_,
    bindparam,
    cast,
    func,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY

from sa_crablet._clauses import TagsContain, TagsContainAfter
from sa_crablet._plans.shapes import HeadShape, QueryShape
from sa_crablet.schema import POSTGRESQL, TagArray, Xid8, events


def query_clause(
    shape: QueryShape, dialect: str, table: Any = events, after: bool = False
) -> ColumnElement[bool]:
    """The events matching a query of this shape (parameters ``types_<i>``, ``tags_<i>``).
    ``after``: the statement also requires ``position > after_position`` (a head that is a
    bare position), which SQLite's tag look-up can use as well."""
    if shape.items is None:
        return true()
    items: list[ColumnElement[bool]] = []
    for i, item in enumerate(shape.items):
        parts: list[ColumnElement[bool]] = []
        if item.types and dialect == POSTGRESQL:
            # One array parameter: the statement text is the same for any number of types,
            # so it compiles once and psycopg can send it as is (no expanding IN).
            wanted = bindparam(f"types_{i}", type_=ARRAY(String))
            parts.append(table.c.type == func.any(wanted))
        elif item.types:
            parts.append(table.c.type.in_(bindparam(f"types_{i}", expanding=True)))
        if item.tags:
            tags = bindparam(f"tags_{i}", type_=TagArray())
            if after and dialect != POSTGRESQL:
                bound = bindparam("after_position", type_=BigInteger)
                parts.append(TagsContainAfter(table, tags, bound))
            else:
                parts.append(TagsContain(table, tags))
        items.append(and_(*parts))
    return or_(*items)


def by_position(head: HeadShape | None) -> bool:
    """Whether a head is a bare position (so ``position > after_position`` bounds a scan)."""
    return head is not None and not head.snapshot


def after_clause(shape: HeadShape | None, table: Any = events) -> ColumnElement[bool]:
    """Events that a head did not cover: a higher position or, on PostgreSQL, a writer that
    was still in flight when the head's snapshot was taken (whatever its position), other
    than the reader's own transaction (its writes before the read were seen)."""
    if shape is None:
        return true()
    later: ColumnElement[bool] = table.c.position > bindparam("after_position", type_=BigInteger)
    if not shape.snapshot:
        return later
    xid = table.c.transaction_id
    unseen: ColumnElement[bool] = xid >= cast(bindparam("after_xmax", type_=String), Xid8())
    if shape.xip:
        in_flight = cast(bindparam("after_xip", type_=ARRAY(String)), ARRAY(Xid8()))
        unseen = or_(unseen, xid == func.any(in_flight))
    if shape.own:
        unseen = and_(unseen, xid != cast(bindparam("after_own", type_=String), Xid8()))
    clause: ColumnElement[bool] = or_(later, unseen)
    return clause


@lru_cache(maxsize=512)
def conflict_statement(dialect: str, query: QueryShape, head: HeadShape | None) -> Select[Any]:
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
    condition = (query_clause(query, dialect, after=by_position(head)), after_clause(head))
    if head is None or head.at_start:
        first = func.min(events.c.position + literal_column("0"))
        return select(first.label("position")).where(*condition).having(func.count() > 0)
    return select(events.c.position).where(*condition).order_by(events.c.position).limit(1)
