"""``EngineEventStore``: a store that owns its transactions. Its behaviour is the behavioural
suite's (every test on the ``store`` fixture runs on it, and the host matrix has engine-owned
hosts); here, what only it has: its binds, its refusals, its round trips on the wire."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from sa_crablet import (
    AppendCondition,
    ConcurrencyError,
    EngineEventStore,
    Event,
    EventStore,
    EventStoreConfig,
    Query,
    UnsupportedSetupError,
    ValidationError,
)
from sa_crablet.commands import Command
from sa_crablet.projectors import counter
from tests.conftest import count_events
from tests.wire import Wire, wire_of


def test_an_engine_store_commits_each_operation_itself(engine: Engine) -> None:
    store = EngineEventStore(engine)
    first = store.append(Event("Opened", ["account:a"], {"n": 1}))
    # Seen at once from another connection: nothing waits for a commit of the caller's.
    assert count_events(engine) == 1
    with pytest.raises(ConcurrencyError):
        store.append(Event("Opened", ["account:a"]), AppendCondition(Query.of(tags=["account:a"])))
    assert count_events(engine) == 1
    result = store.read(Query.of(tags=["account:a"]))
    assert [e.position for e in result] == [first]
    assert result.head.position == first


def test_the_connection_goes_back_to_the_pool_transactional(engine: Engine) -> None:
    """The store sets AUTOCOMMIT on the connection it borrows; the pool puts the engine's
    level back, so the next Session on that pool has its transaction again."""
    one = create_engine(engine.url, pool_size=1, max_overflow=0)
    try:
        EngineEventStore(one).append(Event("A", ["t:1"]))
        with Session(one) as session:
            EventStore(session).append(Event("B", ["t:1"]))
            session.rollback()
        assert count_events(engine) == 1
    finally:
        one.dispose()


def test_a_finished_read_gives_its_connection_back_at_once(engine: Engine) -> None:
    """A read holds its connection until its head is reached, not until the result is
    dropped: a caller keeping the result for its ``.head`` does not hold a pooled
    connection (a pool of one would otherwise time out on the next operation)."""
    one = create_engine(engine.url, pool_size=1, max_overflow=0, pool_timeout=1)
    try:
        store = EngineEventStore(one, EventStoreConfig(fetch_size=1))
        store.append([Event("A", ["t:1"]), Event("B", ["t:1"])])
        kept = [store.read(query) for query in (Query.all(), Query.of(tags=["t:1"]))]
        for result in kept:
            assert len(list(result)) == 2
            store.append(Event("C", ["t:2"]))  # the pool's one connection is free again
        assert [result.head.position for result in kept] == [2, 2]
    finally:
        one.dispose()


def test_an_isolation_level_set_by_an_execution_option_does_not_keep_it_open(
    engine: Engine,
) -> None:
    """An engine's ``execution_options(isolation_level=...)`` on top of another one would
    not override it: the store sets AUTOCOMMIT on each connection it borrows instead, so its
    appends commit rather than vanish with a transaction nobody ends."""
    serializable = engine.execution_options(isolation_level="SERIALIZABLE")
    store = EngineEventStore(serializable)
    store.append(Event("A", ["t:1"]))
    store.append(Event("A", ["t:1"]), AppendCondition(Query.of(tags=["t:2"])))
    assert count_events(engine) == 2


def test_a_connection_in_autocommit_serves_every_operation(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        store = EngineEventStore(connection)
        store.append(Event("A", ["t:1"]))
        model = store.project([counter("n", Query.of(tags=["t:1"]))])
        store.append(Event("A", ["t:1"]), model.append_condition)
        assert model["n"] == 1
    assert count_events(engine) == 2


def test_a_connection_with_a_transaction_is_refused_and_nothing_is_written(
    engine: Engine,
) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))  # a transaction of the caller's is open
        store = EngineEventStore(connection)
        with pytest.raises(UnsupportedSetupError, match="AUTOCOMMIT"):
            store.append(Event("A", ["t:1"]))
        connection.commit()
    assert count_events(engine) == 0


@pytest.mark.parametrize("bind", [None, "postgresql://", Session])
def test_a_bind_that_is_no_engine_or_connection_is_refused(bind: object) -> None:
    with pytest.raises(ValidationError, match="Engine or a Connection"):
        EngineEventStore(bind)  # type: ignore[arg-type]


# -- round trips (psycopg) ---------------------------------------------------------------------


@pytest.fixture
def single(engine: Engine) -> Iterator[Engine]:
    """An engine of one pooled connection, so the wire trace sees every operation."""
    one = create_engine(engine.url, pool_size=1, max_overflow=0)
    yield one
    one.dispose()


def traced(engine: Engine) -> Wire:
    with engine.connect() as connection:
        return connection.connection.driver_connection  # type: ignore[return-value]


@pytest.mark.postgresql_only
def test_each_operation_is_one_round_trip_and_a_read_opens_no_transaction(
    single: Engine,
) -> None:
    store = EngineEventStore(single)
    store.append(Event("A", ["t:0"]))  # warm: statements prepared
    with wire_of(traced(single)) as plain:
        store.append(Event("A", ["t:1"]))
    with wire_of(traced(single)) as conditional:
        store.append(Event("A", ["t:2"]), AppendCondition(Query.of(tags=["t:2"])))
    with wire_of(traced(single)) as with_command:
        store.append(Event("A", ["t:3"]), command=Command("Do", id="c-1"))
    with wire_of(traced(single)) as read:
        assert len(list(store.read(Query.of(tags=["t:1"])))) == 1
    with wire_of(traced(single)) as projected:
        model = store.project([counter("n", Query.of(tags=["t:2"]))])
        assert model["n"] == 1
    for sent in (plain, conditional, with_command, read, projected):
        assert sent.round_trips == 1, sent.sent
    for sent in (plain, read, projected):
        assert not any("BEGIN" in sql or "COMMIT" in sql for sql in sent.sent), sent.sent
    # Several statements: BEGIN and COMMIT travel in the same query string.
    for sent in (conditional, with_command):
        (script,) = sent.sent
        assert script.startswith("BEGIN ISOLATION LEVEL READ COMMITTED"), script
        assert script.rstrip().endswith("COMMIT"), script
