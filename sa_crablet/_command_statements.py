"""Statements of the command log (see :mod:`sa_crablet.statements`, which re-exports
everything here): pure builders, no I/O."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Insert, Select, String, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from sa_crablet._clauses import EVENT_COLUMNS, POSTGRESQL
from sa_crablet.schema import commands, events


@lru_cache(maxsize=4)
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


COMMAND_COLUMNS = (
    "id",
    "type",
    "data",
    "metadata",
    "executed_at",
    "last_position",
    "event_count",
)
"""The columns of a command look-up, in :class:`~sa_crablet.CommandRecord`'s order."""


@lru_cache(maxsize=1)
def record_appended_command() -> Insert:
    """PostgreSQL: record a command from the events this transaction just appended with
    its id (``last_position`` and ``event_count`` from them), if there are any; sent in the
    same query string as the append. Parameters as :func:`insert_command` without the
    outcome. No row back: nothing was appended, or the id was recorded meanwhile."""
    command_id = bindparam("id", type_=String)
    appended = (
        select(
            command_id,
            bindparam("type", type_=String),
            bindparam("data", type_=commands.c.data.type),
            bindparam("metadata", type_=commands.c.metadata.type),
            func.max(events.c.position),
            func.count(),
        )
        .where(events.c.command_id == command_id)
        .having(func.count() > 0)
    )
    names = ["id", "type", "data", "metadata", "last_position", "event_count"]
    return (
        postgresql_insert(commands)
        .from_select(names, appended)
        .on_conflict_do_nothing(index_elements=[commands.c.id])
        .returning(commands.c.id)
    )


@lru_cache(maxsize=1)
def select_command() -> Select[Any]:
    return select(*(commands.c[name] for name in COMMAND_COLUMNS)).where(
        commands.c.id == bindparam("id")
    )


@lru_cache(maxsize=1)
def select_command_of_event() -> Select[Any]:
    return (
        select(*(commands.c[name] for name in COMMAND_COLUMNS))
        .join(events, events.c.command_id == commands.c.id)
        .where(events.c.position == bindparam("position"))
    )


@lru_cache(maxsize=1)
def select_events_of_command() -> Select[Any]:
    return (
        select(*(events.c[name] for name in EVENT_COLUMNS))
        .where(events.c.command_id == bindparam("id"))
        .order_by(events.c.position)
    )
