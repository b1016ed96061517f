"""Reads: their statements, their plan (a first page, then a cursor), and their head."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import BigInteger, Select, String, bindparam, cast, func, select, true

from sa_crablet._clauses import EVENT_COLUMNS
from sa_crablet._plans.conditions import after_clause, by_position, query_clause
from sa_crablet._plans.rows import events_of
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
    """The first page's events, the snapshot its statement took (PostgreSQL), and, when
    more rows follow, the position of its last event, after which the rest resumes."""

    events: list[SequencedEvent]
    snapshot: Snapshot | None
    resume: int | None


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """A read: its first page is one plain statement with ``LIMIT page + 1``, which is all
    most reads need; a longer one goes on after the last event delivered, through a cursor
    (:meth:`rest`) or, where each page is a range of the primary key, by statements of their
    own (:meth:`next_page`). Its head keeps the first page's snapshot: later pages can only
    add events it treats as unseen (a conservative head, never a gap).

    ``raw``: the runner returns the rows of its steps with ``events`` with their payloads
    undecoded (see :attr:`sa_crablet._runners.base.Runner.raw_events`)."""

    dialect: str
    scope: Scope
    head: Head | None
    backwards: bool
    limit: int | None
    page: int
    raw: bool = False

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
        return Step(statement, self.scope.params | {"limit": limit}, events=True)

    def first_page(self, rows: Rows) -> FirstPage:
        snapshot = None
        skip = 0
        if self.dialect == POSTGRESQL:
            snapshot = Snapshot.parse(rows[0][0], rows[0][1])
            if rows[0][2] is None:  # no event: the snapshot's row alone
                return FirstPage([], snapshot, None)
            skip = 2
        resume = None
        if self.paged and len(rows) > self.page:
            rows = rows[: self.page]
            resume = rows[-1][skip]
        return FirstPage(events_of(rows, skip, self.raw), snapshot, resume)

    def rest(self, last: int) -> Step:
        """The events after the first page, whose last event was at position ``last``
        (through a cursor: rows are fetched from it in pages)."""
        params = self.scope.params | {"resume": last}
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

    def by_position(self, last: int) -> bool:
        """Whether the pages after position ``last`` are ranges of the primary key, so each
        can be a statement of its own (:meth:`next_page`): in a read of every event, from
        the start or once past its head's position (every later position is then past it,
        so the head's clause holds for all of them). Any other read needs a cursor: a
        query's pages are no index range, and each statement would collect and sort all of
        the query's events again."""
        if self.scope.query.items is not None:
            return False
        return self.head is None or (not self.backwards and last >= self.head.position)

    def next_page(self, last: int, delivered: int) -> Step | None:
        """The page after position ``last`` (see :meth:`by_position`), ``delivered``
        events into the read; ``None`` once its limit is reached."""
        count = self.page if self.limit is None else min(self.page, self.limit - delivered)
        if count < 1:
            return None
        statement = read_statement(self.dialect, _ALL, None, self.backwards, True, True)
        # Prepared: its best plan (the primary key from ``resume``) holds for any values.
        return Step(statement, {"resume": last, "limit": count}, prepare=True, events=True)

    def events(self, rows: Rows) -> list[SequencedEvent]:
        """The events of a later page's rows."""
        return events_of(rows, 0, self.raw)

    def pages(
        self, first: FirstPage, rest: Iterator[list[SequencedEvent]]
    ) -> Iterator[list[SequencedEvent] | Head]:
        """The first page's events and the rest's, each page checked to be in position
        order, then the head."""
        count = 0
        edge: int | None = None  # last position (forwards) / first position (backwards)
        for page in itertools.chain((first.events,), rest):
            if not page:
                continue
            edge = self._in_order(page, edge)
            count += len(page)
            yield page
        yield next_head(self.head, first.snapshot, edge, count, self.backwards, self.limit)

    def _in_order(self, events: list[SequencedEvent], edge: int | None) -> int:
        """The new edge after ``events``; an error if one is out of position order (at C
        speed: a page is checked as a whole)."""
        positions: list[int] = list(map(_POSITION, events))
        if self.backwards:  # every event is below the read's first one
            if edge is None:
                edge, positions = positions[0], positions[1:]
            if positions and max(positions) >= edge:
                raise CrabletError(_OUT_OF_ORDER)
            return edge
        previous = itertools.chain((positions[0] if edge is None else edge,), positions)
        if not all(map(operator.le, previous, positions)):
            raise CrabletError(_OUT_OF_ORDER)
        return positions[-1]


_ALL = QueryShape(None)
_POSITION = operator.attrgetter("position")
_OUT_OF_ORDER = (
    "a read returned events out of position order: the database did not return what the "
    "store asked for, so the read was stopped; check for a damaged index (REINDEX) and "
    "report it to sa_crablet"
)


def read_plan(
    query: Query,
    head: Head | None,
    backwards: bool,
    limit: int | None,
    dialect: str,
    page: int,
    raw: bool = False,
) -> ReadPlan:
    return ReadPlan(dialect, Scope.of(query, head, dialect), head, backwards, limit, page, raw)


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
