"""What every runner does, and what PostgreSQL's runners share.

A runner executes the plans of one store operation on one connection: a :class:`Plan` as one
unit (one round trip where its driver allows), a single statement, a long read through a
cursor, a check on a fresh snapshot. It applies the configured timeouts to the store's own
round trips only, and on a connection with no transaction open (AUTOCOMMIT) gives a unit
that writes a transaction of its own. It is made per operation (see
:mod:`sa_crablet._runners.choose`), once, and knows nothing of what the plans mean.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, ClassVar, TypeVar

from sqlalchemy import Connection

from sa_crablet._awaiting import outside_the_bridge
from sa_crablet._errors import Circumstances, recorded_revision, translated
from sa_crablet._plans import control
from sa_crablet._plans.reads import ReadPlan
from sa_crablet._plans.steps import Plan, Rows, Step
from sa_crablet._runners.fresh import fresh_rows
from sa_crablet._runners.timeouts import timeout_settings
from sa_crablet.commands import Command
from sa_crablet.config import EventStoreConfig
from sa_crablet.exceptions import UnsupportedSetupError
from sa_crablet.query import AppendCondition

T = TypeVar("T")

# libpq's PQtransactionStatus values (psycopg 2 and 3 alike).
IDLE, _INERROR = 0, 3
_CURSORS_KEY = "sa_crablet_cursors"


class Runner(ABC):
    """``own``: no transaction was open when the operation began (an AUTOCOMMIT
    connection), so a unit that writes runs in a transaction of its own; ``timeouts``: the
    configured timeouts as PostgreSQL settings (empty when none)."""

    __slots__ = ("config", "conn", "dialect", "own", "started", "timeouts")

    def __init__(self, conn: Connection, config: EventStoreConfig, *, own: bool) -> None:
        self.conn = conn
        self.config = config
        self.dialect: str = conn.dialect.name
        self.own = own
        self.timeouts = timeout_settings(config.lock_timeout, config.statement_timeout)
        self.started = time.monotonic()

    def run(self, plan: Plan[T]) -> T:
        """Run a plan as one unit and read its result."""
        return plan.read(self.unit(plan.steps, writes=plan.writes))

    @abstractmethod
    def rows(self, step: Step) -> Rows:
        """Every row of one statement, without the configured timeouts."""

    @abstractmethod
    def unit(self, steps: Sequence[Step], *, writes: bool = True) -> list[Rows]:
        """Run ``steps`` in order under the configured timeouts; the rows of each.

        A unit that ``writes`` on a connection with no transaction open runs in one of its
        own (``BEGIN`` ... ``COMMIT``, rolled back on error), so its locks are held until
        its last statement, as in a host's transaction."""

    raw_events: bool = False
    """Whether the rows of a step with ``events`` carry the payload columns undecoded (JSON
    bytes), for the read plan to decode (see :func:`sa_crablet._plans.rows.events_of`)."""

    @abstractmethod
    def stream(self, step: Step, size: int) -> Iterator[Rows]:
        """The rows of one statement, ``size`` per round trip (a page), each round trip
        under the configured timeouts (and nothing in between: the host's own statements
        between two pages run with its own settings). Closing the iterator releases the
        cursor."""

    def rest(self, plan: ReadPlan, last: int) -> Iterator[Rows]:
        """The pages of a read after its first page, whose last event was at ``last``."""
        return self.stream(plan.rest(last), plan.page)

    def fresh(self, step: Step) -> Rows:
        """The rows of one statement on a fresh snapshot (another connection)."""
        return fresh_rows(self.conn, step)

    def translated(
        self, condition: AppendCondition | None = None, command: Command | None = None
    ) -> AbstractContextManager[None]:
        """Driver errors raised inside become the library's (see :mod:`sa_crablet._errors`)."""
        return translated(condition, command=command, known=self.circumstances)

    def circumstances(self) -> Circumstances:
        """What this operation's error messages can name: the configured timeouts, and the
        schema's revision, read only if an error needs it."""
        return Circumstances(
            lock_timeout=self.config.lock_timeout,
            statement_timeout=self.config.statement_timeout,
            revision=self.recorded_revision,
        )

    def recorded_revision(self) -> str | None:
        """The schema's revision as the database records it, for a :class:`SchemaError`'s
        message: on a connection of its own, as this one's transaction may be aborted."""
        return recorded_revision(self.fresh)

    write_lock_up_front: ClassVar[bool] = False
    """Whether a transaction that reads and then writes should take the write lock from its
    start (SQLite: :meth:`begin` does)."""

    def begin(self) -> None:
        """Open a transaction on a connection that has none (see :attr:`own`)."""
        self.rows(Step(control.BEGIN))

    def ensure_transaction(self) -> None:  # noqa: B027 - most drivers need nothing here
        """Make sure the host's transaction is open on the server (a savepoint needs it)."""

    def end(self, *, commit: bool) -> None:
        """End the transaction :meth:`begin` opened."""
        if commit:
            self.rows(Step(control.COMMIT))
        else:
            self.rollback_own()

    @contextmanager
    def atomic(self, needed: bool = True) -> Iterator[None]:
        """Several units as one: on a connection with no transaction open (:attr:`own`),
        ``needed`` opens a transaction of the operation's own around them (its units then
        run in it), committed at the end, rolled back on error; otherwise the host's
        transaction already holds them together."""
        if not (needed and self.own):
            yield
            return
        self.begin()
        self.own = False
        try:
            yield
        except BaseException:
            self.own = True
            self.rollback_own()
            raise
        self.own = True
        with self.translated():
            self.end(commit=True)

    def rollback_own(self) -> None:
        """End the operation's own transaction after an error, if the connection lives;
        never hiding that error (a failing rollback is swallowed)."""
        if self.conn.invalidated or self.conn.closed:
            return
        with suppress(Exception):
            self.rows(Step(control.ROLLBACK))


class PostgresRunner(Runner):
    """What the PostgreSQL runners share: the connection's state, and long reads through a
    cursor the store declares itself (each page a statement of its own)."""

    __slots__ = ()

    def __init__(self, conn: Connection, config: EventStoreConfig) -> None:
        driver = conn.connection.driver_connection
        check_encoding(driver)
        # The DBAPI connection says whether it autocommits (SQLAlchemy's adapters of the
        # async drivers too); the driver whether the server has a transaction open.
        autocommit = bool(getattr(conn.connection.dbapi_connection, "autocommit", False))
        super().__init__(conn, config, own=autocommit and server_idle(driver))

    pages_by_position: ClassVar[bool] = False
    """Whether, with no transaction open, a read whose pages are ranges of the primary key
    (see ``ReadPlan.by_position``) runs them as statements of their own instead of through
    a held cursor. A cursor must be declared ``WITH HOLD`` there, and PostgreSQL then runs
    its whole query and stores every row (on disk past ``work_mem``) before the first page
    comes back: measured, a tenth of a full read's time at 100k events; a page by position
    is read and returned as it goes. (The psycopg runner does; Core keeps the cursor.)"""

    def rest(self, plan: ReadPlan, last: int) -> Iterator[Rows]:
        if self.pages_by_position and self.own and plan.by_position(last):
            return self._by_position(plan, last)
        return super().rest(plan, last)

    def _by_position(self, plan: ReadPlan, last: int) -> Iterator[Rows]:
        delivered = plan.page
        while (step := plan.next_page(last, delivered)) is not None:
            rows = self.unit([step], writes=False)[0]
            if rows:
                yield rows
            if len(rows) < step.params["limit"]:
                return
            last = rows[-1][0]  # a later page's rows start with the position
            delivered += len(rows)

    def stream(self, step: Step, size: int) -> Iterator[Rows]:
        cursors: dict[str, bool] = self.conn.info.setdefault(_CURSORS_KEY, {})
        if any(cursors.values()):
            self._close_left_over(cursors)
        index = 0
        while control.cursor_name(index) in cursors:
            index += 1
        name = control.cursor_name(index)
        # Outside a transaction block the cursor must outlive its DECLARE's own transaction.
        hold = self.own
        declare = control.declare_cursor(name, step.statement, hold)
        self.unit([Step(declare, step.params)], writes=False)
        cursors[name] = False
        dbapi = self.conn.connection.dbapi_connection
        transaction = self.conn.get_transaction()
        fetch = Step(control.fetch_events(name, size), events=True)
        try:
            while True:
                rows = self.unit([fetch], writes=False)[0]
                if rows:
                    yield rows
                if len(rows) < size:
                    break
        finally:
            try:
                if self._cursor_alive(dbapi, None if hold else transaction):
                    self.rows(Step(control.close_cursor(name)))
                    del cursors[name]
                elif hold and not self.conn.invalidated:
                    # A held cursor outlives its session's hold on this connection
                    # (returned to the pool, say): the next read there closes it.
                    cursors[name] = True
                else:
                    del cursors[name]  # it died with its transaction or its connection
            except Exception as error:
                if not outside_the_bridge(error):
                    raise
                # An async read dropped without being closed, finalized outside the event
                # loop: no I/O is possible here. A held cursor is closed by the next read
                # on the connection; any other dies with its transaction.
                cursors[name] = hold

    def _close_left_over(self, cursors: dict[str, bool]) -> None:
        """Close the held cursors of reads that were dropped after their session let go of
        this connection. Only those that still exist: a failing ``CLOSE`` would abort the
        host's transaction."""
        left = [name for name, leftover in cursors.items() if leftover]
        for (name,) in self.rows(Step(control.existing_cursors(), {"names": left})):
            self.rows(Step(control.close_cursor(name)))
        for name in left:
            del cursors[name]

    def _cursor_alive(self, dbapi: Any, transaction: Any) -> bool:
        """Whether a cursor declared on ``dbapi`` (in ``transaction``, unless it holds) can
        still be closed: the same connection, still ours, the same live transaction. A
        cursor that died with its transaction needs no ``CLOSE``, and sending one then
        would fail, or, on a connection returned to the pool, land in someone else's work."""
        conn = self.conn
        if conn.closed or conn.invalidated or conn.connection.dbapi_connection is not dbapi:
            return False
        driver = conn.connection.driver_connection
        if transaction_status(driver) == _INERROR or getattr(driver, "closed", False):
            return False
        if transaction is None:
            return True
        current = conn.get_transaction()
        return current is transaction and current is not None and current.is_active


def server_idle(driver: Any) -> bool:
    """Whether the server has no transaction open on this connection (psycopg 2 and 3, sync
    or async: libpq's status; asyncpg: its own)."""
    in_transaction = getattr(driver, "is_in_transaction", None)
    if in_transaction is not None:
        return not in_transaction()
    return transaction_status(driver) == IDLE


def transaction_status(driver: Any) -> int | None:
    """libpq's transaction status of a psycopg (2 or 3) connection."""
    info = getattr(driver, "info", None)
    status = getattr(info, "transaction_status", None)
    return None if status is None else int(status)


def check_encoding(driver: Any) -> None:
    """Refuse a connection whose client encoding is not UTF-8.

    The server converts everything it receives from the client encoding; in encodings such
    as SJIS, GBK or BIG5 the second byte of a character can be a quote or a backslash, so an
    array of tags can come apart into other elements, and payloads decode as mojibake.
    """
    info = getattr(driver, "info", None)
    if info is None or not hasattr(info, "parameter_status"):
        return
    encoding = info.parameter_status("client_encoding")
    if isinstance(encoding, bytes):
        encoding = encoding.decode()
    if encoding is not None and encoding.upper() not in ("UTF8", "UTF-8", "UNICODE"):
        raise UnsupportedSetupError(
            "client_encoding",
            encoding,
            "sa_crablet needs a UTF-8 client encoding on PostgreSQL (in other encodings a "
            "tag or a payload can come apart on the way); nothing was sent",
            supported="UTF8: remove the client_encoding setting (or set it to UTF8) on the "
            "engine, the connection or the role",
        )
