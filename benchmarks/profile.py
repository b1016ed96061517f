"""Profile sa_crablet on S1, S2, S2', S4 and S6: ``python -m benchmarks.profile``.

For each scenario, on a fresh PostgreSQL store (100k events by default):

1. round trips per operation and the split between time waiting on PostgreSQL (request
   sent to ``ReadyForQuery``, from a libpq trace) and time in the client;
2. a cProfile split of the client's time by package, and the top functions;
3. a pyinstrument call tree (``benchmarks/results/profile/<scenario>.txt``);
4. "what if" variants measured interleaved with the library as it is: each simulates one
   change (a cached statement, no server-side cursor, an ``EXISTS`` without ``ORDER BY`` /
   ``LIMIT``) by patching ``sa_crablet.statements`` for the duration of a call, or shows a
   lower bound (the same SQL through a SQLAlchemy ``Session`` with ``text()``, and through
   psycopg alone);
5. the cost of the pure-Python steps of an operation (microseconds per call).

Writes ``benchmarks/results/profile.md`` and ``profile.json``.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, text
from sqlalchemy.orm import Session

from benchmarks import pg_suite, timing
from benchmarks.pg_crablet import CrabletPg
from benchmarks.pg_floor import FloorPg, lock_plan
from benchmarks.profile_tools import (
    micro_us,
    profile_buckets,
    pyinstrument_text,
    trace_round_trips,
)
from benchmarks.timing import Op
from benchmarks.workload import (
    COURSES,
    EVENTS_TABLE,
    TYPES,
    Ev,
    EventSource,
    compact,
    connect,
    course_tag,
    create_database,
    drop_database,
    fill_crablet_schema,
)
from sa_crablet import AppendCondition, Event, EventStore, Head, Query, statements
from sa_crablet import store as store_module
from sa_crablet._locks import plan
from sa_crablet.query import Snapshot
from sa_crablet.streams import next_head, to_event

RESULTS = Path(__file__).resolve().parent / "results"
E = EVENTS_TABLE


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def store_calls(name: str) -> bool:
    """Whether the store (this revision) still calls ``statements.<name>``: a variant that
    patches a builder the store no longer uses would measure nothing."""
    return f"statements.{name}(" in inspect.getsource(store_module)


def with_patch(op: Op, name: str, value: Any, module: Any = statements) -> Op:
    def patched_op() -> int:
        original = getattr(module, name)
        setattr(module, name, value)
        try:
            return op()
        finally:
            setattr(module, name, original)

    return patched_op


def with_patches(op: Op, *patches: tuple[Any, str, Any]) -> Op:
    for module, name, value in patches:
        op = with_patch(op, name, value, module)
    return op


@contextmanager
def _prepared_as_usual(conn: Any, wanted: bool) -> Iterator[None]:
    """Stands in for ``store.custom_plans``: leave psycopg's auto-prepare alone."""
    yield


_FORCED_LOCK: list[Any] = []


def lock_forcing_custom_plans() -> Any:
    """The (cached) lock statement, also setting ``plan_cache_mode = force_custom_plan``
    for the rest of the transaction: prepared statements, each execution planned."""
    if not _FORCED_LOCK:
        _FORCED_LOCK.append(lock_with_custom_plans())
    return _FORCED_LOCK[0]


# -- simulated variants ---------------------------------------------------------------------------

CACHED_INSERT = functools.lru_cache(maxsize=1024)(statements.insert_events)
_CONFLICT = statements.conflict_select


_LOCK = statements.lock_select


def plain_exists(*args: Any) -> Any:
    """The conflict subquery without ORDER BY / LIMIT (only EXISTS-ness matters)."""
    return _CONFLICT(*args).order_by(None).limit(None)


def lock_with_custom_plans() -> Any:
    """The lock statement also sets ``plan_cache_mode = force_custom_plan`` for the rest of
    the transaction (no extra round trip), so the conditional INSERT is planned for its
    values even once psycopg has prepared it."""
    return _LOCK().add_columns(func.set_config("plan_cache_mode", "force_custom_plan", True))


def client_side_reader(store: CrabletPg, src: EventSource) -> Op:
    """sa_crablet's read (same statement, same events and head) without stream_results."""

    def op() -> int:
        query = Query.of(types=TYPES, tags=[course_tag(src.course())])
        with store.sessions.begin() as session:
            conn = session.connection()
            statement = statements.read_select(
                query, None, backwards=False, limit=None, dialect="postgresql"
            )
            snapshot: Snapshot | None = None
            count = highest = 0
            edge = None
            for row in conn.execute(statement):
                if snapshot is None:
                    snapshot = Snapshot.parse(row[0], row[1])
                values = row[2:]
                if values[0] is None:
                    continue
                event = to_event(values)
                count += 1
                edge = event.position
                highest = max(highest, event.position)
            next_head(None, snapshot, highest, edge, count, False, None)
        return count

    return op


def sqlalchemy_text_ops(store: CrabletPg) -> dict[str, Op]:
    """The floor's statements through a SQLAlchemy Session and ``text()``: the cost of the
    Session and Core execution without sa_crablet's own code."""
    insert_one = text(
        f"INSERT INTO {E} (type, tags, data) "
        "VALUES (:type, CAST(:tags AS text[]), CAST(:data AS jsonb)) RETURNING position"
    )
    lock = text(
        "SELECT count(CASE WHEN lk.x THEN pg_advisory_xact_lock(lk.k)::text "
        "ELSE pg_advisory_xact_lock_shared(lk.k)::text END) "
        "FROM unnest(CAST(:keys AS bigint[]), CAST(:excl AS bool[])) AS lk(k, x)"
    )
    insert_if = text(
        f"INSERT INTO {E} (type, tags, data) "
        "SELECT :type, CAST(:tags AS text[]), CAST(:data AS jsonb) "
        f"WHERE NOT EXISTS (SELECT 1 FROM {E} WHERE type = ANY(CAST(:types AS text[])) "
        "AND tags @> CAST(:ctags AS text[]) AND position > :after) RETURNING position"
    )
    read = text(
        "SELECT s.snap, s.own, e.position, e.type, e.tags, e.data, e.metadata, e.recorded_at "
        "FROM (SELECT pg_current_snapshot()::text AS snap, "
        "pg_current_xact_id_if_assigned()::text AS own) AS s "
        f"LEFT JOIN LATERAL (SELECT position, type, tags, data, metadata, recorded_at FROM {E} "
        "WHERE type = ANY(CAST(:types AS text[])) AND tags @> CAST(:tags AS text[]) "
        "ORDER BY position) AS e ON true"
    )
    # S2's writers share this database: each keeps to its own quarter of the courses, so
    # their single-writer conditions (after = their own last append) never see each other.
    src1, src2, src4 = EventSource(1), EventSource(2, 125, 500), EventSource(4)
    head: list[int | None] = [None]

    def s1() -> int:
        ev = src1.event()
        with store.sessions.begin() as session:
            params = {"type": ev.type, "tags": [ev.tag], "data": compact(ev.data)}
            session.execute(insert_one, params).scalar_one()
        return 1

    def s2() -> int:
        if head[0] is None:
            head[0] = store.head()
        ev = src2.event()
        keys, exclusive = lock_plan((ev.type,), ev.tag, ev)
        with store.sessions.begin() as session:
            session.execute(lock, {"keys": keys, "excl": exclusive})
            params = {
                "type": ev.type,
                "tags": [ev.tag],
                "data": compact(ev.data),
                "types": [ev.type],
                "ctags": [ev.tag],
                "after": head[0],
            }
            head[0] = session.execute(insert_if, params).scalar_one()
        return 1

    def s4() -> int:
        count = 0
        with store.sessions.begin() as session:
            params = {"types": list(TYPES), "tags": [course_tag(src4.course())]}
            for row in session.execute(read, params):
                if row[2] is not None:
                    to_event(row[2:])
                    count += 1
        return count

    # The same statements on the Session's own psycopg connection (same transaction, which
    # the Session still begins and commits), prepared: what skipping SQLAlchemy's statement
    # execution machinery for the hot statements would give.
    from benchmarks import pg_floor

    src1r, src2r, src4r = EventSource(31), EventSource(32, 125, 625), EventSource(34)
    head_raw: list[int | None] = [None]

    def cursor(session: Session) -> Any:
        return session.connection().connection.driver_connection.cursor()

    def s1_raw() -> int:
        ev = src1r.event()
        with store.sessions.begin() as session:
            cur = cursor(session)
            cur.execute(pg_floor.INSERT_ONE, (ev.type, [ev.tag], compact(ev.data)), prepare=True)
            cur.fetchone()
        return 1

    def s2_raw() -> int:
        if head_raw[0] is None:
            head_raw[0] = store.head()
        ev = src2r.event()
        with store.sessions.begin() as session:
            cur = cursor(session)
            cur.execute(pg_floor.LOCK, lock_plan((ev.type,), ev.tag, ev), prepare=True)
            params = {
                "type": ev.type,
                "tags": [ev.tag],
                "data": compact(ev.data),
                "types": [ev.type],
                "ctags": [ev.tag],
                "after": head_raw[0],
            }
            cur.execute(pg_floor.INSERT_IF, params, prepare=True)
            row = cur.fetchone()
            head_raw[0] = row[0]
        return 1

    def s4_raw() -> int:
        count = 0
        with store.sessions.begin() as session:
            cur = cursor(session)
            params = (list(TYPES), [course_tag(src4r.course())])
            cur.execute(pg_floor.READ, params, prepare=True)
            for row in cur:
                if row[2] is not None:
                    to_event(row[2:])
                    count += 1
        return count

    return {
        "S1": s1,
        "S2": s2,
        "S4": s4,
        "S1 raw": s1_raw,
        "S2 raw": s2_raw,
        "S4 raw": s4_raw,
    }


# -- the run --------------------------------------------------------------------------------------


def scenario_ops(store: CrabletPg) -> dict[str, Op]:
    lasts = store.last_positions()
    keys = sorted(lasts)
    return {
        "S1": pg_suite._appender(store, EventSource(1)),
        "S2": pg_suite.conditional_appender(store, EventSource(2)),
        "S2'": pg_suite._rejected_appender(store, EventSource(3), keys, lasts),
        "S4": pg_suite.reader(store, EventSource(4)),
        "S6": pg_suite._decider(store, EventSource(6), {}, "sa_crablet"),
    }


RAW = "Session + psycopg cursor on the Session's connection (prepared)"


def what_ifs(store: CrabletPg, floor: FloorPg, rounds: int, calls: int) -> dict[str, Any]:
    sa_text = sqlalchemy_text_ops(store)
    base = scenario_ops(store)
    lasts = store.last_positions()  # the floor shares this database: positions are common
    keys = sorted(lasts)
    floor_ops = {
        "S1": pg_suite._appender(floor, EventSource(1)),
        "S2": pg_suite.conditional_appender(floor, EventSource(2, 250, 750)),
        "S4": pg_suite.reader(floor, EventSource(4)),
        "S6": pg_suite._decider(floor, EventSource(6), {}, "floor"),
    }
    plans: dict[str, dict[str, Op]] = {
        "S1": {
            "sa_crablet as is": base["S1"],
            "sa_crablet, INSERT statement built once (cached)": with_patch(
                pg_suite._appender(store, EventSource(11)), "insert_events", CACHED_INSERT
            ),
            "SQLAlchemy Session + text() (no sa_crablet code)": sa_text["S1"],
            RAW: sa_text["S1 raw"],
            "psycopg floor": floor_ops["S1"],
        },
        "S2": {
            "sa_crablet as is": pg_suite.conditional_appender(store, EventSource(2, 250, 0)),
            "sa_crablet, conditional INSERT with custom plans": with_patch(
                pg_suite.conditional_appender(store, EventSource(12, 125, 250)),
                "lock_select",
                lock_with_custom_plans,
            ),
            "SQLAlchemy Session + text() (same lock + INSERT)": sa_text["S2"],
            RAW: sa_text["S2 raw"],
            "psycopg floor": floor_ops["S2"],
        },
        "S2'": {
            "sa_crablet as is": base["S2'"],
            "sa_crablet, conditional INSERT with custom plans": with_patch(
                pg_suite._rejected_appender(store, EventSource(13), keys, lasts),
                "lock_select",
                lock_with_custom_plans,
            ),
            "psycopg floor": pg_suite._rejected_appender(floor, EventSource(3), keys, lasts),
        },
        "S4": {
            "sa_crablet as is": base["S4"],
            "sa_crablet read without a server-side cursor": client_side_reader(
                store, EventSource(14)
            ),
            "SQLAlchemy Session + text() (client-side)": sa_text["S4"],
            RAW: sa_text["S4 raw"],
            "psycopg floor": floor_ops["S4"],
        },
        "S6": {
            "sa_crablet as is": base["S6"],
            "sa_crablet, conflict check as plain EXISTS": with_patch(
                pg_suite._decider(store, EventSource(16), {}, "x"), "conflict_select", plain_exists
            ),
            "sa_crablet, conditional INSERT with custom plans": with_patch(
                pg_suite._decider(store, EventSource(17), {}, "x"),
                "lock_select",
                lock_with_custom_plans,
            ),
            "psycopg floor": floor_ops["S6"],
        },
    }
    if hasattr(store_module, "custom_plans"):
        generic = (store_module, "custom_plans", _prepared_as_usual)
        forced = (statements, "lock_select", lock_forcing_custom_plans)
        plans["S2"]["sa_crablet, INSERT prepared (generic plans, as for S1)"] = with_patches(
            pg_suite.conditional_appender(store, EventSource(18, 125, 250)), generic
        )
        plans["S2"]["sa_crablet, INSERT prepared + force_custom_plan set by the lock"] = (
            with_patches(
                pg_suite.conditional_appender(store, EventSource(19, 125, 375)), generic, forced
            )
        )
        plans["S2'"]["sa_crablet, INSERT prepared + force_custom_plan set by the lock"] = (
            with_patches(
                pg_suite._rejected_appender(store, EventSource(20), keys, lasts), generic, forced
            )
        )
        plans["S6"]["sa_crablet, INSERT prepared + force_custom_plan set by the lock"] = (
            with_patches(pg_suite._decider(store, EventSource(21), {}, "x"), generic, forced)
        )
    skip = {
        "insert_events": "sa_crablet, INSERT statement built once (cached)",
        "conflict_select": "sa_crablet, conflict check as plain EXISTS",
    }
    for name, variant in skip.items():
        if not store_calls(name):
            for ops in plans.values():
                ops.pop(variant, None)
    if not store_calls("insert_events") or "prepare_threshold" in inspect.getsource(store_module):
        for ops in plans.values():  # this revision already plans conflict checks per call
            ops.pop("sa_crablet, conditional INSERT with custom plans", None)
    out: dict[str, Any] = {}
    for scenario, ops in plans.items():
        log(f"  what-if {scenario}")
        results = timing.interleaved(ops, rounds=rounds, calls=calls, warmup=30)
        baseline = results["sa_crablet as is"].calls_per_s
        out[scenario] = [
            {
                "variant": name,
                "ops_per_s": sm.calls_per_s,
                "p50_ms": sm.percentile_ms(50),
                "p99_ms": sm.percentile_ms(99),
                "vs_as_is": sm.calls_per_s / baseline if baseline else None,
            }
            for name, sm in results.items()
        ]
    return out


def sqlite_what_if(rounds: int, calls: int) -> dict[str, Any]:
    """SQLite, synchronous=NORMAL: sa_crablet, the same INSERT through a Session and
    ``text()``, and raw ``sqlite3``: how much of the gap SQLAlchemy's own path explains."""
    from benchmarks.sqlite_suite import NOW, build

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sa_crablet_profile_") as tmp:
        crablet, floor = build(Path(tmp), "NORMAL", 10_000)
        insert = text(
            f"INSERT INTO {E} (type, tags, data, recorded_at) "
            f"VALUES (:type, :tags, :data, {NOW}) RETURNING position"
        )
        src = EventSource(21)

        def sa_text() -> int:
            ev = src.event()
            with crablet.sessions.begin() as session:
                params = {"type": ev.type, "tags": json.dumps([ev.tag]), "data": compact(ev.data)}
                session.execute(insert, params).scalar_one()
            return 1

        ops = {
            "sa_crablet as is": pg_suite._appender(crablet, EventSource(22)),
            "SQLAlchemy Session + text() (no sa_crablet code)": sa_text,
            "raw sqlite3 floor": pg_suite._appender(floor, EventSource(23)),
        }
        results = timing.interleaved(ops, rounds=rounds, calls=calls, warmup=30)
        baseline = results["sa_crablet as is"].calls_per_s
        out["S1 (SQLite, WAL, synchronous=NORMAL)"] = [
            {
                "variant": name,
                "ops_per_s": sm.calls_per_s,
                "p50_ms": sm.percentile_ms(50),
                "p99_ms": sm.percentile_ms(99),
                "vs_as_is": sm.calls_per_s / baseline if baseline else None,
            }
            for name, sm in results.items()
        ]
        crablet.close()
        floor.close()
    return out


def micro_costs(store: CrabletPg) -> dict[str, float]:
    ev = Ev(TYPES[2], "course:7", {"courseId": "course-7", "studentId": "s-1", "capacity": 5})
    event = Event(ev.type, (ev.tag,), ev.data)
    q1 = Query.of(types=[ev.type], tags=[ev.tag])
    q4 = Query.of(types=TYPES, tags=[ev.tag])
    snap = Snapshot(100, 105, (101, 103))
    # The builder's signature changed across revisions (an ``own`` token argument came and went).
    extra = (None,) * (len(inspect.signature(statements.insert_events).parameters) - 3)

    def build_insert(query: Query | None, head: Head | None) -> Any:
        return statements.insert_events("postgresql", query, head, *extra)

    insert_c = build_insert(q1, Head(123))
    insert_s = build_insert(q4, Head(123, snap))
    read = statements.read_select(q4, None, backwards=False, limit=None, dialect="postgresql")
    row = (1, ev.type, [ev.tag], ev.data, None, __import__("datetime").datetime.now().astimezone())
    session = Session(store.engine)
    costs = {
        "Event(type, tags, data)": micro_us(lambda: Event(ev.type, (ev.tag,), ev.data)),
        "Query.of(types, tags) + AppendCondition": micro_us(
            lambda: AppendCondition(Query.of(types=[ev.type], tags=[ev.tag]), 123)
        ),
        "EventStore(session)": micro_us(lambda: EventStore(session)),
        "_encode_batch([event])": micro_us(lambda: store_module._encode_batch([event])),
        "_locks.plan(query, [event])": micro_us(lambda: plan(q1, [event])),
        "statements.lock_select()": micro_us(statements.lock_select, 500),
        "statements.insert_events (no condition)": micro_us(lambda: build_insert(None, None), 500),
        "statements.insert_events (type + tag condition)": micro_us(
            lambda: build_insert(q1, Head(123)), 500
        ),
        "statements.insert_events (4 types + tag, head with snapshot)": micro_us(
            lambda: build_insert(q4, Head(123, snap)), 500
        ),
        "statements.read_select (4 types + tag)": micro_us(
            lambda: statements.read_select(
                q4, None, backwards=False, limit=None, dialect="postgresql"
            ),
            500,
        ),
        "cache key of the conditional INSERT": micro_us(insert_c._generate_cache_key, 500),
        "cache key of the conditional INSERT with snapshot": micro_us(
            insert_s._generate_cache_key, 500
        ),
        "cache key of the read": micro_us(read._generate_cache_key, 500),
        "to_event(row) (per event read)": micro_us(lambda: to_event(row)),
        "Snapshot.parse": micro_us(lambda: Snapshot.parse("100:105:101,103", "102")),
    }
    if hasattr(statements, "query_shape"):  # revisions that cache statements per shape
        head = Head(123, snap)
        costs = {
            k: v
            for k, v in costs.items()
            if not k.startswith(("statements.insert_events", "statements.read_select"))
        }
        costs.update(
            {
                "query_shape + head_shape (per append)": micro_us(
                    lambda: (
                        statements.query_shape(q4),
                        statements.head_shape(head, "postgresql"),
                    )
                ),
                "query_params + head_params (per append)": micro_us(
                    lambda: statements.query_params(q4) | statements.head_params(head, "postgresql")
                ),
                "insert_statement(...) (lru_cache hit)": micro_us(
                    lambda: statements.insert_statement(
                        "postgresql",
                        statements.query_shape(q4),
                        statements.head_shape(head, "postgresql"),
                    )
                ),
                "read_params (per read)": micro_us(
                    lambda: statements.read_params(q4, None, None, "postgresql")
                ),
            }
        )
    session.close()
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--dsn", default=os.environ.get("SA_CRABLET_BENCH_DSN", pg_suite_dsn()))
    parser.add_argument("--fill", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=300, help="profiled calls per scenario")
    parser.add_argument("--rounds", type=int, default=5, help="what-if rounds")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--stem", default="profile", help="output names: STEM.md, STEM/")
    args = parser.parse_args(argv)
    db = "sa_crablet_bench_profile"
    create_database(args.dsn, db)
    started = time.perf_counter()
    out: dict[str, Any] = {"fill": args.fill, "scenarios": {}}
    (args.output / args.stem).mkdir(parents=True, exist_ok=True)
    try:
        store = CrabletPg(args.dsn, db)
        store.create_schema()
        with connect(args.dsn, db) as conn:
            fill_crablet_schema(conn, args.fill, COURSES)
        floor = FloorPg(args.dsn, db)
        raw = store.engine.raw_connection()
        pg = raw.driver_connection
        raw.close()  # back to the pool: single-threaded sessions get this connection again
        for name, op in scenario_ops(store).items():
            log(f"  profiling {name}")
            for _ in range(50):
                op()
            entry: dict[str, Any] = {"trace": trace_round_trips(pg, op, 100)}
            entry["cprofile"] = profile_buckets(op, args.calls)
            tree = pyinstrument_text(op, args.calls)
            if tree is not None:
                file = args.output / args.stem / f"{name.replace(chr(39), 'p')}.txt"
                file.write_text(tree)
                entry["pyinstrument"] = str(file.relative_to(args.output))
            out["scenarios"][name] = entry
        out["what_if"] = what_ifs(store, floor, args.rounds, 200)
        out["what_if"].update(sqlite_what_if(args.rounds, 200))
        out["micro_us"] = micro_costs(store)
        floor.close()
        store.close()
    finally:
        drop_database(args.dsn, db)
    out["elapsed_s"] = time.perf_counter() - started
    out["revision"] = revision()
    (args.output / f"{args.stem}.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.output / f"{args.stem}.md").write_text(markdown(out))
    print(markdown(out))
    return 0


def revision() -> str:
    from benchmarks.__main__ import revision as git_revision

    return os.environ.get("SA_CRABLET_REVISION") or git_revision()


def pg_suite_dsn() -> str:
    from benchmarks.__main__ import DEFAULT_DSN

    return DEFAULT_DSN


def markdown(out: dict[str, Any]) -> str:
    lines = [
        "# Where sa_crablet's time goes (PostgreSQL)",
        "",
        f"Generated by `python -m benchmarks.profile` on a {out['fill']:,}-event store "
        f"(sa_crablet revision {out.get('revision', '?')}). "
        "Round trips and the server/client split come from a libpq trace (server = from "
        "sending a request to PostgreSQL's ReadyForQuery, so it includes the network and "
        "the commit's fsync). Package shares are cProfile self time (profiling inflates "
        "Python time, so read them as proportions).",
        "",
        "| Scenario | round trips | wall ms | waiting on PostgreSQL ms | client ms | sequence |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, entry in out["scenarios"].items():
        t = entry["trace"]
        lines.append(
            f"| {name} | {t['round_trips']:.1f} | {t['wall_ms']:.2f} | {t['server_ms']:.2f} "
            f"| {t['client_ms']:.2f} | {' → '.join(t['sequence'])} |"
        )
    lines += ["", "## Client time by package (cProfile self time)", ""]
    names = list(out["scenarios"])
    buckets = sorted({b for e in out["scenarios"].values() for b in e["cprofile"]["buckets"]})
    lines += ["| Package | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for bucket in buckets:
        cells = [f"{out['scenarios'][n]['cprofile']['buckets'].get(bucket, 0):.0%}" for n in names]
        lines.append(f"| {bucket} | " + " | ".join(cells) + " |")
    for name, entry in out["scenarios"].items():
        lines += ["", f"### {name}: top functions by self time", ""]
        lines += ["| Function | self share | cumulative µs per op | calls per op |"]
        lines += ["|---|---:|---:|---:|"]
        for row in entry["cprofile"]["top"]:
            lines.append(
                f"| `{row['function']}` | {row['tottime_share']:.1%} "
                f"| {row['cumtime_per_call_us']:,.0f} | {row['calls_per_op']:.1f} |"
            )
        if "pyinstrument" in entry:
            lines.append(f"\nCall tree: [{entry['pyinstrument']}]({entry['pyinstrument']})")
    lines += ["", "## What if (measured interleaved, same run)", ""]
    for scenario, rows in out.get("what_if", {}).items():
        lines += [f"### {scenario}", "", "| Variant | ops/s | p50 ms | p99 ms | vs as is |"]
        lines += ["|---|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(
                f"| {r['variant']} | {r['ops_per_s']:,.0f} | {r['p50_ms']:.2f} "
                f"| {r['p99_ms']:.2f} | {r['vs_as_is']:.2f}x |"
            )
        lines.append("")
    lines += ["## Pure-Python steps (µs per call, median of 5)", "", "| Step | µs |", "|---|---:|"]
    for step, us in out.get("micro_us", {}).items():
        lines.append(f"| {step} | {us:,.1f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
