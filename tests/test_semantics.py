"""DCB semantics: OR of items, OR of types, AND of tags, exclusive after, read options."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sa_crablet import (
    AppendCondition,
    ConcurrencyError,
    DuplicateCommandError,
    Event,
    EventStore,
    Head,
    Query,
    QueryItem,
    ReadNotFinishedError,
    ValidationError,
    events_table,
    fail_if_exists,
    query_clause,
)
from sa_crablet.commands import Command


def _seed(store: EventStore) -> None:
    store.append(
        [
            Event("CourseDefined", ["course:c1"]),  # 1
            Event("CourseDefined", ["course:c2"]),  # 2
            Event("StudentRegistered", ["student:s1"]),  # 3
            Event("StudentSubscribed", ["course:c1", "student:s1"]),  # 4
            Event("StudentSubscribed", ["course:c2", "student:s1"]),  # 5
            Event("Untagged"),  # 6
        ]
    )


def positions(store: EventStore, query: Query, **options: object) -> list[int]:
    return [e.position for e in store.read(query, **options)]  # type: ignore[arg-type]


def test_types_are_or_and_tags_are_and(store: EventStore) -> None:
    _seed(store)
    assert positions(store, Query.of(types=["CourseDefined", "Untagged"])) == [1, 2, 6]
    assert positions(store, Query.of(tags=["course:c1", "student:s1"])) == [4]
    assert positions(store, Query.of(tags=["course:c1"])) == [1, 4]
    assert positions(store, Query.of(types=["StudentSubscribed"], tags=["course:c2"])) == [5]


def test_items_are_or_and_never_narrowed(store: EventStore) -> None:
    _seed(store)
    query = Query(
        [QueryItem(types=["CourseDefined"], tags=["course:c2"]), QueryItem(tags=["student:s1"])]
    )
    assert positions(store, query) == [2, 3, 4, 5]
    assert positions(store, Query.of(tags=["course:c1"]) | Query.of(types=["Untagged"])) == [
        1,
        4,
        6,
    ]


def test_query_all_after_backwards_limit(store: EventStore) -> None:
    _seed(store)
    assert positions(store, Query.all()) == [1, 2, 3, 4, 5, 6]
    assert positions(store, Query.all(), after=4) == [5, 6]
    assert positions(store, Query.all(), backwards=True) == [6, 5, 4, 3, 2, 1]
    assert positions(store, Query.all(), backwards=True, limit=2) == [6, 5]
    assert positions(store, Query.all(), limit=2) == [1, 2]
    assert positions(store, Query.all(), after=2, limit=2) == [3, 4]
    assert positions(store, Query.all(), after=4, backwards=True) == [6, 5]
    assert positions(store, Query.of(tags=["nobody"])) == []


def test_read_returns_full_events(store: EventStore) -> None:
    store.append(Event("A", ["k:v"], {"n": [1, 2, {"x": None}]}, {"by": "me"}))
    (event,) = list(store.read(Query.all()))
    assert (event.type, event.tags, event.data, event.metadata) == (
        "A",
        ("k:v",),
        {"n": [1, 2, {"x": None}]},
        {"by": "me"},
    )
    assert event.position == 1 and event.recorded_at.tzinfo is not None
    assert event.to_event() == Event("A", ["k:v"], {"n": [1, 2, {"x": None}]}, {"by": "me"})


def test_tags_are_a_set(store: EventStore) -> None:
    store.append(Event("A", ["b", "a", "b"]))
    assert next(iter(store.read(Query.all()))).tags == ("a", "b")


def test_head_of_reads(store: EventStore) -> None:
    _seed(store)
    result = store.read(Query.of(tags=["course:c1"]))
    with pytest.raises(ReadNotFinishedError):
        _ = result.head
    assert [e.position for e in result] == [1, 4]
    assert result.head.position == 4
    empty = store.read(Query.of(tags=["nobody"]), after=3)
    assert list(empty) == []
    assert empty.head.position == 3
    limited = store.read(Query.all(), limit=2)
    list(limited)
    assert limited.head.position == 2
    latest = store.read(Query.of(types=["CourseDefined"]), backwards=True, limit=1)
    assert [e.position for e in latest] == [2]
    assert latest.head.position == 2


def test_head_round_trips_through_text(store: EventStore) -> None:
    _seed(store)
    result = store.read(Query.all())
    list(result)
    assert Head.parse(str(result.head)) == result.head


def test_condition_after_is_exclusive(engine: object) -> None:
    from sqlalchemy import Engine

    assert isinstance(engine, Engine)
    with Session(engine) as session:
        _seed(EventStore(session))
        session.commit()
    query = Query.of(tags=["course:c1"])
    with Session(engine) as session:
        store = EventStore(session)
        with pytest.raises(ConcurrencyError) as error:
            store.append(Event("X", ["course:c1"]), AppendCondition(query, after=3))
        assert error.value.position == 4
        assert error.value.transaction_usable
        assert store.append(Event("X", ["course:c1"]), AppendCondition(query, after=4)) == 7
        session.commit()
    with Session(engine) as session:
        store = EventStore(session)
        with pytest.raises(ConcurrencyError):
            store.append(Event("Y"), AppendCondition(query))
        with pytest.raises(ConcurrencyError):
            store.append(Event("Y"), fail_if_exists("student:s1", types=["StudentRegistered"]))
        assert store.append(Event("Y"), fail_if_exists("student:s2")) == 8


def test_check_reports_what_an_append_would_without_appending(
    session: Session, store: EventStore
) -> None:
    _seed(store)
    query = Query.of(tags=["course:c1"])
    with pytest.raises(ConcurrencyError) as error:
        store.check(AppendCondition(query, after=3))
    assert (error.value.position, error.value.transaction_usable) == (4, True)
    store.check(AppendCondition(query, after=4))
    store.check(fail_if_exists("course:nowhere"))
    with pytest.raises(ConcurrencyError):
        store.check(fail_if_exists("student:s1", types=["StudentRegistered"]))
    with pytest.raises(ValidationError):
        store.check(query)  # type: ignore[arg-type]
    result = store.read(query)
    assert [event.position for event in result] == [1, 4]
    store.check(AppendCondition(query, result.head))  # a head covers what its read saw
    assert len(list(store.read(Query.all()))) == 6  # nothing appended


def test_multi_item_condition_conflicts_on_either_item(engine: object) -> None:
    from sqlalchemy import Engine

    assert isinstance(engine, Engine)
    with Session(engine) as session:
        EventStore(session).append(Event("Seed"))
        session.commit()
    condition = AppendCondition(
        Query([QueryItem(tags=["course:X"]), QueryItem(tags=["student:Y"])]), after=1
    )
    for conflicting in (Event("A", ["course:X"]), Event("B", ["student:Y"])):
        with Session(engine) as session:
            EventStore(session).append(conflicting)
            session.commit()
        with Session(engine) as session, pytest.raises(ConcurrencyError):
            EventStore(session).append(Event("C", ["course:X", "student:Y"]), condition)


def test_query_clause_composes_with_core(session: Session, store: EventStore) -> None:
    _seed(store)
    statement = (
        select(func.count())
        .select_from(events_table)
        .where(query_clause(Query.of(tags=["student:s1"])), events_table.c.position > 3)
    )
    assert session.execute(statement).scalar_one() == 2
    alias = events_table.alias("e")
    statement = select(alias.c.position).where(
        query_clause(Query.of(types=["CourseDefined"]), alias)
    )
    assert session.execute(statement).scalars().all() == [1, 2]


def test_early_stop_releases_the_cursor(session: Session, store: EventStore) -> None:
    store.append([Event("A", ["t"]) for _ in range(50)])
    result = store.read(Query.all(), limit=None)
    first = next(result)
    assert first.position == 1
    result.close()
    # The connection is free again for other statements in the same transaction.
    assert store.append(Event("B")) == 51


@pytest.mark.parametrize("fetch_size", [1, 2, 3, 1000])
def test_reads_across_pages_match_a_single_page(
    make_store: Callable[..., EventStore], fetch_size: int
) -> None:
    from sa_crablet import EventStoreConfig

    make_store().append([Event(f"T{i % 3}", [f"k:{i % 2}"]) for i in range(10)])
    paged = make_store(EventStoreConfig(fetch_size=fetch_size))
    whole = make_store(EventStoreConfig(fetch_size=1000))
    cases: list[dict[str, object]] = [
        {},
        {"backwards": True},
        {"limit": 4},
        {"limit": 4, "backwards": True},
        {"after": 3},
        {"after": 3, "limit": 3},
        {"after": 8, "backwards": True},
    ]
    for query in (Query.all(), Query.of(tags=["k:1"]), Query.of(types=["T0", "T2"])):
        for options in cases:
            expected = whole.read(query, **options)  # type: ignore[arg-type]
            got = paged.read(query, **options)  # type: ignore[arg-type]
            assert [e.position for e in got] == [e.position for e in expected], options
            assert got.head.position == expected.head.position, options
    # Stopping early in a later page releases its cursor; the session goes on.
    stream = paged.read(Query.all())
    assert [next(stream).position for _ in range(min(5, 10))] == [1, 2, 3, 4, 5]
    stream.close()
    assert paged.append(Event("After")) == 11


def test_a_head_is_known_only_once_every_event_was_consumed(store: EventStore) -> None:
    """Even when every row has already been fetched (one page), a read's head waits until
    the caller has taken every event: a decision on part of a read must not claim it all."""
    store.append([Event("E"), Event("E"), Event("E")])
    result = store.read(Query.all())
    assert next(result).position == 1
    with pytest.raises(ReadNotFinishedError):
        result.head  # noqa: B018
    assert [e.position for e in result] == [2, 3]
    assert result.head.position == 3


def test_an_append_under_a_command_id_recorded_before_writes_nothing(
    session: Session, store: EventStore
) -> None:
    """The events of an append and the record of its command go together: a second append
    under an id recorded before raises ``DuplicateCommandError`` and, once its transaction is
    rolled back (the store's own, when it owns its transactions), nothing of it remains."""
    first = store.append(
        [Event("Paid", ["order:1"]), Event("Shipped", ["order:1"])],
        command=Command("Pay", {"order": 1}, id="pay-1"),
    )
    session.commit()
    with pytest.raises(DuplicateCommandError) as error:
        store.append(Event("Paid", ["order:1"]), command=Command("Pay", id="pay-1"))
    assert error.value.command_id == "pay-1"
    session.rollback()
    assert [e.position for e in store.read(Query.all())] == [first - 1, first]
    record = store.command("pay-1")
    assert record is not None
    assert (record.last_position, record.event_count) == (first, 2)
    assert [e.type for e in store.events_of_command("pay-1")] == ["Paid", "Shipped"]
