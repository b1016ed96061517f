"""Running sa_crablet's migrations: from Python, from a host's Alembic env, or the CLI.

The migrations ship inside the package (``sa_crablet/migrations``) and record their state in
their own version table, ``sa_crablet_alembic_version``, never the host's ``alembic_version``.
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.schema import SchemaItem

from sa_crablet.schema import TABLE_PREFIX, VERSION_TABLE, metadata

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
        with bind.begin() as connection:
            _run(connection, command, revision)
        return
    getattr(commands, command)(alembic_config(bind), revision)


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


def url_from_environment() -> str | None:
    for variable in DATABASE_URL_VARIABLES:
        value = os.environ.get(variable)
        if value:
            return value
    return None


def run_env(context: Any) -> None:
    """The body of sa_crablet's Alembic ``env.py`` (shared by the packaged migrations and the
    repository's ``alembic/`` directory)."""
    from sqlalchemy import create_engine, pool

    config = context.config
    options: dict[str, Any] = {
        "target_metadata": metadata,
        "version_table": VERSION_TABLE,
        "include_object": _only_ours,
        "compare_type": True,
    }
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = url_from_environment() or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no database URL: set SA_CRABLET_DATABASE_URL (or DATABASE_URL), "
            "or sqlalchemy.url in alembic.ini"
        )
    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def _only_ours(
    obj: SchemaItem, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    return not include_object(obj, name, type_, reflected, compare_to)


__all__ = [
    "DATABASE_URL_VARIABLES",
    "alembic_config",
    "create_schema",
    "downgrade",
    "include_object",
    "run_env",
    "upgrade",
    "url_from_environment",
]
