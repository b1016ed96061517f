"""Which PostgreSQL tag layout should the event store use? A measurement at 10k and 1M events.

Layouts, each in its own tables of a dedicated database (created here, dropped at the end):

* **A** GIN over ``text[]`` (what sa_crablet uses now): ``tags @> $1::text[]``.
* **B** tag side table ``event_tags_b(tag, position)``, primary key ``(tag, position)``;
  ``events_b`` keeps an *unindexed* ``tags text[]`` column so reads can return the tags
  without a second index on the side table (lookup by position).
* **C** as A, but the GIN index has ``fastupdate = off`` (no pending list).

Scenarios (see ``/work/shared/brief/performance-targets.md``):

* **S2** conditional append: in one transaction, the check ``SELECT 1 ... WHERE <course tag>
  AND type IN (4 types) AND position > head LIMIT 1``, then INSERT one event with 2 tags,
  COMMIT. **S2 check** is that check alone (autocommit). **S2 check, library form** is the
  check sa_crablet actually issues (``sa_crablet.statements.conflict_select``): the head also
  carries a snapshot, so ``(position > head OR transaction_id >= xmax)``, plus
  ``transaction_id IS DISTINCT FROM pg_current_xact_id_if_assigned()``, ``ORDER BY position``.
* **S4** read by query: ``type IN (4 types) AND <tag> ORDER BY position``. ``bucket:<b>`` tags
  are filled so that every bucket holds ~100 events at both scales (buckets 0..99 within the
  first 10k events, buckets 100..9999 within the rest); ``course:<k>`` holds ~10 events at
  10k and ~1000 at 1M (read whole and with ``LIMIT 100``).
* bulk insert of 10k events in 1000-event batches (``INSERT ... SELECT unnest``) at 1M;
  table + index sizes at 1M; fill times.

Noise control: besides the tables that grow from 10k to 1M, a *control* copy of every layout
stays at 10k and is measured again, interleaved with the 1M tables, so the 1M/10k ratio can
also be taken within one time window. Every loop runs ``--repeats`` times with the layouts
interleaved (rotating order); tables report the median over repeats of each statistic.
psycopg 3 with prepared statements (``prepare=True``); one connection for appends, one
(autocommit) for reads and checks. autovacuum is off on this server and on these tables;
every fill ends with ``VACUUM (ANALYZE)`` (what autovacuum would do after a bulk load).

Run: ``.venv/bin/python -m benchmarks.tag_layout`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres"
DEFAULT_DB = "sa_crablet_tag_layout"
RESULTS = Path(__file__).parent / "results" / "tag_layout.md"

TYPES = (
    "CourseDefined",
    "CourseCapacityChanged",
    "StudentSubscribedToCourse",
    "StudentUnsubscribedFromCourse",
)
COURSES = 1000
STUDENTS = 10000
SMALL_BUCKETS = 100
TYPE_PARAMS = {f"t{i}": t for i, t in enumerate(TYPES)}
TYPES_IN = "type IN (%(t0)s, %(t1)s, %(t2)s, %(t3)s)"


# -- layouts -------------------------------------------------------------------------------------

EVENT_COLUMNS = """
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type varchar(255) NOT NULL,
    tags text[] NOT NULL,
    data json,
    transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at timestamptz DEFAULT now()
"""
NO_AUTOVACUUM = "WITH (autovacuum_enabled = off)"
UNNEST_BATCH = (
    "SELECT u.t, ARRAY[u.c, u.s, u.b], u.d::json "
    "FROM unnest(%(types)s::text[], %(courses)s::text[], %(students)s::text[], "
    "%(buckets)s::text[], %(datas)s::text[]) WITH ORDINALITY AS u(t, c, s, b, d, i) "
    "ORDER BY u.i"
)
LIBRARY_AFTER = (
    "({p}position > %(head)s OR {p}transaction_id >= %(xmax)s::text::xid8) "
    "AND {p}transaction_id IS DISTINCT FROM pg_current_xact_id_if_assigned()"
)


@dataclass(frozen=True)
class Layout:
    name: str  # A, B, C
    control: bool  # the copy that stays at the small scale
    title: str
    events: str
    ddl: list[str]
    s2_check: str
    s2_check_library: str
    s2_insert: str
    s4_read: str
    bulk_insert: str
    tag_table: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}-ctl" if self.control else self.name

    @property
    def tables(self) -> tuple[str, ...]:
        return (self.events,) if self.tag_table is None else (self.events, self.tag_table)


def gin_layout(name: str, title: str, fastupdate: bool, control: bool) -> Layout:
    ev = f"events_{name.lower()}" + ("_ctl" if control else "")
    gin_opts = "" if fastupdate else " WITH (fastupdate = off)"
    return Layout(
        name=name,
        control=control,
        title=title,
        events=ev,
        ddl=[
            f"CREATE TABLE {ev} ({EVENT_COLUMNS}) {NO_AUTOVACUUM}",
            f"CREATE INDEX {ev}_tags ON {ev} USING gin (tags){gin_opts}",
            f"CREATE INDEX {ev}_type_position ON {ev} (type, position)",
            f"CREATE INDEX {ev}_transaction_id ON {ev} (transaction_id)",
        ],
        s2_check=(
            f"SELECT 1 FROM {ev} WHERE tags @> %(tags)s::text[] AND {TYPES_IN} "
            "AND position > %(head)s LIMIT 1"
        ),
        s2_check_library=(
            f"SELECT position FROM {ev} WHERE {TYPES_IN} AND tags @> %(tags)s::text[] AND "
            + LIBRARY_AFTER.format(p="")
            + " ORDER BY position LIMIT 1"
        ),
        s2_insert=(
            f"INSERT INTO {ev} (type, tags, data) VALUES (%(type)s, %(tags)s::text[], "
            "%(data)s::json) RETURNING position"
        ),
        s4_read=(
            f"SELECT position, type, tags, data, recorded_at FROM {ev} "
            f"WHERE {TYPES_IN} AND tags @> %(tags)s::text[] ORDER BY position"
        ),
        bulk_insert=f"INSERT INTO {ev} (type, tags, data) {UNNEST_BATCH}",
    )


def side_table_layout(control: bool) -> Layout:
    sfx = "_ctl" if control else ""
    ev, tg = f"events_b{sfx}", f"event_tags_b{sfx}"
    return Layout(
        name="B",
        control=control,
        title="tag side table (tag, position)",
        events=ev,
        tag_table=tg,
        ddl=[
            f"CREATE TABLE {ev} ({EVENT_COLUMNS}) {NO_AUTOVACUUM}",
            f"CREATE INDEX {ev}_type_position ON {ev} (type, position)",
            f"CREATE INDEX {ev}_transaction_id ON {ev} (transaction_id)",
            f"CREATE TABLE {tg} (tag text NOT NULL, position bigint NOT NULL, "
            f"PRIMARY KEY (tag, position)) {NO_AUTOVACUUM}",
        ],
        # The bound on position is repeated inside the subquery: PostgreSQL does not carry
        # inequalities across the join, and the side table's key (tag, position) can use it.
        s2_check=(
            f"SELECT 1 FROM {ev} e WHERE e.position IN (SELECT t.position FROM {tg} t "
            "WHERE t.tag = %(tag)s AND t.position > %(head)s) "
            f"AND e.{TYPES_IN} AND e.position > %(head)s LIMIT 1"
        ),
        s2_check_library=(
            f"SELECT e.position FROM {ev} e WHERE e.{TYPES_IN} AND e.position IN "
            f"(SELECT t.position FROM {tg} t WHERE t.tag = %(tag)s) AND "
            + LIBRARY_AFTER.format(p="e.")
            + " ORDER BY e.position LIMIT 1"
        ),
        s2_insert=(
            f"WITH e AS (INSERT INTO {ev} (type, tags, data) VALUES (%(type)s, "
            "%(tags)s::text[], %(data)s::json) RETURNING position, tags) "
            f"INSERT INTO {tg} (tag, position) SELECT unnest(e.tags), e.position FROM e "
            "RETURNING position"
        ),
        s4_read=(
            "SELECT e.position, e.type, e.tags, e.data, e.recorded_at "
            f"FROM {tg} t JOIN {ev} e ON e.position = t.position "
            f"WHERE t.tag = %(tag)s AND e.{TYPES_IN} ORDER BY t.position"
        ),
        bulk_insert=(
            f"WITH e AS (INSERT INTO {ev} (type, tags, data) {UNNEST_BATCH} "
            f"RETURNING position, tags) "
            f"INSERT INTO {tg} (tag, position) SELECT unnest(e.tags), e.position FROM e"
        ),
    )


def layouts(control: bool) -> tuple[Layout, ...]:
    return (
        gin_layout("A", "GIN text[] (fastupdate on, current)", True, control),
        side_table_layout(control),
        gin_layout("C", "GIN text[] fastupdate=off", False, control),
    )


GROWING = layouts(control=False)
CONTROL = layouts(control=True)
ALL = GROWING + CONTROL


def tag_params(tag: str) -> dict[str, Any]:
    """Parameters for the tag filter of every layout (A/C use ``tags``, B uses ``tag``)."""
    return {"tag": tag, "tags": [tag], **TYPE_PARAMS}


def payload(k: int, j: int, rng: random.Random) -> str:
    data = {
        "courseId": f"course-{k}",
        "studentId": f"student-{j}",
        "capacity": rng.randrange(10, 100),
        "at": "2025-01-01T00:00",
    }
    return json.dumps(data)


def rotated(items: Sequence[Layout], repeat: int) -> list[Layout]:
    shift = repeat % len(items)
    return [*items[shift:], *items[:shift]]


# -- fill ----------------------------------------------------------------------------------------

# Deterministic pseudo-random tags per sequence number n, identical for every layout.
FILL_SOURCE = """
SELECT (ARRAY['{t0}', '{t1}', '{t2}', '{t3}'])[1 + n % 4] AS type,
       ARRAY['course:' || c, 'student:' || s, 'bucket:' || b] AS tags,
       json_build_object('courseId', 'course-' || c, 'studentId', 'student-' || s,
                          'capacity', 10 + n % 90, 'at', '2025-01-01T00:00') AS data
FROM (
    SELECT n,
           abs(hashint8extended(n, 1) % {courses}) AS c,
           abs(hashint8extended(n, 2) % {students}) AS s,
           CASE WHEN n <= {small} THEN abs(hashint8extended(n, 3) % {small_buckets})
                ELSE {small_buckets} + abs(hashint8extended(n, 3) % {big_buckets}) END AS b
    FROM generate_series({lo}::bigint, {hi}::bigint) AS n
) AS g
ORDER BY n
"""


def fill(conn: psycopg.Connection[Any], layout: Layout, lo: int, hi: int, args: Any) -> float:
    """Insert sequence numbers lo..hi (in chunks), VACUUM ANALYZE; return the insert time."""
    chunk = 200_000
    started = time.perf_counter()
    for start in range(lo, hi + 1, chunk):
        source = FILL_SOURCE.format(
            t0=TYPES[0],
            t1=TYPES[1],
            t2=TYPES[2],
            t3=TYPES[3],
            courses=COURSES,
            students=STUDENTS,
            small=args.small,
            small_buckets=SMALL_BUCKETS,
            big_buckets=big_buckets(args),
            lo=start,
            hi=min(hi, start + chunk - 1),
        )
        with conn.transaction():
            if layout.tag_table is None:
                conn.execute(f"INSERT INTO {layout.events} (type, tags, data) {source}")
            else:
                head = head_of(conn, layout)
                conn.execute(f"INSERT INTO {layout.events} (type, tags, data) {source}")
                conn.execute(
                    f"INSERT INTO {layout.tag_table} (tag, position) "
                    f"SELECT unnest(tags), position FROM {layout.events} WHERE position > %s",
                    (head,),
                )
    elapsed = time.perf_counter() - started
    for table in layout.tables:
        conn.execute(f"VACUUM (ANALYZE) {table}")
    return elapsed


def big_buckets(args: Any) -> int:
    return max(1, (args.large - args.small) // 100)


def buckets_for(layout: Layout, phase: str, args: Any) -> list[str]:
    """Bucket tags holding ~100 events in this layout's table at this phase."""
    if layout.control or phase == "small":
        return [f"bucket:{b}" for b in range(SMALL_BUCKETS)]
    return [f"bucket:{SMALL_BUCKETS + b}" for b in range(big_buckets(args))]


def count_events(conn: psycopg.Connection[Any], layout: Layout) -> int:
    row = conn.execute(f"SELECT count(*) FROM {layout.events}").fetchone()
    assert row is not None
    return int(row[0])


def head_of(conn: psycopg.Connection[Any], layout: Layout) -> int:
    row = conn.execute(f"SELECT coalesce(max(position), 0) FROM {layout.events}").fetchone()
    assert row is not None
    return int(row[0])


def snapshot_xmax(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
    assert row is not None
    return str(row[0])


# -- measurement ---------------------------------------------------------------------------------


@dataclass
class Run:
    p50_ms: float
    p99_ms: float
    ops_s: float
    rows: float


def summarize(samples_ns: list[int], wall_s: float, rows: int) -> Run:
    ordered = sorted(samples_ns)
    n = len(ordered)
    return Run(
        p50_ms=statistics.median(ordered) / 1e6,
        p99_ms=ordered[min(n - 1, round(0.99 * (n - 1)))] / 1e6,
        ops_s=n / wall_s,
        rows=rows / n,
    )


def timed(op: Callable[[], int], iterations: int) -> Run:
    """Run op() iterations times; op returns the number of rows it saw."""
    samples: list[int] = []
    rows = 0
    gc.collect()
    gc.disable()
    try:
        clock = time.perf_counter_ns
        wall = clock()
        for _ in range(iterations):
            t0 = clock()
            rows += op()
            samples.append(clock() - t0)
        wall_s = (clock() - wall) / 1e9
    finally:
        gc.enable()
    return summarize(samples, wall_s, rows)


def s2_append(
    conn: psycopg.Connection[Any], layout: Layout, seed: int, mode: str
) -> Callable[[], int]:
    """mode: "append" (check + insert + commit), "check" or "library" (check alone)."""
    rng = random.Random(seed)
    head = head_of(conn, layout)
    xmax = snapshot_xmax(conn)
    conn.commit()
    check = layout.s2_check_library if mode == "library" else layout.s2_check

    def op() -> int:
        nonlocal head
        k = rng.randrange(COURSES)
        j = rng.randrange(STUDENTS)
        etype = TYPES[rng.randrange(4)]
        data = payload(k, j, rng)
        cur = conn.cursor()
        cur.execute(check, {**tag_params(f"course:{k}"), "head": head, "xmax": xmax}, prepare=True)
        if cur.fetchone() is not None:
            raise RuntimeError("unexpected conflict in a single-writer S2 run")
        if mode != "append":
            conn.commit()
            return 0
        tags = [f"course:{k}", f"student:{j}"]
        cur.execute(layout.s2_insert, {"type": etype, "tags": tags, "data": data}, prepare=True)
        head = max(row[0] for row in cur.fetchall())
        conn.commit()
        return 1

    return op


def s4_read(
    conn: psycopg.Connection[Any], layout: Layout, seed: int, tags: Sequence[str], limit: bool
) -> Callable[[], int]:
    rng = random.Random(seed)
    query = layout.s4_read + (" LIMIT 100" if limit else "")

    def op() -> int:
        cur = conn.cursor()
        cur.execute(query, tag_params(tags[rng.randrange(len(tags))]), prepare=True)
        return len(cur.fetchall())

    return op


SCENARIOS = {
    "s2": "S2 conditional append (check + insert + commit)",
    "s2check": "S2 check alone",
    "s2lib": "S2 check alone, library form (snapshot OR, ORDER BY)",
    "s4bucket": "S4 read bucket tag (~100 events at both scales)",
    "s4course": "S4 read course tag, no limit (~10 / ~1000 events)",
    "s4course100": "S4 read course tag, LIMIT 100 (~10 / 100 events)",
}


def scenario_op(
    key: str,
    conns: tuple[psycopg.Connection[Any], psycopg.Connection[Any]],
    layout: Layout,
    seed: int,
    phase: str,
    args: Any,
) -> tuple[Callable[[], int], int]:
    write, read = conns
    if key == "s2":
        return s2_append(write, layout, seed, "append"), args.s2_iterations
    if key == "s2check":
        return s2_append(read, layout, seed, "check"), args.s2_iterations
    if key == "s2lib":
        return s2_append(read, layout, seed, "library"), args.s2_iterations
    if key == "s4bucket":
        tags = buckets_for(layout, phase, args)
        return s4_read(read, layout, seed, tags, limit=False), args.s4_iterations
    courses = [f"course:{k}" for k in range(COURSES)]
    limit = key == "s4course100"
    return s4_read(read, layout, seed, courses, limit=limit), args.s4_iterations


Results = dict[tuple[str, str], "Run"]  # (scenario, layout label) -> median run


def measure(
    conns: tuple[psycopg.Connection[Any], psycopg.Connection[Any]],
    targets: Sequence[Layout],
    phase: str,
    args: Any,
) -> Results:
    """Every scenario on every target, ``args.repeats`` times (targets interleaved)."""
    runs: dict[tuple[str, str], list[Run]] = {}
    for key, label in SCENARIOS.items():
        for layout in targets:  # warm-up: prepares the statements, loads the pages
            op, _ = scenario_op(key, conns, layout, 999, phase, args)
            timed(op, args.warmup)
        for repeat in range(args.repeats):
            for layout in rotated(targets, repeat):
                op, iterations = scenario_op(key, conns, layout, repeat, phase, args)
                run = timed(op, iterations)
                runs.setdefault((key, layout.label), []).append(run)
                print(
                    f"  [{phase}] {label} | {layout.label} | rep {repeat + 1}: "
                    f"p50 {run.p50_ms:.3f} ms, p99 {run.p99_ms:.3f} ms, "
                    f"{run.ops_s:,.0f}/s, rows {run.rows:.1f}",
                    flush=True,
                )
    return {k: median_run(v) for k, v in runs.items()}


def median_run(runs: list[Run]) -> Run:
    return Run(
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        ops_s=statistics.median(r.ops_s for r in runs),
        rows=statistics.median(r.rows for r in runs),
    )


def bulk_insert(conn: psycopg.Connection[Any], args: Any) -> dict[str, float]:
    """Events/s for batches of 1000 events (one transaction each), median over repeats."""
    rates: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        for layout in rotated(GROWING, repeat):
            rng = random.Random(repeat)
            batches = []
            for _ in range(args.bulk_batches):
                ks = [rng.randrange(COURSES) for _ in range(args.bulk_size)]
                js = [rng.randrange(STUDENTS) for _ in range(args.bulk_size)]
                bs = [rng.randrange(big_buckets(args)) for _ in range(args.bulk_size)]
                batches.append(
                    {
                        "types": [TYPES[rng.randrange(4)] for _ in ks],
                        "courses": [f"course:{k}" for k in ks],
                        "students": [f"student:{j}" for j in js],
                        "buckets": [f"bucket:{SMALL_BUCKETS + b}" for b in bs],
                        "datas": [payload(k, j, rng) for k, j in zip(ks, js, strict=True)],
                    }
                )
            started = time.perf_counter()
            for batch in batches:
                conn.execute(layout.bulk_insert, batch, prepare=True)
                conn.commit()
            rate = args.bulk_batches * args.bulk_size / (time.perf_counter() - started)
            rates.setdefault(layout.name, []).append(rate)
            print(f"  bulk insert | {layout.name} | rep {repeat + 1}: {rate:,.0f} events/s")
    return {name: statistics.median(values) for name, values in rates.items()}


def sizes(conn: psycopg.Connection[Any], layout: Layout) -> dict[str, int]:
    heap = idx = 0
    for table in layout.tables:
        row = conn.execute(
            "SELECT pg_table_size(%s::regclass), pg_indexes_size(%s::regclass)", (table, table)
        ).fetchone()
        assert row is not None
        heap += row[0]
        idx += row[1]
    if layout.tag_table is not None:
        row = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (layout.tag_table,))
    else:
        row = conn.execute("SELECT pg_relation_size(%s::regclass)", (f"{layout.events}_tags",))
    tag = row.fetchone()
    assert tag is not None
    return {"heap": heap, "indexes": idx, "total": heap + idx, "tag_structure": tag[0]}


# -- EXPLAIN -------------------------------------------------------------------------------------


def to_prepare(query: str) -> tuple[str, list[str]]:
    """``%(name)s`` placeholders -> ``$n``; returns the SQL and the parameter names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return re.sub(r"%\((\w+)\)s", number, query), names


def literal(value: Any) -> str:
    if isinstance(value, list):
        return "'{" + ",".join(f'"{v}"' for v in value) + "}'"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def explain(
    conn: psycopg.Connection[Any], name: str, query: str, params: list[dict[str, Any]]
) -> str:
    """PREPARE the statement, execute it as the benchmark did (so the plan cache settles on
    a custom or a generic plan), then EXPLAIN (ANALYZE, BUFFERS) EXECUTE the last params."""
    text, names = to_prepare(query)
    conn.execute(f"PREPARE {name} AS {text}")
    try:
        for p in params:
            conn.execute(f"EXECUTE {name}({', '.join(literal(p[n]) for n in names)})").fetchall()
        values = ", ".join(literal(params[-1][n]) for n in names)
        rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE {name}({values})").fetchall()
    finally:
        conn.execute(f"DEALLOCATE {name}")
    return "\n".join(r[0] for r in rows)


def explain_all(conn: psycopg.Connection[Any], phase: str, args: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    targets = CONTROL if phase == "small" else GROWING
    for layout in targets:
        rng = random.Random(7)
        head, xmax = head_of(conn, layout), snapshot_xmax(conn)
        courses = [tag_params(f"course:{rng.randrange(COURSES)}") for _ in range(8)]
        checks = [{**c, "head": head, "xmax": xmax} for c in courses]
        buckets = buckets_for(layout, phase, args)
        reads = [tag_params(buckets[rng.randrange(len(buckets))]) for _ in range(8)]
        statements = [
            ("S2 check", layout.s2_check, checks),
            ("S2 check, library form", layout.s2_check_library, checks),
            ("S4 bucket read", layout.s4_read, reads),
            ("S4 course read LIMIT 100", layout.s4_read + " LIMIT 100", courses),
        ]
        for i, (title, query, params) in enumerate(statements):
            plan = explain(conn, f"x{i}_{layout.label.replace('-', '_')}", query, params)
            out.append((f"{layout.label} ({count_events(conn, layout):,} events): {title}", plan))
    return out


# -- report --------------------------------------------------------------------------------------


def mb(n: int) -> str:
    return f"{n / 1024 / 1024:,.1f}"


def scale_label(n: int) -> str:
    return f"{n // 10**6}M" if n >= 10**6 and n % 10**6 == 0 else f"{n // 1000}k"


def report(
    args: Any,
    small: Results,
    large: Results,
    counts: dict[str, tuple[int, int]],
    fills: dict[str, tuple[float, float]],
    size: dict[str, dict[str, int]],
    bulk: dict[str, float],
    plans: list[tuple[str, str]],
    server: str,
) -> str:
    s, g = scale_label(args.small), scale_label(args.large)
    lines = [
        "# Tag layout benchmark (PostgreSQL)",
        "",
        f"Generated by `benchmarks/tag_layout.py` on {time.strftime('%Y-%m-%d %H:%M')}; "
        f"{server}; {args.repeats} repeats per cell, layouts interleaved, median of the "
        f"per-repeat statistics. S2: {args.s2_iterations} iterations, S4: "
        f"{args.s4_iterations} iterations per repeat. Latencies are client-side (psycopg 3, "
        "prepared statements), including fetching and decoding the rows.",
        "",
        "Layouts: " + "; ".join(f"**{lay.name}** {lay.title}" for lay in GROWING) + ".",
        "",
        "Events per table when each phase started (first / second phase): "
        + "; ".join(f"{name} {a:,} / {b:,}" for name, (a, b) in counts.items())
        + ". S2 appends add ~1.5k events per phase to the measured tables.",
        "",
        f"Columns: **{s}** = the growing tables measured at {s}; **{g}** = the same tables "
        f"after the fill to {g}; **{g}/{s}** = ratio of p50s (sequential phases); "
        f"**ctl** = p50 of the {s} control copy measured interleaved with the {g} tables; "
        f"**{g}/ctl** = ratio within one time window.",
        "",
        f"| Scenario | Layout | {s} p50 ms | {s} p99 ms | {s} ops/s | {g} p50 ms | {g} p99 ms "
        f"| {g} ops/s | {g}/{s} | ctl p50 ms | {g}/ctl | rows {s} / {g} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in SCENARIOS.items():
        for layout in GROWING:
            a = small[(key, layout.name)]
            b = large[(key, layout.name)]
            c = large[(key, f"{layout.name}-ctl")]
            lines.append(
                f"| {label} | {layout.name} | {a.p50_ms:.3f} | {a.p99_ms:.3f} | {a.ops_s:,.0f} "
                f"| {b.p50_ms:.3f} | {b.p99_ms:.3f} | {b.ops_s:,.0f} "
                f"| {b.p50_ms / a.p50_ms:.2f}x | {c.p50_ms:.3f} | {b.p50_ms / c.p50_ms:.2f}x "
                f"| {a.rows:.0f} / {b.rows:.0f} |"
            )
    lines += [
        "",
        f"Sizes at {g} (after VACUUM ANALYZE of the fill); bulk insert at {g} "
        f"({args.bulk_batches} x {args.bulk_size}-event `INSERT ... SELECT unnest` batches, "
        "one transaction each, median of repeats); fill times (`INSERT ... SELECT "
        "generate_series` in 200k-row statements, indexes in place, without the VACUUM):",
        "",
        "| Layout | heap MB | indexes MB | total MB | GIN index / side table MB "
        f"| bulk insert events/s | fill to {s} s | fill to {g} s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for layout in GROWING:
        z = size[layout.name]
        f_small, f_large = fills[layout.name]
        lines.append(
            f"| {layout.name} | {mb(z['heap'])} | {mb(z['indexes'])} | {mb(z['total'])} "
            f"| {mb(z['tag_structure'])} | {bulk[layout.name]:,.0f} | {f_small:.1f} "
            f"| {f_large:.1f} |"
        )
    lines += [
        "",
        "## EXPLAIN (ANALYZE, BUFFERS)",
        "",
        "Each statement was PREPAREd and executed 8 times before `EXPLAIN (ANALYZE, BUFFERS) "
        "EXECUTE`, as the benchmark's prepared statements were, so the plan shown is the one "
        "the plan cache settled on (`$n` in a condition means a generic plan). Taken after "
        f"the {g} measurements, on the {g} tables and on the {s} control tables.",
    ]
    for title, plan in plans:
        lines += ["", f"### {title}", "", "```", plan, "```"]
    return "\n".join(lines) + "\n"


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Any:
    parser = argparse.ArgumentParser(description="PostgreSQL tag layout benchmark")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="libpq DSN of the server (no dbname)")
    parser.add_argument("--db", default=DEFAULT_DB, help="database to create and drop")
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--s2-iterations", type=int, default=500)
    parser.add_argument("--s4-iterations", type=int, default=300)
    parser.add_argument("--bulk-batches", type=int, default=10)
    parser.add_argument("--bulk-size", type=int, default=1000)
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    name = sql.Identifier(args.db)
    with psycopg.connect(args.dsn, dbname="postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    try:
        text = run(args)
    finally:
        if not args.keep_db:
            with psycopg.connect(args.dsn, dbname="postgres", autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print()
    print(text)
    print(f"written to {args.output}")
    return 0


def run(args: Any) -> str:
    with (
        psycopg.connect(args.dsn, dbname=args.db, autocommit=True) as admin,
        psycopg.connect(args.dsn, dbname=args.db) as write,
        psycopg.connect(args.dsn, dbname=args.db, autocommit=True) as read,
    ):
        row = admin.execute("SELECT version()").fetchone()
        assert row is not None
        server = str(row[0]).split(" on ")[0]
        for layout in ALL:
            for statement in layout.ddl:
                admin.execute(statement)
        conns = (write, read)

        print(f"filling to {args.small:,} events", flush=True)
        small_fill = {lay.label: fill(admin, lay, 1, args.small, args) for lay in ALL}
        small_counts = {lay.label: count_events(admin, lay) for lay in ALL}
        small = measure(conns, ALL, "small", args)

        print(f"filling to {args.large:,} events", flush=True)
        large_fill = {
            lay.label: fill(admin, lay, args.small + 1, args.large, args) for lay in GROWING
        }
        size = {lay.name: sizes(admin, lay) for lay in GROWING}
        fills = {lay.name: (small_fill[lay.label], large_fill[lay.label]) for lay in GROWING}
        counts = {lay.label: (small_counts[lay.label], count_events(admin, lay)) for lay in ALL}
        for lay in GROWING:
            print(f"  {lay.name}: fill {fills[lay.name]}, size {size[lay.name]}", flush=True)
        large = measure(conns, ALL, "large", args)

        print("EXPLAIN", flush=True)
        plans = explain_all(admin, "large", args) + explain_all(admin, "small", args)
        print("bulk insert", flush=True)
        bulk = bulk_insert(write, args)
    return report(args, small, large, counts, fills, size, bulk, plans, server)


if __name__ == "__main__":
    sys.exit(main())
