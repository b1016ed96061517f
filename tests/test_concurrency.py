"""Concurrency: racers, the position gap, idle transactions, boundaries, deadlocks."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from sa_crablet import (
    AppendCondition,
    ConcurrencyError,
    Event,
    EventStore,
    EventStoreConfig,
    Head,
    OperationTimeoutError,
    Query,
)
from sa_crablet._plans import locks as _locks
from tests.conftest import count_events
from tests.helpers import in_thread, run_parallel

RACERS = 8
ROUNDS = 12


def race_round(engine: Engine, scope: str, isolation: str | None = None) -> list[str]:
    """RACERS transactions read the same empty scope, then all append with its head."""
    bind = engine if isolation is None else engine.execution_options(isolation_level=isolation)
    query = Query.of(tags=[scope])

    def racer(i: int, barrier: threading.Barrier) -> str:
        with Session(bind) as session:
            store = EventStore(session)
            result = store.read(query)
            assert list(result) == []
            barrier.wait()
            try:
                store.append(
                    Event("Claimed", [scope], {"by": i}), AppendCondition(query, result.head)
                )
                time.sleep(0.005)  # hold the transaction open a moment: widen the race
                session.commit()
                return "won"
            except ConcurrencyError:
                session.rollback()
                return "lost"

    return run_parallel(RACERS, racer)


def test_exactly_one_racer_wins_every_round(engine: Engine) -> None:
    for round_ in range(ROUNDS):
        outcomes = race_round(engine, f"race:{round_}")
        assert outcomes.count("won") == 1, outcomes
        assert outcomes.count("lost") == RACERS - 1
    assert count_events(engine) == ROUNDS


@pytest.mark.postgresql_only
def test_the_race_test_detects_a_missing_lock(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control: without the advisory locks, check-then-insert lets several racers win."""
    monkeypatch.setattr(_locks, "plan", lambda query, batch: _locks.LockPlan((), ()))
    winners = [race_round(engine, f"unlocked:{r}").count("won") for r in range(ROUNDS)]
    assert max(winners) > 1, winners


@pytest.mark.postgresql_only
@pytest.mark.parametrize("isolation", ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"])
def test_exactly_one_racer_wins_at_each_isolation_level(engine: Engine, isolation: str) -> None:
    for round_ in range(ROUNDS // 2):
        outcomes = race_round(engine, f"iso:{round_}", isolation)
        assert outcomes.count("won") == 1, outcomes
    assert count_events(engine) == ROUNDS // 2


@pytest.mark.postgresql_only
@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
@pytest.mark.parametrize("writer_isolation", ["READ COMMITTED", "SERIALIZABLE"])
def test_fixed_snapshot_decision_sees_later_commits(
    engine: Engine, isolation: str, writer_isolation: str
) -> None:
    """A decision made on a fixed snapshot never commits over an in-scope event that an
    unconditional writer (at any level) committed after that snapshot."""
    query = Query.of(tags=["course:fixed"])
    decider = Session(engine.execution_options(isolation_level=isolation))
    try:
        store = EventStore(decider)
        result = store.read(query)  # fixes the snapshot
        assert list(result) == []
        with Session(engine.execution_options(isolation_level=writer_isolation)) as writer:
            EventStore(writer).append(Event("Subscribed", ["course:fixed"]))
            writer.commit()
        assert list(store.read(query)) == []  # still invisible to the decider's snapshot
        with pytest.raises(ConcurrencyError) as error:
            store.append(Event("Decided", ["course:fixed"]), AppendCondition(query, result.head))
        assert error.value.position == 1 and error.value.transaction_usable
        # Its own earlier events count as seen by a later read, though its fixed snapshot
        # was taken before they were written; a later own write is not seen.
        other = Query.of(tags=["course:other"])
        store.append(Event("Own", ["course:other"]))
        own_read = store.read(other)
        assert len(list(own_read)) == 1
        store.append(Event("Decided", ["course:other"]), AppendCondition(other, own_read.head))
        store.append(Event("Own", ["course:other"]))
        with pytest.raises(ConcurrencyError):
            store.append(Event("Decided", ["course:other"]), AppendCondition(other, own_read.head))
        decider.commit()
    finally:
        decider.close()
    assert count_events(engine) == 4


@pytest.mark.postgresql_only
def test_gap_a_late_commit_below_the_head_still_conflicts(engine: Engine) -> None:
    """W1 writes position 1 and stays open; W2 commits position 2; R reads (sees 2 only).

    R's head must still treat position 1 as unseen: R's append fails after W1 commits, and
    a reader who saw position 1 succeeds. A bare position (2) would have missed it.
    """
    query = Query.of(tags=["course:gap"])
    w1 = Session(engine)
    assert EventStore(w1).append(Event("Subscribed", ["course:gap"])) == 1
    with Session(engine) as w2:
        assert EventStore(w2).append(Event("Subscribed", ["course:gap"])) == 2
        w2.commit()
    with Session(engine) as reader:
        result = EventStore(reader).read(query)
        assert [e.position for e in result] == [2]
        stale = result.head
    assert stale.position == 2
    w1.commit()
    w1.close()

    for after in (stale, Head.parse(str(stale))):
        with Session(engine) as session, pytest.raises(ConcurrencyError) as error:
            EventStore(session).append(
                Event("Decided", ["course:gap"]), AppendCondition(query, after)
            )
        assert error.value.position == 1
    # Reading after the stale head returns the late arrival (no skipped events).
    with Session(engine) as session:
        late = EventStore(session).read(query, after=stale)
        assert [e.position for e in late] == [1]
        assert (
            EventStore(session).append(
                Event("Decided", ["course:gap"]), AppendCondition(query, late.head)
            )
            == 3
        )
        session.commit()
    with Session(engine) as session:
        fresh = EventStore(session).read(query)
        assert [e.position for e in fresh] == [1, 2, 3]
        assert (
            EventStore(session).append(
                Event("Decided", ["course:gap"]), AppendCondition(query, fresh.head)
            )
            == 4
        )


@pytest.mark.postgresql_only
def test_gap_across_pages_of_a_long_read(engine: Engine) -> None:
    """A read longer than fetch_size continues through a cursor; its head keeps the first
    page's snapshot, so the in-flight writer's event still counts as unseen."""
    query = Query.of(tags=["course:pages"])
    w1 = Session(engine)
    assert EventStore(w1).append(Event("Subscribed", ["course:pages"])) == 1
    with Session(engine) as w2:
        EventStore(w2).append([Event("Subscribed", ["course:pages"]) for _ in range(3)])
        w2.commit()
    with Session(engine) as reader:
        result = EventStore(reader, EventStoreConfig(fetch_size=1)).read(query)
        assert [e.position for e in result] == [2, 3, 4]
        stale = result.head
    assert stale.position == 4
    w1.commit()
    w1.close()
    with Session(engine) as session, pytest.raises(ConcurrencyError) as error:
        EventStore(session).append(
            Event("Decided", ["course:pages"]), AppendCondition(query, stale)
        )
    assert error.value.position == 1


@pytest.mark.sqlite_only
def test_gap_on_sqlite_in_flight_writer_commits_after_the_read(engine: Engine) -> None:
    query = Query.of(tags=["course:gap"])
    with Session(engine) as seed:
        EventStore(seed).append(Event("Defined", ["course:gap"]))
        seed.commit()
    w1 = Session(engine)
    EventStore(w1).append(Event("Subscribed", ["course:gap"]))
    with Session(engine) as reader:
        result = EventStore(reader).read(query)
        assert [e.position for e in result] == [1]
        stale = result.head
    w1.commit()
    w1.close()
    with Session(engine) as session, pytest.raises(ConcurrencyError):
        EventStore(session).append(Event("Decided", ["course:gap"]), AppendCondition(query, stale))


@pytest.mark.postgresql_only
def test_an_idle_transaction_hides_nothing_and_blocks_nothing(engine: Engine) -> None:
    idle = Session(engine)
    idle.execute(text("SELECT pg_current_xact_id()"))  # an open transaction with an xid
    EventStore(idle).append(Event("Elsewhere", ["other:1"]))  # uncommitted, unrelated
    try:
        with Session(engine) as session:
            EventStore(session).append(Event("Fresh", ["t:1"]))
            session.commit()
        config = EventStoreConfig(lock_timeout=2)
        for round_ in range(3):
            with Session(engine) as session:
                store = EventStore(session, config)
                result = store.read(Query.of(tags=["t:1"]))
                assert len(list(result)) == round_ + 1
                store.append(
                    Event("Fresh", ["t:1"]), AppendCondition(Query.of(tags=["t:1"]), result.head)
                )
                session.commit()
    finally:
        idle.rollback()
        idle.close()


@pytest.mark.postgresql_only
def test_unrelated_boundaries_do_not_queue(engine: Engine) -> None:
    holder = Session(engine)
    EventStore(holder).append(
        Event("Claimed", ["boundary:a"]), AppendCondition(Query.of(tags=["boundary:a"]))
    )
    quick = EventStoreConfig(lock_timeout=0.3)
    try:
        with Session(engine) as other:
            # Waiting on the held boundary would end in OperationTimeoutError after 0.3 s.
            EventStore(other, quick).append(
                Event("Claimed", ["boundary:b"]), AppendCondition(Query.of(tags=["boundary:b"]))
            )
            EventStore(other, quick).append(Event("Free", ["boundary:c"]))  # unconditional
            other.commit()
        for condition in (AppendCondition(Query.of(tags=["boundary:a"])), None):
            # In the held boundary, conditional or not, an append waits for the holder.
            with Session(engine) as same, pytest.raises(OperationTimeoutError) as error:
                EventStore(same, quick).append(Event("Claimed", ["boundary:a"]), condition)
            assert error.value.setting == "lock_timeout"
    finally:
        holder.commit()
        holder.close()
    assert count_events(engine) == 3


@pytest.mark.postgresql_only
def test_a_check_holds_its_boundary_until_the_transaction_ends(engine: Engine) -> None:
    """``check()`` locks like a conditional append: an overlapping conditional append waits
    for the checking transaction (here: times out), an unrelated one does not."""
    holder = Session(engine)
    EventStore(holder).check(AppendCondition(Query.of(tags=["boundary:c"])))
    quick = EventStoreConfig(lock_timeout=0.3)
    try:
        with Session(engine) as other:
            EventStore(other, quick).append(
                Event("Claimed", ["boundary:d"]), AppendCondition(Query.of(tags=["boundary:d"]))
            )
            other.commit()
        with Session(engine) as same, pytest.raises(OperationTimeoutError):
            EventStore(same, quick).append(
                Event("Claimed", ["boundary:c"]), AppendCondition(Query.of(tags=["boundary:c"]))
            )
    finally:
        holder.commit()
        holder.close()
    with Session(engine) as later:
        EventStore(later, quick).append(
            Event("Claimed", ["boundary:c"]), AppendCondition(Query.of(tags=["boundary:c"]))
        )
        later.commit()
    assert count_events(engine) == 2


@pytest.mark.postgresql_only
@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_check_on_a_fixed_snapshot_sees_later_commits(engine: Engine, isolation: str) -> None:
    query = Query.of(tags=["course:checked"])
    with Session(engine.execution_options(isolation_level=isolation)) as decider:
        store = EventStore(decider)
        result = store.read(query)
        assert list(result) == []
        with Session(engine) as writer:
            EventStore(writer).append(Event("Subscribed", ["course:checked"]))
            writer.commit()
        with pytest.raises(ConcurrencyError) as error:
            store.check(AppendCondition(query, result.head))
        assert error.value.position == 1


@pytest.mark.postgresql_only
def test_waiting_appender_sees_the_winner_after_the_wait(engine: Engine) -> None:
    query = Query.of(tags=["seat:1"])
    first = Session(engine)
    EventStore(first).append(Event("Booked", ["seat:1"]), AppendCondition(query))

    def second() -> int:
        with Session(engine) as session:
            position = EventStore(session).append(
                Event("Booked", ["seat:1"]), AppendCondition(query)
            )
            session.commit()
            return position

    thread, box = in_thread(second)
    time.sleep(0.3)
    assert thread.is_alive(), "the second appender should wait for the first"
    first.commit()
    first.close()
    thread.join(10)
    assert isinstance(box[0], ConcurrencyError)
    assert box[0].position == 1


@pytest.mark.postgresql_only
def test_deadlock_becomes_a_concurrency_error(engine: Engine) -> None:
    errors = deadlocked(engine)
    assert all(error is None or not error.transaction_usable for error in errors), errors
    assert any(error is not None for error in errors)


def deadlocked(engine: Engine) -> list[ConcurrencyError | None]:
    """Two transactions append to two boundaries in opposite orders; what each one got
    (``None``: it committed)."""

    def cond(name: str) -> AppendCondition:
        return AppendCondition(Query.of(tags=[name]))

    def worker(i: int, barrier: threading.Barrier) -> ConcurrencyError | None:
        a, b = ("dl:a", "dl:b") if i == 0 else ("dl:b", "dl:a")
        with Session(engine) as session:
            store = EventStore(session)
            store.append(Event("X", [a]), cond(a))
            barrier.wait()
            try:
                store.append(Event("X", [b]), cond(b))
            except ConcurrencyError as error:
                session.rollback()
                return error
            session.commit()
            return None

    return run_parallel(2, worker)
