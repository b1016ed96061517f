"""sa_crablet's ``AsyncEventStore`` on PostgreSQL, used as an asyncio application would: one
``AsyncSession`` per operation (``async_sessionmaker.begin()``), the store bound to it,
committed at the end; on psycopg's ``AsyncConnection`` or on asyncpg.

Each contender owns an event loop (:class:`benchmarks.timing.Loop`) that its engine's
connections belong to; the suite's synchronous code runs blocks of calls on it, and the
concurrent scenarios run their writers as asyncio tasks in it, over the engine's one pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from benchmarks import timing
from benchmarks.pg_crablet import url_for
from benchmarks.pg_inspect import CrabletSchemaInspector
from benchmarks.timing import AsyncOp, AsyncWriterStep, Loop, Samples
from benchmarks.workload import (
    TYPES,
    Ev,
    EventSource,
    course_tag,
    make_subscription,
)
from sa_crablet import (
    AppendCondition,
    AsyncEventStore,
    ConcurrencyError,
    Event,
    EventStoreConfig,
    Query,
)
from sa_crablet.projectors import counter


def async_engine_for(dsn: str, dbname: str, driver: str, pool_size: int = 10) -> AsyncEngine:
    url = url_for(dsn, dbname, driver)
    return create_async_engine(url, pool_size=pool_size, max_overflow=0)


class AsyncCrabletPg(CrabletSchemaInspector):
    """The operations of :class:`benchmarks.pg_crablet.CrabletOps`, awaited."""

    config: EventStoreConfig | None = None  # the defaults, as an application gets them

    def __init__(self, dsn: str, dbname: str, driver: str) -> None:
        super().__init__(dsn, dbname)
        self.name = f"sa_crablet async ({driver})"
        self.loop = Loop(asyncio.Runner())
        self.engine = async_engine_for(dsn, dbname, driver)
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(self.engine)

    def op(self, call: timing.AsyncCall) -> AsyncOp:
        return AsyncOp(self.loop, call)

    # -- operations ------------------------------------------------------------------------------

    async def append(self, ev: Ev) -> int:
        async with self.sessions.begin() as session:
            return await AsyncEventStore(session, self.config).append(
                Event(ev.type, (ev.tag,), ev.data)
            )

    async def append_if(self, ev: Ev, types: Sequence[str], after: int) -> int | None:
        condition = AppendCondition(Query.of(types=types, tags=[ev.tag]), after)
        try:
            async with self.sessions.begin() as session:
                return await AsyncEventStore(session, self.config).append(
                    Event(ev.type, (ev.tag,), ev.data), condition
                )
        except ConcurrencyError:
            return None

    async def read(self, types: Sequence[str], tag: str) -> int:
        async with self.sessions.begin() as session:
            result = AsyncEventStore(session, self.config).read(Query.of(types=types, tags=[tag]))
            count = 0
            async for _ in result:
                count += 1
            _ = result.head
        return count

    async def decide(self, types: Sequence[str], tag: str, make: Callable[[int], Ev]) -> bool:
        """A decision cycle: project the scope (one counter), decide, append on condition."""
        query = Query.of(types=types, tags=[tag])
        try:
            async with self.sessions.begin() as session:
                store = AsyncEventStore(session, self.config)
                model = await store.project([counter("n", query)])
                ev = make(model["n"])
                await store.append(Event(ev.type, (ev.tag,), ev.data), model.append_condition)
        except ConcurrencyError:
            return False
        return True

    # -- concurrent writers ----------------------------------------------------------------------

    def writers(
        self, steps: Sequence[AsyncWriterStep], seconds: float
    ) -> tuple[Samples, list[str]]:
        """One task per step on this contender's loop, sharing the engine's pool."""
        return self.loop.run(timing.run_tasks(steps, seconds))

    def close(self) -> None:
        self.loop.run(self.engine.dispose())
        self.loop.close()


# -- the scenarios' calls (the async twins of pg_suite's) ----------------------------------------


def appender(store: AsyncCrabletPg, src: EventSource) -> AsyncOp:
    async def call() -> int:
        await store.append(src.event())
        return 1

    return store.op(call)


def conditional_appender(store: AsyncCrabletPg, src: EventSource) -> AsyncOp:
    """S2, as :func:`benchmarks.pg_suite.conditional_appender`."""
    after: list[int] = [store.head()]

    async def call() -> int:
        ev = src.event()
        position = await store.append_if(ev, (ev.type,), after[0])
        if position is None:
            raise RuntimeError(f"{store.name}: unexpected conflict in a single-writer S2")
        after[0] = position
        return 1

    return store.op(call)


def reader(store: AsyncCrabletPg, src: EventSource) -> AsyncOp:
    async def call() -> int:
        return await store.read(TYPES, course_tag(src.course()))

    return store.op(call)


def decider(store: AsyncCrabletPg, src: EventSource, conflicts: dict[str, int]) -> AsyncOp:
    async def call() -> int:
        tag = course_tag(src.course())
        if not await store.decide(TYPES, tag, make_subscription(tag, src)):
            conflicts[store.name] = conflicts.get(store.name, 0) + 1
        return 1

    return store.op(call)


def distinct_writer(store: AsyncCrabletPg, src: EventSource, k: int, head: int) -> AsyncWriterStep:
    """S7a: writer ``k`` appends on its own course, conditional on its own head."""
    after = [head]

    async def step() -> bool:
        ev = src.event(k=k)
        position = await store.append_if(ev, (ev.type,), after[0])
        if position is None:
            return False
        after[0] = position
        return True

    return step


def hot_writer(store: AsyncCrabletPg, src: EventSource, tag: str) -> AsyncWriterStep:
    """S7b: decision cycles on one shared tag."""
    make = make_subscription(tag, src)

    async def step() -> bool:
        return await store.decide(TYPES, tag, make)

    return step
