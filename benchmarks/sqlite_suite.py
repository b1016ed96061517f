"""SQLite: sa_crablet (``create_sqlite_engine`` on a temporary file, WAL; ``EventStore`` in a
``Session`` per operation, and ``EngineEventStore``) against a raw stdlib ``sqlite3`` floor
with the same durability settings, on the same schema.

Both run with ``journal_mode=WAL``, once with ``synchronous=FULL`` (SQLite's default, and
the one these engines get unless told otherwise) and once with ``synchronous=NORMAL``. The
floor writes with ``BEGIN IMMEDIATE ... COMMIT``; its conditional append is one
``INSERT ... SELECT ... WHERE NOT EXISTS`` (SQLite has one writer at a time, so the check and
the insert cannot interleave with another writer's).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import event, text
from sqlalchemy.orm import sessionmaker

import sa_crablet
from benchmarks import timing
from benchmarks.pg_crablet import CrabletOps, EngineOps
from benchmarks.pg_suite import conditional_appender, log
from benchmarks.records import (
    SQLITE_CRABLET,
    SQLITE_ENGINE,
    SQLITE_FLOOR,
    Record,
    Settings,
    record,
)
from benchmarks.timing import Op
from benchmarks.workload import (
    COURSES,
    EVENTS_TABLE,
    STUDENTS,
    TYPES,
    Ev,
    EventSource,
    compact,
    course_tag,
    payload,
)

G = "sqlite"
E = EVENTS_TABLE
NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
INSERT_ONE = (
    f"INSERT INTO {E} (type, tags, data, recorded_at) VALUES (?, ?, ?, {NOW}) RETURNING position"
)
TAGS = "sa_crablet_event_tags"
# With sa_crablet's (tag, position) side table, when the schema has it (as sa_crablet's
# own statements use it); otherwise the tags' JSON array.
INSERT_IF = {
    True: (
        f"INSERT INTO {E} (type, tags, data, recorded_at) SELECT ?, ?, ?, {NOW} "
        f"WHERE NOT EXISTS (SELECT 1 FROM {TAGS} AS t JOIN {E} AS e ON e.position = t.position "
        "WHERE t.position > ? AND e.type = ? AND t.tag = ?) RETURNING position"
    ),
    False: (
        f"INSERT INTO {E} (type, tags, data, recorded_at) SELECT ?, ?, ?, {NOW} "
        f"WHERE NOT EXISTS (SELECT 1 FROM {E} AS e WHERE e.position > ? AND e.type = ? "
        "AND EXISTS (SELECT 1 FROM json_each(e.tags) WHERE value = ?)) RETURNING position"
    ),
}
READ = {
    True: (
        f"SELECT position, type, tags, data, metadata, recorded_at FROM {E} "
        f"WHERE type IN (?, ?, ?, ?) AND position IN (SELECT position FROM {TAGS} WHERE tag = ?) "
        "ORDER BY position"
    ),
    False: (
        f"SELECT position, type, tags, data, metadata, recorded_at FROM {E} "
        "WHERE type IN (?, ?, ?, ?) AND EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ?) "
        "ORDER BY position"
    ),
}


class CrabletSqlite(CrabletOps):
    name = SQLITE_CRABLET
    engine_options: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, path: Path, synchronous: str) -> None:
        self.engine = sa_crablet.create_sqlite_engine(str(path), **self.engine_options)

        @event.listens_for(self.engine, "connect")
        def _durability(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"PRAGMA synchronous = {synchronous}")

        self.sessions = sessionmaker(self.engine)

    def head(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(text(f"SELECT coalesce(max(position), 0) FROM {E}")).scalar_one()
            )

    def pragma(self, name: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(f"PRAGMA {name}")).scalar()


class EngineSqlite(EngineOps, CrabletSqlite):
    """``EngineEventStore`` on the same kind of engine: each operation its own transaction."""

    name = SQLITE_ENGINE
    # As the store's documentation advises: an engine in AUTOCOMMIT. Switching a pysqlite
    # connection back from AUTOCOMMIT runs a PRAGMA, and SQLite then re-prepares every
    # statement of the connection: about 350,000 instructions per append.
    engine_options: ClassVar[Mapping[str, Any]] = {"isolation_level": "AUTOCOMMIT"}

    def __init__(self, path: Path, synchronous: str) -> None:
        super().__init__(path, synchronous)
        self.store = sa_crablet.EngineEventStore(self.engine, self.config)


class FloorSqlite:
    name = SQLITE_FLOOR

    def __init__(self, path: Path, synchronous: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute(f"PRAGMA synchronous = {synchronous}")
        self.conn.execute("PRAGMA busy_timeout = 5000")
        found = self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (TAGS,))
        self.side_table = found.fetchone() is not None

    def head(self) -> int:
        return int(self.conn.execute(f"SELECT coalesce(max(position), 0) FROM {E}").fetchone()[0])

    def pragma(self, name: str) -> Any:
        return self.conn.execute(f"PRAGMA {name}").fetchone()[0]

    def append(self, ev: Ev) -> int:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(INSERT_ONE, (ev.type, json.dumps([ev.tag]), compact(ev.data))).fetchone()
        conn.execute("COMMIT")
        return int(row[0])

    def append_if(self, ev: Ev, types: Sequence[str], after: int) -> int | None:
        (type_,) = types
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        params = (ev.type, json.dumps([ev.tag]), compact(ev.data), after, type_, ev.tag)
        row = conn.execute(INSERT_IF[self.side_table], params).fetchone()
        conn.execute("COMMIT" if row is not None else "ROLLBACK")
        return None if row is None else int(row[0])

    def read(self, types: Sequence[str], tag: str) -> int:
        count = 0
        rows = self.conn.execute(READ[self.side_table], (*types, tag))
        for position, type_, tags, data, metadata, recorded_at in rows:
            # The same decoding a read hands to the application.
            _ = (position, type_, json.loads(tags), json.loads(data), metadata)
            _ = dt.datetime.fromisoformat(recorded_at).replace(tzinfo=dt.UTC)
            count += 1
        return count

    def close(self) -> None:
        self.conn.close()


def fill(path: Path, count: int) -> None:
    """The same rows in every file (seeded), in one transaction."""
    rng = random.Random(42)
    rows = []
    for n in range(1, count + 1):
        k = rng.randrange(COURSES)
        data = payload(k, rng.randrange(STUDENTS), 10 + n % 90)
        rows.append((TYPES[n % 4], json.dumps([course_tag(k)]), compact(data)))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        f"INSERT INTO {E} (type, tags, data, recorded_at) VALUES (?, ?, ?, {NOW})", rows
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def build(directory: Path, synchronous: str, fill_count: int) -> dict[str, Any]:
    """One file per contender, the same rows in each."""
    kinds = {SQLITE_CRABLET: CrabletSqlite, SQLITE_ENGINE: EngineSqlite, SQLITE_FLOOR: FloorSqlite}
    stores: dict[str, Any] = {}
    for i, (name, kind) in enumerate(kinds.items()):
        path = directory / f"store{i}-{synchronous.lower()}.db"
        engine = sa_crablet.create_sqlite_engine(str(path))
        sa_crablet.create_schema(engine)
        engine.dispose()
        fill(path, fill_count)
        stores[name] = kind(path, synchronous)
    return stores


def run(s: Settings, meta: dict[str, Any]) -> list[Record]:
    records: list[Record] = []
    with tempfile.TemporaryDirectory(prefix="sa_crablet_bench_") as tmp:
        for synchronous in ("FULL", "NORMAL"):
            log(f"SQLite, synchronous={synchronous}: three files of {s.sqlite_fill:,} events")
            stores = build(Path(tmp), synchronous, s.sqlite_fill)
            try:
                meta.setdefault("sqlite", {})[synchronous] = {
                    who.name: {
                        "journal_mode": who.pragma("journal_mode"),
                        "synchronous": who.pragma("synchronous"),
                    }
                    for who in stores.values()
                }
                meta["sqlite_tag_side_table"] = stores[SQLITE_FLOOR].side_table
                records += _writes(stores, s, synchronous)
                if synchronous == "FULL":
                    records += _reads(stores, s)
            finally:
                for store in stores.values():
                    store.close()
    return records


def _writes(stores: dict[str, Any], s: Settings, synchronous: str) -> list[Record]:
    records = []
    ops: dict[str, Op] = {}
    for name, store in stores.items():
        src = EventSource(11)

        def op(store: Any = store, src: EventSource = src) -> int:
            store.append(src.event())
            return 1

        ops[name] = op
    results = timing.interleaved(ops, rounds=s.sqlite_rounds, calls=s.sqlite_calls, warmup=20)
    title = f"append 1 event, no condition (WAL, synchronous={synchronous})"
    scenario = f"S1 sync={synchronous}"
    records += [record(G, scenario, title, n, "appends/s", sm) for n, sm in results.items()]
    ops = {name: conditional_appender(store, EventSource(12)) for name, store in stores.items()}
    results = timing.interleaved(ops, rounds=s.sqlite_rounds, calls=s.sqlite_calls, warmup=20)
    title = f"append 1 event with condition (WAL, synchronous={synchronous})"
    scenario = f"S2 sync={synchronous}"
    records += [record(G, scenario, title, n, "appends/s", sm) for n, sm in results.items()]
    return records


def _reads(stores: dict[str, Any], s: Settings) -> list[Record]:
    ops: dict[str, Op] = {}
    for name, store in stores.items():
        src = EventSource(14)

        def op(store: Any = store, src: EventSource = src) -> int:
            return int(store.read(TYPES, course_tag(src.course())))

        ops[name] = op
    results = timing.interleaved(ops, rounds=s.sqlite_rounds, calls=s.sqlite_read_calls, warmup=2)
    return [
        record(
            G,
            "S4",
            "read by query (4 types + 1 tag)",
            n,
            "reads/s",
            sm,
            rows_per_read=sm.units / max(1, sm.calls),
        )
        for n, sm in results.items()
    ]
