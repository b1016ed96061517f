"""The command log of an event store: recording executed commands and looking them up.

A mixin of :class:`~sa_crablet.EventStore`, apart so the store's module reads as its event
operations; it runs its statements through the same :class:`Runner`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from sa_crablet import statements
from sa_crablet._runner import Call, Runner
from sa_crablet._validation import check_command_id, check_position, to_json
from sa_crablet.commands import Command, CommandRecord
from sa_crablet.config import EventStoreConfig
from sa_crablet.events import Event, SequencedEvent
from sa_crablet.query import AppendCondition
from sa_crablet.streams import as_utc, to_event


class CommandLog:
    session: Session
    config: EventStoreConfig

    if TYPE_CHECKING:

        def _append(
            self,
            events: Sequence[Event],
            condition: AppendCondition | None,
            command_id: str | None,
            record: dict[str, Any] | None = None,
        ) -> tuple[int, bool | None]: ...

    def _append_recorded(
        self, events: Sequence[Event], condition: AppendCondition | None, command: Command
    ) -> tuple[int, bool]:
        """Append a command's events and record the command; ``(last position, whether
        the record was written)``: ``False`` means the id was recorded meanwhile and the
        caller must undo. On the direct path the record goes in the append's own query
        string (one round trip less per command)."""
        position, recorded = self._append(events, condition, command.id, _about(command))
        if recorded is None:  # not sent with the append: record it now
            recorded = self._record_command(command, position, len(events))
        return position, recorded

    def _record_command(self, command: Command, last_position: int | None, count: int) -> bool:
        """Record an executed command; ``False`` if its id was already recorded (then the
        caller must undo what it appended)."""
        dialect = self.session.connection().dialect.name
        params = _about(command) | {"last_position": last_position, "event_count": count}
        return bool(self._log_rows(statements.insert_command(dialect), params))

    def command(self, command_id: str) -> CommandRecord | None:
        """The recorded command with this id, if it was executed."""
        check_command_id("command_id", command_id)
        return self._one_command(statements.select_command(), {"id": command_id})

    def command_of_event(self, position: int) -> CommandRecord | None:
        """The command whose execution appended the event at ``position`` (one indexed
        look-up), or ``None`` for an event appended outside any command."""
        check_position("position", position)
        return self._one_command(statements.select_command_of_event(), {"position": position})

    def events_of_command(self, command_id: str) -> list[SequencedEvent]:
        """The events appended by the command with this id, in order (one indexed query)."""
        check_command_id("command_id", command_id)
        rows = self._log_rows(statements.select_events_of_command(), {"id": command_id})
        return [to_event(row) for row in rows]

    def _one_command(self, statement: Any, params: dict[str, Any]) -> CommandRecord | None:
        rows = self._log_rows(statement, params)
        if not rows:
            return None
        id_, type_, data, metadata, executed_at, last_position, event_count = rows[0]
        return CommandRecord(
            id_, type_, data, metadata, as_utc(executed_at), last_position, event_count
        )

    def _log_rows(self, statement: Any, params: dict[str, Any]) -> list[Any]:
        """The rows of one of the log's statements (prepared: their plans do not depend
        on the values), driver errors translated."""
        run = Runner.of(self.session.connection(), self.config)
        with run.translated():
            return run.rows(Call(statement, params, prepare=True))


def _about(command: Command) -> dict[str, Any]:
    """A command's own columns, its payloads checked as storable JSON."""
    return {
        "id": command.id,
        "type": command.type,
        "data": _checked_json("data", command.data),
        "metadata": _checked_json("metadata", command.metadata),
    }


def _checked_json(field: str, value: Any) -> Any:
    """Validate a payload as storable JSON; return it for the JSON column type to encode."""
    to_json(field, value)
    return value
