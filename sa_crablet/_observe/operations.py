"""The store's operations, observed: one wrapper per kind of operation around the single
logic of :class:`sa_crablet.store._Store` (what ``EventStore``, ``EngineEventStore`` and,
through the greenlet bridge, ``AsyncEventStore`` run), and around projection streams.

While nothing listens (no DEBUG logger, OpenTelemetry not loaded), an operation costs a
look-up, a logger's cached level, two clock readings and a comparison with the
slow-operation threshold; a read costs nothing per event. A failure that says something
(a conflict, a timeout, a refusal) is logged all the same.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterator
from time import perf_counter
from typing import Any, TypeVar

from sa_crablet._observe import otel
from sa_crablet._observe.logs import PROJECTIONS, STORE, Facts, payload_of
from sa_crablet._observe.report import (
    DEBUG,
    OUTER,
    Operation,
    Spec,
    fail_fast_path,
    failed,
    report,
)
from sa_crablet.commands import Command
from sa_crablet.config import EventStoreConfig
from sa_crablet.events import Event
from sa_crablet.exceptions import CrabletError
from sa_crablet.projection import DecisionModel, ProjectionProgress
from sa_crablet.query import AppendCondition, Head, Query

F = TypeVar("F", bound=Callable[..., Any])
Args = tuple[Any, ...]
Kwargs = dict[str, Any]

APPEND = Spec(
    "append",
    STORE,
    "sa_crablet.append",
    "append: %s events, last position %s (%.3f ms)",
    ("events", "position", "duration_ms"),
)
CHECK = Spec(
    "check", STORE, "sa_crablet.check", "check: the condition holds (%.3f ms)", ("duration_ms",)
)
READ = Spec(
    "read",
    STORE,
    "sa_crablet.read",
    "read: %s events, head %s (%.3f ms)",
    ("events", "position", "duration_ms"),
    timed=False,
)
PROJECT = Spec(
    "project",
    STORE,
    "sa_crablet.project",
    "project: %s events folded, head %s (%.3f ms)",
    ("events", "position", "duration_ms"),
)
PROJECT_STREAM = Spec(
    "project_stream",
    PROJECTIONS,
    "sa_crablet.project_stream",
    "projection batch %s: %s events, position %s (%.3f ms)",
    ("batch", "events", "position", "duration_ms"),
    timed=False,
)


def _observed(
    spec: Spec,
    facts_of: Callable[[EventStoreConfig, Args, Kwargs], Facts],
    outcome: Callable[[Any, Facts], None],
    *,
    outer: bool = False,
    prepare: Callable[[Args], Args] | None = None,
) -> Callable[[F], F]:
    """Wrap a store operation: ``facts_of`` tells what it was asked, ``outcome`` what it
    returned, ``prepare`` readies its arguments for both (when something listens). An
    ``outer`` one (a projection) holds :data:`OUTER` while it runs."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def call(store: Any, *args: Any, **kwargs: Any) -> Any:
            telemetry = otel.current()
            if telemetry is None and not outer and not spec.logger.isEnabledFor(DEBUG):
                start = perf_counter()
                try:
                    result = fn(store, *args, **kwargs)
                except CrabletError as error:
                    seconds = perf_counter() - start
                    fail_fast_path(
                        spec, store, lambda: facts_of(store.config, args, kwargs), seconds, error
                    )
                    raise
                seconds = perf_counter() - start
                threshold = store.config.slow_operation_threshold
                if threshold is not None and seconds > threshold:
                    facts = facts_of(store.config, args, kwargs)
                    outcome(result, facts)
                    report(spec, store, store.config, facts, seconds, None, None)
                return result
            if prepare is not None:
                args = prepare(args)
            facts = facts_of(store.config, args, kwargs)
            op = Operation(spec, store, store.config, facts, telemetry)
            token = OUTER.set(op) if outer else None
            try:
                result = fn(store, *args, **kwargs)
            except BaseException as error:
                op.finish(error)
                raise
            finally:
                if token is not None:
                    OUTER.reset(token)
            outcome(result, facts)
            op.finish(None)
            return result

        return call  # type: ignore[return-value]

    return decorate


# -- what each operation was asked, and what it answered ------------------------------------


def _count(events: object) -> int | None:
    if isinstance(events, Event):
        return 1
    if isinstance(events, (list, tuple)):
        return len(events)
    return None  # an iterator: counted by the store as it takes it


def _condition_facts(facts: Facts, condition: object) -> None:
    facts["conditional"] = condition is not None
    if isinstance(condition, AppendCondition):
        facts["query_items"] = len(condition.fail_if_events_match.items)
        if condition.after is not None:
            facts["after"] = str(condition.after)


def _append_facts(config: EventStoreConfig, args: Args, kwargs: Kwargs) -> Facts:
    events = args[0] if args else kwargs.get("events")
    facts: Facts = {"operation": "append", "events": _count(events)}
    _condition_facts(facts, args[1] if len(args) > 1 else kwargs.get("condition"))
    command = kwargs.get("command")
    if isinstance(command, Command):
        facts["command_id"] = command.id
        facts["command_type"] = command.type
    if config.log_payloads and _count(events) is not None:
        facts["payload"] = payload_of([events] if isinstance(events, Event) else events)
    return facts


def _appended(position: int, facts: Facts) -> None:
    facts["position"] = position
    facts["conflict"] = False


def _check_facts(config: EventStoreConfig, args: Args, kwargs: Kwargs) -> Facts:
    facts: Facts = {"operation": "check"}
    _condition_facts(facts, args[0] if args else kwargs.get("condition"))
    return facts


def _checked(_result: None, facts: Facts) -> None:
    facts["conflict"] = False


def _project_facts(config: EventStoreConfig, args: Args, kwargs: Kwargs) -> Facts:
    projectors = args[0] if args else kwargs.get("projectors")
    after = args[1] if len(args) > 1 else kwargs.get("after")
    facts: Facts = {"operation": "project"}
    if isinstance(projectors, (list, tuple)):
        facts["projectors"] = len(projectors)
    if isinstance(after, (Head, int)):
        facts["after"] = str(after)
    return facts


def _projected(model: DecisionModel, facts: Facts) -> None:
    head = model.append_condition.after
    if isinstance(head, Head):
        facts["position"] = head.position
    facts["query_items"] = len(model.append_condition.fail_if_events_match.items)


def _taken(args: Args) -> Args:
    """An append's events as a list before anything counts them: an iterator is taken
    once (the store would make the same list of it)."""
    if args and isinstance(args[0], Iterator):
        return (list(args[0]), *args[1:])
    return args


def appending(fn: F) -> F:
    """``_Store.append``, observed."""
    return _observed(APPEND, _append_facts, _appended, prepare=_taken)(fn)


def checking(fn: F) -> F:
    """``_Store.check``, observed."""
    return _observed(CHECK, _check_facts, _checked)(fn)


def projecting(fn: F) -> F:
    """``_Store.project``, observed: the read and the batch inside it are its own."""
    return _observed(PROJECT, _project_facts, _projected, outer=True)(fn)


# -- reads -----------------------------------------------------------------------------------

Stream = Generator[Any, None, None]


def reading(fn: F) -> F:
    """``_Store._stream`` (a read's pages of events, then its head), observed from its first
    step to its end or close, if something listens; otherwise handed back as it is."""

    @functools.wraps(fn)
    def stream(
        store: Any, query: Query, head: Head | None, backwards: bool, limit: int | None
    ) -> Stream:
        inner: Generator[Any, None, None] = fn(store, query, head, backwards, limit)
        if OUTER.get() is not None:
            return inner  # a projection's read: the projection reports
        telemetry = otel.current()
        if telemetry is None and not STORE.isEnabledFor(DEBUG):
            return inner
        facts: Facts = {"operation": "read", "query_items": len(query.items)}
        if head is not None:
            facts["after"] = str(head)
        if backwards:
            facts["backwards"] = True
        if limit is not None:
            facts["limit"] = limit
        return _observed_read(store, inner, telemetry, facts)

    return stream  # type: ignore[return-value]


def _observed_read(store: Any, inner: Stream, telemetry: Any, facts: Facts) -> Stream:
    # The span is current during each step only: between two, the caller's code runs (and
    # a context attached in one step could not be detached in another). It ends with the
    # head, the read's last item (the result stops there, without a step past it), or when
    # the read fails or is closed.
    op = Operation(READ, store, store.config, facts, telemetry, current=False)
    enter = telemetry.in_context(op.span) if op.span is not None else None
    count = 0
    ended = False
    error: BaseException | None = None
    try:
        while True:
            token = enter() if enter is not None else None
            try:
                item = next(inner)
            except StopIteration:
                break
            finally:
                if token is not None:
                    telemetry.detach(token)
            if isinstance(item, Head):
                facts.update(position=item.position, events=count)
                ended = True
                op.finish(None)
            else:
                count += len(item)  # a page of events
            yield item
    except GeneratorExit:  # closed early: not a failure
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        token = enter() if enter is not None and not ended else None
        try:
            inner.close()  # releases the cursor of an early stop: its statement is the read's
        finally:
            if token is not None:
                telemetry.detach(token)
            if not ended:
                facts["events"] = count
                op.finish(error)


def read_failed(error: CrabletError) -> None:
    """A read raised ``error`` (from :class:`~sa_crablet.streams.ReadResult`, which sees
    every read): logged unless a projection around it, or its observer, did."""
    if OUTER.get() is None:
        failed(READ, {"operation": "read"}, error)


# -- projection streams ----------------------------------------------------------------------


def streaming(fn: F) -> F:
    """``_Store.project_stream``, observed: while it sets up, :data:`OUTER` tells the read
    and the batches it makes that they belong to it."""

    @functools.wraps(fn)
    def call(store: Any, *args: Any, **kwargs: Any) -> Any:
        if OUTER.get() is not None:
            return fn(store, *args, **kwargs)  # inside project(): it reports
        facts: Facts = {"operation": "project_stream"}
        op = Operation(PROJECT_STREAM, store, store.config, facts, otel.current(), span=False)
        token = OUTER.set(op)
        try:
            return fn(store, *args, **kwargs)
        except BaseException as error:
            op.finish(error)  # refused (TooManyProjectionsError), or invalid arguments
            raise
        finally:
            OUTER.reset(token)

    return call  # type: ignore[return-value]


def batches(fn: F) -> F:
    """``streams.project_events``: each step (a batch of ``every`` events, or the final
    one) a span and a DEBUG record of its own; inside ``project()``, what the projection
    reports at its end."""

    @functools.wraps(fn)
    def start(*args: Any, **kwargs: Any) -> Iterator[ProjectionProgress]:
        progress: Iterator[ProjectionProgress] = fn(*args, **kwargs)
        outer = OUTER.get()
        if outer is None:
            return progress  # not the store's
        if outer.spec is PROJECT:
            return _folded_into(outer, progress)
        return _observed_batches(outer, progress)

    return start  # type: ignore[return-value]


def _folded_into(
    outer: Operation, progress: Iterator[ProjectionProgress]
) -> Iterator[ProjectionProgress]:
    try:
        for item in progress:
            if item.model is not None:
                outer.facts["events"] = item.events
            yield item
    finally:
        close = getattr(progress, "close", None)
        if close is not None:
            close()


def _observed_batches(
    stream: Operation, progress: Iterator[ProjectionProgress]
) -> Iterator[ProjectionProgress]:
    batch = folded = 0
    try:
        while True:
            batch += 1
            facts: Facts = {"operation": "project_stream", "batch": batch}
            op = Operation(PROJECT_STREAM, stream.source, stream.config, facts, stream.telemetry)
            token = OUTER.set(stream)
            try:
                item = next(progress)
            except StopIteration:
                op.finish(None)
                return
            except BaseException as error:
                op.finish(error)
                raise
            finally:
                OUTER.reset(token)
            facts.update(
                events=item.events - folded,
                events_total=item.events,
                position=item.position,
                final=item.model is not None,
            )
            folded = item.events
            if item.model is not None:
                facts["query_items"] = len(item.model.append_condition.fail_if_events_match.items)
            op.finish(None)
            yield item
    finally:
        close = getattr(progress, "close", None)
        if close is not None:
            close()
