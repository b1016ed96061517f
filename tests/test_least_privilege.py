"""The least-privilege set-up of docs/deployment.md, on the real server.

Its SQL runs as written (with role and database names of this test's own): the migrations run
as ``postgres``, the application connects as a role that may only SELECT and INSERT, and does
all its work through both execution paths; it can change no stored row, whatever it is granted
or sets; the owner, and members of the owning role, can maintain the store.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import (
    URL,
    Engine,
    create_engine,
    delete,
    func,
    make_url,
    pool,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

import sa_crablet
from sa_crablet import (
    AppendCondition,
    AppendOnlyError,
    Command,
    CommandExecutor,
    ConcurrencyError,
    Decision,
    Event,
    EventStore,
    EventStoreConfig,
    MutationNotAllowedError,
    Query,
    allow_mutation,
)
from sa_crablet._errors import translate
from sa_crablet.projectors import counter
from sa_crablet.schema import ALLOW_MUTATION_SETTING, COMMANDS_TABLE, EVENTS_TABLE
from tests.test_docs import blocks
from tests.test_migrations import fresh_postgres_database

DEPLOYMENT = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"
PASSWORD = "change-me"  # the doc's; the test server trusts local connections anyway
TABLES = (EVENTS_TABLE, COMMANDS_TABLE)
ACCOUNT = Query.of(types=["Opened", "Deposited"], tags=["account:a"])
CONFIGS = {"direct": EventStoreConfig(), "core": EventStoreConfig(direct_execution=False)}


@dataclass(frozen=True, slots=True)
class Roles:
    """Cluster-wide names, unique to one test: the application, and for the membership
    test an owning role and a login role that is a member of it."""

    app: str
    owner: str
    maintainer: str


@dataclass(frozen=True, slots=True)
class Deployment:
    roles: Roles
    url: URL  # the database, as postgres
    owner: Engine  # postgres, who ran the migrations
    app: Engine


def conninfo(url: str | URL) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def run_sql(url: str | URL, script: str) -> None:
    """A script of several statements, as psql would send it (no transaction of its own)."""
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(script.encode())


def documented_sql(app_role: str, database: str) -> tuple[str, str, str]:
    """The page's SQL blocks (create the role; grant; maintain), its role and database names
    replaced by the test's own."""
    names = {"crablet_app": app_role, "crablet_db": database}
    found = [block.source for block in blocks(DEPLOYMENT) if block.language == "sql"]
    assert len(found) == 3, found
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    create_role, grants, maintenance = (pattern.sub(lambda m: names[m[1]], s) for s in found)
    return create_role, grants, maintenance


@pytest.fixture
def roles(postgres_server_url: str) -> Iterator[Roles]:
    """Role names; whatever the test created under them is dropped at the end, even after a
    failure (after the test's database, whose grants would otherwise keep them)."""
    suffix = uuid.uuid4().hex[:12]
    names = Roles(*(f"sa_crablet_{kind}_{suffix}" for kind in ("app", "own", "mnt")))
    try:
        yield names
    finally:
        with psycopg.connect(conninfo(postgres_server_url), autocommit=True) as conn:
            for name in (names.maintainer, names.owner, names.app):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def deployment(roles: Roles, postgres_server_url: str) -> Iterator[Deployment]:
    with fresh_postgres_database(postgres_server_url) as database_url:
        url = make_url(database_url)
        assert url.database is not None
        create_role, grants, _ = documented_sql(roles.app, url.database)
        run_sql(postgres_server_url, create_role)
        owner = create_engine(url, poolclass=pool.NullPool)
        app = create_engine(url.set(username=roles.app, password=PASSWORD), pool_size=4)
        try:
            sa_crablet.upgrade(owner)
            run_sql(url, grants)
            yield Deployment(roles, url, owner, app)
        finally:
            app.dispose()
            owner.dispose()


def deposit(store: EventStore, command: Command) -> Decision:
    model = store.project([counter("deposits", ACCOUNT)])
    return Decision([Event("Deposited", ["account:a"], command.data)], model.append_condition)


def stored_types(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return [event.type for event in EventStore(session).read(Query.all())]


# -- the application's work, as the application role -----------------------------------------------


@pytest.mark.parametrize("path", list(CONFIGS))
def test_the_application_role_does_all_its_work(deployment: Deployment, path: str) -> None:
    config, app = CONFIGS[path], deployment.app
    with Session(app) as session:
        store = EventStore(session, config)
        store.append(Event("Opened", ["account:a"]))  # plain
        result = store.read(ACCOUNT)
        assert [e.type for e in result] == ["Opened"]
        condition = AppendCondition(ACCOUNT, result.head)
        store.append(Event("Deposited", ["account:a"], {"amount": 1}), condition)  # conditional
        with pytest.raises(ConcurrencyError):
            store.append(Event("Deposited", ["account:a"], {"amount": 2}), condition)
        session.commit()

    with Session(app) as session:  # a decision model and the condition it protects
        store = EventStore(session, config)
        model = store.project([counter("deposits", Query.of(types=["Deposited"]))])
        assert model.states["deposits"] == 1
        store.append(Event("Deposited", ["account:a"], {"amount": 3}), model.append_condition)
        session.commit()

    with Session(app) as session:  # the executor in the host's session
        hosted = CommandExecutor(session, config=config).execute(
            Command("Deposit", {"amount": 4}, id="host-1"), deposit
        )
        session.commit()
    managed = CommandExecutor(app, config=config)  # the executor's own transactions
    first = managed.execute(Command("Deposit", {"amount": 5}, id="managed-1"), deposit)
    again = managed.execute(Command("Deposit", {"amount": 5}, id="managed-1"), deposit)
    assert not hosted.duplicate and not first.duplicate
    assert again.duplicate and again.position == first.position

    # Fixed snapshots: the check runs on a second connection, opened with the app's URL, and
    # it alone can see what another transaction committed after this one's snapshot.
    for level in ("REPEATABLE READ", "SERIALIZABLE"):
        with Session(app.execution_options(isolation_level=level)) as session:
            store = EventStore(session, config)
            seen = store.read(ACCOUNT)
            list(seen)
            with Session(app) as other:
                EventStore(other, config).append(Event("Deposited", ["account:a"]))
                other.commit()
            with pytest.raises(ConcurrencyError):
                store.append(Event("Deposited", ["account:a"]), AppendCondition(ACCOUNT, seen.head))
            session.rollback()
        with Session(app.execution_options(isolation_level=level)) as session:
            store = EventStore(session, config)
            seen = store.read(ACCOUNT)
            list(seen)
            store.append(Event("Deposited", ["account:a"]), AppendCondition(ACCOUNT, seen.head))
            session.commit()

    with Session(app) as session:
        store = EventStore(session, config)
        assert [e.type for e in store.read(Query.all())] == ["Opened"] + ["Deposited"] * 8
        record = store.command("managed-1")
        assert record is not None and record.data == {"amount": 5}


# -- what the application role cannot do -----------------------------------------------------------


def mutations() -> list[str]:
    return [
        statement
        for table in TABLES
        for statement in (
            f"UPDATE {table} SET type = 'Changed'",
            f"DELETE FROM {table}",
            f"TRUNCATE {table}",
        )
    ]


def fill(deployment: Deployment) -> None:
    """One event and one command, written by the application."""
    CommandExecutor(deployment.app).execute(Command("Deposit", {"amount": 1}, id="c-1"), deposit)


def assert_intact(deployment: Deployment) -> None:
    with deployment.owner.connect() as conn:
        for table, written in (
            (sa_crablet.events_table, "Deposited"),
            (sa_crablet.commands_table, "Deposit"),
        ):
            assert conn.execute(select(table.c.type)).scalars().all() == [written]


def setting(session: Session) -> str | None:
    value = session.execute(select(func.current_setting(ALLOW_MUTATION_SETTING, True))).scalar()
    return None if value is None else str(value)


def refusal(session: Session, statement: str, prepare: str | None) -> str | None:
    """The SQLSTATE ``statement`` fails with (after ``prepare`` in the same transaction), or
    ``None`` when it went through; the session is rolled back either way."""
    try:
        if prepare is not None:
            session.connection().exec_driver_sql(prepare)
        session.connection().exec_driver_sql(statement)
    except DBAPIError as error:
        return str(getattr(error.orig, "sqlstate", None))
    finally:
        session.rollback()
    return None


SETTINGS = {
    "no setting": None,
    "SET LOCAL on": f"SET LOCAL {ALLOW_MUTATION_SETTING} = on",
    "the transaction's own id": (
        f"SELECT set_config('{ALLOW_MUTATION_SETTING}', pg_current_xact_id()::text, true)"
    ),
}


def test_the_application_role_cannot_change_stored_rows(deployment: Deployment) -> None:
    fill(deployment)
    app, owner_url = deployment.app, deployment.url
    with Session(app) as session:
        for statement in mutations():
            assert refusal(session, statement, None) == "42501", statement  # permission denied
        for prepare in SETTINGS.values():
            assert refusal(session, f"DELETE FROM {EVENTS_TABLE}", prepare) == "42501"

    # Granted the writes by mistake: the guard still refuses them, whatever the role sets.
    grant = "GRANT UPDATE, DELETE, TRUNCATE ON {} TO {}"
    run_sql(owner_url, grant.format(", ".join(TABLES), deployment.roles.app))
    with Session(app) as session:
        for name, prepare in SETTINGS.items():
            for statement in mutations():
                assert refusal(session, statement, prepare) == "CR001", (name, statement)
        session.execute(text(f"SET {ALLOW_MUTATION_SETTING} = on"))
        session.commit()  # session level: stays on this connection
    with Session(app) as session:
        assert setting(session) == "on"
        for statement in mutations():
            assert refusal(session, statement, None) == "CR001", ("SET on", statement)
    assert_intact(deployment)


def test_allow_mutation_refuses_the_application_role(deployment: Deployment) -> None:
    fill(deployment)
    with Session(deployment.app) as session:
        store = EventStore(session)
        with pytest.raises(MutationNotAllowedError) as error, allow_mutation(session):
            raise AssertionError("the block must not run")
        assert isinstance(error.value, AppendOnlyError)
        assert error.value.role == deployment.roles.app
        assert error.value.tables == tuple(sorted(TABLES))
        # Nothing changed: no setting, and the transaction goes on.
        assert setting(session) in (None, "")
        store.append(Event("Deposited", ["account:a"]))
        session.commit()
    assert stored_types(deployment.owner) == ["Deposited", "Deposited"]


# -- maintenance, as the owner ---------------------------------------------------------------------


def test_the_owner_maintains_the_store(deployment: Deployment) -> None:
    fill(deployment)
    with Session(deployment.app) as session:
        EventStore(session).append([Event("Mistake", ["gdpr:erase-me"]), Event("Kept")])
        session.commit()
    _, _, maintenance = documented_sql(deployment.roles.app, str(deployment.url.database))
    run_sql(deployment.url, maintenance)
    assert stored_types(deployment.owner) == ["Deposited", "Kept"]

    events, commands = sa_crablet.events_table, sa_crablet.commands_table
    with Session(deployment.owner) as session:
        with allow_mutation(session):
            session.execute(delete(events).where(events.c.type == "Kept"))
            session.execute(update(commands).values(type="Corrected"))
        session.commit()
    assert stored_types(deployment.owner) == ["Deposited"]
    with Session(deployment.app) as session:
        assert session.execute(select(commands.c.type)).scalar_one() == "Corrected"


def test_members_of_the_owning_role_maintain_the_store(deployment: Deployment) -> None:
    """An owning role that cannot log in, a maintenance login that is a member of it."""
    fill(deployment)
    roles = deployment.roles
    identifiers = [sql.Identifier(name) for name in (roles.owner, roles.maintainer)]
    with psycopg.connect(conninfo(deployment.url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(identifiers[0]))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(identifiers[1], identifiers[0])
        )
        for table in TABLES:
            conn.execute(
                sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table), identifiers[0])
            )
    maintainer = create_engine(
        deployment.url.set(username=roles.maintainer), poolclass=pool.NullPool
    )
    try:
        with Session(maintainer) as session:
            with allow_mutation(session):
                session.execute(delete(sa_crablet.events_table))
                session.execute(sa_crablet.commands_table.delete())
            session.commit()
        assert stored_types(deployment.owner) == []
        with (
            Session(deployment.app) as session,
            pytest.raises(MutationNotAllowedError),
            allow_mutation(session),
        ):
            pass
        # postgres, no longer the owner, still has its privileges: it is a superuser.
        with Session(deployment.owner) as session:
            with allow_mutation(session):
                session.execute(delete(sa_crablet.events_table))
            session.commit()
    finally:
        maintainer.dispose()


def test_a_guard_refusal_is_an_append_only_error(deployment: Deployment) -> None:
    """What a host's own statement receives, translated as the store translates it."""
    fill(deployment)
    run_sql(deployment.url, f"GRANT DELETE ON {EVENTS_TABLE} TO {deployment.roles.app}")
    with Session(deployment.app) as session, pytest.raises(DBAPIError) as refused:
        session.execute(delete(sa_crablet.events_table))
    assert isinstance(translate(refused.value), AppendOnlyError)
    assert_intact(deployment)
