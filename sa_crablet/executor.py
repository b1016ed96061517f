"""The command executor: a handler decides inside the transaction, its events and the
command record commit together, duplicates are recognised, conflicts can be retried."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from sa_crablet._errors import translated
from sa_crablet._observe import commands as observe
from sa_crablet._runners.base import Runner
from sa_crablet._runners.choose import runner_for
from sa_crablet._validation import check_seconds
from sa_crablet.commands import Command, CommandResult, Decision, as_decision
from sa_crablet.config import EventStoreConfig
from sa_crablet.exceptions import ConcurrencyError, DuplicateCommandError, ValidationError
from sa_crablet.store import EngineEventStore, EventStore

H = TypeVar("H", bound=Callable[..., Any])

Handler = Callable[[Any, Command], Any]
"""``handler(store, command)`` reads or projects through ``store`` and returns a
``Decision``, events, ``(events, condition)`` or ``None``. ``store`` is an
:class:`~sa_crablet.EventStore` on the command's ``Session`` (an executor on a ``Session`` or
a ``sessionmaker``), or an :class:`~sa_crablet.EngineEventStore` (an executor on an
``Engine``): the same operations either way."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a store-managed execution retries a lost race (``ConcurrencyError``, including
    serialization failures and deadlocks): up to ``attempts`` handler runs in all, sleeping
    ``backoff * 2**n`` seconds (capped at ``max_backoff``, with full jitter) in between.
    ``backoff`` and ``max_backoff`` are finite numbers of seconds from 0 to 1e9."""

    attempts: int = 5
    backoff: float = 0.005
    max_backoff: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ValidationError("attempts", self.attempts, "must be an int >= 1")
        if self.attempts < 1:
            raise ValidationError("attempts", self.attempts, "must be an int >= 1")
        for name in ("backoff", "max_backoff"):
            if check_seconds(name, getattr(self, name), positive=False) > MAX_BACKOFF:
                raise ValidationError(name, getattr(self, name), "at most 1e9 seconds")

    def delay(self, retry: int) -> float:
        """Seconds to sleep before retry number ``retry + 1`` (``retry`` counts from 0): a
        random value between 0 and ``backoff * 2**retry``, capped at ``max_backoff``."""
        # The exponent is capped: past 2**64 the cap is reached anyway, and a huge power of
        # two would not convert to a float.
        return random.uniform(0, min(self.max_backoff, self.backoff * 2 ** min(retry, 64)))


MAX_BACKOFF = 1e9
"""Longest backoff accepted (seconds): ``time.sleep`` takes up to about 9.2e9."""
NO_RETRY = RetryPolicy(attempts=1)
DEFAULT_RETRY = RetryPolicy()


class Routes(Generic[H]):
    """Handlers by command type, for the executors' ``register`` / ``handles``."""

    def __init__(self) -> None:
        self._handlers: dict[str, H] = {}

    def register(self, command_type: str, handler: H) -> None:
        if not callable(handler):
            raise ValidationError("handler", handler, "must be callable")
        self._handlers[command_type] = handler

    def handler_for(self, command: Command, handler: H | None) -> H:
        """``handler``, or the one registered for the command's type."""
        if not isinstance(command, Command):
            raise ValidationError("command", command, "must be a Command")
        if handler is None:
            handler = self._handlers.get(command.type)
            if handler is None:
                raise ValidationError(
                    "command",
                    command.type,
                    "no handler for this type: register one (register(type, handler) or "
                    "@handles(type)) or pass handler=",
                )
        return handler


class CommandExecutor:
    """Executes commands with handlers, in the caller's transaction or in its own.

    ``bind`` is one of:

    * a ``Session``: the host's transaction. The executor never commits it and never
      retries in it; a savepoint undoes the command's own work if it fails.
    * a ``sessionmaker``: each execution gets a ``Session`` of its own, committed on
      success and retried on conflicts per ``retry``. The handler's ``store.session`` is
      that session: rows the handler writes through it commit with the events.
    * an ``Engine``: each execution runs on an :class:`~sa_crablet.EngineEventStore`, in as
      few round trips as the DCB contract allows: the command's look-up and the handler's
      reads are statements of their own, and its events and the command's record commit
      together in one transaction, under the handler's append condition (one round trip on
      psycopg). Retried on conflicts per ``retry``.
    """

    def __init__(
        self,
        bind: Session | sessionmaker[Session] | Engine,
        *,
        config: EventStoreConfig | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        require_events: bool = True,
    ) -> None:
        if not isinstance(bind, Session | sessionmaker | Engine):
            raise ValidationError("bind", bind, "must be a Session, a sessionmaker or an Engine")
        self.bind = bind
        self.config = config
        self.retry = retry
        self.require_events = require_events
        self._routes = Routes[Handler]()
        self._owned = EngineEventStore(bind, config) if isinstance(bind, Engine) else None

    # -- routing -------------------------------------------------------------------------------

    def register(self, command_type: str, handler: Handler) -> None:
        """Route commands of ``command_type`` to ``handler`` when ``execute`` gets none."""
        self._routes.register(command_type, handler)

    def handles(self, command_type: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""

        def decorate(handler: Handler) -> Handler:
            self.register(command_type, handler)
            return handler

        return decorate

    # -- execution -----------------------------------------------------------------------------

    @observe.executing
    def execute(self, command: Command, handler: Handler | None = None) -> CommandResult:
        """Run ``handler`` for ``command`` and append what it decides, atomically with the
        command's record. A command id executed before returns its first outcome."""
        handler = self._routes.handler_for(command, handler)
        if isinstance(self.bind, Session):
            return self._execute_in(self.bind, command, handler, attempts=1, host=True)
        retry = 0
        while True:
            try:
                return self._attempt(command, handler, retry + 1)
            except ConcurrencyError as error:
                retry += 1
                if retry >= self.retry.attempts:
                    error.attempts = retry
                    observe.gave_up(command, retry)
                    raise
                delay = self.retry.delay(retry - 1)
                observe.retrying(command, retry, delay, error)
                time.sleep(delay)

    def _attempt(self, command: Command, handler: Handler, attempts: int) -> CommandResult:
        """One managed execution, in a transaction of its own."""
        store = self._owned
        if store is not None:
            return run_owned(
                store,
                command,
                lambda: handler(store, command),
                require_events=self.require_events,
                attempts=attempts,
            )
        assert isinstance(self.bind, sessionmaker)
        with self.bind() as session:
            result = self._execute_in(session, command, handler, attempts=attempts, host=False)
            commit(session)
            return result

    def _execute_in(
        self, session: Session, command: Command, handler: Handler, *, attempts: int, host: bool
    ) -> CommandResult:
        store = EventStore(session, self.config)
        return run_command(
            store,
            command,
            lambda: handler(store, command),
            host=host,
            require_events=self.require_events,
            attempts=attempts,
        )


def run_command(
    store: EventStore,
    command: Command,
    decide: Callable[[], Any],
    *,
    host: bool,
    require_events: bool,
    attempts: int,
) -> CommandResult:
    """One execution of ``command`` in ``store``'s session: look its id up, run ``decide``
    (the handler), append what it decided with the command's record, all or nothing. Shared
    by the executors; ``host``: the session is the caller's (a savepoint keeps the caller's
    own earlier work when the command fails).
    """
    session = store.session
    runner = runner_for(session.connection(), store.config)
    # A connection with no transaction open (AUTOCOMMIT) would commit the look-up, the
    # handler's reads, the append and the record one by one: the command runs in a
    # transaction of its own instead, which the executor also ends in the host's mode
    # (there is no host transaction to end it).
    own = runner.own
    if not own:
        if not host and runner.write_lock_up_front:
            # SQLite: a transaction that reads first and writes later would fail to upgrade
            # its lock when another writer got in between, so it takes it from the start.
            runner.begin()
        return _decide(store, runner, command, decide, host, require_events, attempts)
    # Its own transaction, which it ends itself: an async driver's adapter in AUTOCOMMIT
    # does not send COMMIT for a transaction it did not open.
    runner.begin()
    try:
        result = _decide(store, runner, command, decide, host, require_events, attempts)
    except BaseException:
        runner.end(commit=False)
        raise
    with translated():
        runner.end(commit=True)
    return result


def _decide(
    store: EventStore,
    runner: Runner,
    command: Command,
    decide: Callable[[], Any],
    host: bool,
    require_events: bool,
    attempts: int,
) -> CommandResult:
    session = store.session
    done = store.command(command.id)
    if done is not None:
        return CommandResult(command.id, done.last_position, done.event_count, True, attempts)
    if host:
        runner.ensure_transaction()  # a savepoint needs the host's transaction open
    # In the host's transaction, a savepoint makes "nothing is written" hold for a failed
    # handler or a duplicate, while the host's own earlier work stays.
    scope = session.begin_nested() if host else None
    try:
        decision = _decision(command, decide(), require_events)
        position: int | None = None
        if decision.events:
            position = store.append(decision.events, decision.condition, command=command)
        else:
            if decision.condition is not None:
                store.check(decision.condition)  # nothing to append, only if still true
            store.record_command(command)
    except DuplicateCommandError:
        # The same id committed meanwhile (we waited for it): undo, report the first.
        if scope is not None:
            scope.rollback()
        elif runner.own:  # the command's own transaction: undone, and a new one for the end
            runner.end(commit=False)
            runner.begin()
        else:
            session.rollback()
        first = store.command(command.id)
        assert first is not None
        return CommandResult(command.id, first.last_position, first.event_count, True, attempts)
    except BaseException:
        if scope is not None and scope.is_active:
            scope.rollback()
        raise
    if scope is not None:
        scope.commit()
    return CommandResult(command.id, position, len(decision.events), False, attempts)


def run_owned(
    store: EngineEventStore,
    command: Command,
    decide: Callable[[], Any],
    *,
    require_events: bool,
    attempts: int,
) -> CommandResult:
    """One execution of ``command`` on a store that owns its transactions: the look-up and
    the handler's reads as statements of their own (a decision's consistency comes from its
    append condition, not from a transaction around its reads), then the events with the
    command's record in one transaction, or, for a decision without events, its condition
    checked and the command recorded. An id recorded meanwhile undoes that transaction
    and reports the first outcome."""
    done = store.command(command.id)
    if done is not None:
        return CommandResult(command.id, done.last_position, done.event_count, True, attempts)
    decision = _decision(command, decide(), require_events)
    position: int | None = None
    try:
        if decision.events:
            position = store.append(decision.events, decision.condition, command=command)
        else:
            if decision.condition is not None:
                store.check(decision.condition)
            store.record_command(command)
    except DuplicateCommandError:
        first = store.command(command.id)
        assert first is not None
        return CommandResult(command.id, first.last_position, first.event_count, True, attempts)
    return CommandResult(command.id, position, len(decision.events), False, attempts)


def _decision(command: Command, returned: Any, require_events: bool) -> Decision:
    decision = as_decision(returned)
    if require_events and not decision.events:
        raise ValidationError(
            "handler",
            decision,
            f"the handler for {command.type!r} returned no events: return the events it "
            "decides, or create the executor with require_events=False to record commands "
            "that append nothing",
        )
    return decision


def commit(session: Session) -> None:
    """Commit, turning a serialization failure raised at COMMIT into ``ConcurrencyError``."""
    with translated():
        session.commit()
