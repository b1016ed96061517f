"""Bad input is refused with ValidationError before any SQL runs; odd strings round-trip."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from sa_crablet import (
    AppendCondition,
    Command,
    Event,
    EventStore,
    EventStoreConfig,
    Head,
    Query,
    QueryItem,
    RetryPolicy,
    ValidationError,
)
from sa_crablet.events import tag
from sa_crablet.query import Snapshot
from tests.conftest import count_events


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Event(""), "type"),
        (lambda: Event(42), "type"),  # type: ignore[arg-type]
        (lambda: Event("x" * 256), "type"),
        (lambda: Event("a\x00b"), "type"),
        (lambda: Event("A", [""]), "tags"),
        (lambda: Event("A", [1]), "tags"),  # type: ignore[list-item]
        (lambda: Event("A", "course:1"), "tags"),
        (lambda: Event("A", ["t\x00"]), "tags"),
        (lambda: Event("A", ["t" * 513]), "tags"),
        (lambda: Event("A", metadata=[1]), "metadata"),  # type: ignore[arg-type]
        (lambda: QueryItem(), "items"),
        (lambda: QueryItem(types="A"), "types"),
        (lambda: QueryItem(types=[""]), "types"),
        (lambda: Query([]), "items"),
        (lambda: Query(["A"]), "items"),  # type: ignore[list-item]
        (lambda: AppendCondition("A"), "fail_if_events_match"),  # type: ignore[arg-type]
        (lambda: AppendCondition(Query.all(), after=-1), "position"),
        (lambda: AppendCondition(Query.all(), after="3"), "after"),  # type: ignore[arg-type]
        (lambda: Head.parse("x@1:2:"), "head"),
        (lambda: Head.parse("1@bad"), "snapshot"),
        (lambda: EventStoreConfig(max_batch_size=0), "max_batch_size"),
        (lambda: EventStoreConfig(lock_timeout=-1), "lock_timeout"),
        (lambda: tag("a:b", "c"), "key"),
    ],
)
def test_bad_values_are_refused(build: Callable[[], object], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        build()
    assert error.value.field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"x": object()}, "data"),
        ({"x": math.nan}, "data"),
        ({"x": "nul\x00"}, "data"),
        ({1j: 1}, "data"),
    ],
)
def test_bad_payloads_write_nothing(
    engine: Engine, statements: list[str], data: object, field: str
) -> None:
    with Session(engine) as session:
        store = EventStore(session)
        with pytest.raises(ValidationError) as error:
            store.append([Event("Fine"), Event("Bad", data=data)])
        assert error.value.field == field
        session.commit()
    assert not [s for s in statements if "INSERT" in s]
    assert count_events(engine) == 0


def test_bad_appends_and_reads_run_no_sql(
    engine: Engine, statements: list[str], make_store: Callable[..., EventStore]
) -> None:
    store = make_store(EventStoreConfig(max_batch_size=3))
    calls: list[Callable[[], object]] = [
        lambda: store.append([]),
        lambda: store.append([Event("A")] * 4),
        lambda: store.append(["A"]),  # type: ignore[list-item]
        lambda: store.append("A"),  # type: ignore[arg-type]
        lambda: store.append(Event("A"), condition=Query.all()),  # type: ignore[arg-type]
        lambda: store.read("A"),  # type: ignore[arg-type]
        lambda: store.read(Query.all(), limit=0),
        lambda: store.read(Query.all(), after=-5),
    ]
    for call in calls:
        with pytest.raises(ValidationError):
            call()
    assert statements == []
    assert count_events(engine) == 0


def test_literal_backslash_u0000_is_not_a_nul(store: EventStore) -> None:
    store.append(Event("A", data="\\u0000"))
    assert next(iter(store.read(Query.all()))).data == "\\u0000"


awkward = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    min_size=1,
    max_size=40,
)
fixed = ["it's", 'say "hi"', "back\\slash", "a:b:c", "'); DROP TABLE x; --", "ünï©ødé 🦀", "{a,b}"]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(type_=awkward, tags=st.lists(awkward, max_size=4), data=awkward)
def test_awkward_strings_round_trip(engine: Engine, type_: str, tags: list[str], data: str) -> None:
    with Session(engine) as session:
        store = EventStore(session)
        everything = [*tags, *fixed]
        position = store.append(Event(type_, everything, {"text": data}))
        found = list(store.read(Query.of(types=[type_], tags=everything), after=position - 1))
        assert [(e.type, e.tags, e.data) for e in found] == [
            (type_, tuple(sorted(set(everything))), {"text": data})
        ]
        for single in everything:
            assert [
                e.position for e in store.read(Query.of(tags=[single]), after=position - 1)
            ] == [position]
        session.rollback()


# -- bounds and value types ------------------------------------------------------------------------

TOO_FAR = 2**63  # one past PostgreSQL's bigint


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Head(TOO_FAR), "position"),
        (lambda: Head(2**70), "position"),
        (lambda: Head(1, "garbage"), "snapshot"),  # type: ignore[arg-type]
        (lambda: Head(1, (1, 2, ())), "snapshot"),  # type: ignore[arg-type]
        (lambda: AppendCondition(Query.all(), after=TOO_FAR), "position"),
        (lambda: Snapshot(5, 4), "xmax"),
        (lambda: Snapshot(-1, 4), "xmin"),
        (lambda: Snapshot(1, 2**64), "xmax"),
        (lambda: Snapshot(True, 4), "xmin"),
        (lambda: Snapshot(1.0, 4), "xmin"),  # type: ignore[arg-type]
        (lambda: Snapshot(1, 4, (4,)), "xip"),
        (lambda: Snapshot(2, 4, (1,)), "xip"),
        (lambda: Snapshot(1, 4, [2]), "xip"),  # type: ignore[arg-type]
        (lambda: Snapshot(1, 4, ("2",)), "xip"),  # type: ignore[arg-type]
        (lambda: Snapshot(1, 4, (), "3"), "own"),  # type: ignore[arg-type]
        (lambda: Snapshot(1, 4, (), 2**64), "own"),
        (lambda: Head.parse("9223372036854775808"), "position"),
        (lambda: Head.parse("-1"), "head"),
        (lambda: Head.parse("+1"), "head"),
        (lambda: Head.parse(" 1"), "head"),
        (lambda: Head.parse("1_0"), "head"),
        (lambda: Head.parse("\u0661"), "head"),  # ARABIC-INDIC DIGIT ONE: int() takes it
        (lambda: Head.parse("9" * 5000), "head"),
        (lambda: Head.parse(""), "head"),
        (lambda: Head.parse(None), "head"),  # type: ignore[arg-type]
        (lambda: Head.parse("1@"), "snapshot"),
        (lambda: Head.parse("1@5:4:"), "xmax"),
        (lambda: Head.parse("1@1:4:7"), "xip"),
        (lambda: Head.parse("1@1:4:2,,3"), "snapshot"),
        (lambda: Head.parse("1@1:4:2/x"), "snapshot"),
        (lambda: Head.parse("1@1:18446744073709551616:"), "xmax"),
        (lambda: Snapshot.parse(None), "snapshot"),  # type: ignore[arg-type]
        (lambda: Snapshot.parse("1:4:", own="x"), "own"),
        (lambda: Snapshot.parse("1:4:", own=-1), "own"),
        (lambda: EventStoreConfig(lock_timeout=math.nan), "lock_timeout"),
        (lambda: EventStoreConfig(lock_timeout=math.inf), "lock_timeout"),
        (lambda: EventStoreConfig(lock_timeout=1e10), "lock_timeout"),
        (lambda: EventStoreConfig(statement_timeout=2147483.648), "statement_timeout"),
        (lambda: EventStoreConfig(statement_timeout=1.7e305), "statement_timeout"),
        (lambda: EventStoreConfig(lock_timeout=10**400), "lock_timeout"),
        (lambda: EventStoreConfig(statement_timeout=True), "statement_timeout"),
        (lambda: RetryPolicy(backoff="x"), "backoff"),  # type: ignore[arg-type]
        (lambda: RetryPolicy(backoff=math.nan), "backoff"),
        (lambda: RetryPolicy(max_backoff=math.inf), "max_backoff"),
        (lambda: RetryPolicy(max_backoff=-1), "max_backoff"),
        (lambda: RetryPolicy(max_backoff=None), "max_backoff"),  # type: ignore[arg-type]
        (lambda: RetryPolicy(backoff=True), "backoff"),
        (lambda: RetryPolicy(backoff=10**400), "backoff"),
        (lambda: RetryPolicy(max_backoff=1e10), "max_backoff"),
        (lambda: RetryPolicy(attempts=2.0), "attempts"),  # type: ignore[arg-type]
        (lambda: Command("C", id=""), "id"),
        (lambda: Command("C", id="x" * 256), "id"),
        (lambda: Command("C", id=5), "id"),  # type: ignore[arg-type]
    ],
)
def test_bad_bounds_and_values_are_refused(build: Callable[[], object], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        build()
    assert error.value.field == field


def test_values_at_the_bounds_are_accepted() -> None:
    assert Head(TOO_FAR - 1).position == TOO_FAR - 1
    top = 2**64 - 1
    snapshot = Snapshot(0, top, (0, top - 1), top)
    assert Head.parse(str(Head(TOO_FAR - 1, snapshot))) == Head(TOO_FAR - 1, snapshot)
    assert Snapshot.parse("1:4:2,3", own="9") == Snapshot(1, 4, (2, 3), 9)
    assert Head.parse("007") == Head(7)
    assert EventStoreConfig(lock_timeout=2147483.647).lock_timeout == 2147483.647
    assert EventStoreConfig(statement_timeout=1e-9).statement_timeout == 1e-9
    assert RetryPolicy(backoff=0, max_backoff=0).delay(10_000) == 0
    assert 0 <= RetryPolicy(attempts=10**6, backoff=1e9, max_backoff=1).delay(10**5) <= 1
    assert RetryPolicy(backoff=10**9, max_backoff=10**9).delay(70) <= 1e9


def test_out_of_range_reads_and_lookups_run_no_sql(
    engine: Engine, statements: list[str], store: EventStore
) -> None:
    """Positions past PostgreSQL's bigint and ids of the wrong kind are refused before any
    SQL (they would have been DataError / OverflowError from the driver)."""
    calls: list[Callable[[], object]] = [
        lambda: store.read(Query.all(), after=TOO_FAR),
        lambda: store.read(Query.all(), limit=TOO_FAR),
        lambda: store.read(Query.all(), limit=2**64 + 5),
        lambda: store.append(Event("A"), AppendCondition(Query.all(), after=TOO_FAR)),
        lambda: store.command_of_event("x"),  # type: ignore[arg-type]
        lambda: store.command_of_event(TOO_FAR),
        lambda: store.command_of_event(-1),
        lambda: store.command_of_event(True),
        lambda: store.command(1),  # type: ignore[arg-type]
        lambda: store.command(None),  # type: ignore[arg-type]
        lambda: store.command("a\x00b"),
        lambda: store.events_of_command(b"id"),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(ValidationError):
            call()
    assert statements == []
    assert list(store.read(Query.all(), after=TOO_FAR - 1, limit=TOO_FAR - 1)) == []
    assert store.command_of_event(TOO_FAR - 1) is None
    assert store.command("x" * 255) is None
