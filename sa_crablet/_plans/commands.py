"""The command log: its statements and plans (recording executed commands, looking them up).
Pure builders, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Insert, Select, String, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from sa_crablet._clauses import EVENT_COLUMNS
from sa_crablet._plans.rows import as_utc, to_event
from sa_crablet._plans.steps import Plan, Rows, Step
from sa_crablet._validation import to_json
from sa_crablet.commands import Command, CommandRecord
from sa_crablet.events import SequencedEvent
from sa_crablet.schema import POSTGRESQL, commands, events


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
    outcome. No row back: nothing was appended.

    An id recorded already (or meanwhile: the insert waits for the transaction that holds
    it) fails the statement with a unique violation, so a unit that commits itself (an
    operation in its own transaction, ``BEGIN`` ... ``COMMIT`` in one query string) never
    commits the events without their record; the store reports it as
    :class:`~sa_crablet.DuplicateCommandError`."""
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
    return postgresql_insert(commands).from_select(names, appended).returning(commands.c.id)


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


# -- plans ---------------------------------------------------------------------------------------


def columns_of(command: Command) -> dict[str, Any]:
    """A command's own columns (parameters of :func:`insert_command` and
    :func:`record_appended_command`), its payloads checked as storable JSON."""
    to_json("data", command.data)
    to_json("metadata", command.metadata)
    return {
        "id": command.id,
        "type": command.type,
        "data": command.data,
        "metadata": command.metadata,
    }


def record_plan(
    dialect: str, command: Command, last_position: int | None, count: int
) -> Plan[bool]:
    """Record an executed command; ``True`` if written, ``False`` if its id was recorded
    already (then the caller must undo what it appended)."""
    params = columns_of(command) | {"last_position": last_position, "event_count": count}
    return Plan((Step(insert_command(dialect), params, prepare=True),), _written)


def _written(results: Sequence[Rows]) -> bool:
    return bool(results[0])


def lookup_plan(command_id: str) -> Plan[CommandRecord | None]:
    return Plan((Step(select_command(), {"id": command_id}, prepare=True),), _record, False)


def of_event_plan(position: int) -> Plan[CommandRecord | None]:
    step = Step(select_command_of_event(), {"position": position}, prepare=True)
    return Plan((step,), _record, False)


def events_of_plan(command_id: str) -> Plan[list[SequencedEvent]]:
    step = Step(select_events_of_command(), {"id": command_id}, prepare=True)
    return Plan((step,), _events, False)


def _record(results: Sequence[Rows]) -> CommandRecord | None:
    if not results[0]:
        return None
    id_, type_, data, metadata, executed_at, last_position, event_count = results[0][0]
    return CommandRecord(
        id_, type_, data, metadata, as_utc(executed_at), last_position, event_count
    )


def _events(results: Sequence[Rows]) -> list[SequencedEvent]:
    return [to_event(row) for row in results[0]]
