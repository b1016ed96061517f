"""Every error's message says what happened and what to do; its data is in attributes.

Each error class is raised for real through the public API where that is practical, on
both backends unless the error belongs to one (an append-only refusal is a host's own
statement, translated as the store translates its own). Every class also has constructed
samples, its earlier constructor signatures among them. A class without cases here fails
``test_every_error_class_is_covered``. The checks look for key fragments, not whole texts.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, delete, event, make_url, pool, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

import sa_crablet
from sa_crablet import (
    AppendCondition,
    AppendOnlyError,
    Command,
    CommandExecutor,
    ConcurrencyError,
    CrabletError,
    Decision,
    DuplicateCommandError,
    EngineEventStore,
    Event,
    EventStore,
    EventStoreConfig,
    Head,
    MutationNotAllowedError,
    OperationTimeoutError,
    Query,
    QueryItem,
    ReadNotFinishedError,
    RetryPolicy,
    SchemaError,
    TooManyAppendsError,
    TooManyProjectionsError,
    UnsupportedSetupError,
    ValidationError,
    allow_mutation,
    create_sqlite_engine,
    fail_if_exists,
)
from sa_crablet._errors import translate
from sa_crablet.migrate import alembic_config
from sa_crablet.projectors import counter
from sa_crablet.schema import COMMANDS_TABLE, EVENTS_TABLE, HEAD_REVISION
from tests.helpers import in_thread
from tests.test_concurrency import deadlocked
from tests.test_connection_setup import lose_after_reading
from tests.test_migrations import fresh_postgres_database

F = TypeVar("F", bound=Callable[..., Any])

COVERED: dict[type[CrabletError], list[str]] = {}
"""The tests that raise each error class for real."""


def covers(*classes: type[CrabletError]) -> Callable[[F], F]:
    def mark(test: F) -> F:
        for cls in classes:
            COVERED.setdefault(cls, []).append(test.__name__)
        return test

    return mark


def error_classes() -> set[type[CrabletError]]:
    """Every subclass of CrabletError the library defines, however deep."""
    found: set[type[CrabletError]] = set()
    todo = [CrabletError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("sa_crablet") and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def mentions(error: BaseException, *fragments: str) -> None:
    message = str(error)
    missing = [fragment for fragment in fragments if fragment not in message]
    assert not missing, f"{missing} not in: {message}"


# -- constructed samples: every class, old signatures included ------------------------------------

CONDITION = AppendCondition(Query.of(types=["Booked"], tags=["seat:1"]), Head(7))

SAMPLES: dict[type[CrabletError], list[tuple[CrabletError, tuple[str, ...]]]] = {
    ValidationError: [
        (ValidationError("limit", 0, "must be an int >= 1"), ("invalid limit", "got 0", ">= 1")),
        (
            ValidationError("data", {"email": "ann@example.com"}, "bad", redacted=True),
            ("invalid data", "<dict of 1 item>"),
        ),
    ],
    ConcurrencyError: [
        (
            ConcurrencyError(condition=CONDITION, position=9),
            ("position 9", "'Booked'", "'seat:1'", "after head 7", "still usable", "re-read"),
        ),
        (  # the earlier form: a message first
            ConcurrencyError("lost", condition=CONDITION, position=9, transaction_usable=False),
            ("lost", "position 9", "transaction_usable=False", "roll it back", "CommandExecutor"),
        ),
        (ConcurrencyError(transaction_usable=False), ("aborted", "roll it back")),
    ],
    DuplicateCommandError: [
        (DuplicateCommandError("order-1"), ("'order-1'", "executed once already", "Roll back"))
    ],
    OperationTimeoutError: [
        (
            OperationTimeoutError("lock_timeout", value=0.25),
            ("EventStoreConfig.lock_timeout = 0.25 s", "roll it back", "raise"),
        ),
        (  # the earlier form: setting and message
            OperationTimeoutError("statement_timeout", "statement_timeout expired"),
            ("statement_timeout expired", "the database's own statement_timeout", "smaller"),
        ),
    ],
    UnsupportedSetupError: [
        (
            UnsupportedSetupError("client_encoding", "SJIS", "needs UTF-8", supported="UTF8"),
            ("client_encoding 'SJIS'", "needs UTF-8", "Supported instead: UTF8"),
        ),
        (UnsupportedSetupError("bind", None, "use AUTOCOMMIT"), ("bind None", "use AUTOCOMMIT")),
    ],
    SchemaError: [
        (
            SchemaError(found_revision="0002_commands", expected_revision=HEAD_REVISION),
            ("'0002_commands'", repr(HEAD_REVISION), "sa_crablet.upgrade(engine)"),
        ),
        (SchemaError("run the migrations"), ("run the migrations", "alembic upgrade head")),
        (SchemaError(), ("missing or out of date", "sa_crablet.upgrade(engine)")),
    ],
    AppendOnlyError: [
        (AppendOnlyError("refused"), ("refused", "compensating event", "allow_mutation")),
        (AppendOnlyError(), ("append-only", "allow_mutation")),
    ],
    MutationNotAllowedError: [
        (
            MutationNotAllowedError("app", (EVENTS_TABLE,)),
            ("'app'", EVENTS_TABLE, "owner", "nothing was changed"),
        )
    ],
    ReadNotFinishedError: [
        (ReadNotFinishedError(), ("before the read was consumed", "iterate it to its end")),
        (ReadNotFinishedError("not yet"), ("not yet", "consume it first")),
        (ReadNotFinishedError(closed=True), ("closed early", "Read again")),
    ],
    TooManyAppendsError: [
        (
            TooManyAppendsError(limit=3),
            ("EventStoreConfig.max_concurrent_appends = 3", "retry later"),
        ),
        (TooManyAppendsError("too many", 3), ("too many", "raise max_concurrent_appends")),
    ],
    TooManyProjectionsError: [
        (
            TooManyProjectionsError(limit=2),
            ("EventStoreConfig.max_concurrent_projections = 2", "Shed load"),
        ),
        (TooManyProjectionsError("too many", 2), ("too many", "max_concurrent_projections")),
    ],
}


def test_every_error_class_is_covered() -> None:
    classes = error_classes()
    assert classes, "no error classes found"
    assert classes == set(SAMPLES), "each error class needs constructed samples"
    assert classes == set(COVERED), "each error class needs a test that raises it for real"


@pytest.mark.parametrize(
    ("error", "fragments"),
    [sample for samples in SAMPLES.values() for sample in samples],
    ids=[f"{cls.__name__}-{i}" for cls, samples in SAMPLES.items() for i in range(len(samples))],
)
def test_constructed_errors_say_what_happened_and_what_to_do(
    error: CrabletError, fragments: tuple[str, ...]
) -> None:
    mentions(error, *fragments)
    assert "None" not in str(error).replace("bind None", ""), str(error)


def test_the_expected_revision_is_the_migrations_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_current_head() == HEAD_REVISION


# -- ValidationError -----------------------------------------------------------------------------


@covers(ValidationError)
def test_validation_names_the_field_the_value_and_the_rule(engine: Engine) -> None:
    with Session(engine) as session:
        store = EventStore(session)
        with pytest.raises(ValidationError) as error:
            store.read(Query.all(), limit=0)
        assert (error.value.field, error.value.value, error.value.redacted) == ("limit", 0, False)
        mentions(error.value, "invalid limit", "(got 0)", "from 1 to")

        long_tag = "customer:" + "x" * 10_000
        with pytest.raises(ValidationError) as error:
            store.append(Event("Registered", [long_tag]))
        assert error.value.field == "tags" and error.value.value == long_tag
        mentions(error.value, "a tag is at most 512 characters", "customer:xxx")
        assert len(str(error.value)) < 400  # the value is cut short

        store.append(Event("Registered", ["customer:1"]))  # nothing was written before
        session.commit()


@covers(ValidationError)
def test_validation_shows_event_data_by_type_and_size_only(engine: Engine) -> None:
    personal = {"email": "ann@example.com", "score": math.nan}
    seen: list[ValidationError] = []
    with Session(engine) as session:
        store = EventStore(session)
        with pytest.raises(ValidationError) as error:
            store.append(Event("Registered", ["customer:1"], data=personal))
        assert error.value.field == "data" and error.value.redacted
        assert error.value.value is personal  # the caller still has it
        mentions(error.value, "invalid data", "not JSON-serializable", "<dict of 2 items>")
        seen.append(error.value)
        with pytest.raises(ValidationError) as error:
            store.append([personal])
        assert error.value.field == "events" and error.value.redacted
        mentions(error.value, "append takes Event values", "<dict of 2 items>")
        seen.append(error.value)
        with pytest.raises(ValidationError) as error:
            Command("Register", data={"email": "ann@example.com", "at": object()})
        mentions(error.value, "invalid data", "<dict of 2 items>")
        seen.append(error.value)
        with pytest.raises(ValidationError) as error:
            store.append([Event("Registered", data=personal)] * 1001)
        mentions(error.value, "max_batch_size=1000", "split it", "<list of 1001 items>")
        seen.append(error.value)
    for refused in seen:
        assert "ann@example.com" not in str(refused)


# -- ConcurrencyError ----------------------------------------------------------------------------


@covers(ConcurrencyError)
def test_a_failed_condition_names_the_conflict_the_query_and_the_head(engine: Engine) -> None:
    query = Query.of(types=["CourseDefined"], tags=["course:c1"]) | Query.of(
        types=["StudentEnrolled"], tags=["course:c1", "student:s1"]
    )
    with Session(engine) as session:
        store = EventStore(session)
        result = store.read(query)
        assert list(result) == []
        head = result.head
        with Session(engine) as other:
            other_store = EventStore(other)
            other_store.append(Event("Unrelated", ["course:c2"]))
            position = other_store.append(Event("StudentEnrolled", ["course:c1", "student:s1"]))
            other.commit()
        with pytest.raises(ConcurrencyError) as error:
            store.append(
                Event("StudentEnrolled", ["course:c1", "student:s2"]), AppendCondition(query, head)
            )
        conflict = error.value
        assert conflict.position == position and conflict.transaction_usable
        assert conflict.condition is not None and conflict.condition.after == head
        assert conflict.attempts is None
        mentions(
            conflict,
            f"the event at position {position}",
            "(types=['CourseDefined'] tags=['course:c1']",
            "OR types=['StudentEnrolled'] tags=['course:c1', 'student:s1']) ",
            f"after head {head}",
            "transaction_usable=True",
            "re-read or re-project, decide again",
            "CommandExecutor",
        )
        store.append(Event("Rejected", ["student:s2"]))  # the transaction goes on, as it says
        session.commit()


@covers(ConcurrencyError)
def test_a_huge_condition_is_summarised(engine: Engine) -> None:
    items = [
        QueryItem(["Booked"], [f"seat:{i}"] + [f"row:{j}" for j in range(8)]) for i in range(50)
    ]
    with Session(engine) as session:
        store = EventStore(session)
        store.append(Event("Booked", ["seat:0"] + [f"row:{j}" for j in range(8)]))
        with pytest.raises(ConcurrencyError) as error:
            store.append(Event("Booked", ["seat:0"]), AppendCondition(Query(items)))
        message = str(error.value)
        mentions(error.value, "... 46 more items) at any position", "... 5 more]")
        assert len(message) < 1500, len(message)


@covers(ConcurrencyError)
def test_the_executor_says_when_it_gave_up(engine: Engine) -> None:
    query = Query.of(tags=["account:a"])
    with Session(engine) as session:
        EventStore(session).append(Event("Opened", ["account:a"]))
        session.commit()
    runs = 0

    def always_stale(store: EventStore, command: Command) -> Decision:
        nonlocal runs
        runs += 1  # decides on a state older than the account's first event, every time
        return Decision([Event("Spent", ["account:a"])], AppendCondition(query, Head(0)))

    executor = CommandExecutor(sessionmaker(engine), retry=RetryPolicy(attempts=2, backoff=0))
    with pytest.raises(ConcurrencyError) as error:
        executor.execute(Command("Spend"), always_stale)
    assert error.value.attempts == 2 and runs == 2
    mentions(error.value, "CommandExecutor gave up after 2 attempts", "RetryPolicy.attempts")


@pytest.mark.sqlite_only
@covers(ConcurrencyError)
def test_a_conflict_that_aborts_the_transaction_says_roll_back_sqlite(engine: Engine) -> None:
    error = lose_after_reading(engine)
    assert not error.transaction_usable
    mentions(
        error,
        "has already read",
        "tags=['seat:1']",
        "transaction_usable=False",
        "roll it back",
        "in a new transaction",
    )


@pytest.mark.postgresql_only
@covers(ConcurrencyError)
def test_a_deadlock_says_roll_back(engine: Engine) -> None:
    aborted = [error for error in deadlocked(engine) if error is not None]
    assert aborted and not aborted[0].transaction_usable
    mentions(
        aborted[0],
        "deadlock detected (SQLSTATE 40P01)",
        "tags=['dl:",
        "transaction_usable=False",
        "roll it back",
    )


# -- DuplicateCommandError -----------------------------------------------------------------------


@covers(DuplicateCommandError)
def test_a_duplicate_command_names_its_id(engine: Engine) -> None:
    command = Command("PlaceOrder", {"sku": "x"}, id="order-42")
    with Session(engine) as session:
        EventStore(session).append(Event("OrderPlaced", ["order:42"]), command=command)
        session.commit()
    with Session(engine) as session:
        with pytest.raises(DuplicateCommandError) as error:
            EventStore(session).append(Event("OrderPlaced", ["order:42"]), command=command)
        session.rollback()
    assert error.value.command_id == "order-42"
    mentions(
        error.value,
        "command 'order-42' has been executed once already",
        "Roll back what this transaction appended",
        "CommandResult.duplicate",
    )


# -- OperationTimeoutError -----------------------------------------------------------------------


def hold_seat(engine: Engine) -> Session:
    """A transaction that holds what an append to ``seat:1`` waits for (PostgreSQL: the
    boundary's lock; SQLite: the write lock), until it ends."""
    holder = Session(engine)
    EventStore(holder).append(Event("Held", ["seat:1"]), fail_if_exists("seat:1"))
    return holder


@covers(OperationTimeoutError)
def test_a_lock_timeout_names_its_setting_and_value(engine: Engine) -> None:
    holder = hold_seat(engine)
    try:
        with Session(engine) as session:
            store = EventStore(session, EventStoreConfig(lock_timeout=0.2))
            with pytest.raises(OperationTimeoutError) as error:
                store.append(Event("Booked", ["seat:1"]), fail_if_exists("seat:1"))
            session.rollback()
    finally:
        holder.rollback()
        holder.close()
    timeout = error.value
    assert (timeout.setting, timeout.value) == ("lock_timeout", 0.2)
    assert timeout.configured_in == "EventStoreConfig.lock_timeout"
    mentions(
        timeout,
        "EventStoreConfig.lock_timeout = 0.2 s",
        "roll it back",
        "keep transactions that append short",
        "raise EventStoreConfig.lock_timeout",
    )


@covers(OperationTimeoutError)
def test_a_lock_timeout_not_configured_in_the_store_says_where_it_is(
    engine: Engine, backend: str
) -> None:
    holder = hold_seat(engine)
    other = engine
    if backend == "sqlite":
        assert engine.url.database is not None
        other = create_sqlite_engine(engine.url.database, busy_timeout=0.2)
    try:
        with Session(other) as session:
            if backend == "postgresql":
                session.execute(text("SET LOCAL lock_timeout = '200ms'"))
            with pytest.raises(OperationTimeoutError) as error:
                EventStore(session).append(Event("Booked", ["seat:1"]), fail_if_exists("seat:1"))
            session.rollback()
    finally:
        holder.rollback()
        holder.close()
        if other is not engine:
            other.dispose()
    timeout = error.value
    assert timeout.setting == "lock_timeout"
    if backend == "postgresql":
        assert timeout.value is None
        mentions(timeout, "the database's own lock_timeout", "set EventStoreConfig.lock_timeout")
    else:
        assert timeout.value == 0.2
        mentions(timeout, "busy_timeout", "= 0.2 s", "set EventStoreConfig.lock_timeout")


@covers(OperationTimeoutError)
def test_a_statement_timeout_names_its_setting_and_value(engine: Engine, backend: str) -> None:
    holder = None
    if backend == "postgresql":
        holder = hold_seat(engine)  # the wait for the boundary's lock outlasts the statement
        limit = 0.3
    else:
        with Session(engine) as session:  # a read of a thousand events outlasts 0.1 ms
            EventStore(session).append([Event("Bulk", [f"t:{i}", "common"]) for i in range(1000)])
            session.commit()
        limit = 0.0001
    try:
        with Session(engine) as session:
            store = EventStore(session, EventStoreConfig(statement_timeout=limit))
            with pytest.raises(OperationTimeoutError) as error:
                if holder is not None:
                    store.append(Event("Booked", ["seat:1"]), fail_if_exists("seat:1"))
                else:
                    list(store.read(Query.of(tags=["t:999", "common"])))
            session.rollback()
    finally:
        if holder is not None:
            holder.rollback()
            holder.close()
    timeout = error.value
    assert (timeout.setting, timeout.value) == ("statement_timeout", limit)
    mentions(
        timeout,
        "statement_timeout expired",
        f"EventStoreConfig.statement_timeout = {limit:g} s",
        "roll it back",
        "Make the operation smaller",
    )


# -- UnsupportedSetupError -----------------------------------------------------------------------


@covers(UnsupportedSetupError)
def test_an_engine_store_on_a_transactional_connection_says_what_to_use(engine: Engine) -> None:
    with engine.connect() as connection:
        with pytest.raises(UnsupportedSetupError) as error:
            EngineEventStore(connection).append(Event("A"))
        connection.rollback()
    refused = error.value
    assert refused.setting == "isolation_level" and refused.value != "AUTOCOMMIT"
    assert refused.supported is not None
    mentions(
        refused,
        f"unsupported isolation_level {refused.value!r}",
        "AUTOCOMMIT",
        "EventStore(session)",
    )


@pytest.mark.postgresql_only
@covers(UnsupportedSetupError)
def test_a_client_encoding_other_than_utf8_says_what_to_use(engine: Engine) -> None:
    other = create_engine(engine.url, connect_args={"client_encoding": "SJIS"})
    try:
        with Session(other) as session, pytest.raises(UnsupportedSetupError) as error:
            EventStore(session).append(Event("A"))
    finally:
        other.dispose()
    assert (error.value.setting, error.value.value) == ("client_encoding", "SJIS")
    mentions(error.value, "client_encoding 'SJIS'", "nothing was sent", "Supported instead: UTF8")


# -- SchemaError ---------------------------------------------------------------------------------


@pytest.fixture
def fresh_engine(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on an empty database of the test's backend: no migration applied."""
    if backend == "sqlite":
        engine = create_sqlite_engine(str(tmp_path / "fresh.sqlite3"))
        yield engine
        engine.dispose()
        return
    server_url: str = request.getfixturevalue("postgres_server_url")
    with fresh_postgres_database(server_url) as url:
        engine = create_engine(url, poolclass=pool.NullPool)
        try:
            yield engine
        finally:
            engine.dispose()


def schema_error(engine: Engine, operation: Callable[[EventStore], object]) -> SchemaError:
    with Session(engine) as session, pytest.raises(SchemaError) as error:
        operation(EventStore(session))
    return error.value


@covers(SchemaError)
def test_a_missing_migration_names_the_revisions_and_the_command(
    fresh_engine: Engine, backend: str
) -> None:
    never = schema_error(fresh_engine, lambda store: store.append(Event("A")))
    assert never.found_revision == "base" and never.expected_revision == HEAD_REVISION
    mentions(
        never,
        EVENTS_TABLE,
        "No sa_crablet migration was ever applied",
        f"needs {HEAD_REVISION!r}",
        "sa_crablet.upgrade(engine)",
        "`alembic upgrade head`",
        "script_location is sa_crablet:migrations",
    )
    if backend == "sqlite":
        assert never.table == EVENTS_TABLE

    sa_crablet.upgrade(fresh_engine, "0001_events")
    for operation in (
        lambda store: store.command("x"),  # no commands table yet
        lambda store: store.append(Event("A")),  # no command_id column yet
    ):
        behind = schema_error(fresh_engine, operation)
        assert behind.found_revision == "0001_events"
        assert behind.expected_revision == HEAD_REVISION
        mentions(
            behind,
            "at revision '0001_events'",
            f"needs {HEAD_REVISION!r}",
            "sa_crablet.upgrade(engine)",
        )

    sa_crablet.upgrade(fresh_engine)
    with fresh_engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {COMMANDS_TABLE}"))
    elsewhere = schema_error(fresh_engine, lambda store: store.command("x"))
    assert elsewhere.found_revision == HEAD_REVISION
    mentions(elsewhere, COMMANDS_TABLE, "search_path", "schema_translate_map", "backup")


@pytest.mark.postgresql_only
def test_a_schema_error_for_a_role_that_cannot_read_the_revision(postgres_server_url: str) -> None:
    """The documented application role may not read the version table: the message still
    says what to do, without a revision."""
    role = f"sa_crablet_err_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        postgres_server_url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool
    )
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'secret'"))
    try:
        with fresh_postgres_database(postgres_server_url) as url:
            owner = create_engine(url, poolclass=pool.NullPool)
            sa_crablet.upgrade(owner, "0001_events")
            with owner.begin() as conn:
                conn.execute(text(f"GRANT SELECT, INSERT ON {EVENTS_TABLE} TO {role}"))
            owner.dispose()
            app_url = make_url(url).set(username=role, password="secret")
            app = create_engine(app_url, poolclass=pool.NullPool)
            try:
                refused = schema_error(app, lambda store: store.command("x"))
            finally:
                app.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()
    assert refused.found_revision is None and refused.expected_revision == HEAD_REVISION
    mentions(refused, COMMANDS_TABLE, f"needs {HEAD_REVISION!r}", "sa_crablet.upgrade(engine)")


# -- AppendOnlyError and MutationNotAllowedError -------------------------------------------------


@covers(AppendOnlyError)
def test_a_refused_change_says_append_only_and_what_to_do(engine: Engine) -> None:
    """What a host's own statement receives, translated as the store translates it."""
    with Session(engine) as session:
        EventStore(session).append(Event("Registered", ["customer:1"]))
        session.commit()
        with pytest.raises(DBAPIError) as refused:
            session.execute(delete(sa_crablet.events_table))
        session.rollback()
    error = translate(refused.value)
    assert isinstance(error, AppendOnlyError)
    mentions(error, "DELETE refused", "append-only", "compensating event", "allow_mutation")


@pytest.mark.postgresql_only
@covers(MutationNotAllowedError)
def test_lifting_the_guard_without_ownership_names_the_role(engine: Engine) -> None:
    role = f"sa_crablet_err_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role}"))
    try:
        with Session(engine) as session:
            session.execute(text(f"SET LOCAL ROLE {role}"))
            with pytest.raises(MutationNotAllowedError) as error, allow_mutation(session):
                raise AssertionError("the block must not run")
            session.rollback()
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP ROLE {role}"))
    assert error.value.role == role
    assert error.value.tables == tuple(sorted((COMMANDS_TABLE, EVENTS_TABLE)))
    mentions(error.value, f"role {role!r}", EVENTS_TABLE, "nothing was changed", "owns the tables")


# -- ReadNotFinishedError ------------------------------------------------------------------------


@covers(ReadNotFinishedError)
def test_a_head_asked_for_too_early_says_consume_the_read(engine: Engine) -> None:
    with Session(engine) as session:
        store = EventStore(session)
        store.append([Event("A"), Event("A")])
        result = store.read(Query.all())
        next(result)
        with pytest.raises(ReadNotFinishedError) as early:
            _ = result.head
        assert not early.value.closed
        mentions(early.value, "before the read was consumed to its end", "list(result)")
        result.close()
        with pytest.raises(ReadNotFinishedError) as closed:
            _ = result.head
        assert closed.value.closed
        mentions(closed.value, "closed early", "Read again")
        session.rollback()


# -- the limits ----------------------------------------------------------------------------------


@covers(TooManyProjectionsError)
def test_too_many_projections_names_the_limit_and_its_setting(engine: Engine) -> None:
    config = EventStoreConfig(max_concurrent_projections=1, fetch_size=997)
    with Session(engine) as session:
        store = EventStore(session, config)
        projector = counter("all", Query.all())
        stream = store.project_stream([projector])  # holds the one slot
        try:
            with pytest.raises(TooManyProjectionsError) as error:
                store.project([projector])
        finally:
            stream.close()
        store.project([projector])  # the slot is free again
    assert (error.value.limit, error.value.setting) == (1, "max_concurrent_projections")
    mentions(
        error.value,
        "the limit EventStoreConfig.max_concurrent_projections = 1 is reached",
        "without touching the database",
        "raise max_concurrent_projections",
    )


@covers(TooManyAppendsError)
def test_too_many_appends_names_the_limit_and_its_setting(engine: Engine) -> None:
    """One append is held inside its slot (at its insert, through an engine event) while
    another tries."""
    config = EventStoreConfig(max_concurrent_appends=1, fetch_size=998)
    inside, go_on = threading.Event(), threading.Event()
    first_thread = threading.local()

    def hold(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "INSERT INTO" in statement and getattr(first_thread, "marked", False):
            inside.set()
            go_on.wait(30)

    def first() -> int:
        first_thread.marked = True
        with Session(engine) as session:
            position = EventStore(session, config).append(Event("First"))
            session.commit()
            return position

    event.listen(engine, "before_cursor_execute", hold)
    try:
        thread, box = in_thread(first)
        assert inside.wait(30)
        try:
            with Session(engine) as session, pytest.raises(TooManyAppendsError) as error:
                EventStore(session, config).append(Event("Second"))
        finally:
            go_on.set()
            thread.join(30)
    finally:
        event.remove(engine, "before_cursor_execute", hold)
    assert box and isinstance(box[0], int), box
    assert (error.value.limit, error.value.setting) == (1, "max_concurrent_appends")
    mentions(
        error.value,
        "the limit EventStoreConfig.max_concurrent_appends = 1 is reached",
        "without touching the database",
        "Shed load or retry later",
    )
