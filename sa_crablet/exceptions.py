"""The library's errors: one base class, leaves that carry data.

Callers catch :class:`CrabletError` or a leaf and read its attributes; they never need to
parse message text. Each leaf builds its message from its data, here and nowhere else: what
happened, then what to do. Values in messages are cut short, and event data is shown by its
type and size only (see :mod:`sa_crablet._messages`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sa_crablet._messages import concealed, condition_text, seconds, shown

if TYPE_CHECKING:
    from sa_crablet.query import AppendCondition

_MIGRATE = (
    "sa_crablet.upgrade(engine), or `alembic upgrade head` with an alembic.ini whose "
    "script_location is sa_crablet:migrations"
)


class CrabletError(Exception):
    """Base class of every error raised by sa_crablet. Every message says what happened and
    what to do; the leaves carry the data as attributes."""


class ValidationError(CrabletError, ValueError):
    """Input was rejected before any SQL ran; nothing was written.

    ``field`` names the offending argument or attribute, ``value`` is what was given,
    ``message`` is the rule it broke. ``redacted`` is true when ``value`` is event or command
    data or metadata (or what was passed in place of an event): the error's text then shows
    its type and size only, never its content, since payloads may hold personal data
    (``value`` still holds it).

    ``invalid limit: must be an int from 1 to 2**63 - 1, or None (got 0)``
    """

    def __init__(self, field: str, value: Any, message: str, *, redacted: bool = False) -> None:
        self.field = field
        self.value = value
        self.message = message
        self.redacted = redacted
        got = concealed(value) if redacted else shown(value)
        super().__init__(f"invalid {field}: {message} (got {got})")


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
    handler. ``message``, when given, says what happened instead of the default; the text
    always adds the condition (its query, summarised, and its head), whether the transaction
    is usable, and what to do.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        condition: AppendCondition | None = None,
        position: int | None = None,
        transaction_usable: bool = True,
    ) -> None:
        self.condition = condition
        self.position = position
        self.transaction_usable = transaction_usable
        self.attempts: int | None = None
        super().__init__(*(() if message is None else (message,)))

    def __str__(self) -> str:
        # Built when shown, not when raised: the executor sets ``attempts`` afterwards.
        happened = str(self.args[0]) if self.args else self._default_happening()
        if self.args and self.position is not None:
            happened += f" (conflicting event at position {self.position})"
        text = happened
        if self.condition is not None:
            text += f"; the condition: {condition_text(self.condition)}"
        if self.transaction_usable:
            text += (
                ". Nothing was written and the transaction is still usable "
                "(transaction_usable=True): re-read or re-project, decide again and append "
                "with the new head"
            )
        else:
            text += (
                ". The transaction is aborted (transaction_usable=False): roll it back, then "
                "re-read or re-project and decide again in a new transaction"
            )
        if self.attempts is None:
            return text + ", or let CommandExecutor retry the command."
        return text + (
            f". CommandExecutor gave up after {self.attempts} attempts "
            "(RetryPolicy.attempts): the boundary is heavily contended; retry later, raise "
            "RetryPolicy.attempts or backoff, or narrow the condition's query."
        )

    def _default_happening(self) -> str:
        if not self.transaction_usable:
            return "the database aborted the transaction to keep concurrent writers consistent"
        if self.position is not None:
            return (
                f"append condition failed: the event at position {self.position} matches it, "
                "so the decision was made on stale state"
            )
        return "append condition failed: a matching event was appended after the decision's read"


class DuplicateCommandError(CrabletError):
    """A command's id was recorded by another transaction after this one looked it up: the
    command has been executed once already, and what this transaction appended for it must
    be rolled back (the transaction, or the savepoint around the command). ``command_id`` is
    the id. :class:`~sa_crablet.CommandExecutor` handles it: it rolls back and returns the
    first execution's outcome."""

    def __init__(self, command_id: str) -> None:
        self.command_id = command_id
        super().__init__(
            f"command {shown(command_id)} has been executed once already: another "
            "transaction recorded its id in the command log after this one looked it up. "
            "Roll back what this transaction appended for it (the transaction, or the "
            "savepoint around the command) and report the first execution's outcome "
            "(store.command(command_id)); CommandExecutor does both and returns that "
            "outcome with CommandResult.duplicate set."
        )


class OperationTimeoutError(CrabletError):
    """A timeout expired during a store operation. The host transaction is aborted and must
    be rolled back.

    ``setting`` is ``"lock_timeout"`` (waiting for a lock; on SQLite, for the database's
    write lock) or ``"statement_timeout"``. ``value`` is the limit in seconds when known,
    and ``configured_in`` says where it is set: ``EventStoreConfig.lock_timeout`` /
    ``EventStoreConfig.statement_timeout``, SQLite's busy timeout of the connection
    (``create_sqlite_engine(busy_timeout=...)``) when ``lock_timeout`` is not configured, or
    the database's own setting. ``message``, when given, says what happened; the text adds
    the limit and what to do.
    """

    def __init__(
        self,
        setting: str,
        message: str | None = None,
        *,
        value: float | None = None,
        configured_in: str | None = None,
    ) -> None:
        self.setting = setting
        self.value = value
        if configured_in is None:
            configured_in = (
                f"the database's own {setting} setting"
                if value is None
                else f"EventStoreConfig.{setting}"
            )
        self.configured_in = configured_in
        limit = configured_in if value is None else f"{configured_in} = {seconds(value)}"
        raise_it = f"raise {configured_in}"
        if not configured_in.startswith("EventStoreConfig."):
            raise_it += f" or set EventStoreConfig.{setting} (for the store's operations only)"
        text = (
            f"{message or f'{setting} expired during a store operation'}; the limit is "
            f"{limit}. The transaction is aborted: roll it back. "
        )
        if setting == "lock_timeout":
            text += (
                "Another transaction held the lock that long: look for long-running or "
                "idle-in-transaction sessions writing to the same events (PostgreSQL: "
                "pg_stat_activity; SQLite: any open write transaction) and keep transactions "
                f"that append short, or {raise_it}; then retry."
            )
        else:
            text += (
                f"Make the operation smaller (a read with limit= or a narrower query, a "
                f"smaller batch), or {raise_it}; the time a statement waits for a lock counts "
                "too."
            )
        super().__init__(text)


class UnsupportedSetupError(CrabletError):
    """The database connection is set up in a way the store cannot work with safely, so
    the operation was refused before anything was sent.

    ``setting`` names what is wrong (e.g. ``"client_encoding"``), ``value`` is what it is,
    ``supported`` is what to use instead (``None`` when ``message`` already says so).
    """

    def __init__(
        self, setting: str, value: Any, message: str, *, supported: str | None = None
    ) -> None:
        self.setting = setting
        self.value = value
        self.supported = supported
        text = f"unsupported {setting} {shown(value)}: {message}"
        if supported is not None:
            text += f". Supported instead: {supported}"
        super().__init__(text + ".")


class SchemaError(CrabletError):
    """The event store's tables are missing or out of date: run the migrations.

    ``table`` is the missing table when the database named it (SQLite does; PostgreSQL
    does not say which), ``expected_revision`` the latest migration of the installed
    sa_crablet, ``found_revision`` the one the database records in
    ``sa_crablet_alembic_version``: ``"base"`` when none was ever applied, ``None`` when it
    could not be read (a role without access to that table, say). ``message``, when given,
    says what happened; the text adds the revisions and the command that applies them.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        table: str | None = None,
        expected_revision: str | None = None,
        found_revision: str | None = None,
    ) -> None:
        self.table = table
        self.expected_revision = expected_revision
        self.found_revision = found_revision
        text = message or "the sa_crablet schema is missing or out of date"
        if table is not None:
            text += f": table {table} does not exist"
        expected = "the latest revision" if expected_revision is None else repr(expected_revision)
        if found_revision is not None and found_revision == expected_revision:
            text += (
                f". The database records {expected}, the latest revision, so the migrations "
                "ran, yet the store does not see the table: check that its connection looks "
                "in the schema that was migrated (search_path, schema_translate_map); if the "
                "table was dropped, restore it from a backup."
            )
        else:
            if found_revision == "base":
                text += ". No sa_crablet migration was ever applied to this database"
            elif found_revision is not None:
                text += f". The database is at revision {found_revision!r}"
            text += (
                f"; this sa_crablet needs {expected}. Apply its migrations: {_MIGRATE} "
                "(as the role that should own the tables)."
            )
        super().__init__(text)


_APPEND_ONLY = (
    "sa_crablet's events and recorded commands are append-only. To correct something, "
    "append a compensating event; for maintenance (erasing personal data, a test reset) "
    "make the change inside sa_crablet.allow_mutation(session), connected as the tables' "
    "owner. On PostgreSQL the transaction is aborted: roll it back."
)


class AppendOnlyError(CrabletError):
    """Stored events and commands are immutable: the database refused an UPDATE, DELETE or
    TRUNCATE. ``message``, when given, says what happened (the database's own words); the
    text adds what to do."""

    def __init__(self, message: str | None = None) -> None:
        happened = message or "the database refused to change or remove stored rows"
        super().__init__(f"{happened}. {_APPEND_ONLY}")


class MutationNotAllowedError(AppendOnlyError):
    """``allow_mutation()`` refused to lift the append-only guard, before changing anything:
    the current role ``role`` does not have the privileges of the owner of ``tables`` (the
    store's tables it would lift the guard on). On PostgreSQL only the owner, a member of the
    owning role or a superuser can lift it; connect as that role for maintenance."""

    def __init__(self, role: str, tables: tuple[str, ...]) -> None:
        self.role = role
        self.tables = tables
        CrabletError.__init__(
            self,
            f"role {shown(role)} may not lift the append-only guard of {', '.join(tables)}: "
            "it does not have the privileges of their owner; nothing was changed. Run the "
            "maintenance connected as the role that owns the tables (the one that ran the "
            "migrations), a member of it, or a superuser.",
        )


class ReadNotFinishedError(CrabletError):
    """``ReadResult.head`` was asked for before the read was consumed to its end. ``closed``
    is true when the read was closed early: its head will never be known."""

    def __init__(self, message: str | None = None, *, closed: bool = False) -> None:
        self.closed = closed
        if closed:
            happened = "the read's head was asked for after the read was closed early"
            todo = (
                "a read stopped before its end has no head. Read again and consume that "
                "read to its end (limit= bounds how much it returns)"
            )
        else:
            happened = "the read's head was asked for before the read was consumed to its end"
            todo = (
                "consume it first (iterate it to its end, list(result), or await "
                "result.all()); the head then covers exactly what the read returned"
            )
        super().__init__(f"{message or happened}: {todo}.")


def _over_the_limit(message: str | None, what: str, setting: str, limit: int | None) -> str:
    limit_text = f"EventStoreConfig.{setting}" + ("" if limit is None else f" = {limit}")
    happened = message or (
        f"too many concurrent {what}: the limit {limit_text} is reached in this process "
        "(shared by every store with an equal configuration)"
    )
    return (
        f"{happened}; the call failed at once, without touching the database. Shed load or "
        f"retry later; raise {setting} if the database and the connection pool can take more."
    )


class TooManyProjectionsError(CrabletError):
    """More projections are running than ``max_concurrent_projections`` allows; the call
    failed at once, without touching the database. ``limit`` is that setting's value,
    ``setting`` its name."""

    setting = "max_concurrent_projections"

    def __init__(self, message: str | None = None, limit: int | None = None) -> None:
        self.limit = limit
        super().__init__(_over_the_limit(message, "projections", self.setting, limit))


class TooManyAppendsError(CrabletError):
    """More appends are running than ``max_concurrent_appends`` allows; the call failed at
    once, without touching the database. ``limit`` is that setting's value, ``setting`` its
    name."""

    setting = "max_concurrent_appends"

    def __init__(self, message: str | None = None, limit: int | None = None) -> None:
        self.limit = limit
        super().__init__(_over_the_limit(message, "appends", self.setting, limit))
