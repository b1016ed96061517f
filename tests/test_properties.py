"""Properties over any input: stored and read back exactly, or refused with ValidationError
(nothing written, the session still usable); never another exception.

Every property runs on SQLite and on PostgreSQL through both paths (direct and Core). The
default run is bounded (a few hundred examples in all); ``SA_CRABLET_PROPERTIES=thorough``
runs twenty times as many.
"""

from __future__ import annotations

import enum
import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import sa_crablet
from sa_crablet import (
    AppendCondition,
    Command,
    CommandExecutor,
    ConcurrencyError,
    Event,
    EventStore,
    EventStoreConfig,
    Head,
    OperationTimeoutError,
    Query,
    RetryPolicy,
    ValidationError,
    create_sqlite_engine,
)
from sa_crablet._validation import MAX_PAYLOAD_DEPTH
from sa_crablet.query import Snapshot
from tests.payload_values import as_read, exactly_equal, nested

SCALE = {"quick": 1, "thorough": 20}[os.environ.get("SA_CRABLET_PROPERTIES", "quick")]
settings.register_profile(
    "sa_crablet",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile("sa_crablet")


def examples(count: int) -> settings:
    return settings(PROFILE, max_examples=count * SCALE)


# -- where the properties run ----------------------------------------------------------------------

TARGETS = ["sqlite", "postgresql-direct", "postgresql-core"]


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path: Path = tmp_path_factory.mktemp("properties") / "events.sqlite3"
    engine = create_sqlite_engine(str(path))
    sa_crablet.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest) -> tuple[Engine, EventStoreConfig]:
    """An engine and a configuration; every example rolls back what it wrote. PostgreSQL's
    is the session's shared store: it may hold what earlier tests committed."""
    name = str(request.param)
    if name == "sqlite":
        return request.getfixturevalue("sqlite_engine"), EventStoreConfig()
    engine: Engine = request.getfixturevalue("postgres_engine")
    return engine, EventStoreConfig(direct_execution=name == "postgresql-direct")


# -- strategies ------------------------------------------------------------------------------------


class Level(enum.IntEnum):
    LOW = 1


class Name(str):
    pass


class Ratio(float):
    pass


SPECIAL_FLOATS = [-0.0, 0.0, 1e16, -1e16, 1e308, 5e-324, 0.1, 1.0, math.nan, math.inf, -math.inf]
SPECIAL_INTS = [2**53 + 1, 2**63, -(2**63) - 1, 2**64]
# Built when drawn: a strategy's repr would show 10**4300, which int() no longer prints.
HUGE_INTS = st.sampled_from([400, 4299, 4300]).map(lambda digits: 10**digits)
SPECIAL_TEXT = ["", "\x00", "a\x00", "\\u0000", "\\\\u0000", "\ud800", "a\udfffb", "é", "🦀", '"']

any_text = st.text(st.characters(exclude_categories=()), max_size=12) | st.sampled_from(
    SPECIAL_TEXT
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(SPECIAL_INTS),
    HUGE_INTS,
    st.floats(),
    st.sampled_from(SPECIAL_FLOATS),
    any_text,
    st.sampled_from([Level.LOW, Name("named"), Ratio(0.5)]),
)
keys = st.one_of(
    any_text,
    any_text,
    any_text,
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.tuples(st.integers()),
    st.just(Name("k")),
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=12,
)
deep = st.one_of(
    st.integers(MAX_PAYLOAD_DEPTH - 2, MAX_PAYLOAD_DEPTH + 2),
    st.sampled_from([1_000, 5_000]),
).map(nested)
payloads = st.one_of(trees, trees, trees, deep)
metadata = st.one_of(st.none(), st.dictionaries(keys, payloads, max_size=3), payloads)
event_types = st.one_of(any_text, st.sampled_from(["Registered", "x" * 255, "x" * 256]))
tag_lists = st.lists(st.one_of(any_text, st.sampled_from(["course:1", "t" * 513])), max_size=4)


# -- payloads round trip ---------------------------------------------------------------------------


def appended_or_refused(store: EventStore, build: Any) -> tuple[Event | None, int | None]:
    """Build an event and append it after a marker event: the event and its position, or
    ``(None, None)`` when it was refused (checking that nothing after the marker exists
    and that the session takes a fine append)."""
    marker = store.append(Event("Marker"))
    try:
        event = build()
        return event, store.append(event)
    except ValidationError:
        assert list(store.read(Query.all(), after=marker)) == []
        store.append(Event("Fine"))
        return None, None


@examples(60)
@given(type_=event_types, tags=tag_lists, data=payloads, meta=metadata)
def test_events_round_trip_exactly_or_are_refused(
    target: tuple[Engine, EventStoreConfig], type_: str, tags: list[str], data: Any, meta: Any
) -> None:
    engine, config = target
    with Session(engine) as session:
        store = EventStore(session, config)
        event, position = appended_or_refused(store, lambda: Event(type_, tags, data, meta))
        if event is not None:
            assert position is not None
            (found,) = store.read(Query.all(), after=position - 1)
            assert (found.type, found.tags) == (type_, tuple(sorted(set(tags))))
            assert exactly_equal(found.data, as_read(data)), (found.data, data)
            assert exactly_equal(found.metadata, as_read(meta)), (found.metadata, meta)
            tagged = store.read(Query.of(types=[type_], tags=tags), after=position - 1)
            assert [e.position for e in tagged] == [position]
        session.rollback()


@examples(10)
@given(type_=event_types, data=payloads, meta=metadata, id_=st.one_of(st.none(), any_text))
def test_commands_round_trip_exactly_or_are_refused(
    target: tuple[Engine, EventStoreConfig], type_: str, data: Any, meta: Any, id_: Any
) -> None:
    engine, config = target
    try:
        command = Command(type_, data, meta, id_)
    except ValidationError:
        return
    with Session(engine) as session:
        executor = CommandExecutor(session, config=config)
        result = executor.execute(command, lambda store, cmd: Event("Done", ["t:1"], cmd.data))
        if result.duplicate:  # an id another test committed on the shared PostgreSQL store
            return
        store = EventStore(session, config)
        record = store.command(command.id)
        assert record is not None
        assert (record.id, record.type) == (command.id, type_)
        assert exactly_equal(record.data, as_read(data))
        assert exactly_equal(record.metadata, as_read(meta))
        (appended,) = store.events_of_command(command.id)
        assert exactly_equal(appended.data, as_read(data))
        session.rollback()


# -- positions, heads and limits -------------------------------------------------------------------

xids = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 3, 2**63, 2**64 - 1]))
any_ints = st.one_of(st.integers(), st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64, -1]))


@st.composite
def snapshot_fields(draw: st.DrawFn) -> tuple[Any, Any, Any, Any]:
    """The fields of a well-formed snapshot (any xid8 values), or of anything at all."""
    if draw(st.booleans()):
        xmin, xmax = sorted((draw(xids), draw(xids)))
        between = st.lists(st.integers(xmin, xmax - 1), max_size=3) if xmin < xmax else st.just([])
        xip = tuple(sorted(set(draw(between))))
        own = draw(st.one_of(st.none(), xids))
    else:
        xmin, xmax, own = draw(any_ints), draw(any_ints), draw(st.one_of(st.none(), any_ints))
        xip = tuple(draw(st.lists(any_ints, max_size=3)))
    return xmin, xmax, xip, own


@st.composite
def afters(draw: st.DrawFn) -> Any:
    """Anything a caller might pass as ``after``; building a Head may itself be refused."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.one_of(st.none(), any_ints))
    if choice == 1:
        return draw(st.one_of(st.floats(), st.booleans(), any_text, st.just(Snapshot(1, 2))))
    fields = draw(snapshot_fields()) if choice == 2 else None
    position = draw(any_ints)
    try:
        return Head(position, None if fields is None else Snapshot(*fields))
    except ValidationError:
        return position


limits = st.one_of(st.none(), any_ints, st.floats(), st.booleans())


@examples(30)
@given(after=afters(), limit=limits, backwards=st.booleans())
def test_reads_and_conditions_take_any_after_or_refuse_it(
    target: tuple[Engine, EventStoreConfig], after: Any, limit: Any, backwards: bool
) -> None:
    engine, config = target
    with Session(engine) as session:
        store = EventStore(session, config)
        first = store.append([Event("A", ["t:1"]), Event("B", ["t:1"])])
        try:
            read = list(store.read(Query.all(), after=after, limit=limit, backwards=backwards))
            assert all(e.position <= first for e in read)
        except ValidationError:
            pass
        try:
            condition = AppendCondition(Query.of(tags=["t:2"]), after=after)
            store.append(Event("C", ["t:2"]), condition)
        except (ValidationError, ConcurrencyError):
            pass
        assert [e.type for e in store.read(Query.of(tags=["t:1"]), after=first - 2)] == ["A", "B"]
        session.rollback()


@examples(100)
@given(
    text=st.one_of(
        st.text(alphabet="0123456789:,@/-+_ x\u0661", max_size=30),
        any_text,
        st.builds(str, st.builds(Head, st.integers(0, 2**63 - 1), st.none())),
    )
)
def test_parsing_a_head_gives_one_that_prints_back_or_refuses(text: str) -> None:
    for parse in (Head.parse, Snapshot.parse):
        try:
            parsed = parse(text)
        except ValidationError:
            continue
        assert parse(str(parsed)) == parsed


@examples(60)
@given(fields=snapshot_fields(), position=any_ints)
def test_heads_print_and_parse_back(fields: tuple[Any, Any, Any, Any], position: int) -> None:
    try:
        head = Head(position, Snapshot(*fields))
    except ValidationError:
        return
    assert Head.parse(str(head)) == head


# -- configuration ---------------------------------------------------------------------------------

seconds = st.one_of(
    st.none(),
    st.floats(),
    st.integers(),
    st.sampled_from([1e-9, 0.0004, 0.3, 2147483.647, 2147483.648, 1e10, True]),
)


@examples(15)
@given(lock=seconds, statement=seconds)
def test_timeouts_are_usable_or_refused(
    target: tuple[Engine, EventStoreConfig], lock: Any, statement: Any
) -> None:
    engine, config = target
    try:
        chosen = EventStoreConfig(
            lock_timeout=lock, statement_timeout=statement, direct_execution=config.direct_execution
        )
    except ValidationError:
        return
    fresh = f"t:{uuid.uuid4().hex}"  # PostgreSQL's store holds what other tests committed
    with Session(engine) as session:
        store = EventStore(session, chosen)
        try:
            store.append(Event("A", [fresh]), AppendCondition(Query.of(tags=[fresh])))
            assert [e.type for e in store.read(Query.of(tags=[fresh]))] == ["A"]
        except OperationTimeoutError:  # a timeout of a nanosecond may well expire
            pass
        session.rollback()


@examples(60)
@given(
    attempts=st.one_of(any_ints, st.floats(), st.booleans()),
    backoff=st.one_of(st.floats(), any_ints, st.booleans(), any_text),
    max_backoff=st.one_of(st.floats(), any_ints, st.none()),
    retry=st.integers(0, 10**6),
)
def test_retry_policies_delay_sensibly_or_are_refused(
    attempts: Any, backoff: Any, max_backoff: Any, retry: int
) -> None:
    try:
        policy = RetryPolicy(attempts, backoff, max_backoff)
    except ValidationError:
        return
    assert 0 <= policy.delay(retry) <= max_backoff <= 1e9  # what time.sleep takes
