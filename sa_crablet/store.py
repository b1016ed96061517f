"""The event store bound to a SQLAlchemy Session.

Each operation validates its input (before any SQL), builds its plan
(:mod:`sa_crablet._plans`), and runs it with the runner chosen for the session's connection
(:mod:`sa_crablet._runners`); the store itself never knows how the statements travel.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, scoped_session

from sa_crablet._ledger import LEDGER
from sa_crablet._limits import limiter
from sa_crablet._observe import operations as observe
from sa_crablet._plans import commands as command_plans
from sa_crablet._plans.appends import (
    Appended,
    AppendPlan,
    append_plan,
    check_plan,
    first_position,
    wanted_locks,
)
from sa_crablet._plans.locks import LockPlan
from sa_crablet._plans.reads import ReadPlan, read_plan
from sa_crablet._plans.shapes import Scope
from sa_crablet._runners.base import Runner
from sa_crablet._runners.choose import runner_for
from sa_crablet._validation import check_command_id, check_position
from sa_crablet.commands import Command, CommandRecord
from sa_crablet.config import EventStoreConfig
from sa_crablet.events import Event, SequencedEvent
from sa_crablet.exceptions import (
    ConcurrencyError,
    DuplicateCommandError,
    TooManyAppendsError,
    TooManyProjectionsError,
    UnsupportedSetupError,
    ValidationError,
)
from sa_crablet.projection import DecisionModel, StateProjector, check_projectors, union_query
from sa_crablet.query import AppendCondition, Head, Query, check_after
from sa_crablet.streams import ProjectionStream, ReadResult, project_events


class _Store:
    """The store's operations, on whatever gives each one its connection
    (:meth:`_operation`): the two stores below differ in that only."""

    config: EventStoreConfig

    def __init__(self, config: EventStoreConfig | None) -> None:
        self.config = config or EventStoreConfig()
        if not isinstance(self.config, EventStoreConfig):
            raise ValidationError("config", config, "must be an EventStoreConfig or None")
        cfg = self.config
        self._appends = limiter(cfg, "appends", cfg.max_concurrent_appends, TooManyAppendsError)
        self._projections = limiter(
            cfg, "projections", cfg.max_concurrent_projections, TooManyProjectionsError
        )

    def _operation(self) -> AbstractContextManager[Runner]:
        raise NotImplementedError

    # -- appends ---------------------------------------------------------------------------------

    @observe.appending
    def append(
        self,
        events: Iterable[Event] | Event,
        condition: AppendCondition | None = None,
        *,
        command: Command | None = None,
    ) -> int:
        """Append ``events`` atomically; return the position of the last one.

        With a ``condition``, nothing is written and :class:`ConcurrencyError` is raised if an
        event matching ``condition.fail_if_events_match`` exists after ``condition.after``.
        Then the host transaction is still usable (``error.transaction_usable``).

        With a ``command``, the events are linked to it and the command is recorded in the
        command log in the same transaction. If its id was recorded meanwhile by another
        transaction, :class:`DuplicateCommandError` is raised and this transaction (or its
        savepoint) must be rolled back: :class:`~sa_crablet.CommandExecutor` does all that.
        """
        batch = self._check_batch(events)
        if condition is not None and not isinstance(condition, AppendCondition):
            raise ValidationError("condition", condition, "must be an AppendCondition or None")
        if command is not None and not isinstance(command, Command):
            raise ValidationError("command", command, "must be a Command or None")
        query = None if condition is None else condition.fail_if_events_match
        with self._operation() as runner:
            dialect = runner.dialect
            scope = None
            if condition is not None:
                scope = Scope.of(condition.fail_if_events_match, condition.head, dialect)
            plan = append_plan(
                dialect,
                batch,
                scope,
                self._locks(runner, wanted_locks(dialect, query, batch)),
                command,
            )
            # The insert and a command record sent after it commit together, also when
            # the operation is a transaction of its own.
            with self._appends.slot(), runner.atomic(plan.record_after):
                return self._append(runner, plan, condition, command, len(batch))

    def _append(
        self,
        runner: Runner,
        plan: AppendPlan,
        condition: AppendCondition | None,
        command: Command | None,
        count: int,
    ) -> int:
        with runner.translated(condition, command):
            appended = runner.run(plan.main)
            if appended.unchecked:
                # A fixed snapshot (REPEATABLE READ, SERIALIZABLE) cannot see what others
                # committed after it: check on a fresh one, then insert (the insert's own
                # check still covers this transaction's own events).
                assert plan.fresh_check is not None and plan.after_check is not None
                conflict = first_position(runner.fresh(plan.fresh_check))
                if conflict is None:
                    appended = runner.run(plan.after_check)
                else:
                    appended = Appended(conflict=conflict)
            if appended.failed:
                conflict = appended.conflict
                if conflict is None and plan.report is not None:
                    conflict = first_position(runner.rows(plan.report))
                raise _condition_failed(condition, conflict)
            last = max(appended.positions)
            if command is not None:
                recorded = appended.recorded
                if recorded is None:  # the plan could not carry the record: record it now
                    record = command_plans.record_plan(runner.dialect, command, last, count)
                    recorded = runner.run(record)
                if not recorded:
                    raise DuplicateCommandError(command.id)
        return last

    def record_command(self, command: Command) -> None:
        """Record a command that appended nothing, in the command log, in this transaction;
        :class:`DuplicateCommandError` if its id was recorded meanwhile (see :meth:`append`)."""
        if not isinstance(command, Command):
            raise ValidationError("command", command, "must be a Command")
        with self._operation() as runner:
            with runner.translated():
                recorded = runner.run(command_plans.record_plan(runner.dialect, command, None, 0))
            if not recorded:
                raise DuplicateCommandError(command.id)

    @observe.checking
    def check(self, condition: AppendCondition) -> None:
        """Raise :class:`ConcurrencyError` if an event matching the condition exists after
        its head, exactly as an append with this condition would, without appending.

        For a decision that appends nothing ("only if nothing changed"): on PostgreSQL the
        condition's locks are taken as for a conditional append and held until the host's
        transaction ends, so no conflicting append commits in between; on SQLite the
        check takes the database's write lock, as an append would. (On a connection with no
        transaction open, AUTOCOMMIT, the check is its own transaction: it holds at the
        moment it runs.)
        """
        if not isinstance(condition, AppendCondition):
            raise ValidationError("condition", condition, "must be an AppendCondition")
        query = condition.fail_if_events_match
        with self._operation() as runner:
            dialect = runner.dialect
            scope = Scope.of(query, condition.head, dialect)
            plan = check_plan(dialect, scope, self._locks(runner, wanted_locks(dialect, query, [])))
            with runner.translated(condition):
                checked = runner.run(plan.main)
                conflict = checked.conflict
                if checked.unchecked:  # a fixed snapshot cannot see later commits: a fresh one
                    conflict = first_position(runner.fresh(plan.fresh_check))
            if conflict is not None:
                raise _condition_failed(condition, conflict)

    def _check_batch(self, events: Iterable[Event] | Event) -> list[Event]:
        if isinstance(events, Event):
            return [events]
        if isinstance(events, str | bytes) or not isinstance(events, Iterable):
            raise ValidationError(
                "events", events, "append takes an Event or an iterable of them", redacted=True
            )
        batch = list(events)
        if not batch:
            raise ValidationError("events", batch, "an append needs at least one event")
        if len(batch) > self.config.max_batch_size:
            raise ValidationError(
                "events",
                batch,
                f"a batch holds at most EventStoreConfig.max_batch_size="
                f"{self.config.max_batch_size} events: split it into several appends (in one "
                "transaction, if they belong together) or raise max_batch_size",
                redacted=True,
            )
        for event in batch:
            if not isinstance(event, Event):
                raise ValidationError("events", event, "append takes Event values", redacted=True)
        return batch

    @staticmethod
    def _locks(runner: Runner, wanted: LockPlan | None) -> LockPlan | None:
        """The advisory locks of an operation, capped per transaction (see
        :mod:`sa_crablet._ledger`); an operation in its own transaction starts afresh."""
        if wanted is None:
            return None
        return LEDGER.admit(None if runner.own else runner.conn.get_transaction(), wanted)

    # -- reads -----------------------------------------------------------------------------------

    def read(
        self,
        query: Query,
        *,
        after: Head | int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> ReadResult:
        """Events matching ``query``, in position order (descending when ``backwards``),
        streamed with bounded memory. ``after`` is exclusive; with a :class:`Head` it also
        returns events that were in flight when that head was read.

        Once consumed, ``.head`` is the value to pass as ``AppendCondition.after`` (or as the
        next read's ``after``) to cover exactly what this read could have seen.
        """
        if not isinstance(query, Query):
            raise ValidationError("query", query, "must be a Query")
        head = check_after("after", after)
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit < 2**63
        ):
            raise ValidationError("limit", limit, "must be an int from 1 to 2**63 - 1, or None")
        if not isinstance(backwards, bool):
            raise ValidationError("backwards", backwards, "must be a bool")
        return ReadResult(self._stream(query, head, backwards, limit))

    @observe.reading
    def _stream(
        self, query: Query, head: Head | None, backwards: bool, limit: int | None
    ) -> Iterator[list[SequencedEvent] | Head]:
        """Runs when the read is first iterated: the first page in one statement, the rest
        (if any) a page per round trip; the events a page at a time, then the head."""
        with self._operation() as runner:
            plan: ReadPlan = read_plan(
                query,
                head,
                backwards,
                limit,
                runner.dialect,
                self.config.fetch_size,
                runner.raw_events,
            )
            with runner.translated():
                first = plan.first_page(runner.unit([plan.first], writes=False)[0])
                rest = iter(()) if first.resume is None else runner.rest(plan, first.resume)
                try:
                    yield from plan.pages(first, map(plan.events, rest))
                finally:
                    close = getattr(rest, "close", None)
                    if close is not None:
                        close()  # releases the cursor of an early stop

    # -- decision models -------------------------------------------------------------------------

    @observe.projecting
    def project(
        self,
        projectors: Iterable[StateProjector[Any]],
        after: Head | int | None = None,
        *,
        states: Mapping[str, Any] | None = None,
    ) -> DecisionModel:
        """Fold every projector's events with **one** query (the OR of their items) and
        return the states with the append condition that protects a decision on them.

        Each event goes to every projector whose own query matches it, as rows stream in.
        With ``after`` (a previous model's head) only newer events are folded, starting from
        ``states`` (the previous states); the condition then still covers that head.
        """
        for progress in self.project_stream(projectors, after, states=states, every=None):
            if progress.model is not None:
                return progress.model
        raise AssertionError("unreachable: a projection always ends with its model")

    @observe.streaming
    def project_stream(
        self,
        projectors: Iterable[StateProjector[Any]],
        after: Head | int | None = None,
        *,
        states: Mapping[str, Any] | None = None,
        every: int | None = 1000,
    ) -> ProjectionStream:
        """Like :meth:`project`, yielding a :class:`ProjectionProgress` every ``every``
        events (states so far, position reached) and a final one carrying the model.

        The projection slot is taken now (``TooManyProjectionsError`` at once when full) and
        released when the stream ends, fails, or is closed or dropped early.
        """
        checked = check_projectors(projectors)
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or every < 1
        ):
            raise ValidationError("every", every, "must be a positive int or None")
        if states is not None and not isinstance(states, Mapping):
            raise ValidationError("states", states, "must be a mapping of projector id to state")
        query = union_query(checked)
        result = self.read(query, after=after)
        self._projections.acquire()
        return ProjectionStream(
            project_events(checked, query, result, states, every), self._projections
        )

    # -- the command log -------------------------------------------------------------------------

    def command(self, command_id: str) -> CommandRecord | None:
        """The recorded command with this id, if it was executed."""
        check_command_id("command_id", command_id)
        with self._operation() as runner, runner.translated():
            return runner.run(command_plans.lookup_plan(command_id))

    def command_of_event(self, position: int) -> CommandRecord | None:
        """The command whose execution appended the event at ``position`` (one indexed
        look-up), or ``None`` for an event appended outside any command."""
        check_position("position", position)
        with self._operation() as runner, runner.translated():
            return runner.run(command_plans.of_event_plan(position))

    def events_of_command(self, command_id: str) -> list[SequencedEvent]:
        """The events appended by the command with this id, in order (one indexed query)."""
        check_command_id("command_id", command_id)
        with self._operation() as runner, runner.translated():
            return runner.run(command_plans.events_of_plan(command_id))


class EventStore(_Store):
    """A DCB event store that works inside the caller's ``Session`` transaction.

    It never commits, rolls back or flushes the session: events appended here commit or roll
    back with whatever else the host does in the same transaction. (On a connection with
    no transaction open, an ``AUTOCOMMIT`` engine, each operation is a transaction of its
    own.)
    """

    def __init__(
        self, session: Session | scoped_session[Session], config: EventStoreConfig | None = None
    ) -> None:
        if isinstance(session, scoped_session):  # e.g. Flask-SQLAlchemy's db.session
            session = session()
        if not isinstance(session, Session):
            raise ValidationError("session", session, "EventStore needs a SQLAlchemy Session")
        self.session = session
        super().__init__(config)

    @contextmanager
    def _operation(self) -> Iterator[Runner]:
        yield runner_for(self.session.connection(), self.config)


class EngineEventStore(_Store):
    """A DCB event store that owns its transactions: each operation is a transaction of its
    own, committed before it returns (a read: a statement in no transaction at all).

    The same operations, errors, heads and guarantees as :class:`EventStore`, for code whose
    only write is the events (a service, a worker, the command executor's managed mode): no
    ``Session`` to hold and no ``BEGIN`` or ``COMMIT`` round trip of its own (on psycopg, a
    conditional append is one query string with both inside it).

    ``bind`` is an ``Engine`` (each operation borrows a connection from its pool, for a read
    until the read ends, and sets it to ``AUTOCOMMIT`` for that time) or a ``Connection`` in
    ``AUTOCOMMIT`` (every operation on it: a worker's one connection). An engine made with
    ``isolation_level="AUTOCOMMIT"`` (one the store has to itself, say) saves the switch to
    ``AUTOCOMMIT`` and back on every operation. On SQLite that matters most: switching back
    runs a ``PRAGMA``, after which SQLite prepares every statement of the connection anew.
    """

    def __init__(self, bind: Engine | Connection, config: EventStoreConfig | None = None) -> None:
        if isinstance(bind, Engine):
            self.engine: Engine = bind
            self.connection: Connection | None = None
        elif isinstance(bind, Connection):
            self.engine = bind.engine
            self.connection = bind
        else:
            raise ValidationError("bind", bind, "EngineEventStore needs an Engine or a Connection")
        self._autocommits: bool | None = None
        """Whether the engine's connections come in AUTOCOMMIT already (an engine made with
        ``isolation_level="AUTOCOMMIT"``): then the store sets nothing on them."""
        super().__init__(config)

    @contextmanager
    def _operation(self) -> Iterator[Runner]:
        if self.connection is not None:
            yield self._own(self.connection)
            return
        with self.engine.connect() as connection:
            if not self._autocommits:
                if self._autocommits is None:  # the first operation finds out
                    self._autocommits = runner_for(connection, self.config).own
                if not self._autocommits:
                    # Set on the connection, not on the engine: an engine's execution
                    # option does not override an isolation level another execution option
                    # of it already set. The pool puts the engine's own level back when the
                    # connection returns.
                    connection.execution_options(isolation_level=AUTOCOMMIT)
            yield self._own(connection)

    def _own(self, connection: Connection) -> Runner:
        runner = runner_for(connection, self.config)
        if not runner.own:
            # Its operations would run in a transaction nobody commits.
            raise UnsupportedSetupError(
                "isolation_level",
                connection.get_execution_options().get(
                    "isolation_level", connection.default_isolation_level
                ),
                "EngineEventStore commits each operation itself, so its Connection must be in "
                "AUTOCOMMIT with no transaction open",
                supported='connection.execution_options(isolation_level="AUTOCOMMIT"), or '
                "EventStore(session) inside a transaction of your own",
            )
        return runner


AUTOCOMMIT = "AUTOCOMMIT"


def _condition_failed(condition: AppendCondition | None, position: int | None) -> ConcurrencyError:
    assert condition is not None
    return ConcurrencyError(
        condition=condition,
        position=position,
        transaction_usable=True,
    )
