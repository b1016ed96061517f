"""The one place where driver errors become sa_crablet errors.

PostgreSQL errors are classified by SQLSTATE, SQLite errors by their (extended) result code
name. Message text is never parsed, except SQLite's "no such table" and "has no column
named", which have no code of their own. What the messages name beyond the error itself
(the configured timeouts, the schema's revision) comes from the runner, as
:class:`Circumstances`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, String, column, select, table
from sqlalchemy.exc import DBAPIError

from sa_crablet._plans.steps import Rows, Step
from sa_crablet.exceptions import (
    AppendOnlyError,
    ConcurrencyError,
    CrabletError,
    DuplicateCommandError,
    OperationTimeoutError,
    SchemaError,
)
from sa_crablet.schema import (
    APPEND_ONLY_SQLSTATE,
    BASE_REVISION,
    HEAD_REVISION,
    TABLE_PREFIX,
    VERSION_TABLE,
)

if TYPE_CHECKING:
    from sa_crablet.commands import Command
    from sa_crablet.query import AppendCondition

_PG_CONFLICTS = {
    "40001": "serialization failure",
    "40P01": "deadlock detected",
}
_PG_UNDEFINED_TABLE = "42P01"
_PG_UNDEFINED_COLUMN = "42703"  # a table from an older revision (the store's own columns)
_PG_UNIQUE_VIOLATION = "23505"
_SQLITE_NO_TABLE = "no such table: "
_SQLITE_NO_COLUMN = " has no column named "  # "table sa_crablet_events has no column ..."
_BUSY_TIMEOUT = "SQLite's busy timeout of the connection (create_sqlite_engine(busy_timeout=...))"


@dataclass(frozen=True, slots=True)
class Circumstances:
    """What the runner knows about an operation that its errors' messages name.

    ``lock_timeout`` / ``statement_timeout``: the configured ones (seconds, or ``None``);
    ``busy_timeout``: SQLite's own wait for the write lock, read when needed; ``revision``:
    the schema revision the database records, read when needed (see
    :func:`recorded_revision`).
    """

    lock_timeout: float | None = None
    statement_timeout: float | None = None
    busy_timeout: Callable[[], float | None] | None = None
    revision: Callable[[], str | None] | None = None


def _nothing_known() -> Circumstances:
    return Circumstances()


@contextmanager
def translated(
    condition: AppendCondition | None = None,
    *,
    command: Command | None = None,
    busy_is_conflict: Callable[[], bool] | None = None,
    known: Callable[[], Circumstances] = _nothing_known,
) -> Iterator[None]:
    """Driver errors raised inside become sa_crablet errors (chained to the original);
    errors we do not classify propagate unchanged. See :func:`translate`; ``known`` is
    called only when an error is raised (an operation that succeeds pays nothing for it)."""
    try:
        yield
    except DBAPIError as exc:
        error = translate(
            exc, condition, command=command, busy_is_conflict=busy_is_conflict, known=known()
        )
        if error is None:
            raise
        raise error from exc


def translate(
    exc: DBAPIError,
    condition: AppendCondition | None = None,
    *,
    command: Command | None = None,
    busy_is_conflict: Callable[[], bool] | None = None,
    known: Circumstances | None = None,
) -> CrabletError | None:
    """Our error for a driver error, or ``None`` when it is not one we classify.

    ``command``: the command whose record the statements carry (an append's). On
    PostgreSQL, a unique violation there can only be its id, recorded already (the events
    table has no other unique key the store could hit: positions come from its identity).
    ``busy_is_conflict`` (SQLite): called for a plain ``SQLITE_BUSY``; true when the write
    could not have waited for the lock (see :func:`_translate_sqlite`). ``known``: what the
    messages name besides the error itself.
    """
    orig = exc.orig
    known = known or Circumstances()
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        if command is not None and sqlstate == _PG_UNIQUE_VIOLATION:
            return DuplicateCommandError(command.id)
        return _translate_postgresql(str(sqlstate), _first_line(orig), condition, known)
    name = getattr(orig, "sqlite_errorname", None)
    if name is not None:
        return _translate_sqlite(str(name), str(orig), condition, busy_is_conflict, known)
    return None


def _translate_postgresql(
    sqlstate: str, message: str, condition: AppendCondition | None, known: Circumstances
) -> CrabletError | None:
    if sqlstate in _PG_CONFLICTS:
        return ConcurrencyError(
            f"the database aborted the transaction to keep concurrent writers consistent: "
            f"{_PG_CONFLICTS[sqlstate]} (SQLSTATE {sqlstate})",
            condition=condition,
            transaction_usable=False,
        )
    if sqlstate == "55P03":
        return OperationTimeoutError(
            "lock_timeout",
            "lock_timeout expired: a store statement waited too long for a lock (SQLSTATE 55P03)",
            value=known.lock_timeout,
        )
    if sqlstate == "57014":
        return OperationTimeoutError(
            "statement_timeout",
            "statement_timeout expired: a store statement was cancelled (SQLSTATE 57014)",
            value=known.statement_timeout,
        )
    if sqlstate == APPEND_ONLY_SQLSTATE:
        return AppendOnlyError(f"the database refused the change ({message})")
    if sqlstate in (_PG_UNDEFINED_TABLE, _PG_UNDEFINED_COLUMN):
        return _schema_error(known, message)
    return None


def _translate_sqlite(
    name: str,
    message: str,
    condition: AppendCondition | None,
    busy_is_conflict: Callable[[], bool] | None,
    known: Circumstances,
) -> CrabletError | None:
    if name == "SQLITE_BUSY_SNAPSHOT":
        return ConcurrencyError(
            "another writer committed since this transaction's snapshot (SQLITE_BUSY_SNAPSHOT)",
            condition=condition,
            transaction_usable=False,
        )
    # A transaction that has already read holds a snapshot: SQLite will not let it wait for
    # another writer (the snapshot would be stale by then) and answers SQLITE_BUSY at once.
    # That is a lost race, not a timeout: only a new transaction can succeed.
    if name == "SQLITE_BUSY" and busy_is_conflict is not None and busy_is_conflict():
        return ConcurrencyError(
            "another writer holds the database and this transaction has already read, so it "
            "cannot wait for it (SQLITE_BUSY)",
            condition=condition,
            transaction_usable=False,
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return _sqlite_lock_timeout(name, known)
    if name == "SQLITE_INTERRUPT":
        return OperationTimeoutError(
            "statement_timeout",
            "statement_timeout expired: SQLite interrupted a store statement (SQLITE_INTERRUPT)",
            value=known.statement_timeout,
        )
    if name == "SQLITE_CONSTRAINT_TRIGGER":
        return AppendOnlyError(f"the database refused the change ({message})")
    if name == "SQLITE_ERROR" and message.startswith(_SQLITE_NO_TABLE + TABLE_PREFIX):
        return _schema_error(known, table_name=message.removeprefix(_SQLITE_NO_TABLE))
    if (
        name == "SQLITE_ERROR"
        and message.startswith(f"table {TABLE_PREFIX}")
        and _SQLITE_NO_COLUMN in message
    ):
        return _schema_error(known, message)
    return None


def _sqlite_lock_timeout(name: str, known: Circumstances) -> OperationTimeoutError:
    happened = f"timed out waiting for SQLite's write lock ({name})"
    if known.lock_timeout is not None:
        return OperationTimeoutError("lock_timeout", happened, value=known.lock_timeout)
    busy = None if known.busy_timeout is None else known.busy_timeout()
    return OperationTimeoutError("lock_timeout", happened, value=busy, configured_in=_BUSY_TIMEOUT)


def _schema_error(
    known: Circumstances, words: str | None = None, *, table_name: str | None = None
) -> SchemaError:
    """``words``: the database's own, naming what is missing (PostgreSQL does not say it
    otherwise)."""
    happened = "the sa_crablet schema is missing or out of date"
    return SchemaError(
        happened if words is None else f"{happened} (the database says: {words})",
        table=table_name,
        expected_revision=HEAD_REVISION,
        found_revision=None if known.revision is None else known.revision(),
    )


def _first_line(orig: Any) -> str:
    """The database's own message, without the details a driver appends on more lines."""
    return str(orig).strip().partition("\n")[0]


_VERSION: Select[str] = select(column("version_num", String)).select_from(table(VERSION_TABLE))


def recorded_revision(rows: Callable[[Step], Rows]) -> str | None:
    """The revision of sa_crablet's schema that the database records, read with ``rows``
    (:data:`~sa_crablet.schema.BASE_REVISION` when none is); ``None`` when it cannot be
    read. Only for an error's message: whatever goes wrong here is swallowed, so the error
    being reported stays the one that surfaces."""
    try:
        found = rows(Step(_VERSION))
    except DBAPIError as exc:
        return BASE_REVISION if _missing_table(exc) else None
    except Exception:
        return None
    return str(found[0][0]) if found else BASE_REVISION


def _missing_table(exc: DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == _PG_UNDEFINED_TABLE:
        return True
    return getattr(orig, "sqlite_errorname", None) == "SQLITE_ERROR" and str(orig).startswith(
        _SQLITE_NO_TABLE
    )
