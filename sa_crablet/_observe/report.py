"""What an operation reports when it ends: its log record, its metrics, and the facts its
span carries. Shared by the store's operations, projections and command executions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

from sa_crablet._observe.logs import Facts, emit, milliseconds
from sa_crablet.config import EventStoreConfig
from sa_crablet.exceptions import (
    ConcurrencyError,
    OperationTimeoutError,
    TooManyAppendsError,
    TooManyProjectionsError,
)

if TYPE_CHECKING:
    from sa_crablet._observe.instruments import Telemetry

DEBUG, INFO, WARNING = logging.DEBUG, logging.INFO, logging.WARNING
DEFAULT_CONFIG = EventStoreConfig()
REFUSALS = (TooManyAppendsError, TooManyProjectionsError)
TOLD = (ConcurrencyError, OperationTimeoutError, *REFUSALS)
"""The errors a store operation logs: the rest are the caller's to tell."""


@dataclass(frozen=True, slots=True)
class Spec:
    """One kind of operation: its name (``crablet_operation``, ``db.operation.name``), its
    logger and span, and its DEBUG record once done: a message and the facts it quotes.

    ``timed``: its duration is measured (histogram, slow-operation warning); not for reads
    and projection batches, whose time is mostly the caller's between two steps.
    ``leaf``: it reports its own failures (not a command execution: its retries and the
    store's operations inside it say what went wrong)."""

    name: str
    logger: logging.Logger
    span: str
    done: str
    quoted: tuple[str, ...]
    timed: bool = True
    leaf: bool = True


class Operation:
    """An operation under way while something listens (a DEBUG logger, OpenTelemetry):
    its facts, its span (current from the start, unless ``current`` is false: a read's is
    made current on each step), its start time."""

    __slots__ = ("config", "facts", "source", "span", "spec", "start", "telemetry", "token")

    def __init__(
        self,
        spec: Spec,
        source: object,
        config: EventStoreConfig | None,
        facts: Facts,
        telemetry: Telemetry | None,
        *,
        span: bool = True,
        current: bool = True,
    ) -> None:
        self.spec = spec
        self.source = source
        self.config = config or DEFAULT_CONFIG
        self.facts = facts
        self.telemetry = telemetry
        self.span: Any = None
        self.token: object | None = None
        if telemetry is not None and span:
            self.span, self.token = telemetry.start(spec.span, facts, source, current=current)
        self.start = perf_counter()

    def finish(self, error: BaseException | None) -> None:
        """Report the outcome (``error``: what it raised), end the span."""
        try:
            report(
                self.spec,
                self.source,
                self.config,
                self.facts,
                perf_counter() - self.start,
                error,
                self.telemetry,
            )
        finally:
            if self.span is not None:
                assert self.telemetry is not None
                self.telemetry.detach(self.token)
                self.telemetry.end(self.span, self.facts, error)


def report(
    spec: Spec,
    source: object,
    config: EventStoreConfig,
    facts: Facts,
    seconds: float,
    error: BaseException | None,
    telemetry: Telemetry | None,
) -> None:
    """Log what an operation did (DEBUG), or what went wrong or slow, and measure it."""
    facts["duration_ms"] = milliseconds(seconds)
    logger = spec.logger
    if error is not None:
        failed(spec, facts, error)
    elif spec.timed and _slow(config, seconds):
        facts["threshold_ms"] = milliseconds(config.slow_operation_threshold or 0)
        emit(
            logger,
            WARNING,
            "slow %s: %.3f ms, over the %.3f ms threshold",
            (spec.name, facts["duration_ms"], facts["threshold_ms"]),
            facts,
        )
    elif facts.get("duplicate"):
        emit(
            logger,
            INFO,
            "command %s (%s) was executed before: its first outcome is returned",
            (facts.get("command_type"), facts.get("command_id")),
            facts,
        )
    elif logger.isEnabledFor(DEBUG):
        emit(logger, DEBUG, spec.done, tuple(facts.get(name) for name in spec.quoted), facts)
    if telemetry is not None:
        _measure(spec, source, facts, seconds, error, telemetry)


def _slow(config: EventStoreConfig, seconds: float) -> bool:
    threshold = config.slow_operation_threshold
    return threshold is not None and seconds > threshold


def slow_or_duplicate(source: Any, seconds: float, result: object = None) -> bool:
    """Whether an operation that nothing listens to must be reported all the same."""
    return _slow(source.config or DEFAULT_CONFIG, seconds) or bool(
        getattr(result, "duplicate", False)
    )


def failed(spec: Spec, facts: Facts, error: BaseException) -> None:
    facts["error"] = type(error).__qualname__
    if isinstance(error, ConcurrencyError):
        facts["conflict"] = True
        facts["conflict_position"] = error.position
    if not spec.leaf or getattr(error, _REPORTED, False):
        return
    # Logged once, by the innermost operation that saw it (a read inside a projection, an
    # observed read and the result around it, say).
    setattr(error, _REPORTED, True)
    # Messages of our own, from the error's data: an error's text may quote its condition's
    # tags (personal data, as payloads can be), and a driver's error, chained to ours, the
    # statement's parameters.
    if isinstance(error, ConcurrencyError):  # a normal outcome: the caller decides again
        level, message = INFO, "%s conflicted: %s"
        what = (
            "a matching event was appended after the condition's head"
            if error.transaction_usable
            else "the database aborted the transaction to keep concurrent writers consistent"
        )
    elif isinstance(error, OperationTimeoutError):
        facts["setting"] = error.setting
        level, message, what = WARNING, "%s timed out: %s", f"{error.setting} expired"
    elif isinstance(error, REFUSALS):
        facts["setting"] = error.setting
        facts["limit"] = error.limit
        level, message = WARNING, "%s refused: %s"
        what = f"{error.setting}={error.limit} operations are running already"
    else:
        return  # the caller has the error; it says all there is
    emit(spec.logger, level, message, (spec.name, what), facts)


def _measure(
    spec: Spec,
    source: object,
    facts: Facts,
    seconds: float,
    error: BaseException | None,
    telemetry: Telemetry,
) -> None:
    if spec.timed:
        telemetry.measure(source, spec.name, seconds, error)
    if not spec.leaf:
        return
    if error is None and spec.name == "append":
        telemetry.appended(source, facts.get("events") or 0)
    elif isinstance(error, ConcurrencyError):
        telemetry.conflicted(source, spec.name)


def fail_fast_path(
    spec: Spec, source: Any, facts: Callable[[], Facts], seconds: float, error: BaseException
) -> None:
    """An operation that nothing listened to failed: report it if it says something."""
    if isinstance(error, TOLD):
        report(spec, source, source.config or DEFAULT_CONFIG, facts(), seconds, error, None)


_REPORTED = "_sa_crablet_reported"

OUTER: ContextVar[Operation | None] = ContextVar("sa_crablet_outer_operation", default=None)
"""The projection under way: the reads and batches inside it report to it."""
EXECUTION: ContextVar[Operation | None] = ContextVar("sa_crablet_execution", default=None)
"""The command execution under way, while something listens: retries report to it."""
