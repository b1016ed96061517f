"""The store's hot statements, run directly on the Session's own psycopg connection.

Why: for the short statements of an append or a read, SQLAlchemy Core's execution path
(cache look-up, parameter and result processing, row objects) costs the client more than
PostgreSQL spends running them. The statements are still built by :mod:`statements` and
compiled by SQLAlchemy's dialect, once per shape; only their execution skips Core. They
run on the very DBAPI connection, in the very transaction, that the host's ``Session``
holds, so they commit or roll back with it exactly as before.

What the host gives up is seeing these statements in SQLAlchemy's own hooks, so the store
goes through Core whenever something is listening: an engine that echoes SQL, or listeners
for ``before_cursor_execute``, ``after_cursor_execute`` or ``handle_error`` (tracing and
logging integrations use those). ``EventStoreConfig(direct_execution=False)`` turns this
path off altogether.

Payloads (``json``) read on this path are decoded with msgspec, several times faster than
the standard library and as exact, falling back to an iterative decoder for what msgspec
gives up on (see :mod:`sa_crablet._json`), unless the engine was given its own
``json_deserializer``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import psycopg
from psycopg.adapt import Loader
from psycopg.pq import Format
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from sa_crablet._json import load_json


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement as the driver receives it: SQL text, the values SQLAlchemy bound at
    build time (``LIMIT 1`` and the like), and the bind processors of its parameters."""

    sql: str
    defaults: Mapping[str, Any]
    processors: Mapping[str, Callable[[Any], Any]]

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        values = dict(self.defaults)
        values.update(params)
        for name, process in self.processors.items():
            value = values.get(name)
            if value is not None:
                values[name] = process(value)
        return values


@lru_cache(maxsize=1024)
def compiled(statement: ClauseElement, dialect: Dialect) -> Compiled:
    """Compile once per (statement, dialect); the store's statements are themselves built
    once per shape, so this cache is hit on every call after the first."""
    result = cast(SQLCompiler, statement.compile(dialect=dialect))
    if "__[POSTCOMPILE" in result.string:  # an expanding IN cannot go to the driver as is
        raise AssertionError("direct execution needs a statement without expanding parameters")
    defaults = {k: v for k, v in result.construct_params(_check=False).items() if v is not None}
    processors = {
        name: process for name, process in result._bind_processors.items() if callable(process)
    }
    return Compiled(result.string, defaults, processors)


def direct(conn: Connection, enabled: bool) -> Any | None:
    """The psycopg connection to run statements on directly, or ``None`` to go through
    Core (another driver, direct execution disabled, or someone listening to Core)."""
    if not enabled or conn.dialect.driver != "psycopg":
        return None
    if getattr(conn, "_echo", False):
        return None
    dispatch = conn.dispatch
    if (
        dispatch.before_cursor_execute
        or dispatch.after_cursor_execute
        or conn.dialect.dispatch.handle_error
    ):
        return None
    return conn.connection.driver_connection


class _JsonLoader(Loader):
    """Payloads (``json``; ``jsonb`` before migration 0005) with msgspec, any depth and
    size (see :mod:`sa_crablet._json`)."""

    def load(self, data: Any) -> Any:
        return load_json(data)


_JSON_TYPES = ("json", "jsonb")


def _cursor(raw: Any, conn: Connection, name: str | None = None, client: bool = False) -> Any:
    """A cursor whose own adapters decode ``json`` with msgspec; the host's connection and
    its other cursors keep theirs. ``client``: one that binds values client side."""
    if client:
        cursor = psycopg.ClientCursor(raw)
    else:
        cursor = raw.cursor(name=name) if name else raw.cursor()
    if getattr(conn.dialect, "_json_deserializer", None) is None:
        for name_ in _JSON_TYPES:
            cursor.adapters.register_loader(name_, _JsonLoader)
    return cursor


@contextmanager
def core_json_loader(conn: Connection) -> Iterator[None]:
    """Through Core on psycopg, the cursors made inside decode ``json`` as the direct
    path's do (psycopg's own loader recurses and fails on deep nesting).

    The connection's loaders are put back on the way out, so the host's later cursors keep
    theirs: a cursor copies its connection's adapters when it is made, and keeps them (a
    streamed read too). An engine's own ``json_deserializer`` is left in charge.
    """
    if conn.dialect.driver != "psycopg" or getattr(conn.dialect, "_json_deserializer", None):
        yield
        return
    adapters = conn.connection.driver_connection.adapters  # type: ignore[union-attr]
    oids = [adapters.types[name].oid for name in _JSON_TYPES]
    previous = [(oid, adapters.get_loader(oid, Format.TEXT)) for oid in oids]
    for oid in oids:
        adapters.register_loader(oid, _JsonLoader)
    try:
        yield
    finally:
        for oid, loader in previous:
            if loader is not None:
                adapters.register_loader(oid, loader)


def fetch(
    raw: Any, conn: Connection, statement: ClauseElement, params: Mapping[str, Any], prepare: bool
) -> list[Any]:
    """All rows of ``statement``; ``prepare=False`` has PostgreSQL plan it for its values
    every time (what a conflict check needs), ``True`` prepares it on first use."""
    form = compiled(statement, conn.dialect)
    values = form.bind(params)
    try:
        cursor = _cursor(raw, conn)
        rows = _all_rows(cursor.execute(form.sql, values, prepare=prepare))
    except raw.Error as exc:
        raise _wrapped(conn, raw, form.sql, values, exc) from exc
    return rows


def fetch_script(
    raw: Any, conn: Connection, calls: Sequence[tuple[ClauseElement, Mapping[str, Any]]]
) -> list[list[Any]]:
    """The rows of several statements sent as one query string, in one round trip.

    PostgreSQL still runs them one after the other, and under READ COMMITTED each takes
    its own snapshot when it starts, exactly as if they had been sent one by one; what is
    saved is a round trip and its system calls, which cost the client about as much CPU
    as SQLAlchemy's own work per statement. Values are bound client side by psycopg's
    ``ClientCursor`` (quoted by libpq), since a query string with several statements
    cannot carry server-side parameters; the statements are planned for their values.
    """
    cursor = _cursor(raw, conn, client=True)
    forms = [(compiled(statement, conn.dialect), params) for statement, params in calls]
    sql = ""
    try:
        sql = ";\n".join(cursor.mogrify(form.sql, form.bind(params)) for form, params in forms)
        cursor.execute(sql)
        results = [_all_rows(cursor)]
        while cursor.nextset():
            results.append(_all_rows(cursor))
    except raw.Error as exc:
        if conn.engine.hide_parameters:  # the bound text holds the values: show placeholders
            sql = ";\n".join(form.sql for form, _ in forms)
        raise _wrapped(conn, raw, sql, {}, exc) from exc
    finally:
        cursor.close()
    return results


def _all_rows(cursor: Any) -> list[Any]:
    """The rows of the cursor's current result; none for a command (``BEGIN``, ``DECLARE``)."""
    return [] if cursor.description is None else list(cursor.fetchall())


def _wrapped(
    conn: Connection, raw: Any, sql: str, values: Mapping[str, Any], exc: Exception
) -> BaseException:
    """The driver's error as SQLAlchemy would have raised it (``OperationalError``,
    ``IntegrityError``, ... with ``.orig``), so callers and the store's translation see one
    kind of error whichever path ran; a broken connection is invalidated, as Core does."""
    broken = bool(getattr(raw, "broken", False) or getattr(raw, "closed", False))
    if broken:
        invalidate_pool(conn, exc)
        conn.invalidate(exc)
    return DBAPIError.instance(
        sql,
        dict(values),
        exc,
        conn.dialect.loaded_dbapi.Error,
        hide_parameters=conn.engine.hide_parameters,
        connection_invalidated=broken,
        dialect=conn.dialect,
    )


def invalidate_pool(conn: Connection, exc: BaseException) -> None:
    """Mark every connection of the pool made before now as stale, as Core does when it
    sees a disconnect: a broken connection usually means the server restarted or failed
    over, and then every idle pooled connection is dead too. Without it each of them would
    fail one unit of work. SQLAlchemy has no public call for this: ``Pool._invalidate`` is
    the one Core makes (``tests/test_direct_execution.py`` fails if it changes)."""
    conn.engine.pool._invalidate(conn.connection, exc, _checkin=False)
