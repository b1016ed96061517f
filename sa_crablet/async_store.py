"""The event store inside the host's ``AsyncSession``.

It is the synchronous store's one logic, not a copy of it: each operation runs
:class:`~sa_crablet.EventStore` on the ``AsyncSession``'s ``sync_session`` inside SQLAlchemy's
greenlet bridge (``AsyncSession.run_sync``), where every statement is awaited on the async
driver (psycopg's ``AsyncConnection`` through the psycopg runner, asyncpg and aiosqlite
through Core). Same validation before any SQL, same errors, same heads.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session

from sa_crablet.commands import Command, CommandRecord
from sa_crablet.config import EventStoreConfig
from sa_crablet.events import Event, SequencedEvent
from sa_crablet.exceptions import ReadNotFinishedError, ValidationError
from sa_crablet.projection import DecisionModel, ProjectionProgress, StateProjector
from sa_crablet.query import AppendCondition, Head, Query
from sa_crablet.store import EventStore
from sa_crablet.streams import ProjectionStream, ReadResult

T = TypeVar("T")

_END = object()


class AsyncEventStore:
    """A DCB event store that works inside the caller's ``AsyncSession`` transaction.

    The operations and their meaning are :class:`~sa_crablet.EventStore`'s, awaited. It
    never commits, rolls back or flushes the session.
    """

    def __init__(
        self,
        session: AsyncSession | async_scoped_session[AsyncSession],
        config: EventStoreConfig | None = None,
    ) -> None:
        if isinstance(session, async_scoped_session):
            session = session()
        if not isinstance(session, AsyncSession):
            raise ValidationError(
                "session", session, "AsyncEventStore needs a SQLAlchemy AsyncSession"
            )
        self.session = session
        self.sync = EventStore(session.sync_session, config)
        """The synchronous store this one runs, on the session's ``sync_session``."""
        self.config = self.sync.config

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one of the synchronous store's operations in the greenlet bridge."""
        return await self.session.run_sync(lambda _session: fn(*args, **kwargs))

    # -- appends ---------------------------------------------------------------------------------

    async def append(
        self,
        events: Iterable[Event] | Event,
        condition: AppendCondition | None = None,
        *,
        command: Command | None = None,
    ) -> int:
        """:meth:`EventStore.append`, awaited."""
        return await self._run(self.sync.append, events, condition, command=command)

    async def record_command(self, command: Command) -> None:
        """:meth:`EventStore.record_command`, awaited."""
        await self._run(self.sync.record_command, command)

    async def check(self, condition: AppendCondition) -> None:
        """:meth:`EventStore.check`, awaited."""
        await self._run(self.sync.check, condition)

    # -- reads -----------------------------------------------------------------------------------

    def read(
        self,
        query: Query,
        *,
        after: Head | int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> AsyncReadResult:
        """:meth:`EventStore.read` as an async iterable (arguments checked now, before any
        SQL). ``async for event in store.read(q)``, or ``await store.read(q).all()``;
        ``.head`` once it is exhausted. Close it (``await result.aclose()``, or
        ``async with``) when stopping early, to release its cursor at once."""
        return AsyncReadResult(
            self, self.sync.read(query, after=after, backwards=backwards, limit=limit)
        )

    # -- decision models -------------------------------------------------------------------------

    async def project(
        self,
        projectors: Iterable[StateProjector[Any]],
        after: Head | int | None = None,
        *,
        states: Mapping[str, Any] | None = None,
    ) -> DecisionModel:
        """:meth:`EventStore.project`, awaited (the projectors' transitions run in it)."""
        return await self._run(self.sync.project, projectors, after, states=states)

    def project_stream(
        self,
        projectors: Iterable[StateProjector[Any]],
        after: Head | int | None = None,
        *,
        states: Mapping[str, Any] | None = None,
        every: int | None = 1000,
    ) -> AsyncProjectionStream:
        """:meth:`EventStore.project_stream` as an async iterator; it holds a projection slot
        (taken now) until it ends or is closed (``await stream.aclose()``)."""
        stream = self.sync.project_stream(projectors, after, states=states, every=every)
        return AsyncProjectionStream(self, stream)

    # -- the command log -------------------------------------------------------------------------

    async def command(self, command_id: str) -> CommandRecord | None:
        """:meth:`EventStore.command`, awaited."""
        return await self._run(self.sync.command, command_id)

    async def command_of_event(self, position: int) -> CommandRecord | None:
        """:meth:`EventStore.command_of_event`, awaited."""
        return await self._run(self.sync.command_of_event, position)

    async def events_of_command(self, command_id: str) -> list[SequencedEvent]:
        """:meth:`EventStore.events_of_command`, awaited."""
        return await self._run(self.sync.events_of_command, command_id)


class AsyncReadResult(AsyncIterator[SequencedEvent]):
    """A single-pass async stream of events. Events come a page at a time (``fetch_size``,
    one pass through the greenlet bridge each); ``.head`` is known once it is exhausted."""

    def __init__(self, store: AsyncEventStore, result: ReadResult) -> None:
        self._store = store
        self._result = result
        self._page = store.config.fetch_size
        self._buffer: deque[SequencedEvent] = deque()
        self._done = False

    def __aiter__(self) -> AsyncReadResult:
        return self

    async def __anext__(self) -> SequencedEvent:
        if not self._buffer:
            if self._done:
                raise StopAsyncIteration
            page = await self._store._run(self._take)
            self._done = len(page) < self._page
            self._buffer.extend(page)
            if not self._buffer:
                raise StopAsyncIteration
        return self._buffer.popleft()

    def _take(self) -> list[SequencedEvent]:
        return list(itertools.islice(self._result, self._page))

    async def all(self) -> list[SequencedEvent]:
        """Every event not consumed yet, in one await (the head is known afterwards)."""
        events = list(self._buffer)
        self._buffer.clear()
        if not self._done:
            events.extend(await self._store._run(list, self._result))
            self._done = True
        return events

    async def aclose(self) -> None:
        """Stop early and release the cursor."""
        self._done = True
        self._buffer.clear()
        await self._store._run(self._result.close)

    async def __aenter__(self) -> AsyncReadResult:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def head(self) -> Head:
        """What this read covered; pass it as ``after``. Available after full consumption
        (events fetched ahead but not yet consumed do not count as read)."""
        if self._buffer or not self._done:
            raise ReadNotFinishedError()
        return self._result.head


class AsyncProjectionStream(AsyncIterator[ProjectionProgress]):
    """:class:`~sa_crablet.streams.ProjectionStream`, async: progress reports, the last one
    carrying the model; it holds a projection slot until it ends or is closed."""

    def __init__(self, store: AsyncEventStore, stream: ProjectionStream) -> None:
        self._store = store
        self._stream = stream

    def __aiter__(self) -> AsyncProjectionStream:
        return self

    async def __anext__(self) -> ProjectionProgress:
        progress = await self._store._run(next, self._stream, _END)
        if progress is _END:
            raise StopAsyncIteration
        assert isinstance(progress, ProjectionProgress)
        return progress

    async def aclose(self) -> None:
        """Stop early: release the cursor and the projection slot."""
        await self._store._run(self._stream.close)

    async def __aenter__(self) -> AsyncProjectionStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
