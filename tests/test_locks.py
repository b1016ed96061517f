"""Advisory locks on PostgreSQL: capped per operation and per transaction, and the cap still
excludes what the finer keys would have."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from sa_crablet import (
    AppendCondition,
    Event,
    EventStore,
    EventStoreConfig,
    OperationTimeoutError,
    Query,
)
from sa_crablet._plans import locks as _locks
from tests.conftest import count_events

pytestmark = pytest.mark.postgresql_only

QUICK = EventStoreConfig(lock_timeout=0.3)


def advisory_locks(session: Session) -> int:
    """How many advisory locks the session's transaction holds, as PostgreSQL counts them."""
    return int(
        session.execute(
            text(
                "SELECT count(*) FROM pg_locks "
                "WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted"
            )
        ).scalar_one()
    )


def test_a_condition_with_many_types_takes_a_bounded_number_of_locks(engine: Engine) -> None:
    many = Query.of(types=[f"Type{i}" for i in range(2000)])
    with Session(engine) as session:
        store = EventStore(session)
        store.append(Event("Type1"), AppendCondition(many))
        assert advisory_locks(session) <= _locks.MAX_KEYS
        store.check(AppendCondition(Query.of(types=[f"Other{i}" for i in range(2000)])))
        assert advisory_locks(session) <= _locks.MAX_KEYS
        session.commit()
    assert count_events(engine) == 1


def test_a_large_batch_takes_a_bounded_number_of_locks(engine: Engine) -> None:
    batch = [Event(f"T{i % 7}", [f"tag:{i}", f"other:{i}"]) for i in range(500)]
    with Session(engine) as session:
        EventStore(session).append(batch)
        assert advisory_locks(session) <= _locks.MAX_KEYS
        session.commit()
    assert count_events(engine) == 500


def test_a_transactions_appends_take_a_bounded_number_of_locks(engine: Engine) -> None:
    with Session(engine) as session:
        store = EventStore(session)
        for i in range(300):  # four keys each, 1,200 in all without the cap
            store.append(
                Event("Registered", [f"user:{i}"]), AppendCondition(Query.of(tags=[f"user:{i}"]))
            )
        assert advisory_locks(session) <= _locks.MAX_KEYS_PER_TRANSACTION + _locks.MAX_KEYS
        session.commit()
    assert count_events(engine) == 300


@pytest.mark.parametrize("escalate", ["condition", "batch", "transaction"])
def test_the_capped_lock_still_excludes_what_it_covers(engine: Engine, escalate: str) -> None:
    """Once an operation takes the global key instead of its own keys, an append into any
    boundary waits for that transaction (here: times out), as it would have on the keys."""
    holder = Session(engine)
    store = EventStore(holder)
    if escalate == "condition":
        store.check(AppendCondition(Query.of(types=[f"Type{i}" for i in range(2000)])))
    elif escalate == "batch":
        store.append([Event("Bulk", [f"tag:{i}"]) for i in range(100)])
    else:
        for i in range(_locks.MAX_KEYS_PER_TRANSACTION // 4 + 1):
            store.append(Event("Registered", [f"user:{i}"]))
    try:
        for condition in (AppendCondition(Query.of(tags=["anything:1"])), None):
            with Session(engine) as other, pytest.raises(OperationTimeoutError):
                EventStore(other, QUICK).append(Event("Type7", ["anything:1"]), condition)
    finally:
        holder.rollback()
        holder.close()
    assert count_events(engine) == 0


def test_below_the_cap_unrelated_boundaries_do_not_wait(engine: Engine) -> None:
    holder = Session(engine)
    EventStore(holder).append([Event("Bulk", [f"tag:{i}"]) for i in range(10)])
    try:
        with Session(engine) as other:
            EventStore(other, QUICK).append(
                Event("Other", ["elsewhere:1"]), AppendCondition(Query.of(tags=["elsewhere:1"]))
            )
            other.commit()
    finally:
        holder.rollback()
        holder.close()
    assert count_events(engine) == 1
