"""The ways a host application can hold its connection, for tests that must hold on all of
them: isolation levels, AUTOCOMMIT, SQLAlchemy Core with a listener (which turns the direct
path off), Core by configuration, and on SQLite a transaction the application begins itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session

from sa_crablet import EventStore, EventStoreConfig, create_sqlite_engine


@dataclass(frozen=True)
class Host:
    name: str
    backend: str
    isolation: str | None = None
    direct: bool = True
    listener: bool = False
    begins: bool = False  # SQLite: the application emits BEGIN itself before its first read

    @property
    def autocommit(self) -> bool:
        return self.isolation == "AUTOCOMMIT"

    def config(self, **settings: Any) -> EventStoreConfig:
        return replace(EventStoreConfig(direct_execution=self.direct), **settings)

    @contextmanager
    def engine(self, base: Engine) -> Iterator[Engine]:
        """``base`` (the test's migrated database) as this host holds it."""
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

    def session(self, engine: Engine) -> Session:
        """A session as this host opens one (with its own BEGIN, if it issues one)."""
        session = Session(engine)
        if self.begins:
            session.connection().exec_driver_sql("BEGIN")
        return session

    def store(self, session: Session, **settings: Any) -> EventStore:
        return EventStore(session, self.config(**settings))


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
)
SQLITE_HOSTS = (
    Host("default", "sqlite"),
    Host("listener", "sqlite", listener=True),
    Host("autocommit", "sqlite", "AUTOCOMMIT"),
    Host("application-begin", "sqlite", begins=True),
)
HOSTS = POSTGRESQL_HOSTS + SQLITE_HOSTS
