"""The store inside the host's transaction: commit together, roll back together."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import Engine, String, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sa_crablet import (
    AppendCondition,
    AppendOnlyError,
    ConcurrencyError,
    Event,
    EventStore,
    EventStoreConfig,
    OperationTimeoutError,
    Query,
    SchemaError,
    allow_mutation,
    create_sqlite_engine,
    events_table,
    fail_if_exists,
)
from tests.conftest import count_events


class Base(DeclarativeBase):
    pass


class Course(Base):
    __tablename__ = "host_courses"
    id: Mapped[str] = mapped_column(String(50), primary_key=True)
    capacity: Mapped[int]


@pytest.fixture
def host_engine(engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)


def test_orm_write_and_events_commit_together(host_engine: Engine) -> None:
    with Session(host_engine) as session:
        session.add(Course(id="c1", capacity=10))
        EventStore(session).append(Event("CourseDefined", ["course:c1"], {"capacity": 10}))
        session.commit()
    with Session(host_engine) as session:
        assert session.get(Course, "c1") is not None
        assert [e.type for e in EventStore(session).read(Query.of(tags=["course:c1"]))] == [
            "CourseDefined"
        ]


def test_orm_write_and_events_roll_back_together(host_engine: Engine) -> None:
    with Session(host_engine) as session:
        session.add(Course(id="c2", capacity=5))
        session.flush()
        EventStore(session).append(Event("CourseDefined", ["course:c2"]))
        session.rollback()
    with Session(host_engine) as session:
        assert session.get(Course, "c2") is None
    assert count_events(host_engine) == 0


def test_store_never_commits(engine: Engine) -> None:
    with Session(engine) as session:
        EventStore(session).append(Event("A"))
    assert count_events(engine) == 0


def test_failed_condition_leaves_the_transaction_usable(host_engine: Engine) -> None:
    with Session(host_engine) as session:
        EventStore(session).append(Event("Taken", ["name:alice"]))
        session.commit()
    with Session(host_engine) as session:
        store = EventStore(session)
        with pytest.raises(ConcurrencyError) as error:
            store.append(
                [Event("Registered", ["name:alice"]), Event("Other")],
                AppendCondition(Query.of(tags=["name:alice"])),
            )
        assert error.value.transaction_usable and error.value.position == 1
        session.add(Course(id="c3", capacity=1))
        store.append(Event("Registered", ["name:bob"]))
        session.commit()
    with Session(host_engine) as session:
        assert session.get(Course, "c3") is not None
        assert [e.type for e in EventStore(session).read(Query.all())] == ["Taken", "Registered"]


def test_savepoint_rolls_back_only_its_events(engine: Engine) -> None:
    with Session(engine) as session:
        store = EventStore(session)
        store.append(Event("Kept"))
        with pytest.raises(RuntimeError), session.begin_nested():
            store.append(Event("Dropped"))
            raise RuntimeError("undo the savepoint")
        store.append(Event("AlsoKept"))
        session.commit()
    with Session(engine) as session:
        assert [e.type for e in EventStore(session).read(Query.all())] == ["Kept", "AlsoKept"]


def test_own_events_before_the_read_are_seen_and_later_ones_conflict(engine: Engine) -> None:
    query = Query.of(tags=["cart:1"])
    with Session(engine) as session:
        store = EventStore(session)
        store.append(Event("Created", ["cart:1"]))  # written before the read: seen by it
        result = store.read(query)
        assert len(list(result)) == 1
        store.append(Event("Checked", ["cart:1"]), AppendCondition(query, result.head))
        # A write after the read is a change the decision did not see, even our own.
        store.append(Event("ItemAdded", ["cart:1"]))
        with pytest.raises(ConcurrencyError) as error:
            store.append(Event("Checked", ["cart:1"]), AppendCondition(query, result.head))
        assert error.value.position == 2
        again = store.read(query, after=result.head)
        assert [e.type for e in again] == ["Checked", "ItemAdded"]
        session.commit()
    assert count_events(engine) == 3


def test_uniqueness_holds_within_one_transaction(engine: Engine) -> None:
    with Session(engine) as session:
        store = EventStore(session)
        store.append(Event("Registered", ["username:alice"]), fail_if_exists("username:alice"))
        with pytest.raises(ConcurrencyError):
            store.append(Event("Registered", ["username:alice"]), fail_if_exists("username:alice"))
        session.commit()
    assert count_events(engine) == 1


def test_stored_events_are_append_only(engine: Engine) -> None:
    with Session(engine) as session:
        EventStore(session).append([Event("A"), Event("B")])
        session.commit()
    for statement in (
        events_table.update().values(type="Changed"),
        events_table.delete(),
    ):
        with Session(engine) as session:
            with pytest.raises(AppendOnlyError):
                try:
                    session.execute(statement)
                except Exception as exc:
                    from sqlalchemy.exc import DBAPIError

                    from sa_crablet._errors import translate

                    assert isinstance(exc, DBAPIError)
                    raise (translate(exc) or exc) from exc
            session.rollback()
    with Session(engine) as session:
        with allow_mutation(session):
            session.execute(events_table.delete().where(events_table.c.type == "B"))
        session.commit()
    assert count_events(engine) == 1


def test_missing_schema_is_a_clear_error(tmp_path: object) -> None:
    engine = create_sqlite_engine(":memory:")
    with Session(engine) as session, pytest.raises(SchemaError):
        EventStore(session).append(Event("A"))
    with Session(engine) as session, pytest.raises(SchemaError):
        list(EventStore(session).read(Query.all()))


@pytest.mark.postgresql_only
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "core"])
def test_timeouts_apply_per_operation_and_restore_host_settings(
    engine: Engine, direct: bool
) -> None:
    """Whether the timeouts travel in the operation's own query string (direct) or in
    statements around it (Core), they hold during the operation only: the host's own values
    are back afterwards, also after a rejected condition."""
    with Session(engine) as session:
        session.execute(text("SET LOCAL lock_timeout = '7s'"))
        config = EventStoreConfig(lock_timeout=0.25, statement_timeout=5, direct_execution=direct)
        store = EventStore(session, config)
        store.append(Event("A", ["t"]), AppendCondition(Query.of(tags=["t"])))
        store.append(Event("A2", ["u"]))
        with pytest.raises(ConcurrencyError):
            store.append(Event("A3", ["t"]), AppendCondition(Query.of(tags=["t"])))
        with pytest.raises(ConcurrencyError):
            store.check(AppendCondition(Query.of(tags=["t"])))
        store.check(AppendCondition(Query.of(tags=["v"])))
        assert [e.type for e in store.read(Query.all())] == ["A", "A2"]
        paged = EventStore(session, replace(config, fetch_size=1))  # later pages: a cursor
        assert [e.type for e in paged.read(Query.all())] == ["A", "A2"]
        assert session.execute(text("SHOW lock_timeout")).scalar() == "7s"
        assert session.execute(text("SHOW statement_timeout")).scalar() == "0"
        session.commit()

    holder = Session(engine)
    EventStore(holder).append(Event("B", ["t"]), AppendCondition(Query.of(tags=["t"]), 1))
    try:
        for config, setting in (
            (EventStoreConfig(lock_timeout=0.2, direct_execution=direct), "lock_timeout"),
            (EventStoreConfig(statement_timeout=0.2, direct_execution=direct), "statement_timeout"),
        ):
            for operation in ("append", "check"):
                with Session(engine) as session:
                    store = EventStore(session, config)
                    condition = AppendCondition(Query.of(tags=["t"]), 2)
                    started = time.monotonic()
                    with pytest.raises(OperationTimeoutError) as error:
                        if operation == "append":
                            store.append(Event("C", ["t"]), condition)
                        else:
                            store.check(condition)
                    assert error.value.setting == setting
                    assert time.monotonic() - started < 3
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.postgresql_only
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "core"])
def test_a_sub_millisecond_lock_timeout_still_times_out(engine: Engine, direct: bool) -> None:
    """0.4 ms is sent as 1 ms, never as 0 ms, which PostgreSQL reads as "no timeout" (the
    append would then wait until the statement timeout)."""
    holder = Session(engine)
    EventStore(holder).append(Event("A", ["t"]), AppendCondition(Query.of(tags=["t"])))
    try:
        config = EventStoreConfig(lock_timeout=0.0004, statement_timeout=5, direct_execution=direct)
        with Session(engine) as session:
            with pytest.raises(OperationTimeoutError) as error:
                EventStore(session, config).append(
                    Event("B", ["t"]), AppendCondition(Query.of(tags=["t"]))
                )
            assert error.value.setting == "lock_timeout"
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.sqlite_only
def test_a_sub_millisecond_busy_timeout_is_not_zero(engine: Engine, statements: list[str]) -> None:
    """SQLite's busy timeout is rounded up too: 0 would mean "never wait"."""
    with Session(engine) as session:
        EventStore(session, EventStoreConfig(lock_timeout=0.0004)).append(Event("A"))
        session.commit()
    settings = [s for s in statements if s.startswith("PRAGMA busy_timeout =")]
    assert settings[0] == "PRAGMA busy_timeout = 1"  # then the engine's own is put back


@pytest.mark.sqlite_only
def test_sqlite_lock_timeout_applies(engine: Engine) -> None:
    holder = Session(engine)
    EventStore(holder).append(Event("A"))  # holds SQLite's write lock
    try:
        with Session(engine) as session:
            started = time.monotonic()
            with pytest.raises(OperationTimeoutError) as error:
                EventStore(session, EventStoreConfig(lock_timeout=0.2)).append(Event("B"))
            assert error.value.setting == "lock_timeout"
            assert time.monotonic() - started < 3  # the engine's own busy timeout is 5 s
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.sqlite_only
def test_sqlite_statement_timeout_interrupts(engine: Engine) -> None:
    with Session(engine) as session:
        store = EventStore(session)
        for _ in range(20):
            store.append([Event("Bulk", [f"t:{i}", "common"]) for i in range(1000)])
        session.commit()
    with Session(engine) as session:
        slow = EventStore(session, EventStoreConfig(statement_timeout=0.001))
        with pytest.raises(OperationTimeoutError) as error:
            list(slow.read(Query.of(tags=["t:999", "common"])))
        assert error.value.setting == "statement_timeout"
        # The handler is gone afterwards: the same read without a timeout works.
        assert len(list(EventStore(session).read(Query.of(tags=["t:999"])))) == 20


def test_read_sees_its_own_uncommitted_events(engine: Engine) -> None:
    with Session(engine) as session:
        store = EventStore(session)
        store.append(Event("Mine", ["t"]))
        assert [e.type for e in store.read(Query.of(tags=["t"]))] == ["Mine"]
        assert session.execute(select(events_table.c.type)).scalars().all() == ["Mine"]
