"""SQLite, the embedded default: an engine set up for the event store in one call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import QueuePool

from sa_crablet.exceptions import ValidationError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

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
    on power loss, and is several times faster.

    An in-memory database lives in one connection, which the engine's pool lends to one
    session at a time: sessions in other threads wait for it (up to ``busy_timeout``, then
    SQLAlchemy's ``TimeoutError``), so they never share it at once. A thread that opens a
    second session while its first one still holds the connection waits the same way:
    close the first one, or use a file for concurrent work.
    """
    level = _checked(busy_timeout, synchronous)
    if path == ":memory:" and "poolclass" not in kwargs:
        # One connection (the database lives in it), lent to one session at a time. The
        # connection moves between threads, never used by two at once, hence the thread
        # check off. StaticPool would hand the same connection to every thread at once,
        # which sqlite3 does not survive.
        kwargs["poolclass"] = QueuePool
        kwargs.setdefault("pool_size", 1)
        kwargs.setdefault("max_overflow", 0)
        kwargs.setdefault("pool_timeout", busy_timeout)
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": busy_timeout, "check_same_thread": False},
        **kwargs,
    )

    event.listen(engine, "connect", _configure(path, level))
    return engine


def create_async_sqlite_engine(
    path: str = ":memory:",
    *,
    busy_timeout: float = 5.0,
    synchronous: str = "FULL",
    **kwargs: Any,
) -> AsyncEngine:
    """:func:`create_sqlite_engine` for an asyncio application: an ``AsyncEngine`` on
    ``sqlite+aiosqlite`` set up the same way (WAL for a file, the busy timeout, the
    durability setting), for :class:`~sa_crablet.AsyncEventStore`. An in-memory database
    lives in one connection, which one session at a time holds."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import AsyncAdaptedQueuePool

    level = _checked(busy_timeout, synchronous)
    if path == ":memory:" and "poolclass" not in kwargs:
        kwargs["poolclass"] = AsyncAdaptedQueuePool
        kwargs.setdefault("pool_size", 1)
        kwargs.setdefault("max_overflow", 0)
        kwargs.setdefault("pool_timeout", busy_timeout)
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{path}", connect_args={"timeout": busy_timeout}, **kwargs
    )
    event.listen(engine.sync_engine, "connect", _configure(path, level))
    return engine


def _checked(busy_timeout: object, synchronous: object) -> str:
    level = str(synchronous).upper()
    if level not in SYNCHRONOUS_LEVELS:
        raise ValidationError("synchronous", synchronous, f"one of {', '.join(SYNCHRONOUS_LEVELS)}")
    if (
        isinstance(busy_timeout, bool)
        or not isinstance(busy_timeout, int | float)
        or not 0 <= busy_timeout < 2**31 / 1000
    ):
        raise ValidationError("busy_timeout", busy_timeout, "a number of seconds >= 0")
    return level


def _configure(path: str, level: str) -> Any:
    """The ``connect`` listener that sets each new connection up."""

    def configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if path != ":memory:":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA synchronous={level}")
        cursor.close()

    return configure
