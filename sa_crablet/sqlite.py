"""SQLite, the embedded default: an engine set up for the event store in one call."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import StaticPool

from sa_crablet.exceptions import ValidationError

SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


def create_sqlite_engine(
    path: str = ":memory:",
    *,
    busy_timeout: float = 5.0,
    synchronous: str = "FULL",
    **kwargs: Any,
) -> Engine:
    """An engine for a SQLite file (or ``":memory:"``) ready for the event store.

    Files use WAL, so readers never block the single writer; ``busy_timeout`` is how long
    a writer waits for the write lock before the store raises ``OperationTimeoutError``.
    ``synchronous`` is SQLite's durability setting: ``FULL`` (the default) syncs every
    commit; ``NORMAL`` (with WAL) survives application crashes but may lose the last commits
    on power loss, and is several times faster. An in-memory database lives in one shared
    connection.
    """
    level = str(synchronous).upper()
    if level not in SYNCHRONOUS_LEVELS:
        raise ValidationError("synchronous", synchronous, f"one of {', '.join(SYNCHRONOUS_LEVELS)}")
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
        cursor.execute(f"PRAGMA synchronous={level}")
        cursor.close()

    return engine
