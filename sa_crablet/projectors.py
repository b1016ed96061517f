"""Ready-made projectors: the usual states of a decision model, each a
:class:`~sa_crablet.StateProjector` (``from sa_crablet.projectors import counter``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from sa_crablet.events import SequencedEvent
from sa_crablet.projection import StateProjector
from sa_crablet.query import Query, QueryItem

S = TypeVar("S")


def counter(id: str, query: Query) -> StateProjector[int]:
    """How many matching events there are."""
    return StateProjector(id, query, 0, lambda n, _e: n + 1)


def exists(id: str, query: Query) -> StateProjector[bool]:
    """Whether any matching event has happened."""
    return StateProjector(id, query, False, lambda _s, _e: True)


def last_event(id: str, query: Query) -> StateProjector[SequencedEvent | None]:
    """The newest matching event (or ``None``)."""
    return StateProjector(id, query, None, lambda _s, event: event)


def fold(
    id: str,
    *,
    types: Iterable[str] = (),
    tags: Iterable[str] = (),
    initial: S,
    transition: Callable[[S, SequencedEvent], S],
) -> StateProjector[S]:
    """A state folded from the events of ``types`` carrying all ``tags``."""
    return StateProjector(id, Query([QueryItem(types, tags)]), initial, transition)


def by_type(
    id: str,
    tags: Iterable[str],
    initial: S,
    handlers: Mapping[str, Callable[[S, SequencedEvent], S]],
) -> StateProjector[S]:
    """A state with one transition per event type: ``{"CourseDefined": on_defined, ...}``."""
    table = dict(handlers)

    def transition(state: S, event: SequencedEvent) -> S:
        return table[event.type](state, event)

    return StateProjector(id, Query([QueryItem(table, tags)]), initial, transition)


__all__ = ["by_type", "counter", "exists", "fold", "last_event"]
