"""Command executions, observed: a span and a record per execution (sync and async), and
what the executors' retry loops report (a retry, giving up)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, TypeVar

from sa_crablet._observe import otel
from sa_crablet._observe.logs import EXECUTOR, Facts, emit, milliseconds
from sa_crablet._observe.report import (
    DEBUG,
    DEFAULT_CONFIG,
    EXECUTION,
    INFO,
    WARNING,
    Operation,
    Spec,
    report,
    slow_or_duplicate,
)
from sa_crablet.commands import Command, CommandResult
from sa_crablet.exceptions import ConcurrencyError

F = TypeVar("F", bound=Callable[..., Any])

EXECUTE = Spec(
    "execute",
    EXECUTOR,
    "sa_crablet.execute",
    "command %s (%s) executed: %s events, position %s, %s attempts (%.3f ms)",
    ("command_type", "command_id", "events", "position", "attempts", "duration_ms"),
    leaf=False,
)


def _facts(executor: Any, command: object) -> Facts:
    facts: Facts = {"operation": "execute"}
    if isinstance(command, Command):
        facts["command_id"] = command.id
        facts["command_type"] = command.type
        if (executor.config or DEFAULT_CONFIG).log_payloads:
            facts["command_data"] = command.data
    return facts


def _outcome(result: CommandResult, facts: Facts) -> None:
    facts.update(
        position=result.position,
        events=result.event_count,
        attempts=result.attempts,
        retries=result.attempts - 1,
        duplicate=result.duplicate,
        conflict=False,
    )


def _begin(executor: Any, command: object) -> tuple[Operation | None, Any]:
    """The execution's observation, and the token that makes it :data:`EXECUTION`; no
    observation when nothing listens."""
    telemetry = otel.current()
    if telemetry is None and not EXECUTOR.isEnabledFor(DEBUG):
        return None, None
    op = Operation(EXECUTE, executor, executor.config, _facts(executor, command), telemetry)
    return op, EXECUTION.set(op)


def _end(
    op: Operation | None, token: Any, executor: Any, command: object, start: float, outcome: Any
) -> None:
    """Report an execution that returned ``outcome`` or raised it."""
    if op is None:
        seconds = perf_counter() - start
        if isinstance(outcome, CommandResult) and slow_or_duplicate(executor, seconds, outcome):
            facts = _facts(executor, command)
            _outcome(outcome, facts)
            config = executor.config or DEFAULT_CONFIG
            report(EXECUTE, executor, config, facts, seconds, None, None)
        return
    EXECUTION.reset(token)
    if isinstance(outcome, CommandResult):
        _outcome(outcome, op.facts)
        op.finish(None)
        return
    attempts = getattr(outcome, "attempts", None)
    if attempts:
        op.facts.update(attempts=attempts, retries=attempts - 1)
    op.finish(outcome)


def executing(fn: F) -> F:
    """``CommandExecutor.execute``, observed."""

    @functools.wraps(fn)
    def execute(executor: Any, command: Any, handler: Any = None) -> Any:
        start = perf_counter()
        op, token = _begin(executor, command)
        try:
            result = fn(executor, command, handler)
        except BaseException as error:
            _end(op, token, executor, command, start, error)
            raise
        _end(op, token, executor, command, start, result)
        return result

    return execute  # type: ignore[return-value]


def executing_async(fn: Callable[..., Awaitable[Any]]) -> Any:
    """``AsyncCommandExecutor.execute``, observed (the span is current in the task's
    context, which the greenlet bridge hands on to the store's operations)."""

    @functools.wraps(fn)
    async def execute(executor: Any, command: Any, handler: Any = None) -> Any:
        start = perf_counter()
        op, token = _begin(executor, command)
        try:
            result = await fn(executor, command, handler)
        except BaseException as error:
            _end(op, token, executor, command, start, error)
            raise
        _end(op, token, executor, command, start, result)
        return result

    return execute


def retrying(command: Command, attempt: int, delay: float, error: ConcurrencyError) -> None:
    """Attempt ``attempt`` lost a race; the next one starts in ``delay`` seconds."""
    op = EXECUTION.get()
    facts: Facts = {
        "operation": "execute",
        "command_id": command.id,
        "command_type": command.type,
        "attempt": attempt,
        "delay_ms": milliseconds(delay),
        "conflict_position": error.position,
    }
    if op is not None and op.telemetry is not None:
        op.telemetry.retried(op.source, command.type)
        if op.span is not None:
            op.telemetry.event(op.span, "sa_crablet.retry", facts)
    if EXECUTOR.isEnabledFor(INFO):
        emit(
            EXECUTOR,
            INFO,
            "command %s (%s) lost a race on attempt %s: retrying in %.3f ms",
            (command.type, command.id, attempt, facts["delay_ms"]),
            facts,
        )


def gave_up(command: Command, attempts: int) -> None:
    """Every attempt lost a race: the executor raises the last ``ConcurrencyError``."""
    if EXECUTOR.isEnabledFor(WARNING):
        facts: Facts = {
            "operation": "execute",
            "command_id": command.id,
            "command_type": command.type,
            "attempts": attempts,
            "conflict": True,
        }
        emit(
            EXECUTOR,
            WARNING,
            "command %s (%s) lost a race on each of its %s attempts: giving up",
            (command.type, command.id, attempts),
            facts,
        )
