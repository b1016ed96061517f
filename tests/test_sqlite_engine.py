"""``create_sqlite_engine()``: the embedded default, including its in-memory form under threads."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sa_crablet
from sa_crablet import (
    AppendCondition,
    AsyncEventStore,
    ConcurrencyError,
    Event,
    EventStore,
    Query,
    ValidationError,
    create_sqlite_engine,
)
from tests.helpers import run_parallel

THREADS = 4
ROUNDS = 20


def test_an_in_memory_engine_is_safe_with_threads() -> None:
    """Threads take turns with the one connection an in-memory database lives in: no crash,
    every commit kept, exactly one claim per seat."""
    engine = create_sqlite_engine()
    sa_crablet.create_schema(engine)

    def customer(i: int, barrier: threading.Barrier) -> int:
        won = 0
        barrier.wait()
        for seat in range(ROUNDS):
            query = Query.of(tags=[f"seat:{seat}"])
            with Session(engine) as session:
                store = EventStore(session)
                result = store.read(query)
                if list(result):
                    continue
                try:
                    store.append(
                        Event("SeatClaimed", [f"seat:{seat}"], {"by": i}),
                        AppendCondition(query, result.head),
                    )
                    session.commit()
                    won += 1
                except ConcurrencyError:
                    session.rollback()
        return won

    try:
        wins = run_parallel(THREADS, customer)
        assert sum(wins) == ROUNDS
        with Session(engine) as session:
            claims = [e.tags for e in EventStore(session).read(Query.all())]
        assert sorted(claims) == sorted((f"seat:{seat}",) for seat in range(ROUNDS))
    finally:
        engine.dispose()


def test_a_second_session_in_the_same_thread_waits_then_fails_clearly() -> None:
    """Two sessions of one thread never share the in-memory connection (one would see the
    other's uncommitted work, and a rollback of one would undo the other's)."""
    engine = create_sqlite_engine(busy_timeout=0.2)
    sa_crablet.create_schema(engine)
    try:
        with Session(engine) as first:
            EventStore(first).append(Event("A"))
            with Session(engine) as second, pytest.raises(sqlalchemy.exc.TimeoutError):
                list(EventStore(second).read(Query.all()))
            first.commit()
        with Session(engine) as session:
            assert [e.type for e in EventStore(session).read(Query.all())] == ["A"]
    finally:
        engine.dispose()


@pytest.mark.parametrize("timeout", [-1, float("nan"), float("inf"), "5", True])
def test_the_busy_timeout_is_validated(timeout: object) -> None:
    with pytest.raises(ValidationError) as error:
        create_sqlite_engine(busy_timeout=timeout)  # type: ignore[arg-type]
    assert error.value.field == "busy_timeout"


def test_the_async_engine_is_set_up_like_the_sync_one(tmp_path: Path) -> None:
    """``create_async_sqlite_engine``: WAL for a file, the busy timeout, one connection for
    an in-memory database; the async store works on both (tasks take turns in memory)."""

    async def main() -> None:
        for path in (str(tmp_path / "events.sqlite3"), ":memory:"):
            engine = sa_crablet.create_async_sqlite_engine(path, busy_timeout=2)
            try:
                await sa_crablet.upgrade_async(engine)
                async with engine.connect() as conn:
                    mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
                    busy = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar_one()
                assert (mode, busy) == ("wal" if path != ":memory:" else "memory", 2000)

                async def claim(seat: int, engine: AsyncEngine = engine) -> None:
                    async with AsyncSession(engine) as session:
                        store = AsyncEventStore(session)
                        await store.append(Event("SeatClaimed", [f"seat:{seat}"]))
                        await session.commit()

                await asyncio.gather(*(claim(seat) for seat in range(10)))
                async with AsyncSession(engine) as session:
                    events = await AsyncEventStore(session).read(Query.all()).all()
                assert len(events) == 10
            finally:
                await engine.dispose()

    asyncio.run(main())
    with pytest.raises(ValidationError):
        sa_crablet.create_async_sqlite_engine(busy_timeout=-1)
