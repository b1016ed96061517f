"""Shapes: the structure of a query and of a head, which decides a statement's text.

Building a Core statement costs far more than executing a cached one, so statements are
built once per shape (which items have types and tags, what kind of head) and the values
travel as parameters; SQLAlchemy then also finds the compiled form in its cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sa_crablet.query import Head, Query
from sa_crablet.schema import POSTGRESQL


@dataclass(frozen=True, slots=True)
class ItemShape:
    """A query item: whether it names types, and whether it names tags."""

    types: bool
    tags: bool


@dataclass(frozen=True, slots=True)
class QueryShape:
    """A query's items; ``items is None`` for ``Query.all()``."""

    items: tuple[ItemShape, ...] | None

    @classmethod
    def of(cls, query: Query) -> QueryShape:
        if query.match_all:
            return cls(None)
        return cls(tuple(ItemShape(bool(item.types), bool(item.tags)) for item in query.items))


@dataclass(frozen=True, slots=True)
class HeadShape:
    """A head as a statement sees it: a bare position, or (PostgreSQL) a snapshot with or
    without in-flight transactions (``xip``) and the reader's own (``own``); ``at_start``:
    its position is 0 (its read found nothing)."""

    snapshot: bool
    xip: bool
    own: bool
    at_start: bool

    @classmethod
    def of(cls, head: Head | None, dialect: str) -> HeadShape | None:
        if head is None:
            return None
        at_start = head.position == 0
        snap = head.snapshot
        if snap is None or dialect != POSTGRESQL:
            return cls(False, False, False, at_start)
        return cls(True, bool(snap.xip), snap.own is not None, at_start)


@dataclass(frozen=True, slots=True)
class Scope:
    """A query and a head (what a read starts after, or what a condition was read at), for
    one dialect: their shapes, which pick the statement, and their values as parameters."""

    query: QueryShape
    head: HeadShape | None
    params: dict[str, Any]

    @classmethod
    def of(cls, query: Query, head: Head | None, dialect: str) -> Scope:
        return cls(
            QueryShape.of(query),
            HeadShape.of(head, dialect),
            query_params(query) | head_params(head, dialect),
        )


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
