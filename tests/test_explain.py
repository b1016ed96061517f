"""Query plans on PostgreSQL: the statements the store runs use the indexes built for them.

A fresh database gets 20,000 events (one INSERT ... SELECT), is vacuumed and analysed, and
then the exact statements of :mod:`sa_crablet.statements` are EXPLAINed with their bound
parameters. Tag reads must use the GIN index on ``tags``, reads of a (selective) type the
``(type, position)`` index, and none of them, nor the append conflict check, may scan the
whole events table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import ClauseElement, Engine, Executable, create_engine, pool, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from sa_crablet import (
    AppendCondition,
    Event,
    EventStore,
    Head,
    Query,
    QueryItem,
)
from sa_crablet._plans.reads import read_plan
from sa_crablet.migrate import upgrade
from sa_crablet.query import Snapshot
from sa_crablet.schema import (
    EVENTS_TABLE,
    IX_EVENTS_TAGS,
    IX_EVENTS_TRANSACTION,
    IX_EVENTS_TYPE,
    POSTGRESQL,
)
from sa_crablet.statements import conflict_select, read_select
from tests.test_migrations import fresh_postgres_database

pytestmark = pytest.mark.postgresql_only

EVENT_COUNT = 20_000
OUR_INDEXES = {IX_EVENTS_TAGS, IX_EVENTS_TYPE, IX_EVENTS_TRANSACTION, f"pk_{EVENTS_TABLE}"}

# Four types, as skewed as real streams are: a type-only read is for the rare ones (an
# unbounded read of a type that is most of the table is rightly a sequential scan).
FILL = text(
    f"""
    INSERT INTO {EVENTS_TABLE} (type, tags, data)
    SELECT CASE
               WHEN i % 100 = 0 THEN 'CourseDefined'
               WHEN i % 100 < 5 THEN 'CourseCapacityChanged'
               WHEN i % 100 < 30 THEN 'StudentUnsubscribed'
               ELSE 'StudentSubscribed'
           END,
           ARRAY['course:' || (i % 1000), 'student:' || (i % 5000)],
           jsonb_build_object('i', i)
    FROM generate_series(1, {EVENT_COUNT}) AS i
    """
)


class Explain(Executable, ClauseElement):
    """``EXPLAIN (FORMAT JSON) <statement>``, bound parameters and all."""

    inherit_cache = False

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement


@compiles(Explain, "postgresql")
def _explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.statement, **kw)


def store_filled_by(server_url: str, fill: Any) -> Iterator[Engine]:
    """A database of its own with the events ``fill`` inserts, vacuumed (so freshly
    inserted GIN entries leave the index's pending list, as autovacuum does in production)
    and analysed."""
    with fresh_postgres_database(server_url) as url:
        engine = create_engine(url, poolclass=pool.NullPool)
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(fill)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"VACUUM ANALYZE {EVENTS_TABLE}"))
        yield engine
        engine.dispose()


@pytest.fixture(scope="module")
def filled(postgres_server_url: str) -> Iterator[Engine]:
    yield from store_filled_by(postgres_server_url, FILL)


def plan_of(engine: Engine, statement: ClauseElement) -> dict[str, Any]:
    with engine.connect() as conn:
        document = conn.execute(Explain(statement)).scalar_one()
    if isinstance(document, str):
        document = json.loads(document)
    plan: dict[str, Any] = document[0]["Plan"]
    return plan


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def indexes_used(plan: dict[str, Any]) -> set[str]:
    return {str(n["Index Name"]) for n in nodes(plan) if "Index Name" in n}


def assert_no_seq_scan(plan: dict[str, Any]) -> None:
    scans = [n for n in nodes(plan) if n["Node Type"] == "Seq Scan"]
    assert not scans, "sequential scan in plan:\n" + json.dumps(plan, indent=1)


def read(query: Query, **kw: Any) -> Any:
    options: dict[str, Any] = {"backwards": False, "limit": None, **kw}
    return read_select(query, None, dialect=POSTGRESQL, **options)


TAG_READS = {
    "one tag": read(Query.of(tags=["course:7"])),
    "two tags and a type": read(
        Query.of(types=["StudentSubscribed"], tags=["course:7", "student:7"])
    ),
    "two items": read(Query([QueryItem(tags=["course:7"]), QueryItem(tags=["student:8"])])),
    "one tag, backwards, limited": read(Query.of(tags=["student:42"]), backwards=True, limit=5),
}

TYPE_READS = {
    "one type": read(Query.of(types=["CourseDefined"])),
    "two types": read(Query.of(types=["CourseDefined", "CourseCapacityChanged"])),
}


@pytest.mark.parametrize("case", sorted(TAG_READS))
def test_tag_reads_use_the_gin_index(filled: Engine, case: str) -> None:
    plan = plan_of(filled, TAG_READS[case])
    assert_no_seq_scan(plan)
    assert IX_EVENTS_TAGS in indexes_used(plan), json.dumps(plan, indent=1)


@pytest.mark.parametrize("case", sorted(TYPE_READS))
def test_type_reads_use_the_type_index(filled: Engine, case: str) -> None:
    plan = plan_of(filled, TYPE_READS[case])
    assert_no_seq_scan(plan)
    assert IX_EVENTS_TYPE in indexes_used(plan), json.dumps(plan, indent=1)


@pytest.mark.parametrize("backwards", [False, True], ids=["forwards", "backwards"])
def test_pages_by_position_walk_the_primary_key_whatever_the_values(
    filled: Engine, backwards: bool
) -> None:
    """A long read of every event with no transaction open pages by position, through a
    prepared statement: even its generic plan (which PostgreSQL may switch to after five
    runs) walks the primary key from the resume position and stops at the page's end."""
    step = read_plan(Query.all(), None, backwards, None, POSTGRESQL, 1000).next_page(0, 1000)
    assert step is not None and step.prepare
    dialect = postgresql.psycopg.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
    sql = str(step.statement.compile(dialect=dialect))
    with filled.connect() as conn:
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        conn.exec_driver_sql(f"PREPARE page(bigint, bigint) AS {sql}")
        resume = EVENT_COUNT if backwards else 0
        document = conn.exec_driver_sql(
            f"EXPLAIN (FORMAT JSON) EXECUTE page({resume}, 1000)"
        ).scalar_one()
        conn.rollback()
    plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    assert plan["Node Type"] == "Limit", json.dumps(plan, indent=1)
    assert_no_seq_scan(plan)
    assert indexes_used(plan) == {f"pk_{EVENTS_TABLE}"}, json.dumps(plan, indent=1)
    assert not [n for n in nodes(plan) if n["Node Type"] == "Sort"], json.dumps(plan, indent=1)


def current_head(engine: Engine) -> Head:
    """A head after the last position, with a real snapshot (what a read hands back)."""
    with engine.connect() as conn:
        position, snapshot = conn.execute(
            text(f"SELECT max(position), CAST(pg_current_snapshot() AS text) FROM {EVENTS_TABLE}")
        ).one()
    assert position == EVENT_COUNT
    return Head(int(position), Snapshot.parse(str(snapshot)))


CONFLICT_QUERIES = {
    "tags": Query.of(tags=["course:7", "student:7"]),
    "one tag": Query.of(tags=["course:7"]),
    "type": Query.of(types=["CourseDefined"]),
    "common type": Query.of(types=["StudentSubscribed"]),
    "type and tag": Query.of(types=["StudentSubscribed"], tags=["course:7"]),
}


@pytest.mark.parametrize("with_snapshot", [True, False], ids=["snapshot", "bare-position"])
@pytest.mark.parametrize("case", sorted(CONFLICT_QUERIES))
def test_conflict_check_after_the_last_position_uses_indexes(
    filled: Engine, case: str, with_snapshot: bool
) -> None:
    head = current_head(filled)
    if not with_snapshot:
        head = Head(head.position)
    plan = plan_of(filled, conflict_select(CONFLICT_QUERIES[case], head, POSTGRESQL))
    assert_no_seq_scan(plan)
    assert indexes_used(plan) & OUR_INDEXES, json.dumps(plan, indent=1)


@pytest.mark.postgresql_only
def test_conflict_checks_are_never_prepared_with_a_generic_plan(engine: Engine) -> None:
    """psycopg prepares a statement after 5 executions; a generic plan for the conflict
    check cannot tell that ``position > $1`` is the newest sliver of the table."""
    with Session(engine) as session:
        store = EventStore(session)
        for i in range(12):
            query = Query.of(types=["Seen"], tags=[f"k:{i}"])
            store.append(Event("Seen", [f"k:{i}"]), AppendCondition(query, i))
            store.append(Event("Free", [f"k:{i}"]))
        prepared = session.execute(text("SELECT statement FROM pg_prepared_statements"))
        statements = [str(s) for s in prepared.scalars()]
        assert statements, "psycopg prepared nothing: the test would not show anything"
        assert not [s for s in statements if "EXISTS" in s], statements
        session.rollback()


REGISTRATIONS = text(
    f"""
    INSERT INTO {EVENTS_TABLE} (type, tags, data)
    SELECT 'Registered', ARRAY['user:' || i], jsonb_build_object('i', i)
    FROM generate_series(1, {EVENT_COUNT}) AS i
    """
)


@pytest.fixture(scope="module")
def registrations(postgres_server_url: str) -> Iterator[Engine]:
    """One type, one unique tag per event (every user registered once): the statistics
    hold no common tag, so PostgreSQL falls back to a default guess for any tag."""
    yield from store_filled_by(postgres_server_url, REGISTRATIONS)


@pytest.mark.parametrize("head_kind", ["snapshot", "bare-position", "none"])
@pytest.mark.parametrize(
    "scope",
    [
        Query.of(types=["Registered"], tags=["user:new"]),
        Query.of(tags=["user:new"]),
        Query.of(types=["Registered"], tags=["user:new", "org:1"]),
    ],
    ids=["type and new tag", "new tag", "two tags"],
)
def test_a_check_on_a_new_entity_looks_up_its_tag(
    registrations: Engine, scope: Query, head_kind: str
) -> None:
    """The commonest DCB decision, "register once": a read of a tag with no events yet
    gives a head at position 0 (or the condition has no head at all), so nothing bounds
    the positions. The check must look the tag up in the GIN index, not walk the primary
    key hoping for an early match (on a new tag that reads the whole table: 5-7 ms at 20k
    events)."""
    with registrations.connect() as conn:
        snapshot = Snapshot.parse(str(conn.execute(text("SELECT pg_current_snapshot()")).scalar()))
    head = {
        "snapshot": Head(0, snapshot),
        "bare-position": Head(0),
        "none": None,
    }[head_kind]
    plan = plan_of(registrations, conflict_select(scope, head, POSTGRESQL))
    assert_no_seq_scan(plan)
    assert IX_EVENTS_TAGS in indexes_used(plan), json.dumps(plan, indent=1)
