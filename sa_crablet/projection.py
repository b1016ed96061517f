"""Projectors and decision models: several states from one query, and the condition that
protects a decision made on them."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sa_crablet.events import SequencedEvent
from sa_crablet.exceptions import ValidationError
from sa_crablet.query import AppendCondition, Head, Query, QueryItem

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class StateProjector(Generic[S]):
    """Folds the events matching ``query`` into a state: ``transition(state, event)``.

    ``initial_state`` is deep-copied for every projection, so a mutable initial state is
    never shared between calls; pass ``factory`` instead to build it yourself.
    """

    id: str
    query: Query
    initial_state: S | None = None
    transition: Callable[[S, SequencedEvent], S] = field(default=lambda state, _event: state)
    factory: Callable[[], S] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValidationError("id", self.id, "a projector id is a non-empty string")
        if not isinstance(self.query, Query):
            raise ValidationError("query", self.query, "a projector's query must be a Query")
        if not callable(self.transition):
            raise ValidationError("transition", self.transition, "must be callable")
        if self.factory is not None and not callable(self.factory):
            raise ValidationError("factory", self.factory, "must be callable or None")

    def new_state(self) -> S:
        """A fresh initial state: ``factory()``, or a deep copy of ``initial_state``."""
        if self.factory is not None:
            return self.factory()
        return copy.deepcopy(self.initial_state)  # type: ignore[return-value]

    def matches(self, event: SequencedEvent) -> bool:
        """Whether ``event`` matches the projector's ``query`` (its type and tags)."""
        return self.query.matches(event.type, event.tags)


@dataclass(frozen=True, slots=True)
class DecisionModel:
    """The projected ``states`` (by projector id) and the ``append_condition`` that fails
    if any event any projector would have seen appears after the projection."""

    states: Mapping[str, Any]
    append_condition: AppendCondition

    @property
    def head(self) -> Head:
        head = self.append_condition.head
        assert head is not None
        return head

    def __getitem__(self, projector_id: str) -> Any:
        return self.states[projector_id]


@dataclass(frozen=True, slots=True)
class ProjectionProgress:
    """A streaming projection's progress: the states so far, the last position folded,
    and how many events were folded. The final item has ``model`` set."""

    states: Mapping[str, Any]
    position: int | None
    events: int
    model: DecisionModel | None = None

    @property
    def done(self) -> bool:
        return self.model is not None


def check_projectors(projectors: Iterable[StateProjector[Any]]) -> list[StateProjector[Any]]:
    if isinstance(projectors, StateProjector):
        projectors = [projectors]
    if not isinstance(projectors, Iterable):
        raise ValidationError("projectors", projectors, "an iterable of StateProjector")
    collected = list(projectors)
    if not collected:
        raise ValidationError("projectors", collected, "at least one projector is needed")
    seen: set[str] = set()
    for projector in collected:
        if not isinstance(projector, StateProjector):
            raise ValidationError("projectors", projector, "projectors must be StateProjector")
        if projector.id in seen:
            raise ValidationError("projectors", projector.id, "projector ids must be unique")
        seen.add(projector.id)
    return collected


def union_query(projectors: Iterable[StateProjector[Any]]) -> Query:
    """The OR of every projector's items. Items are kept whole, never merged, so none is
    narrowed (an item without types keeps matching every type)."""
    items: list[QueryItem] = []
    for projector in projectors:
        if projector.query.match_all:
            return Query.all()
        items.extend(projector.query.items)
    return Query(items)


class Fold:
    """Dispatches each event to every projector whose own query matches it."""

    def __init__(
        self,
        projectors: list[StateProjector[Any]],
        states: Mapping[str, Any] | None = None,
        read: Query | None = None,
    ) -> None:
        self.projectors = projectors
        # A projector whose query is the read's own query (the usual single-projector
        # decision model) matches every event read: skip the per-event check for it.
        self._matchers = [
            (p, p.query.match_all or (read is not None and p.query == read)) for p in projectors
        ]
        self.states: dict[str, Any] = {}
        for projector in projectors:
            if states is not None and projector.id in states:
                self.states[projector.id] = states[projector.id]
            else:
                self.states[projector.id] = projector.new_state()
        self.position: int | None = None
        self.count = 0

    def apply(self, event: SequencedEvent) -> None:
        for projector, always in self._matchers:
            if always or projector.matches(event):
                self.states[projector.id] = projector.transition(self.states[projector.id], event)
        self.position = event.position
        self.count += 1
