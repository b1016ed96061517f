"""Bad input is refused with ValidationError before any SQL runs; odd strings round-trip."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from sa_crablet import (
    AppendCondition,
    Event,
    EventStore,
    EventStoreConfig,
    Head,
    Query,
    QueryItem,
    ValidationError,
    tag,
)
from tests.conftest import count_events


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


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
    engine: Engine, statements: list[str], session: Session
) -> None:
    store = EventStore(session, EventStoreConfig(max_batch_size=3))
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
