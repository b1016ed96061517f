"""The psycopg runner: the store's statements straight on the Session's own psycopg
connection, same connection, same transaction, skipping SQLAlchemy Core's per-call work.

Why: for the short statements of an append or a read, Core's execution path (cache look-up,
parameter and result processing, row objects) costs the client more than PostgreSQL spends
running them. The statements are still the plans' Core statements, compiled by SQLAlchemy's
dialect once per shape; only their execution skips Core. The runner is chosen only when
nothing could tell the difference (see :mod:`sa_crablet._runners.choose`).

Payloads (``json``) read on this path are decoded with msgspec, several times faster than
the standard library and as exact, falling back to an iterative decoder for what msgspec
gives up on (see :mod:`sa_crablet._json`), unless the engine has its own
``json_deserializer``. This module is imported only for a psycopg connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.adapt import Loader
from psycopg.pq import ExecStatus, Format
from psycopg.types.string import ByteaBinaryLoader
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

from sa_crablet._awaiting import awaited
from sa_crablet._json import load_json
from sa_crablet._plans import control
from sa_crablet._plans.steps import Rows, Step
from sa_crablet._runners.base import IDLE, PostgresRunner, transaction_status
from sa_crablet._runners.timeouts import pg_timeouts
from sa_crablet.config import EventStoreConfig


class PsycopgRunner(PostgresRunner):
    """Runs on ``conn``'s psycopg connection; a unit is one query string (one round trip),
    with the configured timeouts set and put back inside it, and on a connection with no
    transaction open its ``BEGIN`` and ``COMMIT`` too."""

    __slots__ = ("_raw",)
    _wait: Callable[[Any], Any] = staticmethod(lambda value: value)
    """How a cursor call's result is had: as is (a sync connection)."""
    pages_by_position = True

    def __init__(self, conn: Connection, config: EventStoreConfig) -> None:
        super().__init__(conn, config)
        self._raw: Any = conn.connection.driver_connection

    @property
    def raw_events(self) -> bool:  # type: ignore[override]
        """Unless the engine has its own ``json_deserializer`` (left in charge), the read
        cursor hands payloads over undecoded (see :func:`_cursor`)."""
        return engine_json_deserializer(self.conn.dialect) is None

    def rows(self, step: Step) -> Rows:
        return fetch(
            self._raw,
            self.conn,
            step.statement,
            step.params,
            step.prepare,
            wait=self._wait,
            events=step.events,
        )

    def unit(self, steps: Sequence[Step], *, writes: bool = True) -> list[Rows]:
        own = self.own and writes
        if not own and self.own and self.timeouts:
            # Outside a transaction block and not writing (a read, a cursor): the settings
            # are the session's for the statement's duration, then put back (set_config with
            # is_local false). A held cursor's rows are made when its implicit transaction
            # commits, so the timeout must still be set then: statements of their own.
            with pg_timeouts(self.conn, self.timeouts, local=False):
                return [self.rows(step) for step in steps]
        if not self.timeouts and len(steps) == 1:
            # One statement: in the host's transaction, or, with none open, a transaction of
            # its own by itself (its transaction-scoped locks held to its end), prepared.
            if not own:
                return [self.rows(steps[0])]
            try:
                return [self.rows(steps[0])]
            except BaseException:
                if transaction_status(self._raw) != IDLE:  # a cancelled task mid-statement
                    self.rollback_own()
                raise
        script: list[tuple[Any, Mapping[str, Any]]] = [(s.statement, s.params) for s in steps]
        first, last = 0, len(script)
        if self.timeouts:
            # Set, and put back in the same query string: no round trip of their own.
            names = tuple(self.timeouts)
            script = [
                (control.timeouts_set(names), self.timeouts),
                *script,
                (control.timeouts_restore(names), {}),
            ]
            first, last = 1, len(script) - 1
        if own:
            script = [(control.BEGIN, {}), *script, (control.COMMIT, {})]
            first, last = first + 1, last + 1
        try:
            events = any(step.events for step in steps)
            return fetch_script(self._raw, self.conn, script, self._wait, events)[first:last]
        except BaseException:  # an error, or a cancelled task: the transaction is ours to end
            if own:
                self.rollback_own()
            raise


def runner(conn: Connection, config: EventStoreConfig) -> PsycopgRunner:
    """The psycopg runner for ``conn``'s connection, sync or async."""
    if isinstance(conn.connection.driver_connection, psycopg.AsyncConnection):
        return AsyncPsycopgRunner(conn, config)
    return PsycopgRunner(conn, config)


class AsyncPsycopgRunner(PsycopgRunner):
    """The same on psycopg's ``AsyncConnection``, under SQLAlchemy's asyncio layer: the
    store's logic runs in SQLAlchemy's greenlet bridge, and each cursor call is awaited
    through it (``await_``), exactly where the sync runner calls it."""

    __slots__ = ()
    _wait = staticmethod(awaited)


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
    """Compile once per (statement, dialect); the plans' statements are themselves built
    once per shape, so this cache is hit on every call after the first."""
    result = statement.compile(dialect=dialect)
    if "__[POSTCOMPILE" in result.string:  # an expanding IN cannot go to the driver as is
        raise AssertionError("direct execution needs a statement without expanding parameters")
    defaults = {k: v for k, v in result.params.items() if v is not None}
    processors: dict[str, Callable[[Any], Any]] = {}
    for name, bind in getattr(result, "binds", {}).items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors[name] = process
    return Compiled(result.string, defaults, processors)


def engine_json_deserializer(dialect: Dialect) -> Any:
    """The ``json_deserializer`` given to ``create_engine()``, if any. SQLAlchemy keeps it on
    the dialect with no public accessor; ``test_an_engines_json_deserializer_is_used``
    fails if that changes."""
    return getattr(dialect, "_json_deserializer", None)


class _JsonLoader(Loader):
    """Payloads (``json``; ``jsonb`` before migration 0005) with msgspec, any depth and
    size (see :mod:`sa_crablet._json`)."""

    def load(self, data: Any) -> Any:
        return load_json(data)


class _RawJsonLoader(Loader):
    """Payloads as their JSON text, undecoded (bytes), for the read plan to decode: in text
    format (a read inside a query string of several statements)."""

    def load(self, data: Any) -> bytes:
        return bytes(data)


class _RawJsonbBinaryLoader(Loader):
    """``jsonb`` (payloads before migration 0005) in binary format: a version byte, then the
    text."""

    format = Format.BINARY

    def load(self, data: Any) -> bytes:
        if data[:1] != b"\x01":
            raise psycopg.DataError("unknown jsonb binary format")
        return bytes(data[1:])


_JSON_TYPES = ("json", "jsonb")
TUPLES_OK = ExecStatus.TUPLES_OK
# A read's events come in binary format: psycopg's C loaders read positions, tags and times
# several times faster than their text (measured: a row's decoding 1.1 us against 1.7 us),
# and a payload's binary form is its JSON text, which psycopg's C loader for bytes hands over
# as it is; the read plan decodes it (``events_of``), with no Python call per value here.
_RAW_PAYLOADS = (
    ("json", _RawJsonLoader),
    ("jsonb", _RawJsonLoader),
    ("json", ByteaBinaryLoader),
    ("jsonb", _RawJsonbBinaryLoader),
)


_CURSOR_KEY = "sa_crablet_psycopg_cursor"


def _cursor(raw: Any, conn: Connection, client: bool = False, events: bool = False) -> Any:
    """The store's cursor on ``raw``, whose own adapters decode ``json`` with msgspec; the
    host's connection and its other cursors keep theirs. ``client``: one that binds values
    client side. ``events``: one for reads of events (a step's ``events``), which returns
    rows in binary format (unless ``client``: a query string of several statements has only
    text) with payloads undecoded (see :attr:`PsycopgRunner.raw_events`). Made once per
    connection and kind and kept in its ``info`` (a cursor copies the connection's adapters
    when it is made: the host's later changes to them do not reach the store's reads, which
    read only the standard types and ``json``).

    A kept cursor also keeps the loaders it made, and psycopg's time loaders read the
    session's ``TimeZone`` (and, in text, its ``DateStyle``) when they are made: a cursor is
    kept for the settings it was made under only, or a ``SET TIME ZONE`` (a host's ``SET
    LOCAL``, a transaction that ends) would leave the store's times in the previous zone."""
    cached: dict[tuple[bool, bool], tuple[Any, Any, Any]] = conn.info.setdefault(_CURSOR_KEY, {})
    pgconn = raw.pgconn
    settings = (pgconn.parameter_status(b"TimeZone"), pgconn.parameter_status(b"DateStyle"))
    found = cached.get((client, events))
    if found is not None and found[:2] == (raw, settings) and not found[2].closed:
        return found[2]
    if client:
        kind = psycopg.AsyncClientCursor if isinstance(raw, psycopg.AsyncConnection) else None
        cursor = (kind or psycopg.ClientCursor)(raw)
    else:
        cursor = raw.cursor(binary=events)
    if engine_json_deserializer(conn.dialect) is None:
        if events:
            for name, loader in _RAW_PAYLOADS:
                cursor.adapters.register_loader(name, loader)
        else:
            for name in _JSON_TYPES:
                cursor.adapters.register_loader(name, _JsonLoader)
    cached[(client, events)] = (raw, settings, cursor)
    return cursor


@contextmanager
def core_json_loader(conn: Connection) -> Iterator[None]:
    """Through Core on psycopg, the cursors made inside decode ``json`` as the direct
    runner's do (psycopg's own loader recurses and fails on deep nesting).

    The connection's loaders are put back on the way out, so the host's later cursors keep
    theirs: a cursor copies its connection's adapters when it is made, and keeps them (a
    streamed read too). An engine's own ``json_deserializer`` is left in charge.
    """
    if engine_json_deserializer(conn.dialect) is not None:
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
    raw: Any,
    conn: Connection,
    statement: ClauseElement,
    params: Mapping[str, Any],
    prepare: bool,
    wait: Callable[[Any], Any] = lambda value: value,
    events: bool = False,
) -> list[Any]:
    """All rows of ``statement``; ``prepare=False`` has PostgreSQL plan it for its values
    every time (what a conflict check needs), ``True`` prepares it on first use. ``wait``
    has what a cursor call returns (awaits it, on an async connection). ``events``: rows of
    events, through the read cursor (see :func:`_cursor`)."""
    form = compiled(statement, conn.dialect)
    values = form.bind(params)
    try:
        cursor = _cursor(raw, conn, events=events)
        rows = _all_rows(wait(cursor.execute(form.sql, values, prepare=prepare)), wait)
    except raw.Error as exc:
        raise _wrapped(conn, raw, form.sql, values, exc) from exc
    return rows


def fetch_script(
    raw: Any,
    conn: Connection,
    calls: Sequence[tuple[ClauseElement, Mapping[str, Any]]],
    wait: Callable[[Any], Any] = lambda value: value,
    events: bool = False,
) -> list[list[Any]]:
    """The rows of several statements sent as one query string, in one round trip.

    PostgreSQL still runs them one after the other, and under READ COMMITTED each takes
    its own snapshot when it starts, exactly as if they had been sent one by one; what is
    saved is a round trip and its system calls, which cost the client about as much CPU
    as SQLAlchemy's own work per statement. Values are bound client side by psycopg's
    ``ClientCursor`` (quoted by libpq), since a query string with several statements
    cannot carry server-side parameters; the statements are planned for their values.
    ``events``: one of them reads events (their payloads then come undecoded, as from the
    read cursor).
    """
    cursor = _cursor(raw, conn, client=True, events=events)
    forms = [(compiled(statement, conn.dialect), params) for statement, params in calls]
    sql = ""
    try:
        sql = ";\n".join(cursor.mogrify(form.sql, form.bind(params)) for form, params in forms)
        wait(cursor.execute(sql))
        results = [_all_rows(cursor, wait)]
        while cursor.nextset():
            results.append(_all_rows(cursor, wait))
    except raw.Error as exc:
        if conn.engine.hide_parameters:  # the bound text holds the values: show placeholders
            sql = ";\n".join(form.sql for form, _ in forms)
        raise _wrapped(conn, raw, sql, {}, exc) from exc
    return results


def _all_rows(cursor: Any, wait: Callable[[Any], Any]) -> list[Any]:
    """The rows of the cursor's current result; none for a command (``BEGIN``, ``DECLARE``).
    (Told by the result's status: ``cursor.description`` would build a ``Column`` per
    column on every call.)"""
    result = cursor.pgresult
    if result is None or result.status != TUPLES_OK:
        return []
    rows: list[Any] = wait(cursor.fetchall())
    return rows


def _wrapped(
    conn: Connection, raw: Any, sql: str, values: Mapping[str, Any], exc: Exception
) -> BaseException:
    """The driver's error as SQLAlchemy would have raised it (``OperationalError``,
    ``IntegrityError``, ... with ``.orig``), so callers and the store's translation see one
    kind of error whichever runner ran; a broken connection is invalidated, as Core does."""
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
