"""The two PostgreSQL runners: the psycopg runner (the store's statements straight on the
Session's psycopg connection) and SQLAlchemy Core. The same results either way; the psycopg
runner only where nothing could tell it from Core (no listener of any kind, no echo, no
execution option it would not honour); errors as SQLAlchemy raises them, and a broken
connection invalidated. Which runner ran is read on the wire (``tests/wire.py``)."""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool

import sa_crablet
from sa_crablet import (
    AppendCondition,
    Command,
    CommandExecutor,
    ConcurrencyError,
    EngineEventStore,
    Event,
    EventStore,
    EventStoreConfig,
    Query,
    ValidationError,
)
from sa_crablet._runners.choose import DIALECT_EVENTS, STATEMENT_EVENTS
from sa_crablet.projectors import counter
from sa_crablet.schema import EVENTS_TABLE
from tests.conftest import clean_postgres
from tests.wire import Wire, wire, wire_of

pytestmark = pytest.mark.postgresql_only

DIRECT = EventStoreConfig()
CORE = EventStoreConfig(direct_execution=False)


def conditional_append_round_trips(engine: Engine, config: EventStoreConfig = DIRECT) -> Wire:
    """What one conditional append sends, in a transaction already open: the psycopg runner
    sends its lock and insert as one query string (one round trip), Core as two."""
    with Session(engine) as session, session.begin():
        session.execute(text("SELECT 1"))  # the transaction is open before the trace
        store = EventStore(session, config)
        with wire(session) as sent:
            store.append(Event("Opened", ["wire:1"]), AppendCondition(Query.of(tags=["wire:1"])))
        session.rollback()
    return sent


def ran_direct(sent: Wire) -> bool:
    if sent.round_trips == 1 and "pg_advisory_xact_lock" in sent.sent[0]:
        assert "INSERT INTO" in sent.sent[0]
        return True
    assert sent.round_trips == 2, sent.lines
    return False


def scenario(engine: Engine, config: EventStoreConfig) -> list[Any]:
    """Appends (plain, batch, conditional, rejected), reads of every kind, a projection,
    commands (executed, repeated, without events) and look-ups in the command log."""
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
    with Session(engine) as session, session.begin():  # the command log
        executor = CommandExecutor(session, config=config)
        join = Command("Join", {"student": 9}, id="join-9")
        executed = executor.execute(join, lambda store, command: Event("Joined", ["course:1"]))
        again = executor.execute(join, lambda store, command: Event("Joined", ["course:1"]))
        audit = CommandExecutor(session, config=config, require_events=False)
        audit.execute(Command("Audit", id="audit"), lambda store, command: None)
        store = EventStore(session, config)
        seen.append((executed.position, again.duplicate, again.position))
        for record in (store.command("join-9"), store.command_of_event(9), store.command("audit")):
            assert record is not None
            seen.append((record.id, record.type, record.data, record.last_position))
        seen.append([e.position for e in store.events_of_command("join-9")])
        seen.append((store.command("none"), store.command_of_event(1)))
    return seen


def test_both_runners_agree(engine: Engine) -> None:
    direct = scenario(engine, DIRECT)
    clean_postgres(engine)
    core = scenario(engine, CORE)
    assert core == direct
    assert direct[:3] == [1, 6, 7]
    assert direct[3] == 6 and direct[4] == 8
    assert direct[5] == (2, True)
    assert direct[-6] == (9, True, 9)
    assert direct[-1] == (None, None)


def test_the_psycopg_runner_is_the_default_and_core_runs_when_configured(engine: Engine) -> None:
    assert ran_direct(conditional_append_round_trips(engine, DIRECT))
    assert not ran_direct(conditional_append_round_trips(engine, CORE))


def test_a_long_read_pages_through_the_stores_own_cursor(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        store = EventStore(session, EventStoreConfig(fetch_size=2))
        store.append([Event("E", ["page"]) for _ in range(5)])
        with wire(session) as sent:
            assert len(list(store.read(Query.of(tags=["page"])))) == 5
    declared = [sql for sql in sent.sent if sql.startswith("DECLARE sa_crablet_cursor_0")]
    assert len(declared) == 1 and "WITHOUT HOLD" in declared[0]
    assert sum(sql.startswith("FETCH FORWARD 2 FROM sa_crablet_cursor_0") for sql in sent.sent) == 2
    assert sent.sent[-1] == "CLOSE sa_crablet_cursor_0"


def test_the_psycopg_runner_reads_events_in_binary_format(engine: Engine) -> None:
    """A read's statements (its first page, each FETCH) ask for every column in binary
    (positions, tags and times decode several times faster); the rest of the store's
    statements keep text. Core reads in text."""
    with Session(engine) as session, session.begin():
        EventStore(session).append([Event("E", ["page"], {"i": i}) for i in range(5)])
        for config, binary in ((DIRECT, True), (CORE, False)):
            store = EventStore(session, replace(config, fetch_size=2))
            with wire(session) as sent:
                events = list(store.read(Query.of(tags=["page"])))
                assert store.command("none") is None
            assert [e.data for e in events] == [{"i": i} for i in range(5)]
            if not binary:
                assert not any(binary for _, binary in sent.executed), sent.executed
                continue
            reads = [binary for sql, binary in sent.executed if "pg_current_snapshot" in sql]
            fetches = [binary for sql, binary in sent.executed if sql.startswith("FETCH")]
            assert reads == [True] and fetches == [True, True], sent.executed
            assert not sent.executed[-1][1]  # the command log's look-up (prepared): text
        session.rollback()


ZONES = ["UTC", "Europe/Paris", "Etc/UTC", "America/St_Johns", "UTC"]


def test_times_come_in_the_sessions_zone_whichever_it_is_now(engine: Engine) -> None:
    """Times read in binary format (direct) are the same values as in text (Core), in the
    session's time zone, zone object included; on one connection whose zone changes from
    transaction to transaction (the store's kept cursors must not keep an earlier one)."""
    one = create_engine(engine.url, pool_size=1, max_overflow=0)
    try:
        with Session(one) as session, session.begin():
            EventStore(session).append([Event("E", ["t:1"]) for _ in range(3)])
            assert EventStore(session).command("none") is None  # the text cursor, kept
        for zone in ZONES:
            with Session(one) as session, session.begin():
                session.execute(text(f"SET LOCAL TIME ZONE '{zone}'"))
                times = {}
                for config in (DIRECT, CORE):
                    for size in (1000, 1):  # a first page, and a cursor's pages
                        store = EventStore(session, replace(config, fetch_size=size))
                        times[config.direct_execution, size] = [
                            e.recorded_at for e in store.read(Query.all())
                        ]
                own = session.execute(text(f"SELECT recorded_at FROM {EVENTS_TABLE} ORDER BY 1"))
                expected = list(own.scalars())
            assert str(expected[0].tzinfo) == zone
            for found in times.values():
                assert found == expected
                assert [(t.tzinfo, t.utcoffset(), t.fold) for t in found] == [
                    (t.tzinfo, t.utcoffset(), t.fold) for t in expected
                ], zone
    finally:
        one.dispose()


PAGE = "SELECT sa_crablet_events.position, "


def test_a_long_read_of_every_event_with_no_transaction_open_pages_by_position(
    engine: Engine,
) -> None:
    """On a connection with no transaction open a cursor must be held (``WITH HOLD``),
    which has PostgreSQL store the whole result before the first page: a read of every
    event pages by position instead, each page a prepared statement of its own (in
    binary). The same events and head as through a cursor; a query still uses one, and
    so does Core."""
    with Session(engine) as session, session.begin():
        EventStore(session).append([Event("E", ["page"], {"i": i}) for i in range(7)])
    config = EventStoreConfig(fetch_size=3)
    store = EngineEventStore(create_engine(engine.url, pool_size=1), config)
    try:
        for kwargs in ({}, {"limit": 5}, {"limit": 6}, {"after": 2}, {"backwards": True}):
            store.engine.dispose()  # a new connection: its statements are prepared anew
            with store.engine.connect() as conn:
                raw = conn.connection.driver_connection
            with wire_of(raw) as sent:
                paged = store.read(Query.all(), **kwargs)
                events = list(paged)
            with Session(engine) as session:  # through a cursor, in a transaction
                cursor = EventStore(session, config).read(Query.all(), **kwargs)
                assert events == list(cursor)
                assert paged.head.position == cursor.head.position
                assert paged.head.snapshot is not None
            assert not [sql for sql in sent.sent if "DECLARE" in sql], sent.sent
            pages = [binary for sql, binary in sent.executed if sql.startswith(PAGE)]
            if not kwargs.get("backwards"):  # two events per page after the first
                assert pages == [True] * -(-(len(events) - 3) // 3), sent.executed
        core = EngineEventStore(store.engine, replace(config, direct_execution=False))
        for other, query in ((store, Query.of(tags=["page"])), (core, Query.all())):
            with wire_of(raw) as sent:
                assert len(list(other.read(query))) == 7
            (declared,) = [sql for sql in sent.sent if sql.startswith("DECLARE")]
            assert "WITH HOLD" in declared
    finally:
        store.engine.dispose()


def _statement_listener(name: str) -> Callable[..., Any]:
    def listener(*args: Any, **kwargs: Any) -> Any:
        if name.startswith("do_"):
            return None  # "not handled": the dialect executes as usual
        if name == "before_execute":
            return args[1], args[2], args[3]  # retval=True form: unchanged
        if name == "before_cursor_execute":
            return args[2], args[3]
        return None

    return listener


@pytest.mark.parametrize(
    ("target", "name"),
    [("engine", name) for name in STATEMENT_EVENTS]
    + [("dialect", name) for name in DIALECT_EVENTS],
)
def test_any_listener_that_would_see_a_statement_turns_the_store_to_core(
    engine: Engine, target: str, name: str
) -> None:
    """A tracing, auditing or retry hook of any of these kinds sees every statement: the
    store then runs through Core (two round trips for a conditional append, not one)."""
    hooked = create_engine(engine.url)
    listener = _statement_listener(name)
    retval = name in ("before_execute", "before_cursor_execute")
    try:
        on: Any = hooked if target == "engine" else hooked.dialect
        if target == "dialect":
            event.listen(hooked, name, listener)
        else:
            event.listen(on, name, listener, retval=retval)
        assert not ran_direct(conditional_append_round_trips(hooked))
    finally:
        hooked.dispose()
    assert ran_direct(conditional_append_round_trips(engine))  # the plain engine: direct


def test_the_listener_flags_the_runner_choice_reads_first_exist(engine: Engine) -> None:
    """``choose.listening`` reads SQLAlchemy's private ``_has_events`` flags before the
    dispatchers; if they changed, every check would fall through to the slower one. They
    start unset on a plain engine and are set by a listener of either kind."""
    plain = create_engine(engine.url)
    try:
        with plain.connect() as conn:
            assert (conn._has_events, plain._has_events, plain.dialect._has_events) == (
                False,
                False,
                False,
            )
        event.listen(plain, "before_cursor_execute", lambda *a: None)
        event.listen(plain.dialect, "do_execute", lambda *a: None)
        assert plain._has_events and plain.dialect._has_events
    finally:
        plain.dispose()


def test_an_audit_hook_after_execute_sees_every_statement(engine: Engine) -> None:
    hooked = create_engine(engine.url)
    statements: list[str] = []

    @event.listens_for(hooked, "after_execute")
    def record(conn: Any, clause: Any, *args: Any) -> None:
        statements.append(str(clause))

    try:
        with Session(hooked) as session, session.begin():
            store = EventStore(session, EventStoreConfig(fetch_size=1))
            store.append(Event("Opened", ["course:1"]))
            condition = AppendCondition(Query.of(types=["Opened"], tags=["course:1"]), 1)
            store.append(Event("Opened", ["course:1"]), condition)
            assert len(list(store.read(Query.all()))) == 2
            store.command("nothing")
    finally:
        hooked.dispose()
    assert sum("INSERT INTO sa_crablet_events" in sql for sql in statements) == 2
    assert any("pg_advisory_xact_lock" in sql for sql in statements)
    assert any("pg_current_snapshot" in sql for sql in statements)
    assert any(sql.startswith("DECLARE sa_crablet_cursor_0") for sql in statements)
    assert any("FROM sa_crablet_commands" in sql for sql in statements)


def test_an_echoing_engine_logs_every_statement(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    echoing = create_engine(engine.url, echo=True)
    try:
        with caplog.at_level(logging.INFO, "sqlalchemy.engine"):
            assert not ran_direct(conditional_append_round_trips(echoing))
    finally:
        echoing.dispose()
    assert "INSERT INTO sa_crablet_events" in caplog.text


@pytest.mark.parametrize(
    "options", [{"logging_token": "audit"}, {"schema_translate_map": {None: "public"}}]
)
def test_an_execution_option_turns_the_store_to_core(
    engine: Engine, options: dict[str, Any]
) -> None:
    assert not ran_direct(conditional_append_round_trips(engine.execution_options(**options)))
    levelled = engine.execution_options(isolation_level="READ COMMITTED")
    assert ran_direct(conditional_append_round_trips(levelled))  # honoured by both


@pytest.fixture
def tenant(engine: Engine) -> Iterator[Engine]:
    """The store's schema migrated into ``tenant_a`` (beside the one in ``public``), and an
    engine whose ``schema_translate_map`` sends the store's tables there."""
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS tenant_a CASCADE"))
        conn.execute(text("CREATE SCHEMA tenant_a"))
    migrator = create_engine(engine.url, connect_args={"options": "-c search_path=tenant_a"})
    try:
        sa_crablet.upgrade(migrator)
    finally:
        migrator.dispose()
    translated = create_engine(engine.url, pool_size=10)
    try:
        yield translated.execution_options(schema_translate_map={None: "tenant_a"})
    finally:
        translated.dispose()
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA tenant_a CASCADE"))


TENANT_TABLES = "tenant_a.sa_crablet_events, tenant_a.sa_crablet_commands"


def _tenant_events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(text("SELECT count(*) FROM tenant_a.sa_crablet_events")).scalar_one()
        )


def test_a_schema_translated_store_stays_in_its_schema(engine: Engine, tenant: Engine) -> None:
    """Every operation (and the fresh-snapshot check of a REPEATABLE READ decision, on its
    own connection) reaches the tenant's tables, never ``public``'s, on both runners."""
    results = []
    for config in (DIRECT, CORE):
        results.append(scenario(tenant, config))
        tenant_count = _tenant_events(engine)
        assert tenant_count > 0
        with Session(engine) as session:
            assert list(EventStore(session).read(Query.all())) == []  # public: untouched
        with Session(tenant) as session:
            with sa_crablet.allow_mutation(session):
                session.execute(text(f"TRUNCATE {TENANT_TABLES} RESTART IDENTITY"))
            session.commit()
    assert results[0] == results[1]
    # A decision at REPEATABLE READ whose condition a later commit broke: its fresh check
    # runs on another connection, which must look in the tenant's table too.
    query = Query.of(tags=["seat:1"])
    repeatable = tenant.execution_options(isolation_level="REPEATABLE READ")
    with Session(repeatable) as decider:
        store = EventStore(decider)
        result = store.read(query)
        assert list(result) == []
        with Session(tenant) as writer:
            EventStore(writer).append(Event("Booked", ["seat:1"]))
            writer.commit()
        with pytest.raises(ConcurrencyError):
            store.append(Event("Booked", ["seat:1"]), AppendCondition(query, result.head))


def test_a_sqlite_only_program_never_imports_psycopg(tmp_path: Any) -> None:
    program = (
        "import sys\n"
        "from sqlalchemy.orm import Session\n"
        "import sa_crablet\n"
        "from sa_crablet import Event, EventStore, Query\n"
        f"engine = sa_crablet.create_sqlite_engine({str(tmp_path / 'e.sqlite3')!r})\n"
        "sa_crablet.create_schema(engine)\n"
        "with Session(engine) as session:\n"
        "    store = EventStore(session)\n"
        "    store.append(Event('A', ['t:1']), sa_crablet.fail_if_exists('t:1'))\n"
        "    assert len(list(store.read(Query.all()))) == 1\n"
        "    session.commit()\n"
        "print('psycopg' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False", done.stderr


def kill_backend(engine: Engine, session: Session) -> None:
    """Terminate the session's server process from another connection."""
    pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with engine.connect() as killer:
        killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


def test_a_broken_connection_is_invalidated_and_the_next_session_works(engine: Engine) -> None:
    with Session(engine) as session:
        store = EventStore(session)
        store.append(Event("Opened", ["course:1"]))
        kill_backend(engine, session)
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


def test_timeouts_travel_in_the_operations_own_query_string(engine: Engine) -> None:
    """On the psycopg runner, configured timeouts cost appends, checks and reads no round
    trip of their own: they are set and put back inside the operation's query string."""
    config = EventStoreConfig(lock_timeout=1, statement_timeout=5)
    with Session(engine) as session, session.begin():
        session.execute(text("SELECT 1"))
        store = EventStore(session, config)
        with wire(session) as sent:
            store.append(Event("A", ["t:1"]), AppendCondition(Query.of(tags=["t:1"])))
            store.append(Event("B", ["t:2"]))
            store.check(AppendCondition(Query.of(tags=["t:3"])))
            assert len(list(store.read(Query.all()))) == 2
    assert sent.round_trips == 4
    for sql in sent.sent:
        assert sql.count("sa_crablet.saved_lock_timeout") == 2, sql  # set, then put back


def test_hidden_parameters_stay_hidden_on_the_direct_path(engine: Engine) -> None:
    """A conditional append's values are bound into its query string; with an engine that
    hides parameters, an error shows the statements with placeholders, not the values."""
    hiding = create_engine(engine.url, hide_parameters=True)
    try:
        with Session(hiding) as session:
            store = EventStore(session)
            store.append(Event("Opened", ["course:1"]))
            kill_backend(engine, session)
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


def test_the_public_surface() -> None:
    """About thirty names at the top; none shadows a submodule."""
    import sa_crablet.events

    assert sa_crablet.events.__name__ == "sa_crablet.events"  # the module, not a Table
    assert sa_crablet.events_table.name == "sa_crablet_events"
    assert sa_crablet.commands_table.name == "sa_crablet_commands"
    assert len(sa_crablet.__all__) <= 41
    assert all(hasattr(sa_crablet, name) for name in sa_crablet.__all__)
    import sa_crablet.projectors

    assert {"counter", "exists", "fold", "last_event", "by_type"} <= set(
        sa_crablet.projectors.__all__
    )
