"""sa_crablet on PostgreSQL, used as an application would: one ``Session`` per operation,
``EventStore`` bound to it, committed at the end (``sessionmaker.begin()``); and
``EngineEventStore``, the store that owns its transactions, on the engine itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import URL, Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

import sa_crablet
from benchmarks.pg_inspect import CrabletSchemaInspector
from benchmarks.workload import Ev, dsn_params
from sa_crablet import (
    AppendCondition,
    ConcurrencyError,
    EngineEventStore,
    Event,
    EventStore,
    EventStoreConfig,
    Query,
)
from sa_crablet.projectors import counter
from sa_crablet.streams import ReadResult


def url_for(dsn: str, dbname: str, driver: str = "psycopg") -> URL:
    """The SQLAlchemy URL of database ``dbname`` on the server of ``dsn``."""
    p = dsn_params(dsn)
    return URL.create(
        f"postgresql+{driver}",
        username=p["user"],
        password=p["password"] or None,
        host=p["host"],
        port=p["port"],
        database=dbname,
    )


def engine_for(dsn: str, dbname: str, pool_size: int = 10, **options: Any) -> Engine:
    return create_engine(url_for(dsn, dbname), pool_size=pool_size, max_overflow=0, **options)


def consumed(result: ReadResult) -> int:
    """Every event of a read, and its head, as an application consumes them."""
    count = 0
    for _ in result:
        count += 1
    _ = result.head
    return count


class CrabletOps:
    """The operations, on any engine (PostgreSQL or SQLite)."""

    name = "sa_crablet"
    engine: Engine
    sessions: sessionmaker[Session]
    config: EventStoreConfig | None = None  # the defaults, as an application gets them

    def append(self, ev: Ev) -> int:
        with self.sessions.begin() as session:
            return EventStore(session, self.config).append(Event(ev.type, (ev.tag,), ev.data))

    def append_if(self, ev: Ev, types: Sequence[str], after: int) -> int | None:
        condition = AppendCondition(Query.of(types=types, tags=[ev.tag]), after)
        try:
            with self.sessions.begin() as session:
                return EventStore(session, self.config).append(
                    Event(ev.type, (ev.tag,), ev.data), condition
                )
        except ConcurrencyError:
            return None

    def append_batch(self, evs: Sequence[Ev]) -> int:
        with self.sessions.begin() as session:
            EventStore(session, self.config).append([Event(e.type, (e.tag,), e.data) for e in evs])
        return len(evs)

    def read(self, types: Sequence[str], tag: str) -> int:
        return self._consume(Query.of(types=types, tags=[tag]))

    def read_all(self) -> int:
        return self._consume(Query.all())

    def _consume(self, query: Query) -> int:
        with self.sessions.begin() as session:
            return consumed(EventStore(session, self.config).read(query))

    def decide(self, types: Sequence[str], tag: str, make: Callable[[int], Ev]) -> bool:
        """A decision cycle: project the scope (one counter), decide, append on condition."""
        query = Query.of(types=types, tags=[tag])
        try:
            with self.sessions.begin() as session:
                store = EventStore(session, self.config)
                model = store.project([counter("n", query)])
                ev = make(model["n"])
                store.append(Event(ev.type, (ev.tag,), ev.data), model.append_condition)
        except ConcurrencyError:
            return False
        return True

    def writers(self, count: int) -> list[Any]:
        return [self] * count  # the engine's pool serves every thread

    def close(self) -> None:
        self.engine.dispose()


class CrabletPg(CrabletSchemaInspector, CrabletOps):
    def __init__(self, dsn: str, dbname: str) -> None:
        super().__init__(dsn, dbname)
        self.engine = engine_for(dsn, dbname)
        self.sessions = sessionmaker(self.engine)

    def create_schema(self) -> None:
        sa_crablet.upgrade(self.engine)


class EngineOps(CrabletOps):
    """The same operations on an ``EngineEventStore``: each one its own transaction, no
    ``Session`` (what a service or a worker whose only write is the events would use)."""

    name = "sa_crablet (engine)"
    store: EngineEventStore

    def append(self, ev: Ev) -> int:
        return self.store.append(Event(ev.type, (ev.tag,), ev.data))

    def append_if(self, ev: Ev, types: Sequence[str], after: int) -> int | None:
        condition = AppendCondition(Query.of(types=types, tags=[ev.tag]), after)
        try:
            return self.store.append(Event(ev.type, (ev.tag,), ev.data), condition)
        except ConcurrencyError:
            return None

    def append_batch(self, evs: Sequence[Ev]) -> int:
        self.store.append([Event(e.type, (e.tag,), e.data) for e in evs])
        return len(evs)

    def _consume(self, query: Query) -> int:
        return consumed(self.store.read(query))

    def decide(self, types: Sequence[str], tag: str, make: Callable[[int], Ev]) -> bool:
        query = Query.of(types=types, tags=[tag])
        model = self.store.project([counter("n", query)])
        ev = make(model["n"])
        try:
            self.store.append(Event(ev.type, (ev.tag,), ev.data), model.append_condition)
        except ConcurrencyError:
            return False
        return True


class EnginePg(CrabletSchemaInspector, EngineOps):
    def __init__(self, dsn: str, dbname: str) -> None:
        super().__init__(dsn, dbname)
        # As the store's documentation advises for an engine of its own: connections that
        # come in AUTOCOMMIT need no switch per operation (the peer's pool autocommits too).
        self.engine = engine_for(dsn, dbname, isolation_level="AUTOCOMMIT")
        self.store = EngineEventStore(self.engine, self.config)
