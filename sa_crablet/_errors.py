"""The one place where driver errors become sa_crablet errors.

PostgreSQL errors are classified by SQLSTATE, SQLite errors by their (extended) result code
name. Message text is never parsed, except SQLite's "no such table", which has no code of
its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from sa_crablet.exceptions import (
    AppendOnlyError,
    ConcurrencyError,
    CrabletError,
    DuplicateCommandError,
    OperationTimeoutError,
    SchemaError,
)
from sa_crablet.schema import APPEND_ONLY_SQLSTATE, EVENTS_TABLE

if TYPE_CHECKING:
    from sa_crablet.commands import Command
    from sa_crablet.query import AppendCondition

_PG_CONFLICTS = {
    "40001": "serialization failure",
    "40P01": "deadlock detected",
}
_PG_SCHEMA = {"42P01"}  # undefined table
_PG_UNIQUE_VIOLATION = "23505"
_APPEND_ONLY = "the event store's tables are append-only: UPDATE, DELETE and TRUNCATE are refused"


@contextmanager
def translated(
    condition: AppendCondition | None = None,
    *,
    command: Command | None = None,
    busy_is_conflict: Callable[[], bool] | None = None,
) -> Iterator[None]:
    """Driver errors raised inside become sa_crablet errors (chained to the original);
    errors we do not classify propagate unchanged. See :func:`translate`."""
    try:
        yield
    except DBAPIError as exc:
        error = translate(exc, condition, command=command, busy_is_conflict=busy_is_conflict)
        if error is None:
            raise
        raise error from exc


def translate(
    exc: DBAPIError,
    condition: AppendCondition | None = None,
    *,
    command: Command | None = None,
    busy_is_conflict: Callable[[], bool] | None = None,
) -> CrabletError | None:
    """Our error for a driver error, or ``None`` when it is not one we classify.

    ``command``: the command whose record the statements carry (an append's). On
    PostgreSQL, a unique violation there can only be its id, recorded already (the events
    table has no other unique key the store could hit: positions come from its identity).
    ``busy_is_conflict`` (SQLite): called for a plain ``SQLITE_BUSY``; true when the write
    could not have waited for the lock (see :func:`_translate_sqlite`).
    """
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        if command is not None and sqlstate == _PG_UNIQUE_VIOLATION:
            return DuplicateCommandError(command.id)
        return _translate_postgresql(str(sqlstate), condition)
    name = getattr(orig, "sqlite_errorname", None)
    if name is not None:
        return _translate_sqlite(str(name), str(orig), condition, busy_is_conflict)
    return None


def _translate_postgresql(sqlstate: str, condition: AppendCondition | None) -> CrabletError | None:
    if sqlstate in _PG_CONFLICTS:
        return ConcurrencyError(
            f"concurrent append conflict ({_PG_CONFLICTS[sqlstate]}); roll back and retry",
            condition=condition,
            transaction_usable=False,
        )
    if sqlstate == "55P03":
        return OperationTimeoutError("lock_timeout", "lock_timeout expired waiting for a lock")
    if sqlstate == "57014":
        return OperationTimeoutError("statement_timeout", "statement_timeout expired")
    if sqlstate == APPEND_ONLY_SQLSTATE:
        return AppendOnlyError(_APPEND_ONLY)
    if sqlstate in _PG_SCHEMA:
        return SchemaError(
            "the sa_crablet schema is missing or out of date: run its migrations "
            "(sa_crablet.upgrade(engine) or `alembic upgrade head`)"
        )
    return None


def _translate_sqlite(
    name: str,
    message: str,
    condition: AppendCondition | None,
    busy_is_conflict: Callable[[], bool] | None,
) -> CrabletError | None:
    if name == "SQLITE_BUSY_SNAPSHOT":
        return ConcurrencyError(
            "another writer committed since this transaction's snapshot; roll back and retry",
            condition=condition,
            transaction_usable=False,
        )
    # A transaction that has already read holds a snapshot: SQLite will not let it wait for
    # another writer (the snapshot would be stale by then) and answers SQLITE_BUSY at once.
    # That is a lost race, not a timeout: only a new transaction can succeed.
    if name == "SQLITE_BUSY" and busy_is_conflict is not None and busy_is_conflict():
        return ConcurrencyError(
            "another writer holds the database and this transaction has already read, so it "
            "cannot wait for it; roll back and retry",
            condition=condition,
            transaction_usable=False,
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return OperationTimeoutError("lock_timeout", "timed out waiting for the database lock")
    if name == "SQLITE_INTERRUPT":
        return OperationTimeoutError("statement_timeout", "statement_timeout expired")
    if name == "SQLITE_CONSTRAINT_TRIGGER":
        return AppendOnlyError(_APPEND_ONLY)
    if name == "SQLITE_ERROR" and message.startswith("no such table: " + EVENTS_TABLE):
        return SchemaError(
            "the sa_crablet schema is missing: run sa_crablet.upgrade(engine) "
            "or sa_crablet.create_schema(engine)"
        )
    return None
