"""What reads and projections hand back: single-pass streams that release what they hold."""

from __future__ import annotations

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
    """A single-pass stream of events; ``.head`` is known once it has been consumed."""

    def __init__(self, stream: Iterator[SequencedEvent | Head]) -> None:
        self._stream = stream
        self._head: Head | None = None
        self._closed = False

    def __iter__(self) -> ReadResult:
        return self

    def __next__(self) -> SequencedEvent:
        if self._head is not None:
            raise StopIteration
        try:
            item = next(self._stream)
        except CrabletError as error:  # free until raised: a timeout is logged
            observe.read_failed(error)
            raise
        if isinstance(item, Head):
            self._head = item
            # Let the read finish now, not when this result is collected: it gives back
            # what it holds (an engine-owned store's pooled connection, say).
            next(self._stream, None)
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop early and release the cursor."""
        self._closed = self._head is None
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()

    @property
    def head(self) -> Head:
        """What this read covered; pass it as ``after``. Available after full consumption."""
        if self._head is None:
            raise ReadNotFinishedError(closed=self._closed)
        return self._head
