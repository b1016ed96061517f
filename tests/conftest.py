"""Test fixtures: one behavioural suite, run against SQLite and PostgreSQL.

PostgreSQL is found through ``SA_CRABLET_TEST_DATABASE_URL`` (any database on the server;
the tests create and drop their own). Without it, a local server at the usual address
(``LOCAL_URL``: 127.0.0.1:5432, user postgres) is used when it answers and may create
databases; otherwise testcontainers starts one when Docker is available; otherwise
PostgreSQL tests are skipped, unless ``--require-postgres`` or
``SA_CRABLET_REQUIRE_POSTGRES=1`` makes a missing database a failure (CI sets it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

import sa_crablet
from sa_crablet import (
    AsyncEventStore,
    EngineEventStore,
    EventStore,
    EventStoreConfig,
    create_sqlite_engine,
)
from tests.blocking import Blocking, close_loop, run
from tests.hosts import HOSTS, async_url

URL_VARIABLE = "SA_CRABLET_TEST_DATABASE_URL"
REQUIRE_VARIABLE = "SA_CRABLET_REQUIRE_POSTGRES"
BACKENDS = ("sqlite", "postgresql")
LOCAL_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-postgres",
        action="store_true",
        default=False,
        help="fail (instead of skipping) when no PostgreSQL database can be found",
    )


def _require_postgres(config: pytest.Config) -> bool:
    return bool(config.getoption("--require-postgres")) or os.environ.get(REQUIRE_VARIABLE) == "1"


def _local_url() -> str | None:
    """``LOCAL_URL`` if a server answers there, quickly, and lets the tests create their
    databases; None otherwise (nothing listening fails at once; a silent host in 2 s)."""
    engine = create_engine(LOCAL_URL, poolclass=NullPool, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            allowed = conn.execute(
                text("SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user")
            ).scalar()
    except Exception:  # no server, no such role, no password: not the usual local server
        return None
    finally:
        engine.dispose()
    return LOCAL_URL if allowed else None


def _container_url() -> tuple[str | None, Any]:
    try:
        from testcontainers.postgres import PostgresContainer
    except ImportError:
        return None, None
    try:
        container = PostgresContainer("postgres:15", driver="psycopg")
        container.start()
    except Exception:  # no Docker engine: nothing to start
        return None, None
    return str(container.get_connection_url()), container


@pytest.fixture(scope="session")
def postgres_server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    url = os.environ.get(URL_VARIABLE) or _local_url()
    container = None
    if not url:
        url, container = _container_url()
    if not url:
        message = f"no PostgreSQL: set {URL_VARIABLE}, run one at {LOCAL_URL}, or start Docker"
        if _require_postgres(request.config):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield url
    if container is not None:
        container.stop()


@pytest.fixture(scope="session")
def postgres_database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database for this test session, dropped at the end."""
    server = make_url(postgres_server_url)
    name = f"sa_crablet_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield server.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_engine(postgres_database_url: str) -> Iterator[Engine]:
    engine = create_engine(postgres_database_url, pool_size=20, max_overflow=20)
    sa_crablet.upgrade(engine)
    yield engine
    engine.dispose()


def clean_postgres(engine: Engine) -> None:
    with Session(engine) as session:
        with sa_crablet.allow_mutation(session):
            tables = f"{sa_crablet.events_table.name}, {sa_crablet.commands_table.name}"
            session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY"))
        session.commit()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that uses a database on each backend it applies to."""
    if "backend" not in metafunc.fixturenames:
        return
    marks = {mark.name for mark in metafunc.definition.iter_markers()}
    backends = [
        name
        for name in BACKENDS
        if not (name == "sqlite" and "postgresql_only" in marks)
        and not (name == "postgresql" and "sqlite_only" in marks)
    ]
    if "host" in metafunc.fixturenames:  # each way a host holds its connection, per backend
        hosts = [host for host in HOSTS if host.backend in backends]
        metafunc.parametrize(
            ("backend", "host"),
            [(host.backend, host) for host in hosts],
            indirect=["backend"],
            ids=[f"{host.backend}-{host.name}" for host in hosts],
        )
        return
    if {"store", "session", "make_store"} & set(metafunc.fixturenames):
        # The same test body on the sync store and on the async one, per async driver.
        pairs = [(name, api) for name in backends for api in APIS[name]]
        metafunc.parametrize(
            ("backend", "api"),
            pairs,
            indirect=True,
            ids=[name if api == "sync" else f"{name}-{api}" for name, api in pairs],
        )
        return
    metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A clean, migrated database of the test's backend."""
    if backend == "postgresql":
        pg: Engine = request.getfixturevalue("postgres_engine")
        clean_postgres(pg)
        yield pg
        return
    engine = create_sqlite_engine(str(tmp_path / "events.sqlite3"))
    sa_crablet.upgrade(engine)
    yield engine
    engine.dispose()


APIS = {
    "sqlite": ("sync", "engine", "aiosqlite"),
    "postgresql": ("sync", "engine", "psycopg-async", "asyncpg"),
}
"""The store's APIs a test using the ``session`` / ``store`` fixtures runs on: the sync one,
the engine-owned one (``EngineEventStore``: each operation its own transaction), and the
async one on each async driver (through ``tests/blocking.py``)."""


@pytest.fixture
def api(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sync"))


@pytest.fixture
def api_engine(engine: Engine, api: str) -> Iterator[Any]:
    """The engine the test's API runs on: ``engine`` itself for the sync API, an
    ``AsyncEngine`` on the same database for an async one (``NullPool``: no connection is
    shared between two event loops)."""
    if api in ("sync", "engine"):
        yield engine
        return
    async_engine = create_async_engine(async_url(engine, api), poolclass=NullPool)
    try:
        yield async_engine
    finally:
        run(async_engine.dispose())
        close_loop()


@pytest.fixture
def session(api_engine: Any) -> Iterator[Any]:
    """A ``Session`` on the test's engine; for an async API, an ``AsyncSession`` on the same
    database behind a blocking facade."""
    if isinstance(api_engine, Engine):
        with Session(api_engine) as session:
            yield session
            session.rollback()
        return
    asession = Blocking(AsyncSession(api_engine))
    yield asession
    asession.rollback()
    asession.close()


@pytest.fixture
def make_store(session: Any, api: str) -> Callable[..., Any]:
    """``make_store(config=None)``: an ``EventStore`` on the test's session, or an
    ``AsyncEventStore`` behind a blocking facade."""

    def make(config: EventStoreConfig | None = None) -> Any:
        if api == "sync":
            return EventStore(session, config)
        if api == "engine":
            return EngineEventStore(session.get_bind(), config)
        return Blocking(AsyncEventStore(session.target, config))

    return make


@pytest.fixture
def store(make_store: Callable[..., Any]) -> Any:
    return make_store()


@pytest.fixture
def statements(api_engine: Any) -> Iterator[list[str]]:
    """The SQL the engine runs during the test, in order. (A cursor listener also turns the
    direct path off: everything goes through Core, where it is seen.)"""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    engine = getattr(api_engine, "sync_engine", api_engine)
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def count_events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(text(f"SELECT count(*) FROM {sa_crablet.events_table.name}")).scalar_one()
        )
