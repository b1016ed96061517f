"""The SQLAlchemy Core runner for PostgreSQL: any driver, every statement through
``Connection.execute``, so the engine's listeners, echo and execution options see and shape
each one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

from sqlalchemy import Connection

from sa_crablet._plans import control
from sa_crablet._plans.steps import Rows, Step
from sa_crablet._runners.base import PostgresRunner
from sa_crablet._runners.timeouts import custom_plans, pg_timeouts
from sa_crablet.config import EventStoreConfig

Loaders = Callable[[Connection], AbstractContextManager[None]]
"""Decoders the driver should use for the store's own cursors (see
:func:`sa_crablet._runners.psycopg.core_json_loader`)."""


def _no_loaders(conn: Connection) -> AbstractContextManager[None]:
    return nullcontext()


class CoreRunner(PostgresRunner):
    __slots__ = ("_loaders",)

    def __init__(
        self, conn: Connection, config: EventStoreConfig, loaders: Loaders = _no_loaders
    ) -> None:
        super().__init__(conn, config)
        self._loaders = loaders

    def rows(self, step: Step) -> Rows:
        with custom_plans(self.conn, not step.prepare), self._loaders(self.conn):
            result = self.conn.execute(step.statement, step.params)
            return list(result.all()) if result.returns_rows else []

    def unit(self, steps: Sequence[Step], *, writes: bool = True) -> list[Rows]:
        if not (self.own and writes):
            # Outside a transaction block (a read), the settings are the session's for the
            # statement's duration: a transaction-local one would end with its statement.
            with pg_timeouts(self.conn, self.timeouts, local=not self.own):
                return [self.rows(step) for step in steps]
        self.rows(Step(control.BEGIN))
        try:
            with pg_timeouts(self.conn, self.timeouts):
                results = [self.rows(step) for step in steps]
            self.rows(Step(control.COMMIT))
        except BaseException:
            self.rollback_own()
            raise
        return results
