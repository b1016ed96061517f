"""SQLite, the embedded default: an engine set up for the event store in one call."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import StaticPool


def create_sqlite_engine(
    path: str = ":memory:", *, busy_timeout: float = 5.0, **kwargs: Any
) -> Engine:
    """An engine for a SQLite file (or ``":memory:"``) ready for the event store.

    Files use WAL, so readers never block the single writer; ``busy_timeout`` is how long
    a writer waits for the write lock before the store raises ``OperationTimeoutError``.
    An in-memory database lives in one shared connection.
    """
    if path == ":memory:":
        kwargs.setdefault("poolclass", StaticPool)
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": busy_timeout, "check_same_thread": False},
        **kwargs,
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if path != ":memory:":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
