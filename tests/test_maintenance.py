"""``allow_mutation()``: the guard is lifted inside the caller's transaction and nowhere else.

SQLite, on every way a host gets a transaction (the default engine, where pysqlite opens
one only before data-changing statements; an AUTOCOMMIT engine; an engine that issues its
own ``BEGIN``; a ``BEGIN`` the application runs itself): other connections never see the
guard missing, a rollback restores it and the rows, a rollback or a commit inside the block
leaves it in place. PostgreSQL: the block's own error comes out unchanged, a session-level
setting lifts nothing, an AUTOCOMMIT engine gets a transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, delete, event, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, scoped_session, sessionmaker

import sa_crablet
from sa_crablet import (
    AppendOnlyError,
    Event,
    EventStore,
    ValidationError,
    allow_mutation,
    create_sqlite_engine,
)
from sa_crablet._errors import translate
from sa_crablet.schema import ALLOW_MUTATION_SETTING

events = sa_crablet.events_table
commands = sa_crablet.commands_table
GUARD_TRIGGERS = {
    f"{table.name}_no_{op}" for table in (events, commands) for op in ("update", "delete")
}


# -- SQLite: four ways to get a transaction -------------------------------------------------------


def _begin_event_engine(path: str) -> Engine:
    """SQLAlchemy's recipe for pysqlite: the driver opens nothing, the engine emits BEGIN."""
    engine = create_sqlite_engine(path, isolation_level="AUTOCOMMIT")

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


SQLITE_ENGINES: dict[str, Callable[[str], Engine]] = {
    "default": create_sqlite_engine,
    "autocommit": lambda path: create_sqlite_engine(path, isolation_level="AUTOCOMMIT"),
    "begin-event": _begin_event_engine,
    "session-begin": create_sqlite_engine,  # the application runs BEGIN in its session
}


@pytest.fixture(params=list(SQLITE_ENGINES))
def sqlite_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sqlite_engine(sqlite_kind: str, tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite file holding events 1-3 and commands c1-c3."""
    path = str(tmp_path / "store.sqlite3")
    setup = create_sqlite_engine(path)
    sa_crablet.upgrade(setup)
    with Session(setup) as session:
        EventStore(session).append([Event("A"), Event("B"), Event("C")])
        for number in (1, 2, 3):
            session.execute(insert(commands).values(id=f"c{number}", type="T", event_count=0))
        session.commit()
    setup.dispose()
    engine = SQLITE_ENGINES[sqlite_kind](path)
    yield engine
    engine.dispose()


def open_session(engine: Engine, kind: str) -> Session:
    session = Session(engine)
    if kind == "session-begin":
        session.connection().exec_driver_sql("BEGIN")
    return session


def mutate(session: Session) -> None:
    session.execute(update(events).where(events.c.position == 1).values(type="X"))
    session.execute(delete(events).where(events.c.position == 2))
    session.execute(delete(commands).where(commands.c.id == "c2"))


def stored(path_engine: Engine) -> tuple[list[tuple[Any, ...]], list[str]]:
    """The events and command ids, read on a connection of their own."""
    with path_engine.connect() as conn:
        rows = conn.execute(select(events.c.position, events.c.type).order_by(events.c.position))
        ids = conn.execute(select(commands.c.id).order_by(commands.c.id)).scalars()
        return [tuple(r) for r in rows], [str(i) for i in ids]


ORIGINAL = ([(1, "A"), (2, "B"), (3, "C")], ["c1", "c2", "c3"])
MUTATED = ([(1, "X"), (3, "C")], ["c1", "c3"])


def guard_seen_elsewhere(engine: Engine) -> set[str]:
    """The guard triggers another connection sees (a new engine: never the session's own)."""
    other = create_sqlite_engine(str(engine.url.database))
    try:
        with other.connect() as conn:
            names = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            return {str(n) for n in names.scalars()} & GUARD_TRIGGERS
    finally:
        other.dispose()


def assert_guarded(engine: Engine) -> None:
    """Every plain UPDATE and DELETE of either table is refused, on a new session."""
    assert guard_seen_elsewhere(engine) == GUARD_TRIGGERS
    for statement in (update(events).values(type="Y"), delete(events), delete(commands)):
        with Session(engine) as session:
            with pytest.raises(IntegrityError) as info:
                session.execute(statement)
            assert isinstance(translate(info.value), AppendOnlyError)


@pytest.mark.parametrize("sqlite_kind", ["default", "autocommit"], indirect=True)
def test_sqlite_rollback_after_the_block_restores_the_guard_and_the_rows(
    sqlite_engine: Engine, sqlite_kind: str
) -> None:
    """The block's DROP TRIGGER belongs to the caller's transaction: no other connection sees
    the guard missing, and the rollback takes back both the changes and the drop."""
    with open_session(sqlite_engine, sqlite_kind) as session:
        with allow_mutation(session):
            mutate(session)
            assert guard_seen_elsewhere(sqlite_engine) == GUARD_TRIGGERS
        session.rollback()
    assert stored(sqlite_engine) == ORIGINAL
    assert_guarded(sqlite_engine)


def test_sqlite_rollback_inside_the_block(sqlite_engine: Engine, sqlite_kind: str) -> None:
    """A caller that rolls back inside the block: the exit does not fail, nothing changed,
    the guard is there (and is back for the rest of the block)."""
    with open_session(sqlite_engine, sqlite_kind) as session:
        with allow_mutation(session):
            mutate(session)
            session.rollback()
            with pytest.raises(IntegrityError):
                session.execute(delete(events))
            session.rollback()
        session.commit()
    assert stored(sqlite_engine) == ORIGINAL
    assert_guarded(sqlite_engine)


def test_sqlite_commit_inside_the_block(sqlite_engine: Engine, sqlite_kind: str) -> None:
    """A commit inside the block commits the changes, never the missing guard: it is put
    back in the same transaction, before the commit, so the rest of the block has it too."""
    with open_session(sqlite_engine, sqlite_kind) as session, allow_mutation(session):
        mutate(session)
        session.commit()
        with pytest.raises(IntegrityError):
            session.execute(delete(events))
        session.rollback()
    assert stored(sqlite_engine) == MUTATED
    assert_guarded(sqlite_engine)


def test_sqlite_commit_after_the_block(sqlite_engine: Engine, sqlite_kind: str) -> None:
    with open_session(sqlite_engine, sqlite_kind) as session:
        with allow_mutation(session):
            mutate(session)
            with session.begin_nested():  # a savepoint's release is no commit
                session.execute(delete(events).where(events.c.position == 1))
            session.execute(delete(commands).where(commands.c.id == "c1"))
        session.commit()
    assert stored(sqlite_engine) == ([(3, "C")], ["c3"])
    assert_guarded(sqlite_engine)


@pytest.mark.parametrize("sqlite_kind", ["default"], indirect=True)
def test_sqlite_scoped_session(sqlite_engine: Engine) -> None:
    """A ``scoped_session`` (Flask-SQLAlchemy's ``db.session``) is its current Session: the
    guard goes back before a commit inside the block there too."""
    scoped = scoped_session(sessionmaker(sqlite_engine))
    try:
        with allow_mutation(scoped):
            mutate(scoped())
            scoped.commit()
    finally:
        scoped.remove()
    assert stored(sqlite_engine) == MUTATED
    assert_guarded(sqlite_engine)


def test_allow_mutation_needs_a_session() -> None:
    with pytest.raises(ValidationError) as error, allow_mutation(object()):  # type: ignore[arg-type]
        pass
    assert error.value.field == "session"


# -- PostgreSQL ------------------------------------------------------------------------------------


def append(engine: Engine, *types: str) -> None:
    with Session(engine) as session:
        EventStore(session).append([Event(name) for name in types])
        session.commit()


def assert_refused(session: Session, statement: Any) -> None:
    """The guard refuses ``statement``; the session is rolled back afterwards."""
    with pytest.raises(DBAPIError) as refused:
        session.execute(statement)
    assert isinstance(translate(refused.value), AppendOnlyError), refused.value
    session.rollback()


def setting(session: Session) -> str | None:
    value = session.execute(select(func.current_setting(ALLOW_MUTATION_SETTING, True))).scalar()
    return None if value is None else str(value)


@pytest.mark.postgresql_only
def test_postgresql_error_in_the_block_propagates_unchanged(engine: Engine) -> None:
    append(engine, "A", "B")
    with Session(engine) as session:
        with pytest.raises(DBAPIError) as info, allow_mutation(session):
            session.execute(delete(events).where(events.c.position == 1))
            session.execute(text("SELECT 1 / 0"))
        assert isinstance(info.value.orig, psycopg.errors.DivisionByZero), info.value
        session.rollback()
        # The session works, the rollback took the delete and the setting back.
        assert setting(session) in (None, "")
        assert session.execute(select(func.count()).select_from(events)).scalar_one() == 2
        assert_refused(session, delete(events))
        with allow_mutation(session):
            session.execute(delete(events).where(events.c.position == 1))
        session.commit()
    with Session(engine) as session:
        assert session.execute(select(events.c.type)).scalars().all() == ["B"]


@pytest.mark.postgresql_only
def test_postgresql_python_error_in_the_block_still_closes_it(engine: Engine) -> None:
    """A non-database error leaves the transaction usable: the guard is back in it."""
    with Session(engine) as session:
        EventStore(session).append(Event("A"))
        with pytest.raises(LookupError), allow_mutation(session):
            raise LookupError("the block failed")
        assert_refused(session, delete(events))


@pytest.mark.postgresql_only
def test_postgresql_rollback_or_commit_inside_the_block(engine: Engine) -> None:
    append(engine, "A", "B")
    with Session(engine) as session:
        with allow_mutation(session):
            session.execute(delete(events).where(events.c.position == 1))
            session.rollback()
        with allow_mutation(session):
            session.execute(delete(events).where(events.c.position == 2))
            session.commit()
            assert setting(session) in (None, "")  # the lift ended with its transaction
            assert_refused(session, delete(events))
    with Session(engine) as session:
        assert session.execute(select(events.c.type)).scalars().all() == ["A"]


@pytest.mark.postgresql_only
def test_postgresql_a_session_level_setting_lifts_nothing(engine: Engine) -> None:
    """Not even for the owner: a value left on a pooled connection by ``SET`` (whatever it
    holds) is not the id of a later transaction."""
    append(engine, "A")
    single = create_engine(engine.url, pool_size=1, max_overflow=0)
    try:
        with Session(single) as session:
            session.execute(text(f"SET {ALLOW_MUTATION_SETTING} = on"))
            session.commit()
        with Session(single) as session:
            transaction_id = session.execute(text("SELECT pg_current_xact_id()::text")).scalar()
            session.commit()
        with Session(single) as session:  # the same pooled connection, the setting still on
            assert setting(session) == "on"
            session.execute(text(f"SET {ALLOW_MUTATION_SETTING} = '{transaction_id}'"))
            assert_refused(session, delete(events))
            session.execute(text(f"SET {ALLOW_MUTATION_SETTING} = '{transaction_id}'"))
            assert_refused(session, text(f"TRUNCATE {events.name}"))
    finally:
        single.dispose()


@pytest.mark.postgresql_only
def test_postgresql_autocommit_engine_gets_a_transaction(engine: Engine) -> None:
    append(engine, "A", "B")
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with Session(autocommit) as session:
        with allow_mutation(session):
            session.execute(delete(events).where(events.c.position == 1))
        session.rollback()
    with Session(autocommit) as session:
        with allow_mutation(session):
            session.execute(delete(events).where(events.c.position == 2))
        session.commit()
    with Session(engine) as session:
        assert session.execute(select(events.c.type)).scalars().all() == ["A"]
