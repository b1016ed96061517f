"""The ways a host application can hold its connection, for tests that must hold on all of
them: isolation levels, AUTOCOMMIT, SQLAlchemy Core with a listener (which turns the direct
path off), Core by configuration, and on SQLite a transaction the application begins itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from sa_crablet import (
    AsyncCommandExecutor,
    AsyncEventStore,
    CommandExecutor,
    EngineEventStore,
    EventStore,
    EventStoreConfig,
    create_sqlite_engine,
)
from tests.blocking import Awaiting, Blocking, ThreadBarrier, run
from tests.helpers import run_parallel

T = TypeVar("T")


@dataclass(frozen=True)
class Host:
    name: str
    backend: str
    isolation: str | None = None
    direct: bool = True
    listener: bool = False
    begins: bool = False  # SQLite: the application emits BEGIN itself before its first read
    api: str = "sync"  # "engine" (EngineEventStore), or the async driver: "psycopg-async",
    # "asyncpg", "aiosqlite"

    @property
    def is_async(self) -> bool:
        return self.api not in ("sync", "engine")

    @property
    def autocommit(self) -> bool:
        return self.isolation == "AUTOCOMMIT"

    def config(self, **settings: Any) -> EventStoreConfig:
        return replace(EventStoreConfig(direct_execution=self.direct), **settings)

    @contextmanager
    def engine(self, base: Engine) -> Iterator[Any]:
        """``base`` (the test's migrated database) as this host holds it (an ``AsyncEngine``
        on the same database for an async host)."""
        if self.is_async:
            yield from self._async_engine(base)
            return
        engine = base
        if self.listener:  # a separate engine: the listener must not outlive the test
            if self.backend == "sqlite":
                engine = create_sqlite_engine(str(base.url.database))
            else:
                engine = create_engine(base.url, pool_size=20, max_overflow=20)
            event.listen(engine, "before_cursor_execute", _traced)
        try:
            if self.isolation is not None:
                yield engine.execution_options(isolation_level=self.isolation)
            else:
                yield engine
        finally:
            if engine is not base:
                engine.dispose()

    def _async_engine(self, base: Engine) -> Iterator[Any]:
        engine = create_async_engine(async_url(base, self.api), poolclass=NullPool)
        if self.listener:
            event.listen(engine.sync_engine, "before_cursor_execute", _traced)
        try:
            if self.isolation is not None:
                yield engine.execution_options(isolation_level=self.isolation)
            else:
                yield engine
        finally:
            run(engine.dispose())

    def session(self, engine: Any) -> Any:
        """A session as this host opens one (with its own BEGIN, if it issues one): an
        ``AsyncSession`` behind a blocking facade for an async host."""
        session: Any = Blocking(AsyncSession(engine)) if self.is_async else Session(engine)
        if self.begins:
            session.connection().exec_driver_sql("BEGIN")
        return session

    def store(self, session: Any, **settings: Any) -> Any:
        """The store this host uses: on ``session``, or, engine-owned, on its engine."""
        if self.api == "engine":
            return EngineEventStore(session.get_bind(), self.config(**settings))
        if self.api == "sync":
            return EventStore(session, self.config(**settings))
        return Blocking(AsyncEventStore(session.target, self.config(**settings)), session.runner)

    # -- the async API, on either kind of host (for bodies that race real asyncio tasks) ----

    def async_session(self, engine: Any) -> Any:
        """An ``AsyncSession`` for an async host; a ``Session`` behind an async facade for a
        sync one (with the host's own BEGIN, if it issues one, when it is entered)."""
        if not self.is_async:
            return Awaiting(self.session(engine))
        return _BeginningAsyncSession(engine) if self.begins else AsyncSession(engine)

    def async_store(self, session: Any, **settings: Any) -> Any:
        if not self.is_async:
            return Awaiting(self.store(session.target, **settings))
        return AsyncEventStore(session, self.config(**settings))

    def async_executor(self, bind: Any, **options: Any) -> Any:
        if not self.is_async:
            return Awaiting(CommandExecutor(bind, config=self.config(), **options))
        return AsyncCommandExecutor(bind, config=self.config(), **options)

    def race(self, count: int, body: Callable[[int, Any], Coroutine[Any, Any, T]]) -> list[T]:
        """Run ``body(i, barrier)`` ``count`` times at once and return the results in order:
        on a sync host in threads (each with its own event loop), on an async host as
        asyncio tasks on one loop, each on a connection of its own; ``await barrier.wait()``
        releases them together."""
        if not self.is_async:
            barrier = ThreadBarrier(count)
            return run_parallel(count, lambda i, _b: asyncio.run(body(i, barrier)))

        async def together() -> list[T]:
            barrier = asyncio.Barrier(count)
            return list(await asyncio.gather(*(body(i, barrier) for i in range(count))))

        return asyncio.run(together())

    def executor(self, bind: Any, **options: Any) -> Any:
        """A command executor on a session (host mode) or an engine (managed)."""
        if not self.is_async:
            return CommandExecutor(bind, config=self.config(), **options)
        target = bind.target if isinstance(bind, Blocking) else bind
        runner = bind.runner if isinstance(bind, Blocking) else None
        return Blocking(AsyncCommandExecutor(target, config=self.config(), **options), runner)


def async_url(engine: Engine, api: str) -> str:
    """The URL of ``engine``'s database for an async driver."""
    driver = {"aiosqlite": "sqlite+aiosqlite", "psycopg-async": "postgresql+psycopg"}.get(
        api, "postgresql+asyncpg"
    )
    return engine.url.set(drivername=driver).render_as_string(hide_password=False)


class _BeginningAsyncSession(AsyncSession):
    """An ``AsyncSession`` whose application issues its own ``BEGIN`` when it opens."""

    async def __aenter__(self) -> _BeginningAsyncSession:
        connection = await self.connection()
        await connection.exec_driver_sql("BEGIN")
        return self


def _traced(*args: Any) -> None:
    """What a tracing integration does, as far as SQLAlchemy can tell: it listens."""


POSTGRESQL_HOSTS = (
    Host("read-committed", "postgresql"),
    Host("read-committed-core", "postgresql", direct=False),
    Host("read-committed-listener", "postgresql", listener=True),
    Host("repeatable-read", "postgresql", "REPEATABLE READ"),
    Host("repeatable-read-core", "postgresql", "REPEATABLE READ", direct=False),
    Host("serializable", "postgresql", "SERIALIZABLE"),
    Host("serializable-listener", "postgresql", "SERIALIZABLE", listener=True),
    Host("autocommit", "postgresql", "AUTOCOMMIT"),
    Host("autocommit-core", "postgresql", "AUTOCOMMIT", direct=False),
    Host("autocommit-listener", "postgresql", "AUTOCOMMIT", listener=True),
    Host("engine-owned", "postgresql", api="engine"),
    Host("engine-owned-core", "postgresql", direct=False, api="engine"),
    Host("engine-owned-listener", "postgresql", listener=True, api="engine"),
    Host("engine-owned-serializable-engine", "postgresql", "SERIALIZABLE", api="engine"),
)
SQLITE_HOSTS = (
    Host("default", "sqlite"),
    Host("listener", "sqlite", listener=True),
    Host("autocommit", "sqlite", "AUTOCOMMIT"),
    Host("application-begin", "sqlite", begins=True),
    Host("engine-owned", "sqlite", api="engine"),
    Host("engine-owned-listener", "sqlite", listener=True, api="engine"),
)
ASYNC_POSTGRESQL_HOSTS = tuple(
    Host(f"{api}-{name}", "postgresql", isolation, api=api)
    for api in ("psycopg-async", "asyncpg")
    for name, isolation in (
        ("read-committed", None),
        ("repeatable-read", "REPEATABLE READ"),
        ("serializable", "SERIALIZABLE"),
        ("autocommit", "AUTOCOMMIT"),
    )
)
ASYNC_HOSTS = (
    *ASYNC_POSTGRESQL_HOSTS,
    Host("psycopg-async-core", "postgresql", direct=False, api="psycopg-async"),
    Host("aiosqlite", "sqlite", api="aiosqlite"),
    Host("aiosqlite-autocommit", "sqlite", "AUTOCOMMIT", api="aiosqlite"),
    Host("aiosqlite-application-begin", "sqlite", begins=True, api="aiosqlite"),
)
HOSTS = POSTGRESQL_HOSTS + SQLITE_HOSTS + ASYNC_HOSTS
