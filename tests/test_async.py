"""What only the async API has: cancelled tasks, limits across tasks on one event loop,
timeouts on every async driver, migrations from an asyncio application. (The behavioural
suite runs on the async API too: see the ``api`` and ``host`` parametrizations.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

import sa_crablet
from sa_crablet import (
    AppendCondition,
    AsyncCommandExecutor,
    AsyncEventStore,
    Command,
    ConcurrencyError,
    Decision,
    Event,
    EventStore,
    EventStoreConfig,
    OperationTimeoutError,
    Query,
    RetryPolicy,
    TooManyAppendsError,
    TooManyProjectionsError,
    fail_if_exists,
)
from sa_crablet.projectors import counter
from tests.conftest import count_events
from tests.hosts import async_url

POSTGRESQL_DRIVERS = ("psycopg-async", "asyncpg")


@pytest.fixture
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "driver" in metafunc.fixturenames:
        drivers = list(POSTGRESQL_DRIVERS)
        if "sqlite" in metafunc.function.__name__:
            drivers = ["aiosqlite"]
        metafunc.parametrize("driver", drivers, indirect=True)


def run_with(engine: Engine, driver: str, body: Callable[[AsyncEngine], Awaitable[None]]) -> None:
    """``body(async_engine)`` on a fresh event loop, on ``engine``'s database."""

    async def main() -> None:
        async_engine = create_async_engine(async_url(engine, driver), poolclass=NullPool)
        try:
            await body(async_engine)
        finally:
            await async_engine.dispose()

    asyncio.run(main())


@pytest.fixture
def pg(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A clean, migrated PostgreSQL database (these tests pick their own async driver)."""
    from tests.conftest import clean_postgres

    engine: Engine = request.getfixturevalue("postgres_engine")
    clean_postgres(engine)
    yield engine


@asynccontextmanager
async def holding(engine: Engine, tag: str) -> AsyncIterator[None]:
    """Another transaction holds ``tag``'s boundary (a conditional append on it, open)."""
    holder = Session(engine)
    EventStore(holder).append(Event("Held", [tag]), fail_if_exists(tag))
    try:
        yield
    finally:
        holder.rollback()
        holder.close()


async def cancelled(task: asyncio.Task[Any], settle: float = 0.3) -> None:
    """Let ``task`` block, then cancel it and wait for it to end."""
    await asyncio.sleep(settle)
    assert not task.done(), "the operation should have been blocked"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.postgresql_only
@pytest.mark.parametrize("timeouts", [False, True], ids=["plain", "with-timeouts"])
@pytest.mark.parametrize("isolation", [None, "AUTOCOMMIT"], ids=["transaction", "autocommit"])
def test_a_cancelled_append_writes_nothing_and_frees_its_slot(
    pg: Engine, driver: str, timeouts: bool, isolation: str | None
) -> None:
    """Cancelled while it waits for a boundary another transaction holds: the task ends
    cancelled (whatever clean-up the configured timeouts need), nothing is written (in
    AUTOCOMMIT neither: the append's own transaction is rolled back), the append slot is free
    again (the limit is 1), and the session goes on after a rollback."""
    config = EventStoreConfig(
        max_concurrent_appends=1,
        lock_timeout=30 if timeouts else None,
        statement_timeout=30 if timeouts else None,
    )

    async def body(engine: AsyncEngine) -> None:
        if isolation is not None:
            engine = engine.execution_options(isolation_level=isolation)
        async with holding(pg, "seat:1"), AsyncSession(engine) as session:
            store = AsyncEventStore(session, config)
            task = asyncio.create_task(
                store.append(Event("Booked", ["seat:1"]), fail_if_exists("seat:1"))
            )
            await cancelled(task)
            await session.rollback()  # a cancelled operation: roll back, then go on
            assert await store.append(Event("Other", ["seat:2"])) >= 1  # the slot is free
            await session.commit()

    run_with(pg, driver, body)
    with Session(pg) as session:
        assert [e.type for e in EventStore(session).read(Query.all())] == ["Other"]


@pytest.mark.postgresql_only
def test_a_cancelled_read_or_projection_frees_its_cursor_and_slot(pg: Engine, driver: str) -> None:
    """A consumer cancelled between two pages (``async with`` closes the read), and one
    cancelled while its first statement waits for a table lock: the cursor is gone, the
    projection slot (limit 1) is free, and the session goes on."""
    config = EventStoreConfig(fetch_size=2, max_concurrent_projections=1)
    with Session(pg) as session:
        EventStore(session).append([Event("E", ["page"]) for _ in range(9)])
        session.commit()
    between_pages = asyncio.Event

    async def body(engine: AsyncEngine) -> None:
        async with AsyncSession(engine) as session:
            store = AsyncEventStore(session, config)
            paused = between_pages()

            async def consume_read() -> None:
                async with store.read(Query.of(tags=["page"])) as events:
                    async for event in events:
                        if event.position == 3:  # the second page came through the cursor
                            paused.set()
                            await asyncio.sleep(60)

            async def consume_projection() -> None:
                async with store.project_stream([counter("n", Query.all())], every=1) as stream:
                    async for progress in stream:
                        if progress.events == 3:
                            paused.set()
                            await asyncio.sleep(60)

            for consume in (consume_read, consume_projection):
                paused.clear()
                task = asyncio.create_task(consume())
                await paused.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                cursors = await session.execute(
                    text("SELECT count(*) FROM pg_cursors WHERE name LIKE 'sa_crablet%'")
                )
                assert cursors.scalar_one() == 0
                model = await store.project([counter("n", Query.all())])  # the slot is free
                assert model.states["n"] == 9

            # Cancelled while its first statement waits: the session rolls back and goes on.
            await session.commit()  # its reads' table lock would hold the locker up
            locker = Session(pg)
            locker.execute(text("LOCK TABLE sa_crablet_events IN ACCESS EXCLUSIVE MODE"))
            try:
                projecting = asyncio.create_task(store.project([counter("n", Query.all())]))
                await cancelled(projecting)
            finally:
                locker.rollback()
                locker.close()
            await session.rollback()
            assert len(await store.read(Query.all()).all()) == 9
            assert (await store.project([counter("n", Query.all())])).states["n"] == 9

    run_with(pg, driver, body)


@pytest.mark.postgresql_only
def test_limits_fail_fast_across_tasks_without_blocking_the_loop(pg: Engine, driver: str) -> None:
    """One task's append waits for a held boundary; another task's append over the limit
    fails at once, and the loop keeps running meanwhile (a ticker keeps ticking)."""
    config = EventStoreConfig(max_concurrent_appends=1, max_concurrent_projections=1)

    async def body(engine: AsyncEngine) -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        clock = asyncio.create_task(ticker())
        async with (
            holding(pg, "seat:1"),
            AsyncSession(engine) as first,
            AsyncSession(engine) as second,
        ):
            waiting = asyncio.create_task(
                AsyncEventStore(first, config).append(
                    Event("B", ["seat:1"]), fail_if_exists("seat:1")
                )
            )
            await asyncio.sleep(0.2)
            started = ticks
            with pytest.raises(TooManyAppendsError):
                await AsyncEventStore(second, config).append(Event("C", ["other:1"]))
            stream = AsyncEventStore(second, config).project_stream([counter("n", Query.all())])
            with pytest.raises(TooManyProjectionsError):
                AsyncEventStore(first, config).project_stream([counter("n", Query.all())])
            await stream.aclose()
            await asyncio.sleep(0.2)
            assert ticks > started  # the event loop was never blocked
            await cancelled(waiting, settle=0)
        clock.cancel()

    run_with(pg, driver, body)


@pytest.mark.postgresql_only
def test_timeouts_are_real_on_every_postgresql_driver(pg: Engine, driver: str) -> None:
    async def body(engine: AsyncEngine) -> None:
        async with holding(pg, "seat:1"):
            for config, setting in (
                (EventStoreConfig(lock_timeout=0.2), "lock_timeout"),
                (EventStoreConfig(statement_timeout=0.2), "statement_timeout"),
            ):
                async with AsyncSession(engine) as session:
                    store = AsyncEventStore(session, config)
                    with pytest.raises(OperationTimeoutError) as error:
                        await store.append(Event("B", ["seat:1"]), fail_if_exists("seat:1"))
                    assert error.value.setting == setting
                    await session.rollback()
                    assert await store.read(Query.all()).all() == []  # usable after it

    run_with(pg, driver, body)
    assert count_events(pg) == 0


def test_sqlite_timeouts_are_real_on_aiosqlite(tmp_path: Path, driver: str) -> None:
    path = tmp_path / "events.sqlite3"
    engine = sa_crablet.create_sqlite_engine(str(path))
    sa_crablet.create_schema(engine)
    holder = Session(engine)
    EventStore(holder).append(Event("A"))  # holds SQLite's write lock

    async def body(async_engine: AsyncEngine) -> None:
        async with AsyncSession(async_engine) as session:
            store = AsyncEventStore(session, EventStoreConfig(lock_timeout=0.2))
            with pytest.raises(OperationTimeoutError) as error:
                await store.append(Event("B"))
            assert error.value.setting == "lock_timeout"
            await session.rollback()
        holder.rollback()
        async with AsyncSession(async_engine) as session:
            store = AsyncEventStore(session)
            await store.append([Event("Bulk", [f"t:{i}", "common"]) for i in range(1000)])
            await session.commit()
            slow = AsyncEventStore(session, EventStoreConfig(statement_timeout=0.0001))
            with pytest.raises(OperationTimeoutError) as error:
                await slow.read(Query.of(tags=["t:999", "common"])).all()
            assert error.value.setting == "statement_timeout"
            assert len(await store.read(Query.of(tags=["t:999"])).all()) == 1

    try:
        run_with(engine, driver, body)
    finally:
        holder.close()
        engine.dispose()


@pytest.mark.postgresql_only
def test_an_idle_transaction_hides_nothing_and_rollback_leaves_nothing(
    pg: Engine, driver: str
) -> None:
    idle = Session(pg)
    idle.execute(text("SELECT pg_current_xact_id()"))  # an open transaction with an xid

    async def body(engine: AsyncEngine) -> None:
        async with AsyncSession(engine) as session:
            await AsyncEventStore(session).append(Event("Dropped", ["t:1"]))
            await session.rollback()
        query = Query.of(tags=["t:1"])
        for round_ in range(3):
            async with AsyncSession(engine) as session:
                store = AsyncEventStore(session, EventStoreConfig(lock_timeout=2))
                result = store.read(query)
                assert len(await result.all()) == round_
                await store.append(Event("Fresh", ["t:1"]), AppendCondition(query, result.head))
                await session.commit()

    try:
        run_with(pg, driver, body)
    finally:
        idle.rollback()
        idle.close()
    assert count_events(pg) == 3


@pytest.mark.parametrize("backend_kind", ["sqlite", "postgresql"])
def test_migrations_from_an_asyncio_application(
    backend_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``await upgrade_async(async_engine)`` builds the schema; the store works on it."""
    if backend_kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}"
        drop: Callable[[], None] = lambda: None  # noqa: E731
    else:
        server = create_engine(
            request.getfixturevalue("postgres_server_url"), isolation_level="AUTOCOMMIT"
        )
        name = f"sa_crablet_async_{uuid.uuid4().hex[:10]}"
        with server.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = server.url.set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )

        def drop() -> None:
            with server.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            server.dispose()

    async def main() -> list[str]:
        engine = create_async_engine(url)
        try:
            await sa_crablet.upgrade_async(engine)
            async with AsyncSession(engine) as session:
                store = AsyncEventStore(session)
                await store.append(Event("A", ["t:1"]), fail_if_exists("t:1"))
                await session.commit()
                return [e.type for e in await store.read(Query.all()).all()]
        finally:
            await engine.dispose()

    try:
        assert asyncio.run(main()) == ["A"]
    finally:
        drop()


@pytest.mark.postgresql_only
def test_managed_async_executions_retry_lost_races(pg: Engine, driver: str) -> None:
    """A handler whose decision is always stale: each attempt loses, up to the policy's
    count; an async handler that decides on fresh state wins at once."""

    async def body(engine: AsyncEngine) -> None:
        async with AsyncSession(engine) as session:
            await AsyncEventStore(session).append(Event("Opened", ["account:a"]))
            await session.commit()
        attempts = 0

        async def always_stale(store: AsyncEventStore, command: Command) -> Decision:
            nonlocal attempts
            attempts += 1
            return Decision(Event("Spent", ["account:a"]), fail_if_exists("account:a"))

        async def fresh(store: AsyncEventStore, command: Command) -> Decision:
            model = await store.project([counter("n", Query.of(tags=["account:a"]))])
            return Decision(Event("Spent", ["account:a"]), model.append_condition)

        executor = AsyncCommandExecutor(
            engine, retry=RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.002)
        )
        with pytest.raises(ConcurrencyError) as error:
            await executor.execute(Command("Spend", id="stale"), always_stale)
        assert error.value.attempts == 3 and attempts == 3
        result = await executor.execute(Command("Spend", id="fresh"), fresh)
        assert (result.position, result.attempts, result.duplicate) == (2, 1, False)
        again = await executor.execute(Command("Spend", id="fresh"), fresh)
        assert again.duplicate and again.position == 2

    run_with(pg, driver, body)
    assert count_events(pg) == 2


@pytest.mark.postgresql_only
def test_async_psycopg_takes_the_one_round_trip_path(pg: Engine) -> None:
    """On psycopg's AsyncConnection the store's statements go straight to the driver: a
    conditional append is one query string, as on the sync psycopg runner (read on the
    wire); with a listener installed they go through Core, two round trips."""
    from tests.wire import wire

    async def round_trips(engine: AsyncEngine) -> int:
        async with AsyncSession(engine) as session:
            await session.execute(text("SELECT 1"))
            sync = session.sync_session
            store = AsyncEventStore(session)
            with wire(sync) as sent:
                await store.append(Event("A", ["t:1"]), fail_if_exists("t:1"))
            await session.rollback()
        return sent.round_trips

    async def main() -> None:
        engine = create_async_engine(async_url(pg, "psycopg-async"), poolclass=NullPool)
        try:
            assert await round_trips(engine) == 1
            event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: None)
            assert await round_trips(engine) == 2
        finally:
            await engine.dispose()

    asyncio.run(main())
