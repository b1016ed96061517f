"""The library's errors: one base class, leaves that carry data.

Callers catch :class:`CrabletError` or a leaf and read its attributes; they never need to
parse message text.
"""

from __future__ import annotations

import reprlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sa_crablet.query import AppendCondition


class CrabletError(Exception):
    """Base class of every error raised by sa_crablet."""


class ValidationError(CrabletError, ValueError):
    """Input was rejected before any SQL ran; nothing was written.

    ``field`` names the offending argument or attribute, ``value`` is what was given.
    """

    def __init__(self, field: str, value: Any, message: str) -> None:
        self.field = field
        self.value = value
        self.message = message
        super().__init__(f"{field}: {message} (got {_shown(value)})")


# The value in a message is cut short: a payload may be large, deeply nested or circular.
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 200
_REPR.maxlevel = 4


def _shown(value: Any) -> str:
    try:
        return _REPR.repr(value)
    except Exception:  # a value whose own __repr__ fails
        return f"<{type(value).__name__}>"


class ConcurrencyError(CrabletError):
    """An append lost a race: the append condition failed, or the database aborted the
    transaction to keep concurrent writers consistent (deadlock, serialization failure,
    a SQLite snapshot that went stale).

    ``condition`` is the condition that failed (``None`` for a database-level conflict on an
    unconditional append), ``position`` a conflicting event's position when known.
    ``transaction_usable`` tells whether the host transaction can go on: ``True`` when the
    condition check itself failed (nothing was written, the transaction is intact),
    ``False`` when the database aborted the transaction (the session must be rolled back).
    Re-reading and deciding again in a new transaction is always the right reaction.
    ``attempts`` is set by ``CommandExecutor`` when it gives up: how many times it ran the
    handler.
    """

    def __init__(
        self,
        message: str,
        *,
        condition: AppendCondition | None = None,
        position: int | None = None,
        transaction_usable: bool = True,
    ) -> None:
        self.condition = condition
        self.position = position
        self.transaction_usable = transaction_usable
        self.attempts: int | None = None
        super().__init__(message)


class DuplicateCommandError(CrabletError):
    """A command's id was recorded by another transaction after this one looked it up: the
    command has been executed once already, and what this transaction appended for it must
    be rolled back (the transaction, or the savepoint around the command). ``command_id`` is
    the id. :class:`~sa_crablet.CommandExecutor` handles it: it rolls back and returns the
    first execution's outcome."""

    def __init__(self, command_id: str) -> None:
        self.command_id = command_id
        super().__init__(
            f"command {command_id!r} was executed by another transaction meanwhile; "
            "roll back what this one appended for it"
        )


class OperationTimeoutError(CrabletError):
    """A configured timeout expired. The host transaction is aborted and must be rolled back.

    ``setting`` is ``"lock_timeout"`` or ``"statement_timeout"``.
    """

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        super().__init__(message)


class UnsupportedSetupError(CrabletError):
    """The database connection is set up in a way the store cannot work with safely, so
    the operation was refused before anything was sent.

    ``setting`` names what is wrong (e.g. ``"client_encoding"``), ``value`` is what it is.
    """

    def __init__(self, setting: str, value: Any, message: str) -> None:
        self.setting = setting
        self.value = value
        super().__init__(f"{message} ({setting} is {value!r})")


class SchemaError(CrabletError):
    """The event store's tables are missing or out of date: run the migrations."""


class AppendOnlyError(CrabletError):
    """Stored events and commands are immutable: the database refused an UPDATE, DELETE or
    TRUNCATE."""


class MutationNotAllowedError(AppendOnlyError):
    """``allow_mutation()`` refused to lift the append-only guard, before changing anything:
    the current role ``role`` does not have the privileges of the owner of ``tables`` (the
    store's tables it would lift the guard on). On PostgreSQL only the owner, a member of the
    owning role or a superuser can lift it; connect as that role for maintenance."""

    def __init__(self, role: str, tables: tuple[str, ...]) -> None:
        self.role = role
        self.tables = tables
        super().__init__(
            f"role {role!r} may not lift the append-only guard of {', '.join(tables)}: "
            "only the owner of the tables can (run maintenance as that role)"
        )


class ReadNotFinishedError(CrabletError):
    """``ReadResult.head`` was asked for before the read was consumed to its end."""


class TooManyProjectionsError(CrabletError):
    """More projections are running than ``max_concurrent_projections`` allows; the call
    failed at once, without touching the database. ``limit`` is that setting."""

    def __init__(self, message: str, limit: int) -> None:
        self.limit = limit
        super().__init__(message)


class TooManyAppendsError(CrabletError):
    """More appends are running than ``max_concurrent_appends`` allows; the call failed at
    once, without touching the database. ``limit`` is that setting."""

    def __init__(self, message: str, limit: int) -> None:
        self.limit = limit
        super().__init__(message)
