"""Backends killed while ``CommandExecutor`` runs a command:

* ``handler-host``: inside the handler, in the host's ``Session`` (after host work of its
  own), before the handler reads (``read``) or after it decided (``decide``). The error
  reaches the host; nothing of the command is recorded; the host's transaction is lost
  with it (the connection died) and the command succeeds when executed again.
* ``handler-managed``: once the handler decided, on its first run, with a
  ``sessionmaker`` or an ``Engine`` as the executor's bind. The executor may retry or fail
  clearly; either way the command is recorded at most once, its events all or none, and
  executing the same id again gives one outcome.
* ``command-record``: the command's events inserted, its record waiting behind another
  execution of the same id that has not committed; the other one then commits and is the
  only one recorded.
* ``command-commit``: the managed execution's COMMIT, unanswered (see
  ``benchmarks.fault_appends``); executing the id again reports the first outcome when it
  committed, or executes it once when it did not.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.fault_kit import (
    COMMIT_WAITING,
    Background,
    Ledger,
    Mailbox,
    backend_pid,
    committing,
    marked_batch,
    waiting_for_transaction,
)
from benchmarks.fault_log import command_state
from benchmarks.fault_target import ISOLATION, Target, boundary, expect_killed, recover
from sa_crablet import (
    AppendCondition,
    Command,
    CommandExecutor,
    CommandResult,
    Decision,
    Event,
    EventStore,
    Query,
)

Handler = Callable[[EventStore, Command], Decision]


def deciding(
    tag: str,
    events: list[Event],
    *,
    before: Callable[[EventStore], None] | None = None,
    after: Callable[[EventStore], None] | None = None,
) -> Handler:
    """A handler that reads its boundary and decides ``events`` on it; on its first run
    only, ``before`` is called before it reads and ``after`` once it has decided."""
    runs: list[int] = []

    def handler(store: EventStore, command: Command) -> Decision:
        first = not runs
        runs.append(1)
        if first and before is not None:
            before(store)
        query = Query.of(tags=[tag])
        result = store.read(query)
        list(result)
        if first and after is not None:
            after(store)
        return Decision(events, AppendCondition(query, result.head))

    return handler


def _again(
    target: Target, ledger: Ledger, command: Command, handler: Handler, batch: str
) -> CommandResult | None:
    """Execute ``command`` again, managed, on the application's engine."""
    try:
        result = CommandExecutor(target.engine, config=target.config).execute(command, handler)
    except Exception as exc:
        ledger.error(exc)
        ledger.problem(f"executing {command.id} again failed: {exc!r}")
        return None
    if not result.duplicate:
        ledger.outcome(batch, "acknowledged")
    return result


def _recorded_once(target: Target, ledger: Ledger, command_id: str, size: int) -> None:
    rows, stored = command_state(target.engine, command_id)
    if (rows, stored) != (1, size):
        ledger.problem(
            f"command {command_id} has {rows} rows and {stored} events, expected 1 and {size}"
        )


def kill_in_handler_host(target: Target, ledger: Ledger, *, point: str) -> None:
    tag = boundary("host")
    own, own_events = marked_batch("HostWork", [boundary("host-own")], 2)
    batch, events = marked_batch("Decided", [tag], 3)
    command = Command("Fault", {"batch": batch}, id=uuid.uuid4().hex)

    def kill(store: EventStore) -> None:
        target.backends.terminate(backend_pid(store.session))
        ledger.fault("handler-host")

    handler = (
        deciding(tag, events, before=kill) if point == "read" else deciding(tag, events, after=kill)
    )
    with Session(target.engine) as session:
        target.store(session).append(own_events)  # the host's own earlier work
        try:
            CommandExecutor(session, config=target.config).execute(command, handler)
        except Exception as exc:
            ledger.error(exc)
        else:
            ledger.problem("a command whose backend was killed succeeded")
        ledger.outcome(own, "failed")
        ledger.outcome(batch, "failed")
        session.rollback()
    if command_state(target.engine, command.id) != (0, 0):
        ledger.problem("a killed host command left a trace")
    result = _again(target, ledger, command, handler, batch)
    if result is not None and result.duplicate:
        ledger.problem("a killed host command counted as executed")
    _recorded_once(target, ledger, command.id, len(events))
    recover(target, ledger, "a kill in a host command handler")


def kill_in_handler_managed(target: Target, ledger: Ledger, *, bind: str) -> None:
    tag = boundary("managed")
    batch, events = marked_batch("Decided", [tag], 3)
    command = Command("Fault", {"batch": batch}, id=uuid.uuid4().hex)
    # One named connection: the handler's reads and the execution's append share it (with
    # an Engine the store borrows it per operation, so the handler cannot hold it).
    name = f"sa_crablet-fault-{uuid.uuid4().hex[:12]}"
    engine = create_engine(
        target.url,
        isolation_level=ISOLATION,
        pool_size=1,
        max_overflow=0,
        connect_args={"application_name": name},
    )

    def kill(_store: EventStore) -> None:
        for pid in target.backends.pids(name):
            target.backends.terminate(pid)
        ledger.fault("handler-managed")

    handler = deciding(tag, events, after=kill)
    factory: sessionmaker[Session] | Engine = (
        sessionmaker(engine) if bind == "sessionmaker" else engine
    )
    try:
        try:
            CommandExecutor(factory, config=target.config).execute(command, handler)
        finally:
            engine.dispose()
    except Exception as exc:
        ledger.error(exc)
        ledger.outcome(batch, "failed")
        if command_state(target.engine, command.id) != (0, 0):
            ledger.problem("a failed managed command left a trace")
        _again(target, ledger, command, handler, batch)
    else:  # retried after the fault: it must have run once more, and be recorded once
        ledger.outcome(batch, "acknowledged")
    _recorded_once(target, ledger, command.id, len(events))
    recover(target, ledger, f"a kill in a managed command handler ({bind})")


def kill_while_recording(target: Target, ledger: Ledger) -> None:
    tag = boundary("record")
    command_id = uuid.uuid4().hex
    # The first execution's events are on another boundary: only the command id is shared,
    # so the second one waits for the id, not for a boundary's lock.
    first, first_events = marked_batch("Recorded", [boundary("record-first")], 2)
    second, second_events = marked_batch("Recorded", [tag], 3)
    pid: Mailbox[int] = Mailbox()

    def report(store: EventStore) -> None:
        pid.put(backend_pid(store.session))

    with Session(target.engine) as holder:
        CommandExecutor(holder, config=target.config).execute(
            Command("Fault", {"n": 1}, id=command_id),
            lambda _store, _command: Decision(first_events),
        )
        executor = CommandExecutor(sessionmaker(target.engine), config=target.config)
        handler = deciding(tag, second_events, before=report)
        waiting = Background(
            lambda: executor.execute(Command("Fault", {"n": 2}, id=command_id), handler)
        )
        target.backends.terminate_when(pid.get(), waiting_for_transaction)
        ledger.fault("command-record")
        expect_killed(waiting, ledger, second, "failed")
        holder.commit()
    ledger.outcome(first, "acknowledged")
    _recorded_once(target, ledger, command_id, len(first_events))
    recover(target, ledger, "a kill while a command was recorded")


def kill_command_at_commit(target: Target, ledger: Ledger) -> None:
    tag = boundary("command-commit")
    batch, events = marked_batch("Decided", [tag], 3)
    command = Command("Fault", {"batch": batch}, id=uuid.uuid4().hex)
    handler = deciding(tag, events)
    executor = CommandExecutor(target.commit_waiting, config=target.config)
    running = Background(lambda: executor.execute(command, handler))
    # The executor's store borrows a connection per operation: the backend is found by
    # its connection's name, at its COMMIT.
    target.backends.terminate(target.backends.find(COMMIT_WAITING, committing))
    ledger.fault("command-commit")
    expect_killed(running, ledger, batch, "unknown")
    rows, _ = command_state(target.engine, command.id)
    result = _again(target, ledger, command, handler, batch)
    if result is not None and result.duplicate != bool(rows):
        ledger.problem(
            f"executing an unanswered command again said "
            f"duplicate={result.duplicate} with {rows} record(s) stored"
        )
    _recorded_once(target, ledger, command.id, len(events))
    recover(target, ledger, "a kill during a command's COMMIT")
