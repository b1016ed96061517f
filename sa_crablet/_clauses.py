"""A :class:`~sa_crablet.Query` as a SQLAlchemy boolean expression, per dialect.

Part of the pure statement builders (see :mod:`sa_crablet.statements`, which re-exports
everything here): values in, Core expressions out, no I/O.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ColumnElement, and_, bindparam, or_, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.visitors import InternalTraversal

from sa_crablet.query import Query, QueryItem
from sa_crablet.schema import EVENT_TAGS_TABLE, POSTGRESQL, TagArray, events

EVENT_COLUMNS = ("position", "type", "tags", "data", "metadata", "recorded_at")
"""The columns a read returns, in :class:`~sa_crablet.SequencedEvent`'s order."""


class TagsContain(ColumnElement[bool]):
    """The event holds every tag in ``tags`` (a ``TagArray`` bind parameter): ``@>`` over
    ``text[]`` on PostgreSQL (GIN), a look-up in the (tag, position) side table on SQLite."""

    inherit_cache = True
    type = Boolean()
    # A predicate, not a boolean value: never render it as "... = 1" on SQLite (that would
    # hide the IN from SQLite's planner).
    _is_implicitly_boolean = True
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy's own convention
        ("column", InternalTraversal.dp_clauseelement),
        ("position", InternalTraversal.dp_clauseelement),
        ("tags", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, table: Any, tags: BindParameter[Any]) -> None:
        self.column = table.c.tags
        self.position = table.c.position
        self.tags = tags


@compiles(TagsContain, POSTGRESQL)
def _tags_contain_pg(element: TagsContain, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} @> {compiler.process(element.tags, **kw)}"


@compiles(TagsContain)
def _tags_contain_side_table(element: TagsContain, compiler: SQLCompiler, **kw: Any) -> str:
    # Positions having every wanted tag: (tag, position) is the side table's primary key,
    # so each wanted tag is an index range; tags are de-duplicated, so the count is exact.
    position = compiler.process(element.position, **kw)
    wanted = compiler.process(element.tags, **kw)
    after = ""
    if isinstance(element, TagsContainAfter):
        after = f" AND position > {compiler.process(element.after, **kw)}"
    return (
        f"{position} IN (SELECT position FROM {EVENT_TAGS_TABLE} "
        f"WHERE tag IN (SELECT value FROM json_each({wanted})){after} "
        f"GROUP BY position HAVING count(*) = json_array_length({wanted}))"
    )


class TagsContainAfter(TagsContain):
    """:class:`TagsContain` for events after a position only. On SQLite the bound goes
    into the side-table look-up (a range of its primary key), so a conflict check reads
    the tag's recent positions instead of all of them: without it, every conditional
    append on a tag with many events would collect the tag's whole history first."""

    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy's own convention
        *TagsContain._traverse_internals,
        ("after", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, table: Any, tags: BindParameter[Any], after: BindParameter[Any]) -> None:
        super().__init__(table, tags)
        self.after = after


compiles(TagsContainAfter, POSTGRESQL)(_tags_contain_pg)  # GIN needs no such hint
compiles(TagsContainAfter)(_tags_contain_side_table)


def item_clause(item: QueryItem, table: Any = events) -> ColumnElement[bool]:
    """One query item as a boolean expression, its values bound in the expression."""
    parts: list[ColumnElement[bool]] = []
    if item.types:
        parts.append(table.c.type.in_(item.types))
    if item.tags:
        parts.append(TagsContain(table, bindparam(None, list(item.tags), type_=TagArray())))
    return and_(*parts)


def query_clause(query: Query, table: Any = events) -> ColumnElement[bool]:
    """A ``Query`` as a boolean expression over the events table (or an alias of it).

    Compose it into your own statements: ``select(events).where(query_clause(q))``.
    """
    if query.match_all:
        return true()
    return or_(*(item_clause(item, table) for item in query.items))
