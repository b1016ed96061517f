"""Which runner an operation uses on a connection: chosen once per operation, here only.

SQLite runs through Core. On PostgreSQL the psycopg runner is used only when nothing could
tell it from Core: the connection is a psycopg 3 connection, direct execution is enabled,
no execution option is set that it would not honour (``schema_translate_map`` above all:
it compiles with the dialect alone), the engine does not echo, and no SQLAlchemy listener
that would see a statement is installed. Otherwise Core runs every statement, so those hooks
see each one.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection

from sa_crablet._runners.base import Runner
from sa_crablet._runners.core import CoreRunner
from sa_crablet._runners.sqlite import SqliteRunner
from sa_crablet.config import EventStoreConfig
from sa_crablet.schema import SQLITE

HONOURED_OPTIONS = frozenset({"isolation_level"})
"""Execution options the psycopg runner honours as Core does. ``isolation_level`` is applied
to the DBAPI connection itself when the connection is checked out, whichever runner runs."""

STATEMENT_EVENTS = (
    "before_execute",
    "after_execute",
    "before_cursor_execute",
    "after_cursor_execute",
    "handle_error",
)
"""``ConnectionEvents`` that see statements (transaction events do not: neither runner
sends the store's own ``BEGIN``/``COMMIT`` through SQLAlchemy's transaction API)."""
DIALECT_EVENTS = (
    "do_execute",
    "do_execute_no_params",
    "do_executemany",
    "do_setinputsizes",
    "handle_error",
)
"""``DialectEvents`` that see statements."""

_ENGINE_LOGGER = logging.getLogger("sqlalchemy.engine.Engine")


def runner_for(conn: Connection, config: EventStoreConfig) -> Runner:
    """The runner for one operation on ``conn``."""
    if conn.dialect.name == SQLITE:
        return SqliteRunner(conn, config)
    if conn.dialect.driver != "psycopg":
        return CoreRunner(conn, config)
    # Imported here: a program that never connects with psycopg never imports it.
    from sa_crablet._runners import psycopg as direct

    if config.direct_execution and direct_allowed(conn):
        return direct.runner(conn, config)
    return CoreRunner(conn, config, direct.core_json_loader)


def direct_allowed(conn: Connection) -> bool:
    """Whether the psycopg runner would be indistinguishable from Core on ``conn``."""
    if not HONOURED_OPTIONS.issuperset(conn.get_execution_options()):
        return False
    if conn.engine.echo or _ENGINE_LOGGER.isEnabledFor(logging.INFO):
        return False
    return not listening(conn)


def listening(conn: Connection) -> bool:
    """Whether a SQLAlchemy listener would see the store's statements on ``conn``.

    SQLAlchemy has no public "has listeners" call: this reads its flags that any listener
    was added (``_has_events``), then its event dispatchers (``Connection.dispatch``, joined
    with the engine's, and the dialect's), each collection false when empty.
    ``tests/test_runners.py`` installs every one of these events and fails if this stops
    seeing it."""
    # SQLAlchemy marks a connection, its engine and a dialect once any listener of theirs is
    # added (its own check before every event point): none marked, none listening. Read
    # with a default that falls through to the precise check below.
    if not (
        getattr(conn, "_has_events", True)
        or getattr(conn.engine, "_has_events", True)
        or getattr(conn.dialect, "_has_events", True)
    ):
        return False
    dispatch: Any = conn.dispatch
    if any(getattr(dispatch, name, None) for name in STATEMENT_EVENTS):
        return True
    dialect_dispatch: Any = conn.dialect.dispatch
    return any(getattr(dialect_dispatch, name, None) for name in DIALECT_EVENTS)
