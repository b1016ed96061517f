"""SQLite's tag index: a (tag, position) side table kept in step by triggers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

import sa_crablet
from sa_crablet import (
    AppendCondition,
    Event,
    EventStore,
    Query,
    allow_mutation,
    create_sqlite_engine,
    events_table,
)
from sa_crablet.schema import EVENT_TAGS_TABLE


def tag_rows(engine: Engine) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT tag, position FROM {EVENT_TAGS_TABLE} ORDER BY 2, 1"))
        return [(str(tag), int(position)) for tag, position in rows]


@contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The (SQL, parameters) of every statement run on ``engine`` meanwhile."""
    executed: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        executed.append((str(args[2]), args[3]))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield executed
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def query_plan(engine: Engine, sql: str, params: Any) -> str:
    """SQLite's plan for a statement, after ``ANALYZE`` (statistics must not spoil it)."""
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
        return " | ".join(str(row[-1]) for row in rows)


@pytest.mark.sqlite_only
def test_tag_reads_use_the_side_table_index(engine: Engine) -> None:
    with Session(engine) as session:
        EventStore(session).append([Event("T", [f"course:{i % 50}"]) for i in range(500)])
        session.commit()
    with captured(engine) as executed, Session(engine) as session:
        found = EventStore(session).read(Query.of(types=["T"], tags=["course:7"]))
        assert len(list(found)) == 10
    plan = query_plan(engine, *executed[-1])
    assert f"SEARCH {EVENT_TAGS_TABLE} USING PRIMARY KEY (tag=?)" in plan, plan
    assert f"SCAN {events_table.name}" not in plan, plan


@pytest.mark.sqlite_only
def test_a_conditional_append_reads_only_the_tags_recent_positions(engine: Engine) -> None:
    """On a tag with a long history, the condition's tag look-up starts at the head (a
    range of the side table's key), never at the tag's first event."""
    with Session(engine) as session:
        store = EventStore(session)
        store.append([Event("T", ["account:hot"]) for _ in range(300)])
        head = store.append([Event("T", [f"account:{i}"]) for i in range(300)])
        session.commit()
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    with captured(engine) as executed, Session(engine) as session:
        condition = AppendCondition(Query.of(types=["T"], tags=["account:hot"]), head)
        EventStore(session).append(Event("T", ["account:hot"]), condition)
        session.commit()
    insert = next(call for call in executed if call[0].startswith("INSERT"))
    plan = query_plan(engine, *insert)
    assert f"SEARCH {EVENT_TAGS_TABLE} USING PRIMARY KEY (tag=? AND position>?)" in plan, plan


@pytest.mark.sqlite_only
def test_side_table_follows_appends_and_maintenance(engine: Engine) -> None:
    with Session(engine) as session:
        EventStore(session).append([Event("A", ["x", "y"]), Event("B"), Event("C", ["y"])])
        session.commit()
    assert tag_rows(engine) == [("x", 1), ("y", 1), ("y", 3)]
    with Session(engine) as session:
        with allow_mutation(session):
            session.execute(
                events_table.update().where(events_table.c.position == 3).values(tags=["z"])
            )
            session.execute(events_table.delete().where(events_table.c.position == 1))
        session.commit()
    assert tag_rows(engine) == [("z", 3)]
    with Session(engine) as session:
        assert [e.position for e in EventStore(session).read(Query.of(tags=["z"]))] == [3]
        assert list(EventStore(session).read(Query.of(tags=["y"]))) == []


def test_upgrade_backfills_existing_events(tmp_path: Path) -> None:
    engine = create_sqlite_engine(str(tmp_path / "old.sqlite3"))
    sa_crablet.upgrade(engine, "0002_commands")
    with Session(engine) as session:
        EventStore(session).append([Event("A", ["k:1", "k:2"]), Event("B", ["k:2"])])
        session.commit()
    sa_crablet.upgrade(engine)
    assert tag_rows(engine) == [("k:1", 1), ("k:2", 1), ("k:2", 2)]
    with Session(engine) as session:
        found = EventStore(session).read(Query.of(tags=["k:2"]))
        assert [e.position for e in found] == [1, 2]
    sa_crablet.migrate.downgrade(engine, "0002_commands")
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM sqlite_master WHERE name = :n"), {"n": EVENT_TAGS_TABLE}
            ).scalar_one()
            == 0
        )
    engine.dispose()


def test_sqlite_engine_durability_setting(tmp_path: Path) -> None:
    for level, expected in (("FULL", 2), ("normal", 1)):
        engine = create_sqlite_engine(str(tmp_path / f"{level}.sqlite3"), synchronous=level)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == expected
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        engine.dispose()
    with pytest.raises(sa_crablet.ValidationError):
        create_sqlite_engine(synchronous="sometimes")
