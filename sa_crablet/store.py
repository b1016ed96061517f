"""The event store bound to a SQLAlchemy Session: its operations, validated, run through a
:class:`~sa_crablet._runner.Runner` that decides how their statements reach the database."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import msgspec
from sqlalchemy.orm import Session, scoped_session

from sa_crablet import _locks, statements
from sa_crablet._command_log import CommandLog
from sa_crablet._connection import fresh_conflict
from sa_crablet._limits import limiter
from sa_crablet._runner import Call, Runner
from sa_crablet._validation import to_json
from sa_crablet.config import EventStoreConfig
from sa_crablet.events import Event, SequencedEvent
from sa_crablet.exceptions import (
    ConcurrencyError,
    CrabletError,
    TooManyAppendsError,
    TooManyProjectionsError,
    ValidationError,
)
from sa_crablet.projection import DecisionModel, StateProjector, check_projectors, union_query
from sa_crablet.query import AppendCondition, Head, Query, Snapshot, check_after
from sa_crablet.streams import (
    ProjectionStream,
    ReadResult,
    next_head,
    project_events,
    to_event,
)


class EventStore(CommandLog):
    """A DCB event store that works inside the caller's ``Session`` transaction.

    It never commits, rolls back or flushes the session: events appended here commit or roll
    back with whatever else the host does in the same transaction.
    """

    def __init__(
        self, session: Session | scoped_session[Session], config: EventStoreConfig | None = None
    ) -> None:
        if isinstance(session, scoped_session):  # e.g. Flask-SQLAlchemy's db.session
            session = session()
        if not isinstance(session, Session):
            raise ValidationError("session", session, "EventStore needs a SQLAlchemy Session")
        self.session = session
        self.config = config or EventStoreConfig()
        if not isinstance(self.config, EventStoreConfig):
            raise ValidationError("config", config, "must be an EventStoreConfig or None")
        cfg = self.config
        self._appends = limiter(cfg, "appends", cfg.max_concurrent_appends, TooManyAppendsError)
        self._projections = limiter(
            cfg, "projections", cfg.max_concurrent_projections, TooManyProjectionsError
        )

    # -- appends ---------------------------------------------------------------------------------

    def append(
        self, events: Iterable[Event] | Event, condition: AppendCondition | None = None
    ) -> int:
        """Append ``events`` atomically; return the position of the last one.

        With a ``condition``, nothing is written and :class:`ConcurrencyError` is raised if an
        event matching ``condition.fail_if_events_match`` exists after ``condition.after``.
        Then the host transaction is still usable (``error.transaction_usable``).
        """
        return self._append(events, condition, None)[0]

    def _append(
        self,
        events: Iterable[Event] | Event,
        condition: AppendCondition | None,
        command_id: str | None,
        record: dict[str, Any] | None = None,
    ) -> tuple[int, bool | None]:
        """Append; with ``record`` (a command's parameters) also record the command in the
        same unit on PostgreSQL, reporting whether it was written (``None``: not attempted,
        the caller records it itself)."""
        batch = self._check_batch(events)
        if condition is not None and not isinstance(condition, AppendCondition):
            raise ValidationError("condition", condition, "must be an AppendCondition or None")
        payload = _encode_batch(batch)
        run = Runner.of(self.session.connection(), self.config)
        params: dict[str, Any] = {"batch": payload, "command_id": command_id}
        trailer: list[Call] = []
        if record is not None and run.dialect == statements.POSTGRESQL:
            trailer.append(Call(statements.record_appended_command(), record))
        with self._appends.slot(), run.translated(condition):
            if condition is None:
                positions, recorded = self._plain_append(run, batch, params, trailer)
            elif run.dialect == statements.POSTGRESQL:
                positions, recorded = self._checked_append(run, condition, batch, params, trailer)
            else:
                positions, recorded = self._sqlite_checked_append(run, condition, params), None
        last: int = max(positions)
        return last, recorded

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
        query, head = condition.fail_if_events_match, condition.head
        run = Runner.of(self.session.connection(), self.config)
        dialect = run.dialect
        shapes = (statements.query_shape(query), statements.head_shape(head, dialect))
        check = statements.query_params(query) | statements.head_params(head, dialect)
        conflict_check = Call(statements.conflict_statement(dialect, *shapes), check)
        with run.translated(condition):
            if dialect != statements.POSTGRESQL:
                # The write lock first, as an append takes it: the check then runs on the
                # latest state (a stale snapshot fails instead), and holds until the end.
                lock = Call(statements.sqlite_write_lock())
                conflict = run.unit([lock, conflict_check])[1]
            else:
                lock = Call(statements.lock_select(), self._lock_params(run, query, []))
                lock_rows, conflict = run.unit([lock, conflict_check])
                if not conflict and lock_rows[0][0] != "read committed":
                    # A fixed snapshot cannot see later commits: check a fresh one too.
                    fresh = fresh_conflict(run.conn, shapes, check)
                    conflict = [] if fresh is None else [(fresh,)]
        if conflict:
            raise _condition_failed(condition, conflict[0][0])

    def _check_batch(self, events: Iterable[Event] | Event) -> list[Event]:
        if isinstance(events, Event):
            return [events]
        if isinstance(events, str | bytes) or not isinstance(events, Iterable):
            raise ValidationError("events", events, "append takes an Event or an iterable of them")
        batch = list(events)
        if not batch:
            raise ValidationError("events", batch, "an append needs at least one event")
        if len(batch) > self.config.max_batch_size:
            raise ValidationError(
                "events",
                f"<{len(batch)} events>",
                f"a batch holds at most max_batch_size={self.config.max_batch_size} events",
            )
        for event in batch:
            if not isinstance(event, Event):
                raise ValidationError("events", event, "append takes Event values")
        return batch

    def _lock_params(self, run: Runner, query: Query | None, batch: list[Event]) -> dict[str, str]:
        """The advisory locks of an operation, capped per transaction (see
        :mod:`sa_crablet._locks`); an operation in its own transaction starts afresh."""
        transaction = None if run.own else run.conn.get_transaction()
        return statements.lock_params(_locks.LEDGER.admit(transaction, _locks.plan(query, batch)))

    def _plain_append(
        self, run: Runner, batch: list[Event], params: dict[str, Any], trailer: list[Call]
    ) -> tuple[list[int], bool | None]:
        """An unconditional append: one statement (on PostgreSQL it takes shared locks on
        its events' keys first, see :func:`statements.insert_statement`)."""
        if run.dialect == statements.POSTGRESQL:
            params |= self._lock_params(run, None, batch)
        statement = statements.insert_statement(run.dialect, statements.UNCONDITIONAL, None)
        rows, *after = run.unit([Call(statement, params, prepare=True), *trailer])
        return [row[0] for row in rows], bool(after[0]) if trailer else None

    def _sqlite_checked_append(
        self, run: Runner, condition: AppendCondition, params: dict[str, Any]
    ) -> list[int]:
        """SQLite: one writer at a time, so the check needs no lock; check and insert are
        one statement, and a second one finds the conflict to report."""
        query, head = condition.fail_if_events_match, condition.head
        shapes = (statements.query_shape(query), statements.head_shape(head, run.dialect))
        check = statements.query_params(query) | statements.head_params(head, run.dialect)
        statement = statements.insert_statement(run.dialect, *shapes)
        positions = [row[0] for row in run.unit([Call(statement, params | check)])[0]]
        if not positions:
            first = run.rows(Call(statements.conflict_statement(run.dialect, *shapes), check))
            raise _condition_failed(condition, first[0][0] if first else None)
        return positions

    def _checked_append(
        self,
        run: Runner,
        condition: AppendCondition,
        batch: list[Event],
        params: dict[str, Any],
        trailer: list[Call],
    ) -> tuple[list[int], bool | None]:
        """PostgreSQL's conditional append: take the advisory locks, then check and insert
        in one new statement; return the positions (and whether the ``trailer``, a command
        record sent with them, wrote its row) or raise ``ConcurrencyError``.

        Why the locks: under READ COMMITTED, "check, then insert" lets two appenders with
        the same condition both see nothing and both commit. Exclusive locks on the
        condition's keys (shared on the keys of the events written, which every append
        takes) serialize exactly the appends whose scopes overlap; the check is a later
        statement (or, at a fixed-snapshot isolation level, also a fresh connection), so it
        runs after the wait and sees what the other appender committed. The locks are held
        until the host's transaction ends. The insert is planned for its values every
        time: a generic plan cannot tell that the check usually finds nothing.
        """
        query, head = condition.fail_if_events_match, condition.head
        shapes = (statements.query_shape(query), statements.head_shape(head, run.dialect))
        check = statements.query_params(query) | statements.head_params(head, run.dialect)
        lock = Call(statements.lock_select(), self._lock_params(run, query, batch))
        checked = statements.checked_insert_statement(*shapes)
        # Lock and insert in one unit (one round trip on the direct path). The insert does
        # nothing outside READ COMMITTED (its isolation guard): the fresh check comes first.
        guarded = Call(checked, params | check | {"isolation_checked": False})
        lock_rows, rows, *after = run.unit([lock, guarded, *trailer])
        if lock_rows[0][0] != "read committed":
            # A fixed snapshot (REPEATABLE READ, SERIALIZABLE) cannot see what others
            # committed after it: check on a fresh snapshot as well. The in-statement check
            # still sees this transaction's own events.
            conflict = fresh_conflict(run.conn, shapes, check)
            if conflict is not None:
                raise _condition_failed(condition, conflict)
            insert = Call(checked, params | check | {"isolation_checked": True})
            rows, *after = run.unit([insert, *trailer])
        return _inserted(condition, rows), bool(after[0]) if trailer else None

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

    def _stream(
        self, query: Query, head: Head | None, backwards: bool, limit: int | None
    ) -> Iterator[SequencedEvent | Head]:
        """The first page (``fetch_size`` events) comes from one plain statement, which is
        all most reads need; a longer read goes on through a server-side cursor, resuming
        after the last event delivered. The head keeps the first page's snapshot: later
        pages can only add events it treats as unseen (a conservative head, never a gap).
        """
        run = Runner.of(self.session.connection(), self.config)
        dialect = run.dialect
        shapes = (statements.query_shape(query), statements.head_shape(head, dialect))
        page = self.config.fetch_size
        paged = limit is None or limit > page
        first_limit = page + 1 if paged else limit
        params = statements.read_params(query, head, first_limit, dialect)
        snapshot: Snapshot | None = None
        count = 0
        edge: int | None = None  # last position (forwards) / first position (backwards)
        with run.translated():
            statement = statements.read_statement(dialect, *shapes, backwards, True)
            # Planned for its values: a LIMITed GIN read needs them to pick its index.
            rows = run.unit([Call(statement, params)], writes=False)[0]
            if dialect == statements.POSTGRESQL:
                snapshot = Snapshot.parse(rows[0][0], rows[0][1])
                rows = [row[2:] for row in rows if row[2] is not None]
            more = paged and len(rows) > page
            rest = (
                self._rest(run, shapes, params, backwards, limit, rows[page - 1])
                if more
                else iter(())
            )
            try:
                for values in itertools.chain(rows[:page] if more else rows, rest):
                    event = to_event(values)
                    position = event.position
                    if edge is not None and (position < edge) != backwards:
                        raise CrabletError("a read returned events out of position order")
                    count += 1
                    if edge is None or not backwards:
                        edge = position
                    yield event
            finally:
                close = getattr(rest, "close", None)
                if close is not None:
                    close()  # releases the server-side cursor of an early stop
        # In order, the highest position is the last one forwards, the first one backwards:
        # exactly ``edge``.
        highest = 0 if edge is None else edge
        yield next_head(head, snapshot, highest, edge, count, backwards, limit)

    def _rest(
        self,
        run: Runner,
        shapes: tuple[statements.QueryShape, statements.HeadShape],
        params: dict[str, Any],
        backwards: bool,
        limit: int | None,
        last: Any,
    ) -> Iterator[Any]:
        """The events after the first page, streamed through a server-side cursor."""
        page = self.config.fetch_size
        rest = dict(params, resume=last[0])
        if limit is None:
            rest.pop("limit", None)
        else:
            rest["limit"] = limit - page
        statement = statements.read_statement(
            run.dialect, *shapes, backwards, limit is not None, True
        )
        yield from run.stream(statement, rest, page)

    # -- decision models -------------------------------------------------------------------------

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


def _condition_failed(condition: AppendCondition | None, position: int | None) -> ConcurrencyError:
    assert condition is not None
    return ConcurrencyError(
        f"append condition failed: a matching event exists after {condition.after!s}",
        condition=condition,
        position=position,
        transaction_usable=True,
    )


def _inserted(condition: AppendCondition, rows: list[Any]) -> list[int]:
    """The positions a checked insert returned, or its conflict as ``ConcurrencyError``."""
    positions = [position for position, failed in rows if not failed]
    if not positions:
        failed_at = [position for position, failed in rows if failed]
        raise _condition_failed(condition, failed_at[0] if failed_at else None)
    return positions


def _encode_batch(batch: list[Event]) -> str:
    rows = [
        [e.type, list(e.tags), to_json("data", e.data), to_json("metadata", e.metadata)]
        for e in batch
    ]
    # Only strings, lists of strings and None here (payloads are already JSON text), which
    # msgspec encodes exactly as the standard library would, in a tenth of the time.
    return msgspec.json.encode(rows).decode()
