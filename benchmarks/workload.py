"""The workload shared by every contender: event types, payloads, tags, and database fills.

Four event types, a ~95-byte JSON payload, one tag ``course:<k>``. Fills run server-side
(``INSERT ... SELECT generate_series``) with the same deterministic rows for every
contender, then ``VACUUM (ANALYZE)``: autovacuum is off on the benchmark server, so this is
what autovacuum would have done after a bulk load.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

TYPES = (
    "CourseDefined",
    "CourseCapacityChanged",
    "StudentSubscribedToCourse",
    "StudentUnsubscribedFromCourse",
)
COURSES = 1000
STUDENTS = 10_000
EVENTS_TABLE = "sa_crablet_events"
PEER_PREFIX = "dcb_events"
PEER_MAIN = f"{PEER_PREFIX}_tt_main"
PEER_TAGS = f"{PEER_PREFIX}_tt_tag"
TS_PEER_TABLE = "events"
"""The TypeScript peer's table (``PostgresEventStore`` without a ``tablePrefix``)."""
FILL_CHUNK = 200_000


@dataclass(frozen=True, slots=True)
class Ev:
    """A contender-neutral event: each contender turns it into its own event value."""

    type: str
    tag: str
    data: dict[str, Any]


SUBSCRIBED = TYPES[2]


def course_tag(k: int) -> str:
    return f"course:{k}"


def payload(k: int, j: int, capacity: int) -> dict[str, Any]:
    """The ~95-byte payload (94 bytes as compact JSON)."""
    return {
        "courseId": f"course-{k}",
        "studentId": f"student-{j}",
        "capacity": capacity,
        "at": "2025-01-01T00:00:00Z",
    }


class EventSource:
    """Deterministic random events for appends."""

    def __init__(self, seed: int, courses: int = COURSES, offset: int = 0) -> None:
        self.rng = random.Random(seed)
        self.courses = courses
        self.offset = offset  # courses offset .. offset + courses - 1

    def course(self) -> int:
        return self.offset + self.rng.randrange(self.courses)

    def event(self, k: int | None = None, type_: str | None = None) -> Ev:
        rng = self.rng
        k = self.course() if k is None else k
        type_ = TYPES[rng.randrange(4)] if type_ is None else type_
        return Ev(type_, course_tag(k), payload(k, rng.randrange(STUDENTS), rng.randrange(10, 100)))

    def batch(self, size: int) -> list[Ev]:
        return [self.event() for _ in range(size)]


def make_subscription(tag: str, src: EventSource) -> Callable[[int], Ev]:
    """A decision's event: a subscription to ``tag``'s course carrying ``seen``, the number
    of in-scope events the decision saw (what the S7b invariant checks)."""
    k = int(tag.split(":")[1]) if tag.split(":")[1].isdigit() else 0

    def make(seen: int) -> Ev:
        data = payload(k, src.rng.randrange(10_000), 50)
        data["seen"] = seen
        return Ev(SUBSCRIBED, tag, data)

    return make


# -- server-side fill -----------------------------------------------------------------------------

# Row n of every store: the same type, course and payload text for every contender.
_FILL_ROWS = """
SELECT n,
       (ARRAY['{t0}', '{t1}', '{t2}', '{t3}'])[1 + n % 4] AS type,
       'course:' || c AS tag,
       '{{"courseId":"course-' || c || '","studentId":"student-' || s
           || '","capacity":' || (10 + n % 90) || ',"at":"2025-01-01T00:00:00Z"}}' AS data
FROM (
    SELECT n, abs(hashint8extended(n, 1) % {courses}) AS c,
              abs(hashint8extended(n, 2) % {students}) AS s
    FROM generate_series({lo}::bigint, {hi}::bigint) AS n
) AS g
"""


def _rows(lo: int, hi: int, courses: int) -> str:
    return _FILL_ROWS.format(
        t0=TYPES[0],
        t1=TYPES[1],
        t2=TYPES[2],
        t3=TYPES[3],
        courses=courses,
        students=STUDENTS,
        lo=lo,
        hi=hi,
    )


def _fill(
    conn: psycopg.Connection[Any],
    count: int,
    courses: int,
    table: str,
    insert: Callable[[str], str],
) -> float:
    """Insert ``count`` rows in chunks through ``insert(rows)`` (the statement that copies
    the rows query into ``table``), then vacuum ``table``; return the seconds the inserts took."""
    started = time.perf_counter()
    for lo in range(1, count + 1, FILL_CHUNK):
        rows = _rows(lo, min(count, lo + FILL_CHUNK - 1), courses)
        with conn.transaction():
            conn.execute(insert(rows))
    elapsed = time.perf_counter() - started
    conn.execute(f"VACUUM (ANALYZE) {table}")
    return elapsed


def fill_crablet_schema(conn: psycopg.Connection[Any], count: int, courses: int) -> float:
    """Fill sa_crablet's events table (used by sa_crablet and the floor); return seconds."""
    return _fill(
        conn,
        count,
        courses,
        EVENTS_TABLE,
        lambda rows: (
            f"INSERT INTO {EVENTS_TABLE} (type, tags, data) "
            f"SELECT type, ARRAY[tag], data::json FROM ({rows}) AS r ORDER BY n"
        ),
    )


def fill_ts_peer_schema(conn: psycopg.Connection[Any], count: int, courses: int) -> float:
    """Fill the TypeScript peer's table (after its ``ensureInstalled()``); return seconds.

    Its ``payload`` column holds the text the peer writes itself, ``{"data": ...,
    "metadata": ...}``; positions come from its ``BIGSERIAL``, whose sequence its read
    barrier and conditions consult.
    """
    return _fill(
        conn,
        count,
        courses,
        TS_PEER_TABLE,
        lambda rows: (
            f"INSERT INTO {TS_PEER_TABLE} (type, tags, payload) "
            """SELECT type, ARRAY[tag], '{"data":' || data || ',"metadata":{}}' """
            f"FROM ({rows}) AS r ORDER BY n"
        ),
    )


def fill_peer_schema(conn: psycopg.Connection[Any], count: int, courses: int) -> float:
    """Fill the peer's two tables (events, then the tag side table); return seconds."""
    started = time.perf_counter()
    for lo in range(1, count + 1, FILL_CHUNK):
        rows = _rows(lo, min(count, lo + FILL_CHUNK - 1), courses)
        with conn.transaction():
            row = conn.execute(f"SELECT coalesce(max(id), 0) FROM {PEER_MAIN}").fetchone()
            assert row is not None
            conn.execute(
                f"INSERT INTO {PEER_MAIN} (type, data, tags) "
                f"SELECT type, convert_to(data, 'UTF8'), ARRAY[tag] FROM ({rows}) AS r ORDER BY n"
            )
            conn.execute(
                f"INSERT INTO {PEER_TAGS} (tag, main_id) "
                f"SELECT unnest(tags), id FROM {PEER_MAIN} WHERE id > %s ORDER BY id",
                (row[0],),
            )
    elapsed = time.perf_counter() - started
    for table in (PEER_MAIN, PEER_TAGS):
        conn.execute(f"VACUUM (ANALYZE) {table}")
    return elapsed


# -- databases ------------------------------------------------------------------------------------


def admin(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, dbname="postgres", autocommit=True)


def create_database(dsn: str, name: str) -> None:
    with admin(dsn) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(dsn: str, name: str) -> None:
    with admin(dsn) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def connect(dsn: str, dbname: str, autocommit: bool = True) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, dbname=dbname, autocommit=autocommit)


def dsn_params(dsn: str) -> dict[str, Any]:
    """host, port, user, password of a libpq DSN (for the peer's datastore and for URLs)."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return {
        "host": str(info.get("host", "127.0.0.1")),
        "port": int(str(info.get("port", 5432))),
        "user": str(info.get("user", "postgres")),
        "password": str(info.get("password", "")),
    }


def compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
