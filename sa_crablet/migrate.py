"""Running sa_crablet's migrations: from Python, from a host's Alembic env, or the CLI.

The migrations ship inside the package (``sa_crablet/migrations``) and record their state in
their own version table, ``sa_crablet_alembic_version``, never the host's ``alembic_version``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine
from sqlalchemy.schema import SchemaItem

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

from sa_crablet.schema import (
    EVENT_TAGS_TABLE,
    POSTGRESQL_ONLY_INDEXES,
    TABLE_PREFIX,
    VERSION_TABLE,
    metadata,
)

IncludeObject = Callable[[SchemaItem, str | None, str, bool, Any], bool]
"""The signature of Alembic's ``include_object`` hook."""

DATABASE_URL_VARIABLES = ("SA_CRABLET_DATABASE_URL", "DATABASE_URL")
"""Environment variables the command-line migrations read the database URL from, in order."""


def alembic_config(connection: Connection | None = None) -> Any:
    """An Alembic ``Config`` for sa_crablet's migrations, optionally bound to a connection."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("sa_crablet") / "migrations"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _run(bind: Engine | Connection, command: str, revision: str) -> None:
    from alembic import command as commands

    if isinstance(bind, Engine):
        with bind.connect() as connection:
            _run_owned(connection, command, revision)
        return
    with _outer_alembic_proxies_kept():
        getattr(commands, command)(alembic_config(bind), revision)


def _run_owned(connection: Connection, command: str, revision: str) -> None:
    """Run on a connection of our own, and commit."""
    if connection.dialect.name == "sqlite":
        # pysqlite commits DDL as it goes unless a transaction is open: make the whole run
        # atomic, so a failure never leaves half a schema behind.
        connection.exec_driver_sql("BEGIN")
    # Otherwise Alembic begins and commits the transaction itself, which lets a revision use
    # autocommit_block() (CREATE INDEX CONCURRENTLY).
    _run(connection, command, revision)
    connection.commit()


async def upgrade_async(engine: AsyncEngine, revision: str = "head") -> None:
    """:func:`upgrade` for an asyncio application: ``await upgrade_async(async_engine)``
    runs the migrations on a connection of the ``AsyncEngine`` (through SQLAlchemy's
    ``run_sync``) and commits."""
    async with engine.connect() as connection:
        await connection.run_sync(_run_owned, "upgrade", revision)


async def downgrade_async(engine: AsyncEngine, revision: str) -> None:
    """:func:`downgrade` for an asyncio application."""
    async with engine.connect() as connection:
        await connection.run_sync(_run_owned, "downgrade", revision)


@contextmanager
def _outer_alembic_proxies_kept() -> Iterator[None]:
    """Alembic's ``alembic.context`` and ``alembic.op`` are module-level proxies that a
    running command installs and, when it ends, deletes. Run from a host's ``env.py`` (or one
    of its migrations), our nested command would delete the host's, and the host's command
    then fails (``KeyError`` in ``_remove_proxy``): put the outer ones back."""
    from alembic import context, op

    outer = [getattr(module, "_proxy", None) for module in (context, op)]
    try:
        yield
    finally:
        for proxy in outer:
            if proxy is not None:
                proxy._install_proxy()


def upgrade(bind: Engine | Connection, revision: str = "head") -> None:
    """Bring the sa_crablet schema up to ``revision`` (creating it in an empty database).

    Given a ``Connection`` it runs in that connection's transaction (commit it yourself),
    which is how a host application's own Alembic ``env.py`` runs them.
    """
    _run(bind, "upgrade", revision)


def downgrade(bind: Engine | Connection, revision: str) -> None:
    """Take the sa_crablet schema back to ``revision`` (``"base"`` drops it)."""
    _run(bind, "downgrade", revision)


def create_schema(bind: Engine | Connection) -> None:
    """Create the schema through the migrations: the zero set-up path for SQLite."""
    upgrade(bind)


def include_object(
    obj: SchemaItem, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """For a host's ``env.py``: leave sa_crablet's tables out of the host's autogenerate."""
    table = getattr(obj, "table", obj)
    table_name = getattr(table, "name", name) or ""
    return not str(table_name).startswith(TABLE_PREFIX)


def autogenerate_filter(dialect_name: str) -> IncludeObject:
    """The ``include_object`` for comparing a database with sa_crablet's own metadata.

    Only sa_crablet's objects (the inverse of :func:`include_object`), and only those the
    given dialect builds: Alembic ignores ``Index.ddl_if`` (sqlalchemy/alembic#1491), so
    without this, autogenerate against SQLite would propose PostgreSQL's GIN index.
    """

    def include(
        obj: SchemaItem, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if include_object(obj, name, type_, reflected, compare_to):
            return False  # not ours
        if type_ == "table" and name == EVENT_TAGS_TABLE:
            return False  # SQLite's tag index: raw DDL kept in step by triggers
        return not (
            type_ == "index" and name in POSTGRESQL_ONLY_INDEXES and dialect_name != "postgresql"
        )

    return include


def url_from_environment() -> str | None:
    """The database URL of the first non-empty variable of :data:`DATABASE_URL_VARIABLES`,
    or ``None``: where the command-line migrations look before ``sqlalchemy.url``."""
    for variable in DATABASE_URL_VARIABLES:
        value = os.environ.get(variable)
        if value:
            return value
    return None


def run_env(context: Any) -> None:
    """The body of sa_crablet's Alembic ``env.py`` (shared by the packaged migrations and the
    repository's ``alembic/`` directory)."""
    from sqlalchemy import create_engine, make_url, pool

    from sa_crablet._observe.migrations import MigrationRun

    config = context.config
    run = MigrationRun()  # logs the run (sa_crablet.migrations)

    def options(dialect_name: str) -> dict[str, Any]:
        return {
            "target_metadata": metadata,
            "version_table": VERSION_TABLE,
            "include_object": autogenerate_filter(dialect_name),
            "compare_type": True,
            "on_version_apply": run.applied,
        }

    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **options(connection.dialect.name))
        with context.begin_transaction(), run.observed(context):
            context.run_migrations()
        return
    url = url_from_environment() or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no database URL: set SA_CRABLET_DATABASE_URL (or DATABASE_URL), "
            "or sqlalchemy.url in alembic.ini"
        )
    if context.is_offline_mode():
        backend = make_url(url).get_backend_name()
        context.configure(url=url, literal_binds=True, **options(backend))
        with context.begin_transaction(), run.observed(context):
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, **options(connection.dialect.name))
        with context.begin_transaction(), run.observed(context):
            context.run_migrations()
    engine.dispose()


__all__ = [
    "DATABASE_URL_VARIABLES",
    "alembic_config",
    "autogenerate_filter",
    "create_schema",
    "downgrade",
    "downgrade_async",
    "include_object",
    "run_env",
    "upgrade",
    "upgrade_async",
    "url_from_environment",
]
