"""What a runner sets around the store's statements: the configured timeouts (PostgreSQL
settings, SQLite's busy timeout and progress handler), and planning with actual values."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from sqlalchemy import Connection, func, select, text
from sqlalchemy.exc import DBAPIError

from sa_crablet._awaiting import awaited
from sa_crablet.config import timeout_ms


@contextmanager
def custom_plans(conn: Connection, wanted: bool) -> Iterator[None]:
    """Run the enclosed statements unprepared on psycopg, so PostgreSQL plans each with its
    actual values.

    psycopg prepares a statement after a few executions, and PostgreSQL may then switch to
    a generic plan. For a conflict check that is ruinous: not knowing that ``position > $1``
    is the newest sliver of the table, the generic plan scans every event of the scope, or
    the table (measured: 30 ms instead of 4 ms per decision cycle at 100k events).
    """
    raw = conn.connection.driver_connection if wanted else None
    threshold = getattr(raw, "prepare_threshold", None)
    if raw is None or threshold is None:
        yield
        return
    raw.prepare_threshold = None
    try:
        yield
    finally:
        raw.prepare_threshold = threshold


@lru_cache(maxsize=64)
def timeout_settings(lock: float | None, stmt: float | None) -> Mapping[str, str]:
    """PostgreSQL settings for the configured timeouts (seconds), e.g. ``{"lock_timeout":
    "2000ms"}``; empty when none is configured. (Cached per configuration: read only.)"""
    return MappingProxyType(
        {
            name: f"{timeout_ms(seconds)}ms"
            for name, seconds in (("lock_timeout", lock), ("statement_timeout", stmt))
            if seconds is not None
        }
    )


@contextmanager
def pg_timeouts(
    conn: Connection, settings: Mapping[str, str], local: bool = True
) -> Iterator[None]:
    """The ``settings`` (see :func:`timeout_settings`) around the enclosed statements.

    ``local``: ``SET LOCAL`` style, for statements inside a transaction block; outside one
    (AUTOCOMMIT) each statement is a transaction of its own, so a local value would be gone
    before the next statement: then the session's value is set, and put back after.
    """
    if not settings:
        yield
        return
    # Read the host's values and set ours in one statement (left to right), then put the
    # host's values back so the rest of its transaction (or session) is unaffected.
    old = conn.execute(
        select(
            *(func.current_setting(name) for name in settings),
            *(func.set_config(name, value, local) for name, value in settings.items()),
        )
    ).one()
    restore = select(*(func.set_config(n, o, local) for n, o in zip(settings, old, strict=False)))
    try:
        yield
    except DBAPIError:
        # In a transaction block the error aborted it, and rolling it back restores the
        # settings; a session-level value must be put back now, if the connection lives.
        if not local:
            _quietly(conn, lambda: conn.execute(restore))
        raise
    except BaseException:
        # Not the database's error (a Python error, a cancelled task): put the values back
        # if the connection still can, and let the original error through whatever happens.
        _quietly(conn, lambda: conn.execute(restore))
        raise
    conn.execute(restore)


def _quietly(conn: Connection, clean_up: Callable[[], Any]) -> None:
    """Clean up after an error, never hiding it: not on a dead connection, and any error
    of the clean-up itself swallowed (the original one is on its way up)."""
    if conn.invalidated or conn.closed:
        return
    with suppress(Exception):
        clean_up()


@contextmanager
def sqlite_timeouts(conn: Connection, lock: float | None, stmt: float | None) -> Iterator[None]:
    raw = conn.connection.driver_connection
    old_busy = None
    if lock is not None:
        old_busy = conn.execute(text("PRAGMA busy_timeout")).scalar()
        conn.execute(text(f"PRAGMA busy_timeout = {timeout_ms(lock)}"))
    if stmt is not None:
        deadline = time.monotonic() + stmt
        handler: Callable[[], int] = lambda: int(time.monotonic() > deadline)  # noqa: E731
        # aiosqlite's is a coroutine (the handler runs in its worker thread: a deadline
        # read from a clock is all it needs).
        awaited(raw.set_progress_handler(handler, 1000))  # type: ignore[union-attr]

    def restore() -> None:
        if stmt is not None:
            awaited(raw.set_progress_handler(None, 0))  # type: ignore[union-attr]
        if old_busy is not None:
            conn.execute(text(f"PRAGMA busy_timeout = {int(old_busy)}"))

    try:
        yield
    except BaseException:
        _quietly(conn, restore)  # the original error goes on, whatever the clean-up meets
        raise
    restore()
