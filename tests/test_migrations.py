"""The migrations, on SQLite (a temporary file) and PostgreSQL (a fresh database per test).

They must build exactly the Core metadata, downgrade cleanly, run from the repository's
``alembic.ini``, ship inside the wheel, and run from a host application's own Alembic
environment without touching the host's ``alembic_version`` or its autogenerate.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    MetaData,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    make_url,
    pool,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

import sa_crablet
from sa_crablet import (
    AppendOnlyError,
    EngineEventStore,
    Event,
    EventStore,
    EventStoreConfig,
    Query,
    create_sqlite_engine,
)
from sa_crablet._errors import translate
from sa_crablet.migrate import autogenerate_filter
from sa_crablet.schema import (
    COMMANDS_TABLE,
    EVENT_TAGS_TABLE,
    EVENTS_TABLE,
    IX_EVENTS_COMMAND,
    IX_EVENTS_TAGS,
    IX_EVENTS_TRANSACTION,
    IX_EVENTS_TYPE,
    PG_GUARD_FUNCTION,
    PG_GUARD_FUNCTION_0001,
    VERSION_TABLE,
)

events = sa_crablet.events_table
commands = sa_crablet.commands_table
REPO_ROOT = Path(__file__).resolve().parent.parent
ALEMBIC = str(Path(sys.executable).parent / "alembic")
HEAD = "0005_exact_payloads"
PG_EVENTS_TRIGGERS = {"sa_crablet_events_append_only", "sa_crablet_events_no_truncate"}
PG_TRIGGERS = PG_EVENTS_TRIGGERS | {
    "sa_crablet_commands_append_only",
    "sa_crablet_commands_no_truncate",
}
SQLITE_EVENTS_TRIGGERS = {"sa_crablet_events_no_update", "sa_crablet_events_no_delete"}
SQLITE_TRIGGERS = SQLITE_EVENTS_TRIGGERS | {
    "sa_crablet_commands_no_update",
    "sa_crablet_commands_no_delete",
}
SQLITE_TAG_TRIGGERS = {
    "sa_crablet_events_tags_insert",
    "sa_crablet_events_tags_delete",
    "sa_crablet_events_tags_update",
}
GUARD_FUNCTION = "sa_crablet_refuse_mutation"
GUARD_FUNCTION_0001 = f"{GUARD_FUNCTION} (as of 0001)"
GUARD_BODIES = {
    PG_GUARD_FUNCTION.split("$$")[1]: GUARD_FUNCTION,
    PG_GUARD_FUNCTION_0001.split("$$")[1]: GUARD_FUNCTION_0001,
}
SUBPROCESS_TIMEOUT = 120


# -- fresh databases -------------------------------------------------------------------------------


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database with a random name; dropped (forcibly) afterwards."""
    server = make_url(server_url)
    name = f"sa_crablet_fresh_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def fresh_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of the test's backend, never migrated."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    server_url: str = request.getfixturevalue("postgres_server_url")
    with fresh_postgres_database(server_url) as url:
        yield url


@contextmanager
def engine_for(url: str) -> Iterator[Engine]:
    if url.startswith("sqlite:///"):
        engine = create_sqlite_engine(url.removeprefix("sqlite:///"))
    else:
        engine = create_engine(url, poolclass=pool.NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


# -- helpers ---------------------------------------------------------------------------------------


def table_names(conn: Connection) -> set[str]:
    """The tables present, leaving out SQLite's tag index (checked on its own)."""
    return set(inspect(conn).get_table_names()) - {EVENT_TAGS_TABLE}


def versions(conn: Connection, table: str) -> list[str]:
    return [str(v) for v in conn.execute(text(f"SELECT version_num FROM {table}")).scalars()]


def schema_differences(conn: Connection, target: MetaData | None = None) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match our metadata."""
    context = MigrationContext.configure(
        conn,
        opts={
            "compare_type": True,
            "include_object": autogenerate_filter(conn.dialect.name),
            "version_table": VERSION_TABLE,
        },
    )
    return list(
        compare_metadata(context, target if target is not None else sa_crablet.schema.metadata)
    )


def guard_objects(conn: Connection) -> set[str]:
    """The append-only triggers present (on SQLite, the tag index's too) and on PostgreSQL
    the trigger function, named by the version of its body (or "unknown")."""
    if conn.dialect.name == "postgresql":
        triggers = conn.execute(
            text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        ).scalars()
        bodies = conn.execute(
            text("SELECT prosrc FROM pg_proc WHERE proname = :name"), {"name": GUARD_FUNCTION}
        ).scalars()
        functions = {GUARD_BODIES.get(str(body), f"{GUARD_FUNCTION} (unknown)") for body in bodies}
        return {str(t) for t in triggers} | functions
    rows = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars()
    return {str(r) for r in rows}


def expected_guard(dialect: str) -> set[str]:
    if dialect == "postgresql":
        return PG_TRIGGERS | {GUARD_FUNCTION}
    return SQLITE_TRIGGERS | SQLITE_TAG_TRIGGERS


def guard_before_0004(dialect: str) -> set[str]:
    """Revision 0003's guard: the events table's triggers, the first form of the function."""
    if dialect == "postgresql":
        return PG_EVENTS_TRIGGERS | {GUARD_FUNCTION_0001}
    return SQLITE_EVENTS_TRIGGERS | SQLITE_TAG_TRIGGERS


def run(args: Sequence[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result


def clean_environment(**extra: str) -> dict[str, str]:
    """The test's environment without any database URL or Python path of its own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SA_CRABLET_DATABASE_URL", "DATABASE_URL", "PYTHONPATH")
    }
    env.update(extra)
    return env


def check_append_only(engine: Engine) -> None:
    """UPDATE and DELETE (and TRUNCATE on PostgreSQL) of events and commands are refused,
    except under ``allow_mutation``, and the guard is back afterwards."""
    with Session(engine) as session:
        EventStore(session).append([Event("A", ["t:1"]), Event("B", ["t:2"]), Event("C")])
        for number in (1, 2, 3):
            session.execute(insert(commands).values(id=f"c{number}", type="T", event_count=0))
        session.commit()
    refused: list[Any] = [
        update(events).values(type="X"),
        delete(events),
        update(commands).values(type="X"),
        delete(commands).where(commands.c.id == "c1"),
    ]
    if engine.dialect.name == "postgresql":
        refused += [text(f"TRUNCATE {EVENTS_TABLE}"), text(f"TRUNCATE {COMMANDS_TABLE}")]
    for statement in refused:
        with Session(engine) as session:
            with pytest.raises(DBAPIError) as info:
                session.execute(statement)
            assert isinstance(translate(info.value), AppendOnlyError), info.value
            session.rollback()
    with Session(engine) as session:
        with sa_crablet.allow_mutation(session):
            session.execute(update(events).where(events.c.position == 1).values(type="X"))
            session.execute(delete(events).where(events.c.position == 2))
            session.execute(update(commands).where(commands.c.id == "c1").values(type="X"))
            session.execute(delete(commands).where(commands.c.id == "c2"))
        session.commit()
    with engine.connect() as conn:
        rows = conn.execute(select(events.c.position, events.c.type).order_by(events.c.position))
        assert [tuple(r) for r in rows] == [(1, "X"), (3, "C")]
        rows = conn.execute(select(commands.c.id, commands.c.type).order_by(commands.c.id))
        assert [tuple(r) for r in rows] == [("c1", "X"), ("c3", "T")]
    for table in (events, commands):
        with Session(engine) as session, pytest.raises(DBAPIError):
            session.execute(delete(table))  # the guard is back after allow_mutation
    if engine.dialect.name == "postgresql":
        with Session(engine) as session:
            with sa_crablet.allow_mutation(session):
                session.execute(text(f"TRUNCATE {EVENTS_TABLE}, {COMMANDS_TABLE}"))
            session.commit()
        with engine.connect() as conn:
            for table in (events, commands):
                assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 0


def check_design(conn: Connection) -> None:
    """What compare_metadata cannot see: the dialect-specific column types and DDL."""
    if conn.dialect.name == "postgresql":
        columns = {
            str(name): (str(type_), str(identity), default)
            for name, type_, identity, default in conn.execute(
                text(
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attidentity, "
                    "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
                    "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                    "WHERE a.attrelid = CAST(:table AS regclass) AND a.attnum > 0 "
                    "AND NOT a.attisdropped"
                ),
                {"table": EVENTS_TABLE},
            )
        }
        assert columns["position"][:2] == ("bigint", "a")  # GENERATED ALWAYS AS IDENTITY
        assert columns["tags"][0] == "text[]"
        assert columns["data"][0] == columns["metadata"][0] == "json"  # text kept as written
        assert columns["transaction_id"] == ("xid8", "", "pg_current_xact_id()")
        assert columns["recorded_at"][0] == "timestamp with time zone"
        indexes = {
            str(name): str(definition)
            for name, definition in conn.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :table"),
                {"table": EVENTS_TABLE},
            )
        }
        assert "USING gin (tags)" in indexes[IX_EVENTS_TAGS]
        assert 'USING btree (type, "position")' in indexes[IX_EVENTS_TYPE]
        assert "USING btree (transaction_id)" in indexes[IX_EVENTS_TRANSACTION]
    else:
        create = conn.execute(
            text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :table"),
            {"table": EVENTS_TABLE},
        ).scalar_one()
        assert "AUTOINCREMENT" in str(create)
        types = {
            str(row[1]): str(row[2])
            for row in conn.execute(text(f"PRAGMA table_info({EVENTS_TABLE})"))
        }
        assert types["position"] == "INTEGER"  # the rowid alias AUTOINCREMENT needs
        assert types["tags"] == types["data"] == types["metadata"] == "JSON"
        names = {str(i["name"]) for i in inspect(conn).get_indexes(EVENTS_TABLE)}
        assert names == {IX_EVENTS_TYPE, IX_EVENTS_COMMAND}
    assert guard_objects(conn) == expected_guard(conn.dialect.name)


# -- 1. an upgraded database is exactly the Core metadata -----------------------------------------


@pytest.mark.filterwarnings("error::sqlalchemy.exc.SAWarning")  # e.g. an unreflectable xid8
def test_upgrade_builds_exactly_the_core_metadata(fresh_url: str) -> None:
    with engine_for(fresh_url) as engine:
        with engine.connect() as conn:
            assert table_names(conn) == set()
        sa_crablet.upgrade(engine)
        with engine.connect() as conn:
            assert schema_differences(conn) == []
            assert table_names(conn) == {EVENTS_TABLE, COMMANDS_TABLE, VERSION_TABLE}
            assert "alembic_version" not in table_names(conn)
            assert versions(conn, VERSION_TABLE) == [HEAD]
            check_design(conn)
            # The comparison does look at types: jsonb where the schema says json is a change.
            if conn.dialect.name == "postgresql":
                altered = MetaData()
                sa_crablet.events_table.to_metadata(altered).c.data.type = JSONB()
                sa_crablet.commands_table.to_metadata(altered)
                changes = schema_differences(conn, altered)
                assert [change[0][0] for change in changes] == ["modify_type"], changes
        sa_crablet.upgrade(engine)  # already at head: nothing to do
        with engine.connect() as conn:
            assert versions(conn, VERSION_TABLE) == [HEAD]


def test_create_all_and_migrations_agree(fresh_url: str) -> None:
    """``metadata.create_all`` (the after_create DDL included) builds the same schema."""
    with engine_for(fresh_url) as engine:
        sa_crablet.schema.metadata.create_all(engine)
        with engine.connect() as conn:
            assert schema_differences(conn) == []
            check_design(conn)


# -- 2. downgrade to base and back ----------------------------------------------------------------


def test_downgrade_to_base_removes_everything_and_upgrade_restores_it(fresh_url: str) -> None:
    with engine_for(fresh_url) as engine:
        sa_crablet.upgrade(engine)
        with Session(engine) as session:
            EventStore(session).append(Event("Before", ["t:1"]))
            session.commit()

        sa_crablet.migrate.downgrade(engine, "base")
        with engine.connect() as conn:
            # Alembic keeps its (now empty) version table; everything else is gone.
            assert table_names(conn) == {VERSION_TABLE}
            assert versions(conn, VERSION_TABLE) == []
            assert guard_objects(conn) == set()
            if conn.dialect.name == "sqlite":
                leftovers = conn.execute(
                    text("SELECT name FROM sqlite_master WHERE name LIKE 'ix_sa_crablet%'")
                ).all()
                assert leftovers == []

        sa_crablet.upgrade(engine)
        with engine.connect() as conn:
            assert versions(conn, VERSION_TABLE) == [HEAD]
            assert schema_differences(conn) == []
            assert conn.execute(text(f"SELECT count(*) FROM {EVENTS_TABLE}")).scalar_one() == 0
            check_design(conn)
        check_append_only(engine)


def test_append_only_guard_revision_downgrades_and_upgrades_with_data(fresh_url: str) -> None:
    """0004 guards the commands table (and on PostgreSQL makes the guard owner-only) on a
    database that already holds events and commands; its downgrade gives back exactly 0003's
    guard, rows untouched, and upgrading again restores head's."""
    before = "0003_sqlite_tag_index"
    with engine_for(fresh_url) as engine:
        sa_crablet.upgrade(engine, before)
        with engine.connect() as conn:
            assert guard_objects(conn) == guard_before_0004(conn.dialect.name)
        with Session(engine) as session:
            EventStore(session).append([Event("A", ["t:1"]), Event("B")])
            session.execute(insert(commands).values(id="kept", type="T", event_count=0))
            session.commit()

        sa_crablet.upgrade(engine)
        with engine.connect() as conn:
            assert versions(conn, VERSION_TABLE) == [HEAD]
            assert guard_objects(conn) == expected_guard(conn.dialect.name)
            assert schema_differences(conn) == []
        with Session(engine) as session, pytest.raises(DBAPIError) as info:
            session.execute(delete(commands))
        assert isinstance(translate(info.value), AppendOnlyError), info.value

        sa_crablet.migrate.downgrade(engine, before)
        with engine.connect() as conn:
            assert versions(conn, VERSION_TABLE) == [before]
            assert guard_objects(conn) == guard_before_0004(conn.dialect.name)
            assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 2
            assert conn.execute(select(commands.c.id)).scalars().all() == ["kept"]

        sa_crablet.upgrade(engine)
        with engine.connect() as conn:
            assert guard_objects(conn) == expected_guard(conn.dialect.name)
            assert schema_differences(conn) == []
        for table in (events, commands):
            with Session(engine) as session, pytest.raises(DBAPIError) as info:
                session.execute(delete(table))
            assert isinstance(translate(info.value), AppendOnlyError), info.value


def test_exact_payloads_revision_keeps_what_is_stored(fresh_url: str) -> None:
    """Upgrading a store with payloads to ``0005_exact_payloads`` keeps them (as ``jsonb``
    had made them); later appends read back exactly; the downgrade gives ``jsonb`` back."""
    payload = '{"b": 1, "a": 1e16}'
    with engine_for(fresh_url) as engine:
        sa_crablet.upgrade(engine, "0003_sqlite_tag_index")
        with engine.begin() as conn:
            conn.execute(
                text(f"INSERT INTO {EVENTS_TABLE} (type, tags, data) VALUES ('A', :t, :d)"),
                {"t": "{t:1}" if conn.dialect.name == "postgresql" else '["t:1"]', "d": payload},
            )
        sa_crablet.upgrade(engine)
        with engine.connect() as conn:
            assert schema_differences(conn) == []
        with Session(engine) as session:
            store = EventStore(session)
            store.append(Event("B", ["t:1"], {"b": 1, "a": 1e16, "z": -0.0}))
            first, second = store.read(Query.all())
            session.commit()
        if engine.dialect.name == "postgresql":  # jsonb had normalised the first one
            assert first.data == {"a": 10**16, "b": 1} and list(first.data) == ["a", "b"]
        else:
            assert first.data == {"b": 1, "a": 1e16} and list(first.data) == ["b", "a"]
        assert repr(second.data) == repr({"b": 1, "a": 1e16, "z": -0.0})
        sa_crablet.migrate.downgrade(engine, "0003_sqlite_tag_index")
        with engine.connect() as conn:
            types = {c["name"]: c["type"] for c in inspect(conn).get_columns(EVENTS_TABLE)}
            expected = JSONB if conn.dialect.name == "postgresql" else JSON
            assert isinstance(types["data"], expected) and isinstance(types["metadata"], expected)
            assert conn.execute(text(f"SELECT count(*) FROM {EVENTS_TABLE}")).scalar() == 2


@pytest.mark.postgresql_only
def test_a_store_not_yet_at_exact_payloads_reads_its_jsonb_payloads(fresh_url: str) -> None:
    """Before ``0005_exact_payloads`` the payloads are ``jsonb``, whose binary form (a read's
    format on the direct path) is a version byte and the text: every way a read travels
    decodes them alike (a first page, a cursor's pages, pages by position, Core)."""
    with engine_for(fresh_url) as engine:
        sa_crablet.upgrade(engine, "0004_append_only_guard")
        with engine.begin() as conn:
            conn.execute(
                text(
                    f"INSERT INTO {EVENTS_TABLE} (type, tags, data, metadata) "
                    "SELECT 'A', ARRAY['t:1'], jsonb_build_object('i', i), "
                    "CASE WHEN i % 2 = 0 THEN jsonb_build_array(i, 'x') END "
                    "FROM generate_series(1, 5) AS i"
                )
            )
        expected = [({"i": i}, [i, "x"] if i % 2 == 0 else None) for i in range(1, 6)]
        configs = [EventStoreConfig(fetch_size=size) for size in (10, 2)]
        with Session(engine) as session:
            for config in [*configs, EventStoreConfig(fetch_size=2, direct_execution=False)]:
                for query in (Query.all(), Query.of(tags=["t:1"])):
                    read = EventStore(session, config).read(query)
                    assert [(e.data, e.metadata) for e in read] == expected
        for config in configs:
            read = EngineEventStore(engine, config).read(Query.all())
            assert [(e.data, e.metadata) for e in read] == expected


# -- 3. the repository's alembic.ini --------------------------------------------------------------


def test_alembic_command_line_from_the_repository(fresh_url: str) -> None:
    env = clean_environment(SA_CRABLET_DATABASE_URL=fresh_url)
    run([ALEMBIC, "upgrade", "head"], cwd=REPO_ROOT, env=env)
    with engine_for(fresh_url) as engine, engine.connect() as conn:
        assert table_names(conn) == {EVENTS_TABLE, COMMANDS_TABLE, VERSION_TABLE}
        assert versions(conn, VERSION_TABLE) == [HEAD]
        assert schema_differences(conn) == []
    assert HEAD in run([ALEMBIC, "current"], cwd=REPO_ROOT, env=env).stdout
    # The environment's own autogenerate (dialect-aware filter included) finds nothing to do.
    run([ALEMBIC, "check"], cwd=REPO_ROOT, env=env)

    run([ALEMBIC, "downgrade", "base"], cwd=REPO_ROOT, env=env)
    assert run([ALEMBIC, "current"], cwd=REPO_ROOT, env=env).stdout.strip() == ""
    with engine_for(fresh_url) as engine, engine.connect() as conn:
        assert table_names(conn) == {VERSION_TABLE}
        assert guard_objects(conn) == set()

    # Offline mode renders the dialect's DDL without touching the database.
    script = run([ALEMBIC, "upgrade", "head", "--sql"], cwd=REPO_ROOT, env=env).stdout
    assert f"CREATE TABLE {EVENTS_TABLE}" in script
    assert f"INSERT INTO {VERSION_TABLE}" in script
    if fresh_url.startswith("postgresql"):
        assert f"CREATE INDEX {IX_EVENTS_TAGS} ON {EVENTS_TABLE} USING gin (tags)" in script
        assert "EXECUTE FUNCTION sa_crablet_refuse_mutation()" in script
        assert f"BEFORE TRUNCATE ON {COMMANDS_TABLE}" in script
        assert "pg_has_role(current_user" in script  # 0004's owner-only function
    else:
        assert "AUTOINCREMENT" in script and IX_EVENTS_TAGS not in script
        assert f"BEFORE DELETE ON {COMMANDS_TABLE}" in script


# -- 4. the migrations ship in the wheel ----------------------------------------------------------


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel (from a copy of the sources) and unzipped."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):  # LICENSE: license-files
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(
        REPO_ROOT / "sa_crablet",
        source / "sa_crablet",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    wheels = tmp_path_factory.mktemp("wheels")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps"]
    target = ["-w", str(wheels), str(source)]
    env = clean_environment(PIP_DISABLE_PIP_VERSION_CHECK="1")
    attempt = subprocess.run(
        [*pip_wheel, "--no-build-isolation", *target],
        env=env,
        cwd=source,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    if attempt.returncode != 0:  # e.g. the installed setuptools is older than the required one
        run([*pip_wheel, *target], cwd=source, env=env)
    (wheel,) = wheels.glob("sa_crablet-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert {
            "sa_crablet/py.typed",
            "sa_crablet/migrations/env.py",
            "sa_crablet/migrations/script.py.mako",
            f"sa_crablet/migrations/versions/{HEAD}.py",
        } <= names, sorted(names)
        unpacked = tmp_path_factory.mktemp("unpacked")
        archive.extractall(unpacked)
    return unpacked


def test_installed_package_carries_its_migrations(
    fresh_url: str, unpacked_wheel: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = textwrap.dedent(
        """
        import os, sqlalchemy, sa_crablet
        from sa_crablet.migrate import alembic_config
        assert os.environ["REPO_ROOT"] not in sa_crablet.__file__, sa_crablet.__file__
        print(sa_crablet.__file__)
        print(alembic_config().get_main_option("script_location"))
        sa_crablet.upgrade(sqlalchemy.create_engine(os.environ["TARGET_URL"]))
        """
    )
    env = clean_environment(
        PYTHONPATH=str(unpacked_wheel), REPO_ROOT=str(REPO_ROOT), TARGET_URL=fresh_url
    )
    output = run([sys.executable, "-c", code], cwd=elsewhere, env=env).stdout.split()
    assert len(output) == 2
    assert all(Path(path).is_relative_to(unpacked_wheel) for path in output), output
    with engine_for(fresh_url) as engine, engine.connect() as conn:
        assert table_names(conn) == {EVENTS_TABLE, COMMANDS_TABLE, VERSION_TABLE}
        assert versions(conn, VERSION_TABLE) == [HEAD]


# -- 5. a host application's own Alembic environment ----------------------------------------------

HOST_REVISION = "h001_things"

HOST_FILES = {
    "alembic.ini": """
        [alembic]
        script_location = %(here)s
        prepend_sys_path = .
        path_separator = os
        """,
    "host_models.py": """
        from sqlalchemy import Column, Integer, MetaData, String, Table

        host_metadata = MetaData()
        host_things = Table(
            "host_things",
            host_metadata,
            Column("id", Integer, primary_key=True),
            Column("name", String(100), nullable=False),
        )
        """,
    "env.py": """
        import os

        from alembic import context
        from sqlalchemy import create_engine, pool

        import sa_crablet
        from host_models import host_metadata

        engine = create_engine(os.environ["HOST_DATABASE_URL"], poolclass=pool.NullPool)
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=host_metadata,
                include_object=sa_crablet.migrate.include_object,
            )
            with context.begin_transaction():
                context.run_migrations()
                sa_crablet.upgrade(connection)  # the same transaction as the host's
        engine.dispose()
        """,
    "script.py.mako": '''
        """${message}"""
        from alembic import op
        import sqlalchemy as sa
        ${imports if imports else ""}
        revision = ${repr(up_revision)}
        down_revision = ${repr(down_revision)}
        branch_labels = ${repr(branch_labels)}
        depends_on = ${repr(depends_on)}


        def upgrade():
            ${upgrades if upgrades else "pass"}


        def downgrade():
            ${downgrades if downgrades else "pass"}
        ''',
    f"versions/{HOST_REVISION}.py": f"""
        import sqlalchemy as sa
        from alembic import op

        revision = "{HOST_REVISION}"
        down_revision = None
        branch_labels = None
        depends_on = None


        def upgrade():
            op.create_table(
                "host_things",
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("name", sa.String(100), nullable=False),
            )


        def downgrade():
            op.drop_table("host_things")
        """,
}


@pytest.fixture
def host_project(tmp_path: Path) -> Path:
    project = tmp_path / "host"
    (project / "versions").mkdir(parents=True)
    for name, content in HOST_FILES.items():
        (project / name).write_text(textwrap.dedent(content).lstrip())
    return project


def host_metadata(project: Path) -> MetaData:
    spec = importlib.util.spec_from_file_location("host_models", project / "host_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cast(MetaData, module.host_metadata)


def test_host_alembic_environment_runs_sa_crablet_migrations(
    fresh_url: str, host_project: Path
) -> None:
    env = clean_environment(HOST_DATABASE_URL=fresh_url, PYTHONPATH=str(REPO_ROOT))
    run([ALEMBIC, "upgrade", "head"], cwd=host_project, env=env)

    metadata = host_metadata(host_project)
    with engine_for(fresh_url) as engine, engine.connect() as conn:
        assert table_names(conn) == {
            "host_things",
            "alembic_version",
            EVENTS_TABLE,
            COMMANDS_TABLE,
            VERSION_TABLE,
        }
        assert versions(conn, "alembic_version") == [HOST_REVISION]
        assert versions(conn, VERSION_TABLE) == [HEAD]
        assert schema_differences(conn) == []
        assert guard_objects(conn) == expected_guard(conn.dialect.name)

        def host_autogenerate(**opts: Any) -> list[Any]:
            context = MigrationContext.configure(conn, opts={"compare_type": True, **opts})
            return list(compare_metadata(context, metadata))

        # With sa_crablet.migrate.include_object the host's autogenerate leaves our tables alone
        # (and finds nothing else to do) ...
        assert host_autogenerate(include_object=sa_crablet.migrate.include_object) == []
        # ... without it, it would drop them.
        dropped = {change[1].name for change in host_autogenerate() if change[0] == "remove_table"}
        assert dropped - {EVENT_TAGS_TABLE} == {EVENTS_TABLE, COMMANDS_TABLE, VERSION_TABLE}

    # Running the host's upgrade again is a no-op for both histories.
    run([ALEMBIC, "upgrade", "head"], cwd=host_project, env=env)
    with engine_for(fresh_url) as engine, engine.connect() as conn:
        assert versions(conn, "alembic_version") == [HOST_REVISION]
        assert versions(conn, VERSION_TABLE) == [HEAD]
