"""Reads: their statements, their plan (a first page, then a cursor), and their head."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import BigInteger, Select, String, bindparam, cast, func, select, true

from sa_crablet._clauses import EVENT_COLUMNS
from sa_crablet._plans.conditions import after_clause, by_position, query_clause
from sa_crablet._plans.rows import to_event
from sa_crablet._plans.shapes import HeadShape, QueryShape, Scope
from sa_crablet._plans.steps import Rows, Step
from sa_crablet.events import SequencedEvent
from sa_crablet.exceptions import CrabletError
from sa_crablet.query import Head, Query, Snapshot
from sa_crablet.schema import POSTGRESQL, events


@lru_cache(maxsize=512)
def read_statement(
    dialect: str,
    query: QueryShape,
    head: HeadShape | None,
    backwards: bool,
    limited: bool,
    resumed: bool = False,
) -> Select[Any]:
    """Matching events in position order; parameter ``limit`` when ``limited``, and only
    past parameter ``resume`` (a position already delivered) when ``resumed``.

    On PostgreSQL (unless ``resumed``: a later page keeps its first page's snapshot) the
    first columns are ``pg_current_snapshot()`` and the reader's own transaction id (if it
    has one), taken by the *same* statement as the rows (a snapshot taken by another
    statement would be either unsafe or too strict), and the rows are LEFT JOINed to it so
    an empty result still carries it. The rows keep the LATERAL subquery's order (a nested
    loop over one outer row; cursors never run parallel plans), and the read checks that
    order as rows arrive.
    """
    order = events.c.position.desc() if backwards else events.c.position.asc()
    rows = (
        select(*(events.c[name] for name in EVENT_COLUMNS))
        .where(query_clause(query, dialect, after=by_position(head)))
        .where(after_clause(head))
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


@dataclass(frozen=True, slots=True)
class FirstPage:
    """The first page's rows (events' columns only), the snapshot the statement took
    (PostgreSQL), and whether more rows follow."""

    rows: Rows
    snapshot: Snapshot | None
    more: bool


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """A read: its first page is one plain statement with ``LIMIT page + 1``, which is all
    most reads need; a longer one goes on through a cursor (:meth:`rest`), resuming after
    the last event delivered. Its head keeps the first page's snapshot: later pages can
    only add events it treats as unseen (a conservative head, never a gap)."""

    dialect: str
    scope: Scope
    head: Head | None
    backwards: bool
    limit: int | None
    page: int

    @property
    def paged(self) -> bool:
        return self.limit is None or self.limit > self.page

    @property
    def first(self) -> Step:
        """Planned for its values: a LIMITed GIN read needs them to pick its index."""
        limit = self.page + 1 if self.paged else self.limit
        statement = read_statement(
            self.dialect, self.scope.query, self.scope.head, self.backwards, True
        )
        return Step(statement, self.scope.params | {"limit": limit})

    def first_page(self, rows: Rows) -> FirstPage:
        snapshot = None
        if self.dialect == POSTGRESQL:
            snapshot = Snapshot.parse(rows[0][0], rows[0][1])
            rows = [row[2:] for row in rows if row[2] is not None]
        more = self.paged and len(rows) > self.page
        return FirstPage(rows[: self.page] if more else rows, snapshot, more)

    def rest(self, last: Any) -> Step:
        """The events after the first page, whose last row was ``last``."""
        params = self.scope.params | {"resume": last[0]}
        if self.limit is not None:
            params["limit"] = self.limit - self.page
        statement = read_statement(
            self.dialect,
            self.scope.query,
            self.scope.head,
            self.backwards,
            self.limit is not None,
            True,
        )
        return Step(statement, params)

    def events(
        self, snapshot: Snapshot | None, rows: Iterator[Any]
    ) -> Iterator[SequencedEvent | Head]:
        """The events of ``rows``, checked to be in position order, then the head."""
        count = 0
        edge: int | None = None  # last position (forwards) / first position (backwards)
        for values in rows:
            event = to_event(values)
            position = event.position
            if edge is not None and (position < edge) != self.backwards:
                raise CrabletError(
                    f"a read returned events out of position order ({position} after {edge}): "
                    "the database did not return what the store asked for, so the read was "
                    "stopped; check for a damaged index (REINDEX) and report it to sa_crablet"
                )
            count += 1
            if edge is None or not self.backwards:
                edge = position
            yield event
        yield next_head(self.head, snapshot, edge, count, self.backwards, self.limit)


def read_plan(
    query: Query, head: Head | None, backwards: bool, limit: int | None, dialect: str, page: int
) -> ReadPlan:
    return ReadPlan(dialect, Scope.of(query, head, dialect), head, backwards, limit, page)


def next_head(
    after: Head | None,
    snapshot: Snapshot | None,
    edge: int | None,
    count: int,
    backwards: bool,
    limit: int | None,
) -> Head:
    """The head of a finished read.

    It claims "every event visible to ``snapshot`` at or below ``position`` was seen". In
    order, the highest position read is the last one forwards and the first one backwards:
    ``edge``. A forward read cut short by ``limit`` may only claim up to the last event it
    returned, even below the previous head's position (it may have been returning late
    arrivals).
    """
    previous = after.position if after is not None else 0
    if not backwards and limit is not None and count == limit and edge is not None:
        return Head(edge, snapshot)
    return Head(max(previous, 0 if edge is None else edge), snapshot)
