"""Connection set-ups the store refuses, and errors it hands back as they are."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from sa_crablet import (
    AppendCondition,
    ConcurrencyError,
    CrabletError,
    Event,
    EventStore,
    EventStoreConfig,
    Query,
    UnsupportedSetupError,
    fail_if_exists,
)
from tests.conftest import count_events

PATHS = [EventStoreConfig(), EventStoreConfig(direct_execution=False)]
PATH_IDS = ["direct", "core"]


@pytest.mark.postgresql_only
@pytest.mark.parametrize("config", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("encoding", ["SJIS", "GBK", "BIG5", "LATIN1"])
def test_a_client_encoding_other_than_utf8_is_refused(
    engine: Engine, config: EventStoreConfig, encoding: str
) -> None:
    """In SJIS, GBK or BIG5 a multi-byte character can end in a byte that is a quote or a
    backslash: a tag such as '表",' would come apart into several array elements, and a second
    registration of it would slip through. The store refuses such a connection outright."""
    odd = '表",x'
    other = create_engine(engine.url, connect_args={"client_encoding": encoding})
    try:
        for operation in ("append", "conditional", "read", "check", "command"):
            with Session(other) as session:
                store = EventStore(session, config)
                with pytest.raises(UnsupportedSetupError) as error:
                    if operation == "append":
                        store.append(Event("Registered", ["user:x"]))
                    elif operation == "conditional":
                        store.append(Event("Registered", ["user:x"]), fail_if_exists("user:x"))
                    elif operation == "read":
                        list(store.read(Query.of(tags=[odd])))
                    elif operation == "check":
                        store.check(fail_if_exists(odd))
                    else:
                        store.command("some-id")
                assert error.value.setting == "client_encoding"
                assert error.value.value == encoding
    finally:
        other.dispose()
    with Session(engine) as session:  # set in the session itself, by the host
        session.execute(text("SET client_encoding TO 'SJIS'"))
        with pytest.raises(UnsupportedSetupError):
            EventStore(session, config).append(Event("Registered", [odd]))
        session.execute(text("SET client_encoding TO 'UTF8'"))
        store = EventStore(session, config)
        store.append(Event("Registered", [odd]), fail_if_exists(odd))
        with pytest.raises(ConcurrencyError):
            store.append(Event("Registered", [odd]), fail_if_exists(odd))
        session.commit()
    assert count_events(engine) == 1


@pytest.mark.postgresql_only
@pytest.mark.parametrize("config", PATHS, ids=PATH_IDS)
def test_an_error_the_store_does_not_classify_propagates_as_is(
    engine: Engine, config: EventStoreConfig
) -> None:
    with Session(engine) as session:
        with pytest.raises(DBAPIError):
            session.execute(text("SELECT 1 / 0"))  # the host's own failure aborts its transaction
        store = EventStore(session, config)
        for operation in (
            lambda: store.append(Event("A")),
            lambda: store.append(Event("A"), fail_if_exists("a:1")),
            lambda: list(store.read(Query.all())),
        ):
            with pytest.raises(DBAPIError) as error:
                operation()
            assert not isinstance(error.value, CrabletError)
            assert error.value.__cause__ is not error.value  # not its own cause
            assert getattr(error.value.orig, "sqlstate", None) == "25P02"
        session.rollback()
        store.append(Event("A"))
        session.commit()
    assert count_events(engine) == 1


@pytest.mark.sqlite_only
def test_sqlite_a_transaction_that_already_read_loses_at_once(engine: Engine) -> None:
    """With the application's own BEGIN, a transaction that has read cannot wait for another
    writer (its snapshot would go stale): it fails at once, as a lost race, not a timeout."""
    assert not lose_after_reading(engine).transaction_usable
    assert count_events(engine) == 1


def lose_after_reading(engine: Engine) -> ConcurrencyError:
    """SQLite: what a transaction of the application's own (``BEGIN``) gets when it reads
    ``seat:1`` and then appends there while another writer holds the write lock."""
    query = Query.of(tags=["seat:1"])
    writer = Session(engine)
    EventStore(writer).append(Event("Held", ["other:1"]))  # holds SQLite's write lock
    try:
        with Session(engine) as session:
            session.connection().exec_driver_sql("BEGIN")
            store = EventStore(session)
            result = store.read(query)
            assert list(result) == []
            with pytest.raises(ConcurrencyError) as error:
                store.append(Event("Booked", ["seat:1"]), AppendCondition(query, result.head))
            session.rollback()
    finally:
        writer.commit()
        writer.close()
    return error.value
