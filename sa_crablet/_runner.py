"""How one store operation runs its statements: directly on the driver, or through Core.

The choice (see :mod:`sa_crablet._driver`) is made once per operation, when the runner is
made, not once per statement.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, CursorResult

from sa_crablet import _driver, statements
from sa_crablet._connection import custom_plans, timeout_settings
from sa_crablet.config import EventStoreConfig


@dataclass(frozen=True, slots=True)
class Runner:
    """``raw`` is the psycopg connection to run on directly, ``None`` for Core;
    ``timeouts`` the configured timeouts as PostgreSQL settings (empty when none)."""

    conn: Connection
    raw: Any | None
    timeouts: dict[str, str]

    @classmethod
    def of(cls, conn: Connection, config: EventStoreConfig) -> Runner:
        raw = _driver.direct(conn, config.direct_execution)
        return cls(conn, raw, timeout_settings(config.lock_timeout, config.statement_timeout))

    @property
    def direct(self) -> bool:
        return self.raw is not None

    def rows(self, statement: Any, params: dict[str, Any], prepare: bool) -> list[Any]:
        """Every row of one statement. ``prepare=False`` has PostgreSQL plan it for its
        actual values on every call."""
        if self.raw is not None:
            return _driver.fetch(self.raw, self.conn, statement, params, prepare)
        with custom_plans(self.conn, not prepare), _driver.core_json_loader(self.conn):
            return list(self.conn.execute(statement, params).all())

    def stream(self, statement: Any, params: dict[str, Any], size: int) -> Iterator[Any]:
        """The rows of one statement through a server-side cursor, ``size`` per round trip;
        closing the iterator closes the cursor."""
        rows: Generator[Any, None, None] | CursorResult[Any]
        if self.raw is not None:
            rows = _driver.stream(self.raw, self.conn, statement, params, size)
        else:
            options = {"stream_results": True, "yield_per": size}
            with _driver.core_json_loader(self.conn):
                rows = self.conn.execute(statement, params, execution_options=options)
        try:
            yield from rows
        finally:
            rows.close()

    def script(self, calls: Sequence[tuple[Any, dict[str, Any]]]) -> list[list[Any]]:
        """Several statements in one round trip (direct path only), with the configured
        timeouts set before them and the host's values put back after them in the same
        query string, so timeouts cost no round trip of their own."""
        assert self.raw is not None
        if not self.timeouts:
            return _driver.fetch_script(self.raw, self.conn, calls)
        names = tuple(self.timeouts)
        wrapped = [
            (statements.timeouts_set(names), self.timeouts),
            *calls,
            (statements.timeouts_restore(names), {}),
        ]
        return _driver.fetch_script(self.raw, self.conn, wrapped)[1:-1]
