"""Commands and what their execution records: pure values."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sa_crablet._validation import check_command_id, check_metadata, check_type, to_json
from sa_crablet.events import Event
from sa_crablet.exceptions import ValidationError
from sa_crablet.query import AppendCondition


@dataclass(frozen=True, slots=True, init=False)
class Command:
    """A request to change the system. ``id`` is its idempotency key: executing a command
    whose id was already executed returns the first outcome and appends nothing. Without
    one, a random UUID is used (no idempotency across calls)."""

    type: str
    data: Any
    metadata: Mapping[str, Any] | None
    id: str

    def __init__(
        self,
        type: str,
        data: Any = None,
        metadata: Mapping[str, Any] | None = None,
        id: str | None = None,
    ) -> None:
        object.__setattr__(self, "type", check_type("type", type))
        check_metadata("metadata", metadata)
        to_json("data", data)  # refused now, not after the handler has run
        to_json("metadata", metadata)
        if id is None:
            id = str(uuid.uuid4())
        check_command_id("id", id)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "metadata", metadata)
        object.__setattr__(self, "id", id)


@dataclass(frozen=True, slots=True, init=False)
class Decision:
    """What a handler returns: the events to append and, optionally, the condition that
    must still hold (usually a decision model's ``append_condition``)."""

    events: tuple[Event, ...]
    condition: AppendCondition | None

    def __init__(
        self, events: Iterable[Event] | Event = (), condition: AppendCondition | None = None
    ) -> None:
        if isinstance(events, Event):
            events = (events,)
        if isinstance(events, str | bytes) or not isinstance(events, Iterable):
            raise ValidationError(
                "events", events, "a decision holds an iterable of Event", redacted=True
            )
        collected = tuple(events)
        for event in collected:
            if not isinstance(event, Event):
                raise ValidationError(
                    "events", event, "a decision holds Event values only", redacted=True
                )
        if condition is not None and not isinstance(condition, AppendCondition):
            raise ValidationError("condition", condition, "must be an AppendCondition or None")
        object.__setattr__(self, "events", collected)
        object.__setattr__(self, "condition", condition)


def as_decision(value: object) -> Decision:
    """Accept what a handler may return: a ``Decision``, an ``Event``, an iterable of
    events, an ``(events, condition)`` pair, or ``None`` (no events)."""
    if isinstance(value, Decision):
        return value
    if value is None:
        return Decision()
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and (value[1] is None or isinstance(value[1], AppendCondition))
        and not (isinstance(value[0], Event) and isinstance(value[1], Event))
    ):
        return Decision(value[0], value[1])
    try:
        return Decision(value)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ValidationError(
            "handler",
            value,
            "a handler returns a Decision, events, (events, condition) or None",
            redacted=True,
        ) from error


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A row of the commands table: a command as executed, with its outcome."""

    id: str
    type: str
    data: Any
    metadata: Mapping[str, Any] | None
    executed_at: dt.datetime
    last_position: int | None
    event_count: int


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The outcome of ``CommandExecutor.execute``.

    ``position`` is the last appended event's position (``None`` if none were appended),
    ``duplicate`` is true when the id had already been executed (nothing was appended now,
    the fields describe the first execution), ``attempts`` counts executions of the handler
    (more than one after retried conflicts).
    """

    command_id: str
    position: int | None
    event_count: int
    duplicate: bool = False
    attempts: int = 1
