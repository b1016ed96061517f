"""Scenarios S1-S7 on PostgreSQL: sa_crablet, the floor and the peers in the same run, and
sa_crablet's ``AsyncEventStore`` on each async driver in S1, S2, S4, S6 and S7. The
TypeScript peer joins every scenario when it could be installed (see
``benchmarks.ts_peer.install``); it runs in a Node process of its own, a block of calls at a
time (``benchmarks.pg_ts_peer``).

Each contender gets its own fresh database (created, filled, ``VACUUM (ANALYZE)``-ed,
dropped at the end). Reads (S4, S5) run first on the freshly filled stores; appends follow;
S3 (the largest growth) runs last.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import sa_crablet
from benchmarks import pg_async, pg_ts_peer, timing
from benchmarks.pg_async import AsyncCrabletPg
from benchmarks.pg_crablet import CrabletPg, EnginePg, engine_for
from benchmarks.pg_floor import FloorPg
from benchmarks.pg_peer import PeerPg
from benchmarks.pg_ts_peer import TsPeerPg
from benchmarks.records import (
    ASYNC_ASYNCPG,
    ASYNC_PSYCOPG,
    CRABLET,
    ENGINE,
    FLOOR,
    FLOOR_AC,
    PEER,
    TS_PEER,
    Record,
    Settings,
    record,
)
from benchmarks.timing import AnyOp, Op, Samples
from benchmarks.ts_peer.install import Installation
from benchmarks.workload import (
    COURSES,
    TYPES,
    Ev,
    EventSource,
    connect,
    course_tag,
    create_database,
    drop_database,
    fill_crablet_schema,
    fill_peer_schema,
    fill_ts_peer_schema,
    make_subscription,
    payload,
)

G = "postgresql"
MAIN = (CRABLET, FLOOR, PEER)
"""The contenders of every scenario, S8's too."""
SHAPES = (CRABLET, ENGINE, FLOOR, PEER)
"""S1-S7: both store shapes (Session-bound and engine-owned), the floor and the peer."""
ASYNC_DRIVERS = {ASYNC_PSYCOPG: "psycopg", ASYNC_ASYNCPG: "asyncpg"}
DATABASE_SUFFIX = {
    CRABLET: "crablet",
    ENGINE: "engine",
    FLOOR: "floor",
    PEER: "peer",
    ASYNC_PSYCOPG: "async_psycopg",
    ASYNC_ASYNCPG: "async_asyncpg",
    TS_PEER: "ts_peer",
}
SCENARIOS = ("S1", "S2", "S2'", "S3", "S4", "S5", "S6", "S7")
"""What ``--scenarios`` can select (S3 holds both batch sizes, S7 both S7a and S7b)."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Stores:
    """The contenders of one run, each on its own database."""

    crablet: CrabletPg
    engine: EnginePg
    floor: FloorPg
    floor_ac: FloorPg
    peer: PeerPg
    asyncs: dict[str, AsyncCrabletPg]
    databases: dict[str, str]
    ts_peer: TsPeerPg | None = None

    def main(self) -> dict[str, Any]:
        return {CRABLET: self.crablet, ENGINE: self.engine, FLOOR: self.floor, PEER: self.peer}

    def close(self) -> None:
        for store in (self.crablet, self.engine, self.floor, self.floor_ac, self.peer):
            store.close()
        for astore in self.asyncs.values():
            astore.close()
        if self.ts_peer is not None:
            self.ts_peer.close()


def build_databases(
    dsn: str,
    prefix: str,
    fill: int,
    courses: int,
    meta: dict[str, Any],
    contenders: Sequence[str] = MAIN,
    ts_peer: Installation | None = None,
) -> dict[str, str]:
    """Create, migrate and fill one database per contender; return contender -> database.
    The TypeScript peer (among ``contenders``) needs its ``ts_peer`` installation."""
    names = {c: f"{prefix}_{DATABASE_SUFFIX[c]}" for c in contenders}
    for contender, db in names.items():
        create_database(dsn, db)
        if contender == PEER:
            peer = PeerPg(dsn, db)
            peer.create_schema()
            peer.close()
        elif contender == TS_PEER:
            assert ts_peer is not None, "the TypeScript peer needs its installation"
            ts = TsPeerPg(dsn, db, ts_peer)
            try:
                ts.create_schema()
            finally:
                ts.close()
        else:
            engine = engine_for(dsn, db, pool_size=1)
            sa_crablet.upgrade(engine)  # the floor's schema is sa_crablet's, indexes included
            engine.dispose()
        with connect(dsn, db) as conn:
            if contender == PEER:
                seconds = fill_peer_schema(conn, fill, courses)
            elif contender == TS_PEER:
                seconds = fill_ts_peer_schema(conn, fill, courses)
            else:
                seconds = fill_crablet_schema(conn, fill, courses)
        meta.setdefault("fill_seconds", {})[db] = round(seconds, 2)
        log(f"  filled {db}: {fill:,} events in {seconds:.1f}s (+ VACUUM ANALYZE)")
    return names


def open_stores(
    dsn: str, names: dict[str, str], ts_peer: Installation | None = None, writers: int = 8
) -> Stores:
    ts = None
    if ts_peer is not None and TS_PEER in names:  # a pool of one connection per S7 writer
        ts = TsPeerPg(dsn, names[TS_PEER], ts_peer, pool_size=writers)
    return Stores(
        crablet=CrabletPg(dsn, names[CRABLET]),
        engine=EnginePg(dsn, names[ENGINE]),
        floor=FloorPg(dsn, names[FLOOR]),
        floor_ac=FloorPg(dsn, names[FLOOR], autocommit=True),
        peer=PeerPg(dsn, names[PEER]),
        asyncs={
            name: AsyncCrabletPg(dsn, names[name], driver) for name, driver in ASYNC_DRIVERS.items()
        },
        databases=names,
        ts_peer=ts,
    )


# -- scenarios ------------------------------------------------------------------------------------


def s4_reads(stores: Stores, s: Settings, courses: int = COURSES) -> list[Record]:
    contenders = {**stores.main(), FLOOR_AC: stores.floor_ac}
    ops: dict[str, AnyOp] = {}
    for name, store in contenders.items():
        src = EventSource(4, courses)
        ops[name] = reader(store, src)
    for name, astore in stores.asyncs.items():
        ops[name] = pg_async.reader(astore, EventSource(4, courses))
    if stores.ts_peer is not None:
        ops[TS_PEER] = pg_ts_peer.reader(stores.ts_peer, EventSource(4, courses))
    results = timing.interleaved(ops, rounds=s.rounds, calls=s.read_calls, warmup=s.warmup)
    return [
        record(
            G,
            "S4",
            "read by query (4 types + 1 tag)",
            name,
            "reads/s",
            sm,
            rows_per_read=sm.units / max(1, sm.calls),
        )
        for name, sm in results.items()
    ]


def reader(store: Any, src: EventSource) -> Op:
    def op() -> int:
        return int(store.read(TYPES, course_tag(src.course())))

    return op


def s5_full_read(stores: Stores, s: Settings, dsn: str) -> list[Record]:
    ops: dict[str, AnyOp] = {name: store.read_all for name, store in stores.main().items()}
    if stores.ts_peer is not None:
        ops[TS_PEER] = pg_ts_peer.full_reader(stores.ts_peer)
    results = timing.interleaved(ops, rounds=s.s5_rounds, calls=1, warmup=1)
    records = []
    for name, sm in results.items():
        extra: dict[str, Any] = {"events_per_read": sm.units / max(1, sm.calls)}
        if s.memory and stores.ts_peer is not None and name == TS_PEER:
            extra.update(pg_ts_peer.measure_memory(stores.ts_peer))
        elif s.memory:
            extra.update(measure_memory(dsn, name, stores.databases[name]))
        records.append(record(G, "S5", "full read", name, "events/s", sm, per="unit", **extra))
    return records


def measure_memory(dsn: str, contender: str, db: str) -> dict[str, Any]:
    """Peak memory growth of a full read, in a fresh interpreter (see benchmarks.memory)."""
    command = [sys.executable, "-m", "benchmarks.memory", contender, "--dsn", dsn, "--db", db]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        log(f"  memory measurement failed for {contender}: {done.stderr.strip()[-500:]}")
        return {"memory_error": done.stderr.strip()[-200:]}
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def s1_appends(stores: Stores, s: Settings) -> list[Record]:
    contenders = {**stores.main(), FLOOR_AC: stores.floor_ac}
    ops: dict[str, AnyOp] = {}
    for name, store in contenders.items():
        src = EventSource(1)
        ops[name] = _appender(store, src)
    for name, astore in stores.asyncs.items():
        ops[name] = pg_async.appender(astore, EventSource(1))
    if stores.ts_peer is not None:
        ops[TS_PEER] = pg_ts_peer.appender(stores.ts_peer, EventSource(1))
    results = timing.interleaved(ops, rounds=s.rounds, calls=s.calls, warmup=s.warmup)
    title = "append 1 event, no condition"
    return [record(G, "S1", title, n, "appends/s", sm) for n, sm in results.items()]


def _appender(store: Any, src: EventSource) -> Op:
    def op() -> int:
        store.append(src.event())
        return 1

    return op


def s2_conditional(stores: Stores, s: Settings) -> list[Record]:
    ops: dict[str, AnyOp] = {}
    for name, store in stores.main().items():
        ops[name] = conditional_appender(store, EventSource(2))
    for name, astore in stores.asyncs.items():
        ops[name] = pg_async.conditional_appender(astore, EventSource(2))
    if stores.ts_peer is not None:
        ops[TS_PEER] = pg_ts_peer.conditional_appender(stores.ts_peer, EventSource(2))
    results = timing.interleaved(ops, rounds=s.rounds, calls=s.calls, warmup=s.warmup)
    title = "append 1 event with condition (type + tag, after = head)"
    return [record(G, "S2", title, n, "appends/s", sm) for n, sm in results.items()]


def conditional_appender(store: Any, src: EventSource) -> Op:
    """S2: every append is conditional on its (type, tag) after the head it knows (the
    store's head when it first runs, then the position of its own last append)."""
    after: list[int | None] = [None]

    def op() -> int:
        if after[0] is None:
            after[0] = store.head()
        ev = src.event()
        position = store.append_if(ev, (ev.type,), after[0])
        if position is None:
            raise RuntimeError(f"{store.name}: unexpected conflict in a single-writer S2")
        after[0] = position
        return 1

    return op


def s2_rejected(stores: Stores, s: Settings) -> list[Record]:
    every = {**stores.main(), **({TS_PEER: stores.ts_peer} if stores.ts_peer else {})}
    lasts = {name: store.last_positions() for name, store in every.items()}
    keys = sorted(set.intersection(*(set(v) for v in lasts.values())))
    ops: dict[str, AnyOp] = {}
    for name, store in stores.main().items():
        ops[name] = _rejected_appender(store, EventSource(3), keys, lasts[name])
    if stores.ts_peer is not None:
        ops[TS_PEER] = pg_ts_peer.rejected_appender(
            stores.ts_peer, EventSource(3), keys, lasts[TS_PEER]
        )
    results = timing.interleaved(ops, rounds=s.rounds, calls=s.calls, warmup=s.warmup)
    title = "the same append, rejected (stale after)"
    return [record(G, "S2'", title, n, "rejections/s", sm) for n, sm in results.items()]


def _rejected_appender(
    store: Any, src: EventSource, keys: list[tuple[str, str]], last: dict[tuple[str, str], int]
) -> Op:
    def op() -> int:
        type_, tag = keys[src.rng.randrange(len(keys))]
        ev = Ev(type_, tag, payload(int(tag.split(":")[1]), 1, 50))
        # One event of this (type, tag) lies after `after`: the writer's view is one stale.
        if store.append_if(ev, (type_,), last[(type_, tag)] - 1) is not None:
            raise RuntimeError(f"{store.name}: a stale append was accepted")
        return 1

    return op


def s6_decisions(stores: Stores, s: Settings) -> list[Record]:
    ops: dict[str, AnyOp] = {}
    conflicts: dict[str, int] = {}
    for name, store in stores.main().items():
        ops[name] = _decider(store, EventSource(6), conflicts, name)
    for name, astore in stores.asyncs.items():
        ops[name] = pg_async.decider(astore, EventSource(6), conflicts)
    if stores.ts_peer is not None:
        ops[TS_PEER] = pg_ts_peer.decider(stores.ts_peer, EventSource(6), conflicts)
    results = timing.interleaved(ops, rounds=s.rounds, calls=s.decide_calls, warmup=s.warmup)
    title = "decision cycle: read scope, decide, conditional append (1 writer)"
    return [
        record(G, "S6", title, n, "cycles/s", sm, conflicts=conflicts.get(n, 0))
        for n, sm in results.items()
    ]


def _decider(store: Any, src: EventSource, conflicts: dict[str, int], name: str) -> Op:
    def op() -> int:
        tag = course_tag(src.course())
        if not store.decide(TYPES, tag, make_subscription(tag, src)):
            conflicts[name] = conflicts.get(name, 0) + 1
        return 1

    return op


Outcome = tuple[Samples, list[str]]


def s7_writers(stores: Stores, s: Settings) -> list[Record]:
    """S7a (distinct tags) and S7b (one tag), ``s.writers`` threads per contender (asyncio
    tasks in one event loop for the async ones, async tasks in Node's for the TypeScript
    peer)."""
    totals: dict[str, dict[str, Samples]] = {"S7a": {}, "S7b": {}}
    errors: dict[str, list[str]] = {}
    violations: dict[str, int] = {}
    names = [*stores.main(), *stores.asyncs, *([TS_PEER] if stores.ts_peer else [])]
    for r in range(s.writer_rounds):
        for name in timing.rotated(names, r):
            # S7b: every writer runs decision cycles on the same, fresh tag.
            hot = f"course:hot-{r}"
            store: Any
            if name == TS_PEER:
                store = stores.ts_peer
                distinct, decisions = pg_ts_peer.writers(store, s.writers, s.writer_seconds, hot)
            elif name in stores.asyncs:
                store = stores.asyncs[name]
                distinct, decisions = _async_writers(store, s, hot)
            else:
                store = stores.main()[name]
                distinct, decisions = _threaded_writers(store, s, hot)
            for scenario, (sm, errs) in (("S7a", distinct), ("S7b", decisions)):
                totals[scenario].setdefault(name, Samples()).add(sm)
                errors.setdefault(name, []).extend(errs)
            successes = decisions[0].units
            violations[name] = violations.get(name, 0) + _violations(store, hot, successes)
    records = []
    for name in names:
        a, b = totals["S7a"][name], totals["S7b"][name]
        errs = errors.get(name, [])
        records.append(
            record(
                G,
                "S7a",
                f"{s.writers} writers, distinct tags (conditional)",
                name,
                "appends/s",
                a,
                per="unit",
                conflicts=a.counters.get("conflicts", 0),
                errors=len(errs),
            )
        )
        records.append(
            record(
                G,
                "S7b",
                f"{s.writers} writers, same tag (decision cycles)",
                name,
                "successful appends/s",
                b,
                per="unit",
                attempts=b.calls,
                conflict_rate=b.counters.get("conflicts", 0) / max(1, b.calls),
                violations=violations.get(name, 0),
                errors=len(errs),
                error_samples=sorted(set(errs))[:3],
            )
        )
    return records


def _distinct_writer(store: Any, src: EventSource, k: int, head: int) -> timing.WriterStep:
    after = [head]

    def step() -> bool:
        ev = src.event(k=k)
        position = store.append_if(ev, (ev.type,), after[0])
        if position is None:
            return False
        after[0] = position
        return True

    return step


def _hot_writer(store: Any, src: EventSource, tag: str) -> timing.WriterStep:
    make = make_subscription(tag, src)

    def step() -> bool:
        return bool(store.decide(TYPES, tag, make))

    return step


def _threaded_writers(store: Any, s: Settings, hot: str) -> tuple[Outcome, Outcome]:
    """One S7a run and one S7b run (on tag ``hot``), one thread per writer."""
    writers = store.writers(s.writers)
    # S7a: writer i appends on its own course, conditional on its own head.
    head = store.head()
    steps = [
        _distinct_writer(w, EventSource(100 + i), COURSES + i, head) for i, w in enumerate(writers)
    ]
    distinct = timing.run_writers(steps, s.writer_seconds)
    steps = [_hot_writer(w, EventSource(200 + i), hot) for i, w in enumerate(writers)]
    return distinct, timing.run_writers(steps, s.writer_seconds)


def _async_writers(store: AsyncCrabletPg, s: Settings, hot: str) -> tuple[Outcome, Outcome]:
    """The same with one asyncio task per writer, in the store's event loop."""
    head = store.head()
    steps = [
        pg_async.distinct_writer(store, EventSource(100 + i), COURSES + i, head)
        for i in range(s.writers)
    ]
    distinct = store.writers(steps, s.writer_seconds)
    hot_steps = [pg_async.hot_writer(store, EventSource(200 + i), hot) for i in range(s.writers)]
    return distinct, store.writers(hot_steps, s.writer_seconds)


def _violations(store: Any, tag: str, successes: int) -> int:
    """Each successful decision saw every earlier event of the scope: the i-th event (in
    position order) must say it saw i events, and there must be exactly one per success."""
    seen = store.scope_seen(tag)
    wrong = sum(1 for i, value in enumerate(seen) if value != i)
    return wrong + abs(len(seen) - successes)


def s3_batches(stores: Stores, s: Settings) -> list[Record]:
    records = []
    for batches, size in ((100, 100), (10, 1000)):
        ops: dict[str, AnyOp] = {}
        for name, store in stores.main().items():
            ops[name] = _batcher(store, EventSource(30 + size), size)
        if stores.ts_peer is not None:
            ops[TS_PEER] = pg_ts_peer.batcher(stores.ts_peer, EventSource(30 + size), size)
        results = timing.interleaved(ops, rounds=s.s3_rounds, calls=batches, warmup=1)
        scenario = f"S3 {batches}x{size}"
        title = f"batch append, {batches} batches of {size} events"
        records += [
            record(G, scenario, title, n, "events/s", sm, per="unit") for n, sm in results.items()
        ]
    return records


def _batcher(store: Any, src: EventSource, size: int) -> Op:
    def op() -> int:
        return int(store.append_batch(src.batch(size)))

    return op


# -- the suite ------------------------------------------------------------------------------------


def run(
    dsn: str,
    s: Settings,
    meta: dict[str, Any],
    prefix: str,
    ts_peer: Installation | None = None,
    scenarios: Collection[str] = SCENARIOS,
) -> list[Record]:
    """Every contender through ``scenarios``; the TypeScript peer too with its installation."""
    contenders = [*SHAPES, *ASYNC_DRIVERS, *([TS_PEER] if ts_peer else [])]
    log(f"PostgreSQL: building {len(contenders)} stores of {s.fill:,} events")
    names = build_databases(dsn, prefix, s.fill, COURSES, meta, contenders, ts_peer)
    stores = open_stores(dsn, names, ts_peer, s.writers)
    records: list[Record] = []
    steps: list[tuple[str, Callable[[], list[Record]]]] = [
        ("S4", lambda: s4_reads(stores, s)),
        ("S5", lambda: s5_full_read(stores, s, dsn)),
        ("S1", lambda: s1_appends(stores, s)),
        ("S2", lambda: s2_conditional(stores, s)),
        ("S2'", lambda: s2_rejected(stores, s)),
        ("S6", lambda: s6_decisions(stores, s)),
        ("S7", lambda: s7_writers(stores, s)),
        ("S3", lambda: s3_batches(stores, s)),
    ]
    try:
        for label, step in steps:
            if label not in scenarios:
                continue
            started = time.perf_counter()
            records += step()
            log(f"  {label} done in {time.perf_counter() - started:.1f}s")
    finally:
        stores.close()
        for db in names.values():
            drop_database(dsn, db)
    return records
