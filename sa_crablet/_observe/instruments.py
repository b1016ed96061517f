"""The tracer and the instruments, from OpenTelemetry's API (imported here only: see
:mod:`sa_crablet._observe.otel` for when)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any

from opentelemetry import context, metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from sa_crablet._observe.logs import Facts

SCOPE = "sa_crablet"
"""The instrumentation scope of the spans and metrics."""

# Where the OpenTelemetry semantic conventions for databases have a name, it is used; the
# rest is ours, under "sa_crablet.".
DB_SYSTEM = "db.system"  # the name before semantic conventions 1.26, still widely read
DB_SYSTEM_NAME = "db.system.name"
DB_OPERATION = "db.operation.name"
DB_NAMESPACE = "db.namespace"
ERROR_TYPE = "error.type"
ATTRIBUTE_PREFIX = "sa_crablet."

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
"""Seconds: the buckets the semantic conventions advise for database operation durations."""

_DATABASE = "_sa_crablet_database"


class Telemetry:
    """The library's tracer and metric instruments (made once, when first needed)."""

    def __init__(self) -> None:
        from sa_crablet import __version__

        self.tracer = trace.get_tracer(SCOPE, __version__)
        meter = metrics.get_meter(SCOPE, __version__)
        self.appends = meter.create_counter(
            "sa_crablet.appends", unit="{append}", description="Appends that were written"
        )
        self.events = meter.create_counter(
            "sa_crablet.events.appended", unit="{event}", description="Events written"
        )
        self.conflicts = meter.create_counter(
            "sa_crablet.conflicts",
            unit="{conflict}",
            description="Appends and checks that lost a race (ConcurrencyError)",
        )
        self.retries = meter.create_counter(
            "sa_crablet.command.retries",
            unit="{retry}",
            description="Command executions run again after a conflict",
        )
        self.duration = _histogram(meter)

    def start(
        self, name: str, facts: Facts, source: object, *, current: bool = True
    ) -> tuple[Span, object | None]:
        """A span for an operation, current from now on (unless not ``current``, or the
        tracer makes none: the API's no-op tracer). The token is :meth:`detach`'s."""
        span = self.tracer.start_span(name, kind=SpanKind.INTERNAL)
        if span.is_recording():
            span.set_attributes(attributes(facts))
            span.set_attributes(database(source))
        if not current or not span.get_span_context().is_valid:
            return span, None
        return span, context.attach(trace.set_span_in_context(span))

    @staticmethod
    def detach(token: object | None) -> None:
        if token is not None:
            context.detach(token)  # type: ignore[arg-type]

    @staticmethod
    def end(span: Span, facts: Facts, error: BaseException | None) -> None:
        if span.is_recording():
            span.set_attributes(attributes(facts))
            if error is not None:
                # The type only: an error's message or traceback may quote the statement's
                # parameters, which hold payloads (the driver's error chained to ours).
                span.set_attribute(ERROR_TYPE, type(error).__qualname__)
                span.set_status(Status(StatusCode.ERROR))
        span.end()

    @staticmethod
    def event(span: Span, name: str, facts: Facts) -> None:
        if span.is_recording():
            span.add_event(name, attributes(facts))

    def in_context(self, span: Span) -> Callable[[], object | None]:
        """``attach()`` for a span made current again and again (a read's, on each step)."""
        if not span.get_span_context().is_valid:
            return _nothing
        entered = trace.set_span_in_context(span)
        return lambda: context.attach(entered)

    def measure(
        self, source: object, operation: str, seconds: float, error: BaseException | None
    ) -> None:
        labels = metric_labels(source, operation)
        if error is not None:
            labels = {**labels, ERROR_TYPE: type(error).__qualname__}
        self.duration.record(seconds, labels)

    def appended(self, source: object, count: int) -> None:
        labels = metric_labels(source, "append")
        self.appends.add(1, labels)
        self.events.add(count, labels)

    def conflicted(self, source: object, operation: str) -> None:
        self.conflicts.add(1, metric_labels(source, operation))

    def retried(self, source: object, command_type: str) -> None:
        labels = {**metric_labels(source, "execute"), RENAMED["command_type"]: command_type}
        self.retries.add(1, labels)


def _nothing() -> None:
    return None


def _histogram(meter: metrics.Meter) -> metrics.Histogram:
    description = "Duration of the store's operations and of command executions"
    try:  # the advice came with API 1.23; the extra accepts 1.20
        return meter.create_histogram(
            "sa_crablet.operation.duration",
            unit="s",
            description=description,
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
    except TypeError:  # pragma: no cover - an API before 1.23
        return meter.create_histogram(
            "sa_crablet.operation.duration", unit="s", description=description
        )


def attributes(facts: Facts) -> dict[str, Any]:
    """A span's attributes from a record's facts (payloads never: they stay in logs)."""
    found: dict[str, Any] = {}
    for name, value in facts.items():
        if value is None or name in NOT_ON_SPANS:
            continue
        found[RENAMED.get(name) or ATTRIBUTE_PREFIX + name] = value
    return found


RENAMED = {
    "operation": DB_OPERATION,
    "command_id": "sa_crablet.command.id",
    "command_type": "sa_crablet.command.type",
}
"""Facts whose span attribute is not ``sa_crablet.<name>``."""


NOT_ON_SPANS = frozenset(
    {"payload", "command_data", "duration_ms", "threshold_ms", "error", "operation_name"}
)
"""Facts a span does not repeat: payloads (never exported), durations (a span has its own),
the error's type (``error.type``)."""


def metric_labels(source: object, operation: str) -> dict[str, str]:
    database_of = database(source)
    labels = {DB_OPERATION: operation}
    system = database_of.get(DB_SYSTEM_NAME)
    if system is not None:
        labels[DB_SYSTEM_NAME] = system
    return labels


def database(source: object) -> dict[str, str]:
    """``db.system``, ``db.system.name`` and ``db.namespace`` of a store or an executor,
    found once per object (kept on it) from its engine, if it has one."""
    known: dict[str, str] | None = getattr(source, _DATABASE, None)
    if known is not None:
        return known
    engine = engine_of(source)
    known = {}
    if engine is not None:
        name = engine.dialect.name
        known = {DB_SYSTEM: name, DB_SYSTEM_NAME: name}
        if engine.url.database:
            known[DB_NAMESPACE] = engine.url.database
    with suppress(AttributeError):  # an object without a __dict__: found again next time
        setattr(source, _DATABASE, known)
    return known


def engine_of(source: Any, depth: int = 0) -> Engine | None:
    """The engine behind a store, an executor's bind, a session or a session factory
    (their async forms too), or ``None`` when it cannot be told without a statement."""
    if isinstance(source, Engine):
        return source
    if isinstance(source, Connection):
        return source.engine
    if depth > 3 or source is None:
        return None
    if isinstance(source, Session):
        try:
            return engine_of(source.get_bind(), depth + 1)
        except Exception:  # a session bound per mapper: no single engine
            return None
    for name in ("sync_engine", "engine", "sync_session", "session", "bind"):
        found = getattr(source, name, None)
        if found is not None:
            return engine_of(found, depth + 1)
    binds = getattr(source, "kw", None)  # a sessionmaker or async_sessionmaker
    if isinstance(binds, dict):
        return engine_of(binds.get("bind"), depth + 1)
    return None
