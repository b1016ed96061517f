"""The runner for SQLite (through SQLAlchemy Core): the busy timeout and an interrupt for
the configured timeouts, reads streamed from the driver's cursor page by page."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import ClassVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from sa_crablet._awaiting import outside_the_bridge
from sa_crablet._errors import Circumstances, recorded_revision, translated
from sa_crablet._plans.steps import Rows, Step
from sa_crablet._runners.base import Runner
from sa_crablet._runners.timeouts import sqlite_timeouts
from sa_crablet.commands import Command
from sa_crablet.config import EventStoreConfig
from sa_crablet.query import AppendCondition


class SqliteRunner(Runner):
    """``in_transaction``: a transaction was already open when the operation began (the
    application's own ``BEGIN``, or an earlier write of its transaction)."""

    __slots__ = ("in_transaction",)

    def __init__(self, conn: Connection, config: EventStoreConfig) -> None:
        driver = conn.connection.driver_connection
        self.in_transaction = bool(getattr(driver, "in_transaction", False))
        # pysqlite in AUTOCOMMIT (isolation_level None) opens no transaction of its own.
        own = getattr(driver, "isolation_level", "") is None and not self.in_transaction
        super().__init__(conn, config, own=own)

    def rows(self, step: Step) -> Rows:
        result = self.conn.execute(step.statement, step.params)
        return list(result.all()) if result.returns_rows else []

    def unit(self, steps: Sequence[Step], *, writes: bool = True) -> list[Rows]:
        # Each of the store's SQLite units writes at most once, in one statement, which
        # SQLite runs atomically under its write lock: no transaction of our own needed.
        with self._timeouts():
            return [self.rows(step) for step in steps]

    def stream(self, step: Step, size: int) -> Iterator[Rows]:
        options = {"stream_results": True, "yield_per": size}
        with self._timeouts():
            result = self.conn.execute(step.statement, step.params, execution_options=options)
        try:
            pages = result.partitions(size)
            while True:
                with self._timeouts():
                    page = next(pages, None)
                if page is None:
                    break
                yield list(page)
        finally:
            try:
                result.close()
            except Exception as error:
                if not outside_the_bridge(error):  # an async read finalized outside its loop
                    raise

    def translated(
        self, condition: AppendCondition | None = None, command: Command | None = None
    ) -> AbstractContextManager[None]:
        return translated(
            condition,
            command=command,
            busy_is_conflict=self._busy_without_waiting,
            known=self.circumstances,
        )

    def circumstances(self) -> Circumstances:
        return replace(super().circumstances(), busy_timeout=self._busy_timeout)

    def recorded_revision(self) -> str | None:
        # SQLite's transaction survives the error (and an in-memory database has no
        # other connection that would see it).
        return recorded_revision(self.rows)

    write_lock_up_front: ClassVar[bool] = True

    def ensure_transaction(self) -> None:
        """pysqlite opens a transaction only before the first write, and releasing a
        SAVEPOINT that is not inside a transaction commits in SQLite: open it first."""
        if not getattr(self.conn.connection.driver_connection, "in_transaction", True):
            self.conn.exec_driver_sql("BEGIN")

    def begin(self) -> None:
        """A transaction that holds the write lock from its start: one that reads first and
        writes later could not upgrade its lock once another writer got in."""
        self.conn.exec_driver_sql("BEGIN IMMEDIATE")

    def _timeouts(self) -> AbstractContextManager[None]:
        cfg = self.config
        if cfg.lock_timeout is None and cfg.statement_timeout is None:
            return nullcontext()
        return sqlite_timeouts(self.conn, cfg.lock_timeout, cfg.statement_timeout)

    def _busy_without_waiting(self) -> bool:
        """SQLite answered BUSY to a transaction that was already open before this operation,
        sooner than its busy timeout: it did not wait, because waiting could not help."""
        if not self.in_transaction:
            return False
        limit = self.config.lock_timeout
        if limit is None:
            limit = self._busy_timeout()
            if limit is None:
                return True
        return limit == 0 or time.monotonic() - self.started < limit * 0.9

    def _busy_timeout(self) -> float | None:
        """The connection's own busy timeout (seconds), ``None`` if it cannot be read."""
        try:
            return int(self.conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()) / 1000
        except DBAPIError:
            return None
