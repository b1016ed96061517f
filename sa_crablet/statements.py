"""The store's statements for a given query and head, with their values bound: to read, to
``EXPLAIN``, to compile in documentation. The store itself builds them once per shape and
binds the values at execution (see :mod:`sa_crablet._plans`).

    >>> from sqlalchemy.dialects import postgresql
    >>> from sa_crablet import Query
    >>> from sa_crablet.statements import conflict_select
    >>> sql = conflict_select(Query.of(tags=["course:c1"]), None, "postgresql")
    >>> "@>" in str(sql.compile(dialect=postgresql.dialect()))
    True
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, CompoundSelect, Insert, Select

from sa_crablet._plans import appends, conditions, reads
from sa_crablet._plans.shapes import HeadShape, QueryShape, Scope, head_params
from sa_crablet.query import Head, Query
from sa_crablet.schema import POSTGRESQL, events


def after_clause(head: Head | None, dialect: str, table: Any = events) -> ColumnElement[bool]:
    """What ``head`` did not cover, as an expression with its values bound."""
    clause = conditions.after_clause(HeadShape.of(head, dialect), table)
    bound: ColumnElement[bool] = clause.params(head_params(head, dialect))
    return bound


def conflict_select(query: Query, head: Head | None, dialect: str) -> Select[Any]:
    """The conflict check of an append condition on ``query`` after ``head``: the first
    matching event the head did not cover, if any."""
    scope = Scope.of(query, head, dialect)
    statement = conditions.conflict_statement(dialect, scope.query, scope.head)
    return statement.params(scope.params)


def read_select(
    query: Query, head: Head | None, *, backwards: bool, limit: int | None, dialect: str
) -> Select[Any]:
    """A read's first statement (on PostgreSQL with its snapshot columns)."""
    scope = Scope.of(query, head, dialect)
    statement = reads.read_statement(dialect, scope.query, scope.head, backwards, limit is not None)
    params = scope.params if limit is None else scope.params | {"limit": limit}
    return statement.params(params)


def insert_events(
    dialect: str, condition_query: Query | None, head: Head | None
) -> Insert | CompoundSelect[Any]:
    """The insert of an append under a condition on ``condition_query`` after ``head`` (or
    none). Its values stay parameters: ``batch``, ``command_id``, the scope's, and on
    PostgreSQL the locks' (unconditional) or ``isolation_checked`` (conditional)."""
    if condition_query is None:
        return appends.plain_insert(dialect)
    query, head_shape = QueryShape.of(condition_query), HeadShape.of(head, dialect)
    if dialect == POSTGRESQL:
        return appends.checked_insert(query, head_shape)
    return appends.conditional_insert(dialect, query, head_shape)


def lock_select() -> Select[Any]:
    """PostgreSQL: the statement that takes an append's or a check's advisory locks (its
    parameters: :func:`sa_crablet._plans.appends.lock_params`)."""
    return appends.lock_select()


__all__ = ["after_clause", "conflict_select", "insert_events", "lock_select", "read_select"]
