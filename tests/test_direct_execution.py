"""The store's statements run directly on the Session's psycopg connection, unless SQLAlchemy
hooks are listening: the same results either way, errors as SQLAlchemy raises them, and a
broken connection invalidated."""

from __future__ import annotations

import inspect
import json
import logging
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool

from sa_crablet import (
    AppendCondition,
    ConcurrencyError,
    Event,
    EventStore,
    EventStoreConfig,
    Query,
    ValidationError,
    _driver,
    counter,
)
from sa_crablet import _runner as runner_module
from tests.conftest import clean_postgres

pytestmark = pytest.mark.postgresql_only

DIRECT = EventStoreConfig()
CORE = EventStoreConfig(direct_execution=False)


@pytest.fixture
def driver_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every statement the store ran on the direct path."""
    calls: list[str] = []
    fetch, script = _driver.fetch, _driver.fetch_script

    def counting_fetch(raw: Any, conn: Any, statement: Any, *args: Any) -> Any:
        calls.append(_driver.compiled(statement, conn.dialect).sql)
        return fetch(raw, conn, statement, *args)

    def counting_script(raw: Any, conn: Any, batch: Any) -> Any:
        calls.extend(_driver.compiled(statement, conn.dialect).sql for statement, _ in batch)
        return script(raw, conn, batch)

    monkeypatch.setattr(_driver, "fetch", counting_fetch)
    monkeypatch.setattr(_driver, "fetch_script", counting_script)
    return calls


def scenario(engine: Engine, config: EventStoreConfig) -> list[Any]:
    """Appends (plain, batch, conditional, rejected), reads of every kind, a projection."""
    seen: list[Any] = []
    course = Query.of(types=["Opened", "Joined"], tags=["course:1"])
    small = EventStoreConfig(fetch_size=3, direct_execution=config.direct_execution)
    with Session(engine) as session, session.begin():
        store = EventStore(session, config)
        seen.append(store.append(Event("Opened", ["course:1"], {"seats": 2})))
        seen.append(
            store.append(
                [Event("Joined", ["course:1", f"student:{i}"], {"i": i}) for i in range(5)]
            )
        )
        seen.append(store.append(Event("Other", ["course:2"], None, {"by": "test"})))
    with Session(engine) as session, session.begin():
        store = EventStore(session, config)
        model = store.project([counter("n", course)])
        seen.append(model["n"])
        seen.append(store.append(Event("Joined", ["course:1"]), model.append_condition))
        with pytest.raises(ConcurrencyError) as info:
            store.append(Event("Joined", ["course:1"]), AppendCondition(course, 1))
        seen.append((info.value.position, info.value.transaction_usable))
    with Session(engine) as session, session.begin():
        for cfg in (config, small):  # one page, and pages through a server-side cursor
            store = EventStore(session, cfg)
            for kwargs in ({}, {"backwards": True}, {"limit": 4}, {"after": 2}):
                result = store.read(course, **kwargs)
                events = [(e.position, e.type, e.tags, e.data, e.metadata) for e in result]
                seen.append((kwargs, events, result.head.position))
            everything = list(store.read(Query.all()))
            seen.append([(e.position, e.tags, e.metadata) for e in everything])
            assert all(e.recorded_at.tzinfo is not None for e in everything)
    return seen


def test_direct_and_core_paths_agree(engine: Engine, driver_calls: list[str]) -> None:
    direct = scenario(engine, DIRECT)
    assert any("INSERT INTO sa_crablet_events" in sql for sql in driver_calls)
    assert any("pg_advisory_xact_lock" in sql for sql in driver_calls)
    assert any(sql.startswith("DECLARE sa_crablet_cursor_0") for sql in driver_calls)
    assert any(sql.startswith("FETCH FORWARD 3") for sql in driver_calls)

    clean_postgres(engine)
    driver_calls.clear()
    core = scenario(engine, CORE)
    assert driver_calls == []
    assert core == direct
    assert direct[:3] == [1, 6, 7]
    assert direct[3] == 6 and direct[4] == 8
    assert direct[5] == (2, True)


def test_cursor_listeners_see_every_statement(engine: Engine, driver_calls: list[str]) -> None:
    hooked = create_engine(engine.url)
    statements: list[str] = []

    @event.listens_for(hooked, "before_cursor_execute")
    def record(*args: Any) -> None:
        statements.append(args[2])

    try:
        with Session(hooked) as session, session.begin():
            store = EventStore(session)
            store.append(Event("Opened", ["course:1"]))
            condition = AppendCondition(Query.of(types=["Opened"], tags=["course:1"]), 1)
            store.append(Event("Opened", ["course:1"]), condition)
            assert len(list(store.read(Query.all()))) == 2
    finally:
        hooked.dispose()
    assert driver_calls == []
    assert sum("INSERT INTO sa_crablet_events" in sql for sql in statements) == 2
    assert any("pg_advisory_xact_lock" in sql for sql in statements)
    assert any("pg_current_snapshot" in sql for sql in statements)


def test_an_echoing_engine_logs_every_statement(
    engine: Engine, driver_calls: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    echoing = create_engine(engine.url, echo=True)
    try:
        with (
            caplog.at_level(logging.INFO, "sqlalchemy.engine"),
            Session(echoing) as session,
            session.begin(),
        ):
            EventStore(session).append(Event("Opened", ["course:1"]))
    finally:
        echoing.dispose()
    assert driver_calls == []
    assert "INSERT INTO sa_crablet_events" in caplog.text


def test_a_broken_connection_is_invalidated_and_the_next_session_works(engine: Engine) -> None:
    with Session(engine) as session:
        store = EventStore(session)
        store.append(Event("Opened", ["course:1"]))
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as killer:
            killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(OperationalError) as info:
            store.append(Event("Opened", ["course:1"]))
        assert isinstance(info.value, DBAPIError)
        assert info.value.connection_invalidated
        assert isinstance(info.value.orig, psycopg.OperationalError)
        session.rollback()
    with Session(engine) as session, session.begin():
        assert EventStore(session).append(Event("Opened", ["course:1"])) >= 1


def test_direct_execution_must_be_a_bool() -> None:
    with pytest.raises(ValidationError) as info:
        EventStoreConfig(direct_execution="yes")  # type: ignore[arg-type]
    assert info.value.field == "direct_execution"


BIG = {
    "n": 123456789012345678901234567890,
    "huge": -(10**400),
    "f": 1.5,
    "s": "1234567890123456789012",
    "u": "é",
}


@pytest.mark.parametrize("config", [DIRECT, CORE], ids=["direct", "core"])
def test_payloads_read_back_exactly(engine: Engine, config: EventStoreConfig) -> None:
    small = {"a": [1, 2.25, None, True], "b": {"c": "d"}}
    with Session(engine) as session, session.begin():
        store = EventStore(session, config)
        store.append([Event("T", ["x:1"], BIG, {"m": 2**70}), Event("T", ["x:1"], small)])
        first, second = store.read(Query.all())
    assert first.data == BIG and type(first.data["n"]) is int
    assert first.metadata == {"m": 2**70}
    assert second.data == small


def test_numbers_beyond_a_float_read_as_the_standard_library_reads_them(engine: Engine) -> None:
    """PostgreSQL's json holds numbers no Python value of ours maps to (written by other
    tools: beyond a float's range); both paths give what ``json.loads`` gives, and integers
    of any size (even past ``int()``'s 4,300 digits) stay exact."""
    huge_fraction = "1" + "0" * 400 + ".5"
    huge_int = "1" + "0" * 5000
    raw = (
        f'{{"big": {huge_fraction}, "small": -{huge_fraction}, "exp": 1e400, '
        f'"int": {huge_int}, "ok": 2}}'
    )
    with Session(engine) as session, session.begin():
        session.execute(
            text("INSERT INTO sa_crablet_events (type, tags, data) VALUES ('T', '{}', :d)"),
            {"d": raw},
        )
    seen = []
    for config in (DIRECT, CORE):
        with Session(engine) as session, session.begin():
            (event,) = EventStore(session, config).read(Query.all())
            seen.append(event.data)
    inf = float("inf")
    expected = {"big": inf, "small": -inf, "exp": inf, "int": 10**5000, "ok": 2}
    assert seen[0] == seen[1] == expected


def test_an_engines_json_deserializer_is_used(engine: Engine) -> None:
    decimals = create_engine(
        engine.url, json_deserializer=lambda text: json.loads(text, parse_float=Decimal)
    )
    try:
        with Session(decimals) as session, session.begin():
            store = EventStore(session)
            store.append(Event("T", ["x:1"], {"price": 0.1}))
            (event,) = store.read(Query.all())
    finally:
        decimals.dispose()
    assert event.data == {"price": Decimal("0.1")}


TRICKY = {
    "quote": 'it\'s "quoted"',
    "backslash": "C:\\path\\n not a newline",
    "percent": "100% %s %(x)s",
    "sql": "'); DROP TABLE sa_crablet_events; --",
    "dollar": "$$ $1 $tag$",
    "unicode": "żółw 🐢 \u2028",
    "newline": "a\nb\tc",
}


@pytest.mark.parametrize("config", [DIRECT, CORE], ids=["direct", "core"])
def test_conditional_appends_carry_any_text_unchanged(
    engine: Engine, config: EventStoreConfig
) -> None:
    """A conditional append's values travel bound client side on the direct path: every
    kind of text arrives unchanged, in types, tags, payloads and the condition."""
    odd_tag = "note:'; SELECT 1; --\\%s"
    odd_type = "Type 'with' \"quotes\" %s"
    with Session(engine) as session, session.begin():
        store = EventStore(session, config)
        condition = AppendCondition(Query.of(types=[odd_type], tags=[odd_tag]), None)
        position = store.append(Event(odd_type, [odd_tag, "x:1"], TRICKY, TRICKY), condition)
        with pytest.raises(ConcurrencyError) as info:
            store.append(Event(odd_type, [odd_tag]), condition)
        assert info.value.position == position
        (event,) = store.read(Query.of(types=[odd_type], tags=[odd_tag]))
    assert (event.type, event.tags, event.data, event.metadata) == (
        odd_type,
        tuple(sorted([odd_tag, "x:1"])),
        TRICKY,
        TRICKY,
    )


def test_timeouts_travel_in_the_operations_own_query_string(
    engine: Engine, driver_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the direct path, configured timeouts cost appends, checks and reads no statement
    of their own: they are set and put back inside the operation's query string."""

    def no_separate_statements(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("timeouts sent in statements of their own")

    monkeypatch.setattr(runner_module, "pg_timeouts", no_separate_statements)
    config = EventStoreConfig(lock_timeout=1, statement_timeout=5)
    with Session(engine) as session, session.begin():
        store = EventStore(session, config)
        store.append(Event("A", ["t:1"]), AppendCondition(Query.of(tags=["t:1"])))
        store.append(Event("B", ["t:2"]))
        store.check(AppendCondition(Query.of(tags=["t:3"])))
        assert len(list(store.read(Query.all()))) == 2
    saved = [sql for sql in driver_calls if "sa_crablet.saved_lock_timeout" in sql]
    assert len(saved) == 8  # set before and put back after each of the four operations


def test_hidden_parameters_stay_hidden_on_the_direct_path(engine: Engine) -> None:
    """A conditional append's values are bound into its query string; with an engine that
    hides parameters, an error shows the statements with placeholders, not the values."""
    hiding = create_engine(engine.url, hide_parameters=True)
    try:
        with Session(hiding) as session:
            store = EventStore(session)
            store.append(Event("Opened", ["course:1"]))
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with engine.connect() as killer:
                killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            condition = AppendCondition(Query.of(tags=["course:1"]), 1)
            with pytest.raises(OperationalError) as info:
                store.append(Event("Opened", ["course:1"], {"card": "4111-SECRET"}), condition)
            session.rollback()
    finally:
        hiding.dispose()
    assert "4111-SECRET" not in str(info.value)
    assert "INSERT INTO sa_crablet_events" in str(info.value)


def test_the_pool_invalidation_the_direct_path_relies_on_exists() -> None:
    """The direct path marks the whole pool stale on a disconnect through SQLAlchemy's
    ``Pool._invalidate`` (no public call does it): fail loudly if that changes."""
    parameters = list(inspect.signature(Pool._invalidate).parameters)
    assert parameters[:4] == ["self", "connection", "exception", "_checkin"]
