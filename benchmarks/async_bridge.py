"""Bridge or native: ``python -m benchmarks.async_bridge``.

``AsyncEventStore`` runs the synchronous store's one logic inside SQLAlchemy's greenlet
bridge (``AsyncSession.run_sync``): every statement the store sends is awaited through a
greenlet switch (``await_``). The alternative is a native async path: the same plans, their
statements awaited directly on psycopg's ``AsyncConnection``, no greenlet. This module
measures what the bridge costs, on S1 (append, no condition), S2 (conditional append after
the writer's own head) and S7a (8 writers on distinct tags, asyncio tasks in one loop).

The native path exists here only, as a minimal prototype of a session-bound append built
from the library's own parts: the plan (``_plans.appends.append_plan``, ``Scope``, the lock
plan), each statement's SQL text and binding (``_runners.psycopg.compiled``), and the same
unit the psycopg runner sends (one prepared statement, or several statements as one query
string bound client side). Its logic is written once, as a generator of the driver's
awaitables, and driven two ways: with native ``await`` and, inside ``run_sync``, with
``await_``. So the contenders, on their own databases and interleaved, are:

* ``EventStore`` (sync): the synchronous store on the sync psycopg engine (threads in S7a);
* ``AsyncEventStore`` (bridge): what ships;
* prototype in the bridge: the prototype's logic in ``run_sync``, awaiting via ``await_``;
* prototype, native: the same logic with ``await``, in the same ``AsyncSession`` shape;
* prototype, bare connection: the same, on a psycopg ``AsyncConnection`` of its own, with
  no ``AsyncSession`` or pool (what SQLAlchemy's asyncio layer itself costs).

"Prototype in the bridge" against "prototype, native" is the bridge's cost alone (same
logic, same session, same statements); "AsyncEventStore" against "prototype, native" is
what a native store could gain at most. Then where the bridge's time goes: greenlet
switches per operation (counted with ``greenlet.settrace``), the cost of a switch (timed
on this machine), and pyinstrument call trees of a few hundred appends.

Writes ``benchmarks/results/async_bridge.{md,json}`` and the call trees under
``benchmarks/results/async_bridge/``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import greenlet  # type: ignore[import-untyped]
import psycopg
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.util import await_, greenlet_spawn

import sa_crablet
from benchmarks import pg_async, timing
from benchmarks.__main__ import DEFAULT_DSN, RESULTS, machine, revision, versions
from benchmarks.pg_async import AsyncCrabletPg
from benchmarks.pg_crablet import CrabletPg, engine_for
from benchmarks.pg_suite import _appender, _distinct_writer, conditional_appender, log
from benchmarks.records import Record, record
from benchmarks.timing import AsyncOp, Op, Samples
from benchmarks.workload import (
    COURSES,
    Ev,
    EventSource,
    connect,
    create_database,
    drop_database,
    dsn_params,
    fill_crablet_schema,
)
from sa_crablet import AppendCondition, Event, Query
from sa_crablet._plans import locks
from sa_crablet._plans.appends import append_plan
from sa_crablet._plans.shapes import Scope
from sa_crablet._plans.steps import Rows, Step
from sa_crablet._runners.psycopg import _JsonLoader, compiled
from sa_crablet.schema import POSTGRESQL

T = TypeVar("T")

SYNC = "EventStore (sync)"
STORE = "AsyncEventStore (bridge)"
BRIDGED = "prototype in the bridge"
NATIVE = "prototype, native"
BARE = "prototype, bare connection"
CONTENDERS = (SYNC, STORE, BRIDGED, NATIVE, BARE)
SUFFIX = {SYNC: "sync", STORE: "store", BRIDGED: "bridged", NATIVE: "native", BARE: "bare"}
G = "async_bridge"
ROOT = Path(__file__).resolve().parent.parent


# -- the prototype: one logic, yielding the driver's awaitables ----------------------------------

Awaiting = Generator[Awaitable[Any], Any, T]
"""A computation that hands each of the driver's awaitables to whoever drives it, and gets
its result back (or its exception thrown in)."""


class Conflict(Exception):
    """The prototype's condition failed: the caller's transaction rolls back, as it does
    when the store raises ``ConcurrencyError``."""


def _cursor(raw: psycopg.AsyncConnection[Any], client: bool) -> Any:
    """A cursor as the psycopg runner makes one: payloads decoded by the library's loader,
    values bound client side for a query string of several statements."""
    cursor: Any = psycopg.AsyncClientCursor(raw) if client else raw.cursor()
    for name in ("json", "jsonb"):
        cursor.adapters.register_loader(name, _JsonLoader)
    return cursor


def unit(
    raw: psycopg.AsyncConnection[Any], dialect: Dialect, steps: Sequence[Step]
) -> Awaiting[list[Rows]]:
    """The psycopg runner's unit inside an open transaction with no timeouts configured:
    one statement (prepared if its plan says so), or several as one query string."""
    if len(steps) == 1:
        step = steps[0]
        form = compiled(step.statement, dialect)
        cursor = _cursor(raw, client=False)
        yield cursor.execute(form.sql, form.bind(step.params), prepare=step.prepare)
        rows = [] if cursor.description is None else (yield cursor.fetchall())
        return [rows]
    cursor = _cursor(raw, client=True)
    forms = [(compiled(step.statement, dialect), step.params) for step in steps]
    try:
        yield cursor.execute(";\n".join(cursor.mogrify(f.sql, f.bind(p)) for f, p in forms))
        results = [[] if cursor.description is None else (yield cursor.fetchall())]
        while cursor.nextset():
            results.append([] if cursor.description is None else (yield cursor.fetchall()))
    finally:
        yield cursor.close()
    return results


def appending(
    raw: psycopg.AsyncConnection[Any],
    dialect: Dialect,
    event: Event,
    condition: AppendCondition | None,
) -> Awaiting[int]:
    """A session-bound append of one event, as ``EventStore.append`` plans it (the lock plan,
    the append plan, one unit); :class:`Conflict` when its condition fails."""
    query = None if condition is None else condition.fail_if_events_match
    scope = None
    if condition is not None:
        scope = Scope.of(condition.fail_if_events_match, condition.head, POSTGRESQL)
    plan = append_plan(POSTGRESQL, [event], scope, locks.plan(query, [event]))
    appended = plan.main.read((yield from unit(raw, dialect, plan.main.steps)))
    if appended.unchecked:
        raise RuntimeError("the prototype runs at READ COMMITTED only")
    if appended.failed:
        raise Conflict(appended.conflict)
    return max(appended.positions)


async def natively(work: Awaiting[T]) -> T:
    """Drive ``work`` with ``await``."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            awaitable = work.send(value) if error is None else work.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        try:
            value, error = await awaitable, None
        except Exception as exc:
            value, error = None, exc


def bridged(work: Awaiting[T]) -> T:
    """:func:`natively`, from synchronous code inside ``greenlet_spawn`` (``run_sync``):
    each awaitable goes to the event loop through a greenlet switch, as the store's do.
    (The twin of :func:`natively` on purpose: the one difference is ``await_``.)"""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            awaitable = work.send(value) if error is None else work.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        try:
            value, error = await_(awaitable), None
        except Exception as exc:
            value, error = None, exc


def _driver(conn: Connection) -> psycopg.AsyncConnection[Any]:
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.AsyncConnection)
    return raw


def _event(ev: Ev) -> Event:
    return Event(ev.type, (ev.tag,), ev.data)


def _condition(ev: Ev, types: Sequence[str], after: int) -> AppendCondition:
    return AppendCondition(Query.of(types=types, tags=[ev.tag]), after)


# -- the prototype's contenders ------------------------------------------------------------------


class NativePrototype(AsyncCrabletPg):
    """The prototype in an ``AsyncSession`` per operation, its statements awaited natively."""

    def __init__(self, dsn: str, dbname: str) -> None:
        super().__init__(dsn, dbname, "psycopg")

    async def _append(self, ev: Ev, condition: AppendCondition | None) -> int:
        async with self.sessions.begin() as session:
            conn = (await session.connection()).sync_connection
            assert conn is not None
            return await natively(appending(_driver(conn), conn.dialect, _event(ev), condition))

    async def append(self, ev: Ev) -> int:
        return await self._append(ev, None)

    async def append_if(self, ev: Ev, types: Sequence[str], after: int) -> int | None:
        try:
            return await self._append(ev, _condition(ev, types, after))
        except Conflict:
            return None


class BridgedPrototype(NativePrototype):
    """The same logic and session, run inside ``run_sync`` and awaiting through
    ``await_``, as ``AsyncEventStore`` runs the store."""

    async def _append(self, ev: Ev, condition: AppendCondition | None) -> int:
        event = _event(ev)

        def run(session: Any) -> int:
            conn = session.connection()
            return bridged(appending(_driver(conn), conn.dialect, event, condition))

        async with self.sessions.begin() as session:
            return await session.run_sync(run)


class BarePrototype(NativePrototype):
    """The native prototype on psycopg ``AsyncConnection``s of its own (one per concurrent
    writer, handed out by a queue): no ``AsyncSession``, no SQLAlchemy pool; ``BEGIN``
    implicit as in a session, ``COMMIT`` (or ``ROLLBACK``) by the connection."""

    def __init__(self, dsn: str, dbname: str, connections: int = 8) -> None:
        super().__init__(dsn, dbname)
        self.connections = connections
        self._idle: asyncio.Queue[psycopg.AsyncConnection[Any]] | None = None
        self._all: list[psycopg.AsyncConnection[Any]] = []
        self._dialect: Dialect | None = None

    async def _open(self) -> asyncio.Queue[psycopg.AsyncConnection[Any]]:
        if self._idle is None:
            async with self.engine.connect():  # the dialect, initialized as the others'
                self._dialect = self.engine.dialect
            p = dsn_params(self.dsn)
            idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
            for _ in range(self.connections):
                conn = await psycopg.AsyncConnection.connect(
                    host=p["host"],
                    port=p["port"],
                    user=p["user"],
                    password=p["password"] or None,
                    dbname=self.dbname,
                )
                self._all.append(conn)
                idle.put_nowait(conn)
            self._idle = idle
        return self._idle

    async def _append(self, ev: Ev, condition: AppendCondition | None) -> int:
        idle = await self._open()
        assert self._dialect is not None
        conn = await idle.get()
        try:
            position = await natively(appending(conn, self._dialect, _event(ev), condition))
        except BaseException:
            await conn.rollback()
            raise
        else:
            await conn.commit()
        finally:
            idle.put_nowait(conn)
        return position

    def close(self) -> None:
        async def closing() -> None:
            for conn in self._all:
                await conn.close()

        self.loop.run(closing())
        super().close()


# -- checks ---------------------------------------------------------------------------------------


def verify(store: NativePrototype) -> None:
    """The prototype does what the store does: an unconditional append lands after the
    head; a conditional one after the head succeeds, and the same with a stale head is
    rejected with nothing written."""
    src = EventSource(7)
    head = store.head()
    first = store.loop.run(store.append(src.event()))
    ev = src.event()
    second = store.loop.run(store.append_if(ev, (ev.type,), first))
    # `second` matches this condition and lies after `first`: a stale view.
    stale = store.loop.run(store.append_if(ev, (ev.type,), first))
    if not (head < first and second is not None and first < second and stale is None):
        raise RuntimeError(f"{store.name}: wrong results {head=} {first=} {second=} {stale=}")
    if store.head() != second:
        raise RuntimeError(f"{store.name}: a rejected append wrote something")


# -- scenarios -----------------------------------------------------------------------------------


def interleaved(
    stores: dict[str, Any],
    scenario: str,
    title: str,
    sync_op: Callable[[Any], Op],
    async_op: Callable[[AsyncCrabletPg], AsyncOp],
    args: argparse.Namespace,
) -> list[Record]:
    ops: dict[str, Op | AsyncOp] = {
        name: sync_op(store) if name == SYNC else async_op(store) for name, store in stores.items()
    }
    results = timing.interleaved(ops, rounds=args.rounds, calls=args.calls, warmup=args.warmup)
    return [record(G, scenario, title, n, "appends/s", sm) for n, sm in results.items()]


def client_cpu(
    stores: dict[str, Any],
    sync_op: Callable[[Any], Op],
    async_op: Callable[[AsyncCrabletPg], AsyncOp],
    calls: int,
    rounds: int = 2,
) -> dict[str, float]:
    """This process's CPU time per call (``time.process_time``: the client's work, not
    PostgreSQL's), in rotating rounds; what concurrent writers on two cores are bound by."""
    ops: dict[str, Op | AsyncOp] = {
        name: sync_op(store) if name == SYNC else async_op(store) for name, store in stores.items()
    }
    spent: dict[str, float] = dict.fromkeys(ops, 0.0)
    for op in ops.values():  # warm-up
        timing.timed(op, 20)
    for r in range(rounds):
        for name in timing.rotated(list(ops), r):
            gc.collect()
            spent[name] += _cpu_seconds(ops[name], calls)
    return {name: seconds / (calls * rounds) * 1e6 for name, seconds in spent.items()}


def _cpu_seconds(op: Op | AsyncOp, calls: int) -> float:
    if isinstance(op, AsyncOp):
        call = op.call

        async def block() -> float:
            started = time.process_time()
            for _ in range(calls):
                await call()
            return time.process_time() - started

        return op.loop.run(block())
    started = time.process_time()
    for _ in range(calls):
        op()
    return time.process_time() - started


def s7a(stores: dict[str, Any], args: argparse.Namespace) -> list[Record]:
    totals: dict[str, Samples] = {}
    errors: dict[str, list[str]] = {}
    for r in range(args.writer_rounds):
        for name in timing.rotated(list(stores), r):
            store = stores[name]
            head = store.head()
            if name == SYNC:
                steps = [
                    _distinct_writer(store, EventSource(100 + i), COURSES + i, head)
                    for i in range(args.writers)
                ]
                sm, errs = timing.run_writers(steps, args.writer_seconds)
            else:
                tasks = [
                    pg_async.distinct_writer(store, EventSource(100 + i), COURSES + i, head)
                    for i in range(args.writers)
                ]
                sm, errs = store.writers(tasks, args.writer_seconds)
            totals.setdefault(name, Samples()).add(sm)
            errors.setdefault(name, []).extend(errs)
    title = f"{args.writers} writers, distinct tags (conditional)"
    return [
        record(
            G,
            "S7a",
            title,
            name,
            "appends/s",
            sm,
            per="unit",
            conflicts=sm.counters.get("conflicts", 0),
            errors=len(errors[name]),
            error_samples=sorted(set(errors[name]))[:3],
        )
        for name, sm in totals.items()
    ]


# -- where the bridge's time goes ----------------------------------------------------------------


def switches_per_op(store: AsyncCrabletPg, call: timing.AsyncCall, calls: int) -> dict[str, float]:
    """Greenlet switches per awaited call (``greenlet.settrace`` reports every one), and
    what they are: a ``greenlet_spawn`` switches into a new greenlet and back out of it
    when it ends (2), each ``await_`` out to the event loop and back in (2)."""
    switches = [0]
    greenlets: set[Any] = set()  # strong references: no id is reused while counting

    def trace(event: str, args: Any) -> None:
        if event in ("switch", "throw"):
            switches[0] += 1
            greenlets.add(args[1])

    async def block() -> None:
        loop_greenlet = greenlet.getcurrent()
        previous = greenlet.settrace(trace)
        try:
            for _ in range(calls):
                await call()
        finally:
            greenlet.settrace(previous)
        greenlets.discard(loop_greenlet)

    store.loop.run(block())
    spawns = len(greenlets) / calls
    total = switches[0] / calls
    return {"switches": total, "greenlet_spawn": spawns, "await_": total / 2 - spawns}


def bridge_cost_us(
    counts: dict[str, float], native: dict[str, float], costs: dict[str, float]
) -> float:
    """What the greenlet work beyond the native prototype's costs per operation, at the
    measured price of a spawn and of an ``await_`` over a native await."""
    spawns = counts["greenlet_spawn"] - native["greenlet_spawn"]
    awaits = counts["await_"] - native["await_"]
    return spawns * costs["greenlet_spawn_us"] + awaits * costs["await_extra_us"]


def switch_costs(number: int = 20_000) -> dict[str, float]:
    """Microseconds: entering and leaving ``greenlet_spawn`` around a function that does
    nothing; one ``await_`` of a coroutine that returns at once, against awaiting it
    natively (two switches each). Median of 5 runs."""

    async def nothing() -> None:
        return None

    def awaits(n: int) -> None:
        for _ in range(n):
            await_(nothing())

    async def spawns() -> float:
        started = time.perf_counter()
        for _ in range(number):
            await greenlet_spawn(lambda: None)
        return time.perf_counter() - started

    async def bridged_awaits() -> float:
        started = time.perf_counter()
        await greenlet_spawn(awaits, number)
        return time.perf_counter() - started

    async def native_awaits() -> float:
        started = time.perf_counter()
        for _ in range(number):
            await nothing()
        return time.perf_counter() - started

    def median_us(make: Callable[[], Coroutine[Any, Any, float]]) -> float:
        runs = [asyncio.run(make()) for _ in range(5)]
        return statistics.median(runs) / number * 1e6

    spawn = median_us(spawns)
    through = median_us(bridged_awaits)
    native = median_us(native_awaits)
    return {
        "greenlet_spawn_us": spawn,
        "await_us": through,
        "native_await_us": native,
        "await_extra_us": through - native,
    }


BRIDGE_CODE = ("sqlalchemy/util/concurrency", "sqlalchemy/util/_concurrency", "/greenlet/")


def profiled(store: AsyncCrabletPg, call: timing.AsyncCall, calls: int) -> dict[str, Any] | None:
    """pyinstrument over ``calls`` awaited calls: the call tree as text, and the self time
    of the bridge's own frames (SQLAlchemy's ``greenlet_spawn`` and ``await_``, whose self
    time includes the greenlet switches they make) per call."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return None

    async def block() -> None:
        for _ in range(calls):
            await call()

    profiler = Profiler(interval=0.0001, async_mode="disabled")
    profiler.start()
    store.loop.run(block())
    profiler.stop()
    session = profiler.last_session
    assert session is not None
    root = session.root_frame(trim_stem=False)
    own: dict[str, float] = {}
    stack = [root] if root is not None else []
    while stack:
        frame = stack.pop()
        stack.extend(frame.children)
        path = (frame.file_path or "").replace("\\", "/")
        if any(marker in path for marker in BRIDGE_CODE):
            key = frame.function or "?"
            own[key] = own.get(key, 0.0) + frame.total_self_time
    text: str = profiler.output_text(unicode=False, color=False, show_all=False)
    return {
        "tree": text.replace(f"{ROOT}/", ""),  # paths relative to the checkout
        "wall_us_per_call": session.duration / calls * 1e6,
        "bridge_self_us_per_call": {k: v / calls * 1e6 for k, v in sorted(own.items())},
    }


# -- the run -------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.async_bridge", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dsn", default=os.environ.get("SA_CRABLET_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--prefix", default="sa_crablet_bench_bridge")
    parser.add_argument("--fill", type=int, default=100_000, help="events per store")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (S1, S2)")
    parser.add_argument("--calls", type=int, default=500, help="calls per round (S1, S2)")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--writer-seconds", type=float, default=8.0)
    parser.add_argument("--writer-rounds", type=int, default=3)
    parser.add_argument("--profile-calls", type=int, default=300)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--stem", default="async_bridge")
    return parser.parse_args(argv)


def open_stores(dsn: str, names: dict[str, str]) -> dict[str, Any]:
    makers: dict[str, Callable[[str, str], Any]] = {
        SYNC: CrabletPg,
        STORE: lambda d, db: AsyncCrabletPg(d, db, "psycopg"),
        BRIDGED: BridgedPrototype,
        NATIVE: NativePrototype,
        BARE: BarePrototype,
    }
    stores: dict[str, Any] = {}
    for name in CONTENDERS:
        stores[name] = makers[name](dsn, names[name])
        stores[name].name = name
    return stores


def build(args: argparse.Namespace) -> dict[str, str]:
    names = {c: f"{args.prefix}_{SUFFIX[c]}" for c in CONTENDERS}
    for db in names.values():
        create_database(args.dsn, db)
        engine = engine_for(args.dsn, db, pool_size=1)
        sa_crablet.upgrade(engine)
        engine.dispose()
        with connect(args.dsn, db) as conn:
            fill_crablet_schema(conn, args.fill, COURSES)
    return names


APPENDS: dict[str, tuple[str, Callable[[Any], Op], Callable[[AsyncCrabletPg], AsyncOp]]] = {
    "S1": (
        "append 1 event, no condition",
        lambda st: _appender(st, EventSource(1)),
        lambda st: pg_async.appender(st, EventSource(1)),
    ),
    "S2": (
        "append 1 event with condition (type + tag, after = head)",
        lambda st: conditional_appender(st, EventSource(2)),
        lambda st: pg_async.conditional_appender(st, EventSource(2)),
    ),
}
"""The single-writer scenarios: title, and a call of a sync and of an async contender."""


def measure(args: argparse.Namespace, stores: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"records": []}
    for name in (BRIDGED, NATIVE, BARE):
        verify(stores[name])
    for scenario, (title, sync_op, async_op) in APPENDS.items():
        started = time.perf_counter()
        out["records"] += interleaved(stores, scenario, title, sync_op, async_op, args)
        log(f"  {scenario} done in {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    out["records"] += s7a(stores, args)
    log(f"  S7a done in {time.perf_counter() - started:.1f}s")
    # Where the bridge's time goes.
    out["cpu_us"] = {
        scenario: client_cpu(stores, sync_op, async_op, args.profile_calls)
        for scenario, (_title, sync_op, async_op) in APPENDS.items()
    }
    switches: dict[str, dict[str, dict[str, float]]] = {}
    profiles: dict[str, dict[str, Any]] = {}
    for name in (STORE, BRIDGED, NATIVE):
        store = stores[name]
        for scenario, op in (
            ("S1", pg_async.appender(store, EventSource(11))),
            ("S2", pg_async.conditional_appender(store, EventSource(12))),
        ):
            switches.setdefault(name, {})[scenario] = switches_per_op(store, op.call, 200)
            profile = profiled(store, op.call, args.profile_calls)
            if profile is not None:
                profiles[f"{scenario} {name}"] = profile
    out["switches_per_op"] = switches
    out["switch_costs_us"] = switch_costs()
    out["profiles"] = profiles
    log("  profiles done")
    return out


def ratios(records: list[Record]) -> list[dict[str, Any]]:
    """Per scenario: throughput and p50 ratios of each pair that decides something."""
    pairs = (
        (NATIVE, BRIDGED, "the bridge alone (same logic)"),
        (NATIVE, STORE, "a native store at most"),
        (STORE, SYNC, "AsyncEventStore against the sync store"),
        (NATIVE, SYNC, "native against the sync store"),
        (BARE, NATIVE, "without AsyncSession"),
    )
    by = {(r.scenario, r.contender): r for r in records}
    out = []
    for scenario in ("S1", "S2", "S7a"):
        for a, b, meaning in pairs:
            ra, rb = by.get((scenario, a)), by.get((scenario, b))
            if ra is None or rb is None or not rb.throughput:
                continue
            out.append(
                {
                    "scenario": scenario,
                    "pair": f"{a} / {b}",
                    "meaning": meaning,
                    "throughput": ra.throughput / rb.throughput,
                    "p50": ra.p50_ms / rb.p50_ms,
                    "p50_delta_us": (ra.p50_ms - rb.p50_ms) * 1000,
                }
            )
    return out


def markdown(meta: dict[str, Any], out: dict[str, Any]) -> str:
    records: list[Record] = out["records"]
    lines = [
        "# Bridge or native: AsyncEventStore's greenlet bridge against native awaits",
        "",
        f"Generated by `python -m benchmarks.async_bridge` on {meta['started']} in "
        f"{meta['elapsed_s']:.0f} s; sa_crablet revision {meta['revision']}.",
        "",
        f"- Machine: {meta['machine']['cpu']} ({meta['machine']['cores']} cores), "
        f"Python {meta['versions']['python']}, SQLAlchemy {meta['versions']['sqlalchemy']}, "
        f"psycopg {meta['versions']['psycopg']}, greenlet {greenlet.__version__}.",
        f"- Stores: {meta['fill']:,} events each, one database per contender; S1 and S2: "
        f"{meta['rounds']} interleaved rounds of {meta['calls']} calls; S7a: "
        f"{meta['writer_rounds']} x {meta['writer_seconds']:.0f} s with {meta['writers']} "
        "writers (asyncio tasks in one event loop; threads for the sync store).",
        "",
        "## Throughput and latency",
        "",
        "| Scenario | Contender | Throughput | unit | p50 ms | p99 ms | Notes |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    for r in records:
        notes = ""
        if r.extra.get("errors") or r.extra.get("conflicts"):
            notes = f"conflicts {r.extra.get('conflicts', 0)}, errors {r.extra.get('errors', 0)}"
        lines.append(
            f"| {r.scenario} | {r.contender} | {r.throughput:,.0f} | {r.unit} "
            f"| {r.p50_ms:.3f} | {r.p99_ms:.3f} | {notes} |"
        )
    lines += [
        "",
        "## Ratios",
        "",
        "| Scenario | A / B | what it measures | throughput A / B | p50 A / B | p50 A - B (µs) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for row in out["ratios"]:
        lines.append(
            f"| {row['scenario']} | {row['pair']} | {row['meaning']} | {row['throughput']:.2f}x "
            f"| {row['p50']:.2f}x | {row['p50_delta_us']:+.0f} |"
        )
    lines += [
        "",
        "## Client CPU per append",
        "",
        "This process's CPU time per append (`time.process_time`), rotating rounds of "
        f"{meta['profile_calls']} appends: the client's own work, which 8 writers on 2 cores "
        "are bound by.",
        "",
        "| Contender | S1 µs | S2 µs |",
        "|---|---:|---:|",
    ]
    for name in CONTENDERS:
        lines.append(
            f"| {name} | {out['cpu_us']['S1'][name]:.0f} | {out['cpu_us']['S2'][name]:.0f} |"
        )
    costs = out["switch_costs_us"]
    lines += [
        "",
        "## Greenlet switches",
        "",
        f"On this machine, `greenlet_spawn` around a function that does nothing costs "
        f"{costs['greenlet_spawn_us']:.2f} µs; one `await_` of a coroutine that returns at "
        f"once {costs['await_us']:.2f} µs, against {costs['native_await_us']:.2f} µs awaited "
        f"natively ({costs['await_extra_us']:.2f} µs more, for two switches).",
        "",
        "| Contender | Scenario | switches per append | `greenlet_spawn` | `await_` "
        "| their cost beyond the native prototype's (µs) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    native = out["switches_per_op"][NATIVE]
    for name, by_scenario in out["switches_per_op"].items():
        for scenario, counts in by_scenario.items():
            extra = bridge_cost_us(counts, native[scenario], costs)
            lines.append(
                f"| {name} | {scenario} | {counts['switches']:.1f} | "
                f"{counts['greenlet_spawn']:.1f} | {counts['await_']:.1f} | {extra:+.1f} |"
            )
    lines += [
        "",
        "The native prototype's switches are the `AsyncSession`'s own: its begin, "
        "`connection()` and commit run through `greenlet_spawn` too (inside `run_sync` "
        "the session's connection needs none of its own). The cost column prices the "
        "difference in spawns and in `await_`s at the figures above.",
        "",
        "## pyinstrument: the bridge's own frames",
        "",
        f"{meta['profile_calls']} appends per profile (sampling every 0.1 ms; the profiler "
        "slows everything down, so read these as shares, not as latencies). Self time of "
        "SQLAlchemy's bridge functions per append, which includes the greenlet switches they "
        f"make; the call trees are in `{meta['stem']}/`.",
        "",
        "| Profile | wall µs per append (profiled) | bridge self time µs per append | of which |",
        "|---|---:|---:|---|",
    ]
    for key, prof in out["profiles"].items():
        own = prof["bridge_self_us_per_call"]
        split = ", ".join(f"`{k}` {v:.1f}" for k, v in own.items() if v >= 0.05)
        lines.append(
            f"| {key} | {prof['wall_us_per_call']:.0f} | {sum(own.values()):.1f} | {split} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "started": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "revision": revision(),
        "machine": machine(),
        "versions": versions() | {"greenlet": greenlet.__version__},
        **{k: v for k, v in vars(args).items() if k != "output"},
    }
    log(f"async bridge: building {len(CONTENDERS)} stores of {args.fill:,} events")
    names = build(args)
    stores = open_stores(args.dsn, names)
    try:
        out = measure(args, stores)
    finally:
        for store in stores.values():
            store.close()
        for db in names.values():
            drop_database(args.dsn, db)
    out["ratios"] = ratios(out["records"])
    meta["elapsed_s"] = time.perf_counter() - started
    directory = args.output / args.stem
    directory.mkdir(parents=True, exist_ok=True)
    for key, prof in out["profiles"].items():
        (directory / f"{key.replace(' ', '_').replace(',', '')}.txt").write_text(prof["tree"])
    payload = {
        "meta": meta,
        "results": [r.as_dict() for r in out["records"]],
        "ratios": out["ratios"],
        "switches_per_op": out["switches_per_op"],
        "switch_costs_us": out["switch_costs_us"],
        "cpu_us": out["cpu_us"],
        "profiles": {
            key: {k: v for k, v in prof.items() if k != "tree"}
            for key, prof in out["profiles"].items()
        },
    }
    (args.output / f"{args.stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    text = markdown(meta, out)
    (args.output / f"{args.stem}.md").write_text(text)
    print(text)
    failed = [r for r in out["records"] if r.extra.get("errors")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
