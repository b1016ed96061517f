"""What is appended is what is read, on every backend and path; what cannot be kept is
refused before any SQL; whatever payload the database holds, a read delivers."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from psycopg.adapt import Loader
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from sa_crablet import (
    Command,
    CommandExecutor,
    Event,
    EventStore,
    EventStoreConfig,
    Query,
    ValidationError,
)
from sa_crablet._validation import MAX_PAYLOAD_DEPTH
from tests.conftest import count_events
from tests.payload_values import as_read, depth, exactly_equal, nested

DIRECT = EventStoreConfig()
CORE = EventStoreConfig(direct_execution=False)
PATHS = [DIRECT, CORE]  # the same on SQLite, which has no direct path
SURROGATE = "\ud800"


class Level(enum.IntEnum):
    HIGH = 3


class Name(str):
    pass


EXACT = {
    "b": 1,
    "a": 1e16,
    "huge": 1e308,
    "tiny": 5e-324,
    "negative zero": -0.0,
    "int": 10**30,
    "float one": 1.0,
    "nested": {"z": [1, 1.0, True, None, "1"], "y": {}},
    "": "empty key",
}


def read_back(engine: Engine, config: EventStoreConfig, data: Any, metadata: Any = None) -> Any:
    with Session(engine) as session:
        store = EventStore(session, config)
        position = store.append(Event("T", ["t:1"], data, metadata))
        session.commit()
    with Session(engine) as session:
        (found,) = EventStore(session, config).read(Query.all(), after=position - 1)
    return found


@pytest.mark.parametrize("config", PATHS, ids=["direct", "core"])
def test_payloads_read_back_exactly(engine: Engine, config: EventStoreConfig) -> None:
    """Floats stay floats (1e16 is not the int 10**16), -0.0 keeps its sign, object keys keep
    their order: PostgreSQL stores json text as written (jsonb would normalise all three)."""
    found = read_back(engine, config, EXACT, {"z": 1e16, "a": -0.0})
    assert exactly_equal(found.data, EXACT), found.data
    assert exactly_equal(found.metadata, {"z": 1e16, "a": -0.0}), found.metadata


BARE_NUMBERS = [1.0, -0.0, 1e16, 2**63, 10**30, 5, -1, 0.5, 1e308]


@pytest.mark.parametrize("config", PATHS, ids=["direct", "core"])
def test_bare_number_payloads_read_back_exactly(engine: Engine, config: EventStoreConfig) -> None:
    """A payload that is a number alone: SQLite's NUMERIC affinity would store the text
    ``1.0`` as the integer 1 (and ``2**63`` as a float), for events and commands alike."""
    with Session(engine) as session:
        store = EventStore(session, config)
        first = store.append([Event("N", ["t:1"], number) for number in BARE_NUMBERS])
        executor = CommandExecutor(session, config=config)
        for number in BARE_NUMBERS:
            command = Command("Count", number, id=f"n-{number!r}")
            executor.execute(command, lambda store, cmd: Event("Counted", data=cmd.data))
        session.commit()
    with Session(engine) as session:
        store = EventStore(session, config)
        found = [e.data for e in store.read(Query.of(tags=["t:1"]))]
        records = [store.command(f"n-{number!r}") for number in BARE_NUMBERS]
    assert first == len(BARE_NUMBERS)
    assert exactly_equal(found, BARE_NUMBERS), found
    assert exactly_equal([r.data for r in records if r is not None], BARE_NUMBERS)


@pytest.mark.parametrize("config", PATHS, ids=["direct", "core"])
def test_what_json_cannot_tell_apart_reads_as_the_plain_type(
    engine: Engine, config: EventStoreConfig
) -> None:
    data = {"tuple": (1, 2), Name("key"): Name("value"), "level": Level.HIGH, "t": (1.5,)}
    found = read_back(engine, config, data)
    assert exactly_equal(found.data, as_read(data))
    assert exactly_equal(found.data, {"tuple": [1, 2], "key": "value", "level": 3, "t": [1.5]})


@pytest.mark.parametrize(
    ("data", "offender"),
    [
        ({1: "a"}, 1),
        ({1: "a", "1": "b"}, 1),  # would have collapsed into {"1": "b"}
        ({"a": [{"b": {None: 1}}]}, None),
        ({"x": {(1, 2): 1}}, (1, 2)),
        ([{True: 1}], True),
        ({"a": {1.5: 1}}, 1.5),
    ],
)
def test_non_string_keys_are_refused_anywhere(
    engine: Engine, statements: list[str], data: Any, offender: Any
) -> None:
    with Session(engine) as session:
        store = EventStore(session)
        for field, event_ in (
            ("data", Event("A", data=data)),
            ("metadata", Event("A", metadata={"m": data})),
        ):
            with pytest.raises(ValidationError) as error:
                store.append([Event("Fine"), event_])
            assert error.value.field == field
            assert error.value.value == offender
        with pytest.raises(ValidationError) as error:
            Command("C", data)
        assert error.value.field == "data"
        session.commit()
    assert not [s for s in statements if "INSERT" in s]
    assert count_events(engine) == 0


@pytest.mark.parametrize("config", PATHS, ids=["direct", "core"])
def test_payloads_nest_up_to_the_maximum_depth(engine: Engine, config: EventStoreConfig) -> None:
    deepest = nested(MAX_PAYLOAD_DEPTH, leaf=1.0)
    found = read_back(engine, config, deepest, {"m": nested(MAX_PAYLOAD_DEPTH - 1)})
    assert depth(found.data) == MAX_PAYLOAD_DEPTH
    assert exactly_equal(found.data, deepest)
    assert depth(found.metadata) == MAX_PAYLOAD_DEPTH


@pytest.mark.parametrize("levels", [MAX_PAYLOAD_DEPTH + 1, 1_000, 100_000])
def test_deeper_payloads_are_refused(engine: Engine, statements: list[str], levels: int) -> None:
    too_deep = nested(levels)
    with Session(engine) as session:
        store = EventStore(session)
        for field, event_ in (
            ("data", Event("A", data=too_deep)),
            ("metadata", Event("A", metadata={"m": too_deep})),
        ):
            with pytest.raises(ValidationError) as error:
                store.append(event_)
            assert error.value.field == field
        with pytest.raises(ValidationError) as error:
            Command("C", too_deep)
        assert error.value.field == "data"
        assert list(store.read(Query.all())) == []  # the session is still usable
    assert not [s for s in statements if "INSERT" in s]


def test_circular_payloads_are_refused(store: EventStore) -> None:
    loop: list[Any] = []
    loop.append(loop)
    fork: dict[str, Any] = {}
    fork["a"] = fork["b"] = fork
    for payload in (loop, fork):
        with pytest.raises(ValidationError) as error:
            store.append(Event("A", data=payload))
        assert error.value.field == "data"


def test_lone_surrogates_are_refused_everywhere(
    engine: Engine, statements: list[str], store: EventStore
) -> None:
    """A Python string can hold a lone surrogate; no UTF-8 column can."""
    for field, build in (
        ("type", lambda: Event(f"A{SURROGATE}")),
        ("tags", lambda: Event("A", [f"t:{SURROGATE}"])),
        ("types", lambda: Query.of(types=[SURROGATE])),
        ("tags", lambda: Query.of(tags=[SURROGATE])),
        ("type", lambda: Command(SURROGATE)),
        ("id", lambda: Command("C", id=f"id-{SURROGATE}")),
        ("data", lambda: Command("C", {"k": SURROGATE})),
        ("data", lambda: Command("C", {SURROGATE: 1})),
        ("metadata", lambda: Command("C", metadata={"k": [SURROGATE]})),
        ("data", lambda: store.append(Event("A", data=SURROGATE))),
        ("data", lambda: store.append(Event("A", data={"k": ["x", f"é{SURROGATE}"]}))),
        ("data", lambda: store.append(Event("A", data={f"{SURROGATE}": 1}))),
        ("metadata", lambda: store.append(Event("A", metadata={"m": SURROGATE}))),
        ("command_id", lambda: store.command(SURROGATE)),
        ("command_id", lambda: store.events_of_command(SURROGATE)),
    ):
        with pytest.raises(ValidationError) as error:
            build()
        assert error.value.field == field
    assert statements == []
    with pytest.raises(ValidationError):  # a pair of surrogates is two lone ones in Python
        store.append(Event("A", data="\ud83d\ude00"))
    store.append(Event("A", data={"astral": "\U0001f600", "escaped": "\\ud800"}))
    (found,) = store.read(Query.all())
    assert found.data == {"astral": "\U0001f600", "escaped": "\\ud800"}


DEEP_LEVELS = 5_000  # PostgreSQL's json takes this (at max_stack_depth = 2MB); SQLite any


def insert_deep_rows(engine: Engine) -> None:
    """A deep event and a deep command, written with plain SQL as another tool might."""
    document = "[" * DEEP_LEVELS + "]" * DEEP_LEVELS
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sa_crablet_events (type, tags, data, metadata, command_id) "
                "VALUES ('Deep', :tags, :doc, :meta, 'deep')"
            ),
            {"tags": "{t:1}" if postgres else '["t:1"]', "doc": document, "meta": "{}"},
        )
        conn.execute(
            text(
                "INSERT INTO sa_crablet_commands (id, type, data, metadata, event_count) "
                "VALUES ('deep', 'Deep', :doc, :doc, 1)"
            ),
            {"doc": document},
        )


@pytest.mark.parametrize("config", PATHS, ids=["direct", "core"])
@pytest.mark.parametrize("fetch_size", [1000, 1], ids=["one-page", "streamed"])
def test_any_stored_payload_is_read(
    engine: Engine, config: EventStoreConfig, fetch_size: int
) -> None:
    """A payload nested deeper than Python's own decoders go (stored by another tool) does
    not make the reads of its scope fail, on a first page or a later streamed one."""
    with Session(engine) as session:
        EventStore(session).append([Event("Before", ["t:1"]), Event("Also", ["t:1"])])
        session.commit()
    insert_deep_rows(engine)
    with Session(engine) as session:
        store = EventStore(
            session,
            EventStoreConfig(fetch_size=fetch_size, direct_execution=config.direct_execution),
        )
        found = list(store.read(Query.of(tags=["t:1"])))
        assert [e.type for e in found] == ["Before", "Also", "Deep"]
        assert depth(found[-1].data) == DEEP_LEVELS
        (backwards,) = store.read(Query.of(tags=["t:1"]), backwards=True, limit=1)
        assert depth(backwards.data) == DEEP_LEVELS
        record = store.command("deep")
        assert record is not None
        assert depth(record.data) == depth(record.metadata) == DEEP_LEVELS
        assert [depth(e.data) for e in store.events_of_command("deep")] == [DEEP_LEVELS]
        of_event = store.command_of_event(found[-1].position)
        assert of_event is not None and of_event.id == "deep"


class Marker(Loader):
    def load(self, data: Any) -> Any:
        return "host's own loader"


@pytest.mark.postgresql_only
def test_core_reads_leave_the_hosts_json_loaders_alone(engine: Engine) -> None:
    """Through Core the store's own cursors decode json with its loader; the host's cursors
    on the same connection keep the host's."""
    with Session(engine) as session:
        EventStore(session).append([Event("A", ["t:1"], {"n": 1}), Event("B", ["t:1"], [2])])
        session.commit()
    with Session(engine) as session:
        raw = session.connection().connection.driver_connection
        assert raw is not None
        raw.adapters.register_loader("json", Marker)
        try:
            store = EventStore(session, EventStoreConfig(fetch_size=1, direct_execution=False))
            assert [e.data for e in store.read(Query.all())] == [{"n": 1}, [2]]
            own = session.execute(text("SELECT CAST('{}' AS json)")).scalar()
            assert own == "host's own loader"
        finally:
            session.rollback()
            session.connection().invalidate()  # do not hand the marked connection on


def test_commands_keep_their_payloads_exactly(engine: Engine) -> None:
    command = Command("Register", {"b": 1e16, "a": -0.0, "n": (1, 2)}, {"z": 1.0, "y": 2})
    executor = CommandExecutor(engine)
    executor.execute(command, lambda store, cmd: Event("Registered", ["t:1"], cmd.data))
    with Session(engine) as session:
        store = EventStore(session)
        record = store.command(command.id)
        (appended,) = store.events_of_command(command.id)
    assert record is not None
    assert exactly_equal(record.data, {"b": 1e16, "a": -0.0, "n": [1, 2]})
    assert exactly_equal(record.metadata, {"z": 1.0, "y": 2})
    assert exactly_equal(appended.data, record.data)
