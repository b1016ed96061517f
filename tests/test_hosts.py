"""The store's guarantees on every way a host can hold its connection (see ``tests/hosts.py``):
each isolation level, AUTOCOMMIT, SQLAlchemy Core with a listener or by configuration, and on
SQLite a transaction the application begins itself. One test body per guarantee, run on all.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from sa_crablet import (
    AppendCondition,
    AsyncEventStore,
    Command,
    ConcurrencyError,
    Event,
    EventStore,
    Query,
)
from tests.conftest import count_events
from tests.helpers import in_thread
from tests.hosts import Host

RACERS = 8
ROUNDS = 6


def test_exactly_one_racer_wins_every_round(engine: Engine, host: Host) -> None:
    """RACERS transactions read the same empty scope, then all append with its head: on a
    sync host RACERS threads, on an async host RACERS asyncio tasks on one event loop."""
    with host.engine(engine) as bind:
        for round_ in range(ROUNDS):
            query = Query.of(tags=[f"race:{round_}"])

            async def racer(i: int, barrier: Any, query: Query = query) -> str:
                async with host.async_session(bind) as session:
                    store = host.async_store(session)
                    result = store.read(query)
                    assert await result.all() == []
                    await barrier.wait()
                    try:
                        await store.append(
                            Event("Claimed", query.items[0].tags, {"by": i}),
                            AppendCondition(query, result.head),
                        )
                        await asyncio.sleep(0.005)  # hold the transaction open a moment
                        await session.commit()
                        return "won"
                    except ConcurrencyError:
                        await session.rollback()
                        return "lost"

            outcomes = host.race(RACERS, racer)
            assert outcomes.count("won") == 1, outcomes
    assert count_events(engine) == ROUNDS


def test_a_failed_condition_writes_nothing(engine: Engine, host: Host) -> None:
    condition = AppendCondition(Query.of(tags=["name:alice"]))
    with host.engine(engine) as bind:
        with host.session(bind) as session:
            host.store(session).append(Event("Registered", ["name:alice"]))
            session.commit()
        with host.session(bind) as session:
            store = host.store(session)
            with pytest.raises(ConcurrencyError) as error:
                store.append([Event("Registered", ["name:alice"]), Event("Other")], condition)
            assert error.value.position == 1 and error.value.transaction_usable
            store.append(Event("Registered", ["name:bob"]))  # the transaction goes on
            session.commit()
    with Session(engine) as session:
        stored = [(e.type, e.tags) for e in EventStore(session).read(Query.all())]
    assert stored == [("Registered", ("name:alice",)), ("Registered", ("name:bob",))]


@pytest.mark.postgresql_only
def test_an_in_flight_unconditional_append_is_waited_for(engine: Engine, host: Host) -> None:
    """W1 appends an in-scope event unconditionally and stays open; W2 commits elsewhere; R
    reads (W1 invisible) and appends on that head while W1 is open. R must wait for W1 and
    then fail: otherwise W1's event would commit below R's, inside R's boundary, unseen."""
    query = Query.of(tags=["course:w1"])
    w1 = Session(engine)
    in_flight = EventStore(w1).append(Event("Subscribed", ["course:w1"]))
    try:
        with Session(engine) as w2:
            EventStore(w2).append(Event("Elsewhere", ["course:other"]))
            w2.commit()
        with host.engine(engine) as bind, host.session(bind) as reader:
            store = host.store(reader)
            result = store.read(query)
            assert list(result) == []

            def decide() -> int:
                position: int = store.append(
                    Event("Decided", ["course:w1"]), AppendCondition(query, result.head)
                )
                reader.commit()
                return position

            thread, box = in_thread(decide)
            time.sleep(0.3)
            assert thread.is_alive(), f"R did not wait for the in-flight writer: {box}"
            w1.commit()
            thread.join(10)
            assert not thread.is_alive()
            error = box[0]
            assert isinstance(error, ConcurrencyError), error
            assert error.position == in_flight
            reader.rollback()
    finally:
        w1.close()
    assert count_events(engine) == 2


def test_long_reads_page_through_a_cursor(engine: Engine, host: Host) -> None:
    query = Query.of(tags=["page"])
    with host.engine(engine) as bind:
        with host.session(bind) as session:
            host.store(session).append([Event("E", ["page"], {"i": i}) for i in range(7)])
            session.commit()
        with host.session(bind) as session:
            store = host.store(session, fetch_size=2)
            forwards = store.read(query)
            assert [e.data["i"] for e in forwards] == list(range(7))
            assert forwards.head.position == 7
            backwards = store.read(query, backwards=True)
            assert [e.data["i"] for e in backwards] == list(range(6, -1, -1))
            limited = store.read(query, limit=5)
            assert [e.data["i"] for e in limited] == list(range(5))
            stopped = store.read(query)
            assert [next(stopped).data["i"] for _ in range(3)] == [0, 1, 2]
            stopped.close()  # an early stop releases the cursor
            again = store.read(query, after=forwards.head)
            assert list(again) == []
            if host.backend == "postgresql":
                open_cursors = session.execute(
                    text("SELECT count(*) FROM pg_cursors WHERE name LIKE 'sa_crablet%'")
                )
                assert open_cursors.scalar_one() == 0
            store.append(Event("After", ["page"]))  # the session still works
            session.commit()
    assert count_events(engine) == 8


def test_timeouts_hold_for_the_stores_round_trips_only(engine: Engine, host: Host) -> None:
    """A streaming read with a statement timeout: the host's own slow statement between two
    pages runs with the host's settings, and closing the read afterwards is clean."""
    with host.engine(engine) as bind:
        with host.session(bind) as session:
            host.store(session).append([Event("E", ["slow"]) for _ in range(4)])
            session.commit()
        with host.session(bind) as session:
            store = host.store(session, fetch_size=1, statement_timeout=0.2)
            result = store.read(Query.of(tags=["slow"]))
            assert next(result).position == 1
            assert next(result).position == 2  # the second page: through the cursor
            session.execute(text(_SLOW[host.backend]))  # longer than the store's timeout
            assert next(result).position == 3
            result.close()
            session.execute(text(_SLOW[host.backend]))
            assert len(list(store.read(Query.of(tags=["slow"])))) == 4


_SLOW = {
    "postgresql": "SELECT pg_sleep(0.5)",
    # About half a second of work for SQLite's virtual machine, which the store's progress
    # handler would interrupt if it were still installed.
    "sqlite": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000000)"
    " SELECT count(*) FROM n",
}


def test_commands_run_once_and_all_or_nothing(engine: Engine, host: Host) -> None:
    """In the host's session (never committed by the executor, unless there is no host
    transaction: AUTOCOMMIT) and in the executor's own transactions: a failing handler
    leaves nothing, even what it appended itself; identical racing commands run once."""

    def failing(store: EventStore, command: Command) -> Event:
        store.append(Event("Written", ["order:1"]))
        raise RuntimeError("the handler fails after appending")

    async def failing_async(store: AsyncEventStore, command: Command) -> Event:
        await store.append(Event("Written", ["order:1"]))
        raise RuntimeError("the handler fails after appending")

    def charge(store: EventStore, command: Command) -> Event:
        return Event("Charged", ["order:1"], {"id": command.id})

    with host.engine(engine) as bind:
        with host.session(bind) as session:
            executor = host.executor(session)
            with pytest.raises(RuntimeError):
                executor.execute(
                    Command("Fail", id="fail"), failing_async if host.is_async else failing
                )
            first = executor.execute(Command("Charge", id="c1"), charge)
            assert executor.execute(Command("Charge", id="c1"), charge).duplicate
            session.commit()
        for round_ in range(3):

            async def racer(i: int, barrier: Any, r: int = round_) -> bool:
                managed = host.async_executor(bind)
                await barrier.wait()
                result = await managed.execute(Command("Charge", id=f"race-{r}"), charge)
                return bool(result.duplicate)

            assert sorted(host.race(4, racer)) == [False, True, True, True]
    with Session(engine) as session:
        store = EventStore(session)
        stored = [(e.type, e.data) for e in store.read(Query.all())]
        assert store.command("fail") is None
        record = store.command("c1")
        assert record is not None and record.last_position == first.position
    assert stored == [("Charged", {"id": "c1"})] + [
        ("Charged", {"id": f"race-{r}"}) for r in range(3)
    ]


def test_a_read_left_open_across_the_transactions_end_closes_cleanly(
    engine: Engine, host: Host
) -> None:
    """A long read that the host leaves unfinished while it commits, or drops without
    closing, never sends its cursor's clean-up into the host's next transaction."""
    with host.engine(engine) as bind:
        with host.session(bind) as session:
            host.store(session).append([Event("E", ["open"]) for _ in range(5)])
            session.commit()
        with host.session(bind) as session:
            store = host.store(session, fetch_size=1)
            result = store.read(Query.of(tags=["open"]))
            assert [next(result).position for _ in range(2)] == [1, 2]
            session.commit()  # the read's cursor ends with the transaction (or holds)
            result.close()
            dropped = store.read(Query.of(tags=["open"]))
            assert next(dropped).position == 1
            assert next(dropped).position == 2
            del dropped  # never closed: the generator's finalizer closes it
            gc.collect()
            store.append(Event("After", ["open"]))  # the session works on
            assert len(list(store.read(Query.of(tags=["open"])))) == 6
            session.commit()
    assert count_events(engine) == 6
