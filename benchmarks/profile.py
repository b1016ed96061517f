"""Profile sa_crablet on S1, S2, S2', S4 and S6: ``python -m benchmarks.profile``.

For each scenario, on a fresh PostgreSQL store (100k events by default):

1. round trips per operation and the split between time waiting on PostgreSQL (request
   sent to ``ReadyForQuery``, from a libpq trace) and time in the client;
2. a cProfile split of the client's time by package, and the top functions;
3. a pyinstrument call tree (``benchmarks/results/profile/<scenario>.txt``);
4. "what if" variants measured interleaved with the library as it is: the same store
   through SQLAlchemy Core (``direct_execution=False``), and lower bounds (the floor's SQL
   through a SQLAlchemy ``Session`` with ``text()``, on the Session's own psycopg
   connection, and through psycopg alone);
5. the cost of the pure-Python steps of an operation (microseconds per call).

Writes ``benchmarks/results/profile.md`` and ``profile.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text
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
from sa_crablet import (
    AppendCondition,
    Event,
    EventStore,
    EventStoreConfig,
    Head,
    Query,
)
from sa_crablet._plans.appends import append_plan, checked_insert, encode_batch
from sa_crablet._plans.locks import plan
from sa_crablet._plans.reads import read_plan
from sa_crablet._plans.rows import to_event
from sa_crablet._plans.shapes import Scope
from sa_crablet._runners.psycopg import compiled
from sa_crablet.query import Snapshot

RESULTS = Path(__file__).resolve().parent / "results"
E = EVENTS_TABLE


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def with_timeouts(store: CrabletPg) -> CrabletPg:
    """The same store with ``lock_timeout`` and ``statement_timeout`` configured, as a
    production deployment would: what the per-operation timeouts cost."""
    timed = CrabletPg(store.dsn, store.dbname)
    timed.config = EventStoreConfig(lock_timeout=2, statement_timeout=10)
    return timed


def core_path(store: CrabletPg) -> CrabletPg:
    """The same store, database and operations, with ``direct_execution=False``: every
    statement through SQLAlchemy Core, as an engine with cursor listeners would run."""
    core = CrabletPg(store.dsn, store.dbname)
    core.config = EventStoreConfig(direct_execution=False)
    return core


def sqlalchemy_text_ops(store: CrabletPg) -> dict[str, Op]:
    """The floor's statements through a SQLAlchemy Session and ``text()``: the cost of the
    Session and Core execution without sa_crablet's own code."""
    insert_one = text(
        f"INSERT INTO {E} (type, tags, data) "
        "VALUES (:type, CAST(:tags AS text[]), CAST(:data AS json)) RETURNING position"
    )
    lock = text(
        "SELECT count(CASE WHEN lk.x THEN pg_advisory_xact_lock(lk.k)::text "
        "ELSE pg_advisory_xact_lock_shared(lk.k)::text END) "
        "FROM unnest(CAST(:keys AS bigint[]), CAST(:excl AS bool[])) AS lk(k, x)"
    )
    insert_if = text(
        f"INSERT INTO {E} (type, tags, data) "
        "SELECT :type, CAST(:tags AS text[]), CAST(:data AS json) "
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
    core = core_path(store)
    timed = with_timeouts(store)
    lasts = store.last_positions()  # the floor shares this database: positions are common
    keys = sorted(lasts)
    floor_ops = {
        "S1": pg_suite._appender(floor, EventSource(1)),
        "S2": pg_suite.conditional_appender(floor, EventSource(2, 250, 750)),
        "S4": pg_suite.reader(floor, EventSource(4)),
        "S6": pg_suite._decider(floor, EventSource(6), {}, "floor"),
    }
    via_core = "sa_crablet through Core (direct_execution=False)"
    via_timeouts = "sa_crablet with lock_timeout and statement_timeout configured"
    plans: dict[str, dict[str, Op]] = {
        "S1": {
            "sa_crablet as is": base["S1"],
            via_core: pg_suite._appender(core, EventSource(11)),
            "SQLAlchemy Session + text() (no sa_crablet code)": sa_text["S1"],
            RAW: sa_text["S1 raw"],
            "psycopg floor": floor_ops["S1"],
        },
        "S2": {
            "sa_crablet as is": pg_suite.conditional_appender(store, EventSource(2, 250, 0)),
            via_core: pg_suite.conditional_appender(core, EventSource(12, 125, 250)),
            via_timeouts: pg_suite.conditional_appender(timed, EventSource(15, 125, 375)),
            "SQLAlchemy Session + text() (same lock + INSERT)": sa_text["S2"],
            RAW: sa_text["S2 raw"],
            "psycopg floor": floor_ops["S2"],
        },
        "S2'": {
            "sa_crablet as is": base["S2'"],
            via_core: pg_suite._rejected_appender(core, EventSource(13), keys, lasts),
            "psycopg floor": pg_suite._rejected_appender(floor, EventSource(3), keys, lasts),
        },
        "S4": {
            "sa_crablet as is": base["S4"],
            via_core: pg_suite.reader(core, EventSource(14)),
            via_timeouts: pg_suite.reader(timed, EventSource(24)),
            "SQLAlchemy Session + text() (client-side)": sa_text["S4"],
            RAW: sa_text["S4 raw"],
            "psycopg floor": floor_ops["S4"],
        },
        "S6": {
            "sa_crablet as is": base["S6"],
            via_core: pg_suite._decider(core, EventSource(16), {}, "x"),
            "psycopg floor": floor_ops["S6"],
        },
    }
    out: dict[str, Any] = {}
    for scenario, ops in plans.items():
        log(f"  what-if {scenario}")
        out[scenario] = measure_variants(ops, rounds, calls)
    core.close()
    timed.close()
    return out


def measure_variants(ops: dict[str, Op], rounds: int, calls: int) -> list[dict[str, Any]]:
    """The variants measured interleaved, each against "sa_crablet as is"."""
    results = timing.interleaved(ops, rounds=rounds, calls=calls, warmup=30)
    baseline = results["sa_crablet as is"].calls_per_s
    return [
        {
            "variant": name,
            "ops_per_s": sm.calls_per_s,
            "p50_ms": sm.percentile_ms(50),
            "p99_ms": sm.percentile_ms(99),
            "vs_as_is": sm.calls_per_s / baseline if baseline else None,
        }
        for name, sm in results.items()
    ]


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
        out["S1 (SQLite, WAL, synchronous=NORMAL)"] = measure_variants(ops, rounds, calls)
        crablet.close()
        floor.close()
    return out


def micro_costs(store: CrabletPg) -> dict[str, float]:
    ev = Ev(TYPES[2], "course:7", {"courseId": "course-7", "studentId": "s-1", "capacity": 5})
    event = Event(ev.type, (ev.tag,), ev.data)
    q1 = Query.of(types=[ev.type], tags=[ev.tag])
    q4 = Query.of(types=TYPES, tags=[ev.tag])
    head = Head(123, Snapshot(100, 105, (101, 103)))
    scope = Scope.of(q4, head, "postgresql")
    checked = checked_insert(scope.query, scope.head)
    params = scope.params | {"batch": "[]", "command_id": None, "isolation_checked": False}
    dialect = store.engine.dialect
    form = compiled(checked, dialect)
    row = (1, ev.type, [ev.tag], ev.data, None, __import__("datetime").datetime.now().astimezone())
    session = Session(store.engine)
    costs = {
        "Event(type, tags, data)": micro_us(lambda: Event(ev.type, (ev.tag,), ev.data)),
        "Query.of(types, tags) + AppendCondition": micro_us(
            lambda: AppendCondition(Query.of(types=[ev.type], tags=[ev.tag]), 123)
        ),
        "EventStore(session)": micro_us(lambda: EventStore(session)),
        "encode_batch([event])": micro_us(lambda: encode_batch([event])),
        "locks.plan(query, [event])": micro_us(lambda: plan(q1, [event])),
        "Scope.of (shapes and parameters, per append)": micro_us(
            lambda: Scope.of(q4, head, "postgresql")
        ),
        "append_plan(...) (per conditional append)": micro_us(
            lambda: append_plan("postgresql", [event], scope, plan(q4, [event]))
        ),
        "checked_insert(...) (lru_cache hit)": micro_us(
            lambda: checked_insert(scope.query, scope.head)
        ),
        "compiled(...) (lru_cache hit)": micro_us(lambda: compiled(checked, dialect)),
        "Compiled.bind(params)": micro_us(lambda: form.bind(params)),
        "read_plan(...).first (per read)": micro_us(
            lambda: read_plan(q4, None, False, None, "postgresql", 1000).first
        ),
        "to_event(row) (per event read)": micro_us(lambda: to_event(row)),
        "Snapshot.parse": micro_us(lambda: Snapshot.parse("100:105:101,103", "102")),
    }
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
