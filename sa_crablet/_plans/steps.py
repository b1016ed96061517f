"""The unit a runner executes: statements with their parameters, and how to read the rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

Rows = list[Any]
"""The rows one statement returned (none for a command such as ``BEGIN``)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One statement and its parameters. ``prepare``: the driver may prepare it, because
    its plan does not depend on the values; otherwise PostgreSQL plans it for its actual
    values every time (a conflict check, a LIMITed read). ``events``: its rows are events
    (their columns last, ``EVENT_COLUMNS``), which a runner may return in a faster form of
    its own (see ``Runner.raw_events``)."""

    statement: Any
    params: Mapping[str, Any] = field(default_factory=dict)
    prepare: bool = False
    events: bool = False


@dataclass(frozen=True, slots=True)
class Plan(Generic[T]):
    """Statements that run as one unit, in order (one round trip where the driver allows),
    and ``read``, which turns the rows of each into the result. ``writes``: on a
    connection with no transaction open, the unit needs a transaction of its own."""

    steps: tuple[Step, ...]
    read: Callable[[Sequence[Rows]], T]
    writes: bool = True
