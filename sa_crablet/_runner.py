"""How one store operation runs its statements: directly on the driver, or through Core; in
the host's transaction, or, on a connection with none open (AUTOCOMMIT), in its own.

The choices (see :mod:`sa_crablet._driver` for the direct path) are made once per operation,
when the runner is made, not once per statement.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from sa_crablet import _control, _driver
from sa_crablet._clauses import POSTGRESQL
from sa_crablet._connection import custom_plans, pg_timeouts, sqlite_timeouts, timeout_settings
from sa_crablet._errors import translated
from sa_crablet.config import EventStoreConfig
from sa_crablet.exceptions import UnsupportedSetupError
from sa_crablet.query import AppendCondition

# libpq's PQtransactionStatus values (psycopg 2 and 3 alike).
_IDLE, _INERROR = 0, 3
_CURSORS_KEY = "sa_crablet_cursors"


@dataclass(frozen=True, slots=True)
class Call:
    """One statement with its parameters. ``prepare``: psycopg may prepare it (its plan
    does not depend on the values); otherwise PostgreSQL plans it for its actual values."""

    statement: Any
    params: Mapping[str, Any] = field(default_factory=dict)
    prepare: bool = False


@dataclass(frozen=True, slots=True)
class Runner:
    """``raw`` is the psycopg connection to run on directly, ``None`` for Core; ``own``
    whether no transaction block was open when the operation began (an AUTOCOMMIT
    connection), so that a unit that writes runs in a transaction of its own;
    ``in_transaction`` (SQLite) whether one was; ``timeouts`` the configured timeouts as
    PostgreSQL settings (empty when none)."""

    conn: Connection
    config: EventStoreConfig
    dialect: str
    raw: Any | None
    own: bool
    in_transaction: bool
    timeouts: dict[str, str]
    started: float

    @classmethod
    def of(cls, conn: Connection, config: EventStoreConfig) -> Runner:
        dialect = conn.dialect.name
        driver = conn.connection.driver_connection
        own = in_transaction = False
        if dialect == POSTGRESQL:
            _check_encoding(driver)
            own = bool(getattr(driver, "autocommit", False)) and _status(driver) == _IDLE
        else:
            in_transaction = bool(getattr(driver, "in_transaction", False))
            own = getattr(driver, "isolation_level", "") is None and not in_transaction
        return cls(
            conn,
            config,
            dialect,
            _driver.direct(conn, config.direct_execution),
            own,
            in_transaction,
            timeout_settings(config.lock_timeout, config.statement_timeout),
            time.monotonic(),
        )

    @property
    def direct(self) -> bool:
        return self.raw is not None

    # -- errors ------------------------------------------------------------------------------

    def translated(self, condition: AppendCondition | None = None) -> AbstractContextManager[None]:
        """Driver errors raised inside become the library's (see :mod:`sa_crablet._errors`)."""
        return translated(condition, busy_is_conflict=self._busy_without_waiting)

    def _busy_without_waiting(self) -> bool:
        """SQLite answered BUSY to a transaction that was already open before this operation,
        sooner than its busy timeout: it did not wait, because waiting could not help."""
        if not self.in_transaction:
            return False
        limit = self.config.lock_timeout
        if limit is None:
            try:
                limit = int(self.conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()) / 1000
            except DBAPIError:
                return True
        return limit == 0 or time.monotonic() - self.started < limit * 0.9

    # -- running statements ----------------------------------------------------------------------

    def rows(self, call: Call) -> list[Any]:
        """Every row of one statement, without the configured timeouts."""
        if self.raw is not None:
            return _driver.fetch(self.raw, self.conn, call.statement, call.params, call.prepare)
        with custom_plans(self.conn, not call.prepare), _driver.core_json_loader(self.conn):
            result = self.conn.execute(call.statement, call.params)
            return list(result.all()) if result.returns_rows else []

    def unit(self, calls: Sequence[Call], *, writes: bool = True) -> list[list[Any]]:
        """Run ``calls`` in order under the configured timeouts; the rows of each.

        A unit that ``writes`` on a connection with no transaction open runs in one of its
        own (``BEGIN ISOLATION LEVEL READ COMMITTED`` ... ``COMMIT``, rolled back on error),
        so its locks are held until its last statement, as in a host's transaction. On the
        direct path the whole unit is one query string (one round trip).
        """
        if self.dialect != POSTGRESQL:
            with self._sqlite_timeouts():
                return [self.rows(call) for call in calls]
        own = self.own and writes
        if self.raw is not None:
            return self._direct_unit(calls, own)
        if not own:
            with pg_timeouts(self.conn, self.timeouts, local=not self.own):
                return [self.rows(call) for call in calls]
        self.rows(Call(_control.BEGIN))
        try:
            with pg_timeouts(self.conn, self.timeouts):
                results = [self.rows(call) for call in calls]
            self.rows(Call(_control.COMMIT))
        except BaseException:
            self._rollback_own()
            raise
        return results

    def _direct_unit(self, calls: Sequence[Call], own: bool) -> list[list[Any]]:
        assert self.raw is not None
        if not own and self.own and self.timeouts:
            # Outside a transaction block and not writing (a read, a cursor): the settings
            # are the session's for the statement's duration, then put back. A transaction
            # of our own would do it in one string, but a read needs none.
            with pg_timeouts(self.conn, self.timeouts, local=False):
                return [self.rows(call) for call in calls]
        if not own and not self.timeouts and len(calls) == 1:
            return [self.rows(calls[0])]
        script: list[tuple[Any, Mapping[str, Any]]] = [(c.statement, c.params) for c in calls]
        names = tuple(self.timeouts)
        first, last = 0, len(script)
        if self.timeouts:
            # Set, and put back in the same query string: no round trip of their own.
            script = [
                (_control.timeouts_set(names), self.timeouts),
                *script,
                (_control.timeouts_restore(names), {}),
            ]
            first, last = 1, len(script) - 1
        if own:
            script = [(_control.BEGIN, {}), *script, (_control.COMMIT, {})]
            first, last = first + 1, last + 1
        try:
            return _driver.fetch_script(self.raw, self.conn, script)[first:last]
        except DBAPIError:
            if own:
                self._rollback_own()
            raise

    def begin(self) -> None:
        """Open a transaction on a connection that has none (see :attr:`own`); on SQLite
        one that holds the write lock from its start (``BEGIN IMMEDIATE``)."""
        if self.dialect == POSTGRESQL:
            self.rows(Call(_control.BEGIN))
        else:
            self.conn.exec_driver_sql("BEGIN IMMEDIATE")

    def end(self, *, commit: bool) -> None:
        """End the transaction :meth:`begin` opened."""
        if commit:
            self.rows(Call(_control.COMMIT))
        else:
            self._rollback_own()

    def _rollback_own(self) -> None:
        """End the operation's own transaction after an error, if the connection lives."""
        if self.conn.invalidated:
            return
        with suppress(DBAPIError):
            self.rows(Call(_control.ROLLBACK))

    def _sqlite_timeouts(self) -> AbstractContextManager[None]:
        cfg = self.config
        if cfg.lock_timeout is None and cfg.statement_timeout is None:
            return nullcontext()
        return sqlite_timeouts(self.conn, cfg.lock_timeout, cfg.statement_timeout)

    # -- streaming -------------------------------------------------------------------------------

    def stream(self, statement: Any, params: Mapping[str, Any], size: int) -> Iterator[Any]:
        """The rows of one statement, ``size`` per round trip, each round trip under the
        configured timeouts (and nothing in between: the host's own statements between two
        pages run with its own settings). Closing the iterator releases the cursor."""
        if self.dialect != POSTGRESQL:
            yield from self._sqlite_stream(statement, params, size)
            return
        cursors: dict[str, bool] = self.conn.info.setdefault(_CURSORS_KEY, {})
        if any(cursors.values()):
            self._close_left_over(cursors)
        index = 0
        while _control.cursor_name(index) in cursors:
            index += 1
        name = _control.cursor_name(index)
        # Outside a transaction block the cursor must outlive its DECLARE's own transaction.
        hold = self.own
        self.unit([Call(_control.declare_cursor(name, statement, hold), params)], writes=False)
        cursors[name] = False
        dbapi = self.conn.connection.dbapi_connection
        transaction = self.conn.get_transaction()
        fetch = Call(_control.fetch_events(name, size))
        try:
            while True:
                rows = self.unit([fetch], writes=False)[0]
                yield from rows
                if len(rows) < size:
                    break
        finally:
            if self._cursor_alive(dbapi, None if hold else transaction):
                self.rows(Call(_control.close_cursor(name)))
                del cursors[name]
            elif hold and not self.conn.invalidated:
                # A held cursor outlives its session's hold on this connection (returned
                # to the pool, say): the next read on the connection closes it.
                cursors[name] = True
            else:
                del cursors[name]  # it died with its transaction or its connection

    def _close_left_over(self, cursors: dict[str, bool]) -> None:
        """Close the held cursors of reads that were dropped after their session let go of
        this connection. Only those that still exist: a failing ``CLOSE`` would abort the
        host's transaction."""
        left = [name for name, leftover in cursors.items() if leftover]
        existing = self.rows(Call(_control.existing_cursors(), {"names": left}))
        for (name,) in existing:
            self.rows(Call(_control.close_cursor(name)))
        for name in left:
            del cursors[name]

    def _cursor_alive(self, dbapi: Any, transaction: Any) -> bool:
        """Whether a cursor declared on ``dbapi`` (in ``transaction``, unless it holds) can
        still be closed: the same connection, still ours, the same live transaction. A
        cursor that died with its transaction needs no ``CLOSE``, and sending one then
        would fail, or, on a connection returned to the pool, land in someone else's work."""
        conn = self.conn
        if conn.closed or conn.invalidated or conn.connection.dbapi_connection is not dbapi:
            return False
        driver = conn.connection.driver_connection
        if _status(driver) == _INERROR or getattr(driver, "closed", False):
            return False
        if transaction is None:
            return True
        current = conn.get_transaction()
        return current is transaction and current is not None and current.is_active

    def _sqlite_stream(self, statement: Any, params: Mapping[str, Any], size: int) -> Iterator[Any]:
        options = {"stream_results": True, "yield_per": size}
        with self._sqlite_timeouts():
            result = self.conn.execute(statement, params, execution_options=options)
        try:
            pages = result.partitions(size)
            while True:
                with self._sqlite_timeouts():
                    page = next(pages, None)
                if page is None:
                    break
                yield from page
        finally:
            result.close()


def _status(driver: Any) -> int | None:
    info = getattr(driver, "info", None)
    status = getattr(info, "transaction_status", None)
    return None if status is None else int(status)


def _check_encoding(driver: Any) -> None:
    """Refuse a connection whose client encoding is not UTF-8.

    The server converts everything it receives from the client encoding; in encodings such
    as SJIS, GBK or BIG5 the second byte of a character can be a quote or a backslash, so an
    array of tags can come apart into other elements, and payloads decode as mojibake.
    """
    info = getattr(driver, "info", None)
    if info is None or not hasattr(info, "parameter_status"):
        return
    encoding = info.parameter_status("client_encoding")
    if isinstance(encoding, bytes):
        encoding = encoding.decode()
    if encoding is not None and encoding.upper() not in ("UTF8", "UTF-8", "UNICODE"):
        raise UnsupportedSetupError(
            "client_encoding",
            encoding,
            "sa_crablet needs a UTF-8 client encoding on PostgreSQL: remove the "
            "client_encoding setting (or set it to UTF8) on the engine or connection",
        )
