"""What reads and projections hand back: single-pass streams that release what they hold."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from sa_crablet._limits import Limiter
from sa_crablet._observe import operations as observe
from sa_crablet.events import SequencedEvent
from sa_crablet.exceptions import CrabletError, ReadNotFinishedError
from sa_crablet.projection import (
    DecisionModel,
    Fold,
    ProjectionProgress,
    StateProjector,
)
from sa_crablet.query import AppendCondition, Head, Query


@observe.batches
def project_events(
    projectors: list[StateProjector[Any]],
    query: Query,
    result: ReadResult,
    states: Mapping[str, Any] | None,
    every: int | None,
) -> Iterator[ProjectionProgress]:
    fold = Fold(projectors, states, query)
    try:
        for event in result:
            fold.apply(event)
            if every is not None and fold.count % every == 0:
                yield ProjectionProgress(dict(fold.states), fold.position, fold.count)
    finally:
        result.close()
    model = DecisionModel(fold.states, AppendCondition(query, result.head))
    yield ProjectionProgress(dict(fold.states), fold.position, fold.count, model)


class ProjectionStream(Iterator[ProjectionProgress]):
    """A streaming projection that holds one projection slot until it ends or is closed."""

    def __init__(self, progress: Iterator[ProjectionProgress], slots: Limiter) -> None:
        self._progress = progress
        self._slots: Limiter | None = slots

    def __iter__(self) -> ProjectionStream:
        return self

    def __next__(self) -> ProjectionProgress:
        try:
            progress = next(self._progress)
        except BaseException:
            self.close()
            raise
        if progress.model is not None:
            self.close()  # the final item: the slot is free before the caller decides
        return progress

    def close(self) -> None:
        """Stop early: release the cursor and the projection slot."""
        try:
            close = getattr(self._progress, "close", None)
            if close is not None:
                close()
        finally:
            if self._slots is not None:
                slots, self._slots = self._slots, None
                slots.release()

    def __del__(self) -> None:
        self.close()


class ReadResult(Iterator[SequencedEvent]):
    """A single-pass stream of events; ``.head`` is known once it has been consumed.

    Made from ``pages``: lists of events, then the read's head (what the store's read yields;
    nothing runs until the first event is asked for). Events are handed out from each page
    at C speed (``itertools.chain``), with no generator to resume per event.
    """

    def __init__(self, pages: Iterator[list[SequencedEvent] | Head]) -> None:
        self._pages = pages
        self._end: list[Head] = []  # the head, once the pages are through
        self._closed = False
        self._events = itertools.chain.from_iterable(_until_head(pages, self._end))

    def __iter__(self) -> ReadResult:
        return self

    def __next__(self) -> SequencedEvent:
        try:
            return next(self._events)
        except CrabletError as error:  # free until raised: a timeout is logged
            observe.read_failed(error)
            raise

    def close(self) -> None:
        """Stop early and release the cursor."""
        self._closed = not self._end
        close = getattr(self._pages, "close", None)
        if close is not None:
            close()

    @property
    def head(self) -> Head:
        """What this read covered; pass it as ``after``. Available after full consumption."""
        if not self._end:
            raise ReadNotFinishedError(closed=self._closed)
        return self._end[0]


def _until_head(
    pages: Iterator[list[SequencedEvent] | Head], end: list[Head]
) -> Iterator[list[SequencedEvent]]:
    """The pages; the head that follows them goes into ``end``, and the read is then let
    finish, so what it holds (an engine-owned store's connection) is released at once, not
    when the result is dropped. (A function of its own, not a method: a generator holding
    the result would keep it alive in a reference cycle, and a dropped read would release
    its cursor only when the garbage collector runs.)"""
    for page in pages:
        if isinstance(page, Head):
            end.append(page)
            next(pages, None)
            return
        yield page
