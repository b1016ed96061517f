"""OpenTelemetry: the spans and metrics of the store's operations, projections and command
executions, on every backend and API (SDK exporters in memory: see tests/telemetry.py); SQL
runs while the operation's span is current; nothing is imported while the application has
not loaded OpenTelemetry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from sa_crablet import (
    AppendCondition,
    AsyncCommandExecutor,
    AsyncEventStore,
    Command,
    CommandExecutor,
    ConcurrencyError,
    Decision,
    EngineEventStore,
    Event,
    EventStoreConfig,
    Query,
    RetryPolicy,
)
from sa_crablet.projectors import counter
from tests.helpers import run_python
from tests.hosts import async_url
from tests.telemetry import named, render, spans, totals, tracer

__all__ = ["spans"]  # the fixture, used by name

ACCOUNT = Query.of(tags=["account:a"])


def one(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = named(finished, name)
    assert len(found) == 1, [span.name for span in finished]
    return found[0]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: Any) -> int:
    return int(span.get_span_context().span_id)


@pytest.fixture
def sql_under(api_engine: Any) -> Iterator[list[tuple[str, Any]]]:
    """Each statement the engine runs, with the span current when it ran (what an
    instrumentation's ``before_cursor_execute`` listener would take as its parent)."""
    seen: list[tuple[str, Any]] = []

    def record(*args: Any) -> None:
        seen.append((str(args[2]), trace.get_current_span()))

    engine = getattr(api_engine, "sync_engine", api_engine)
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_an_append_is_a_span_with_the_database_conventions(
    store: Any, backend: str, spans: InMemorySpanExporter
) -> None:
    appends, events = totals("sa_crablet.appends"), totals("sa_crablet.events.appended")
    condition = AppendCondition(ACCOUNT, after=None)
    position = store.append([Event("Opened", ["account:a"]), Event("Noted")], condition)
    span = one(spans.get_finished_spans(), "sa_crablet.append")
    assert attributes(span) | {"db.namespace": None} == {
        "db.system": backend,
        "db.system.name": backend,
        "db.namespace": None,
        "db.operation.name": "append",
        "sa_crablet.events": 2,
        "sa_crablet.conditional": True,
        "sa_crablet.query_items": 1,
        "sa_crablet.position": position,
        "sa_crablet.conflict": False,
    }
    assert span.kind == trace.SpanKind.INTERNAL
    assert span.status.status_code == StatusCode.UNSET
    assert totals("sa_crablet.appends") == appends + 1
    assert totals("sa_crablet.events.appended") == events + 2


def test_a_conflict_is_an_error_span_and_counted(store: Any, spans: InMemorySpanExporter) -> None:
    store.append(Event("Opened", ["account:a"]))
    conflicts = totals("sa_crablet.conflicts", **{"db.operation.name": "append"})
    checks = totals("sa_crablet.conflicts", **{"db.operation.name": "check"})
    with pytest.raises(ConcurrencyError):
        store.append(Event("Opened", ["account:a"]), AppendCondition(ACCOUNT))
    with pytest.raises(ConcurrencyError):
        store.check(AppendCondition(ACCOUNT))
    failed = named(spans.get_finished_spans(), "sa_crablet.append")[-1]
    checked = one(spans.get_finished_spans(), "sa_crablet.check")
    for span in (failed, checked):
        assert span.status.status_code == StatusCode.ERROR
        assert attributes(span)["error.type"] == "ConcurrencyError"
        assert attributes(span)["sa_crablet.conflict"] is True
        assert attributes(span)["sa_crablet.conflict_position"] == 1
    assert totals("sa_crablet.conflicts", **{"db.operation.name": "append"}) == conflicts + 1
    assert totals("sa_crablet.conflicts", **{"db.operation.name": "check"}) == checks + 1


def test_the_store_spans_nest_under_the_caller_and_its_sql_under_them(
    make_store: Callable[..., Any], sql_under: list[tuple[str, Any]], spans: InMemorySpanExporter
) -> None:
    """Sync, engine-owned and async stores alike: the async one runs the sync logic in
    SQLAlchemy's greenlet bridge, which hands the task's context (the caller's span) on."""
    store = make_store(EventStoreConfig(fetch_size=1))
    with tracer().start_as_current_span("caller") as caller:
        store.append([Event("Opened", ["account:a"]), Event("Opened", ["account:a"])])
        store.check(AppendCondition(ACCOUNT, after=2))
        assert len(list(store.read(ACCOUNT))) == 2
        store.project([counter("n", ACCOUNT)])
    finished = spans.get_finished_spans()
    ours = {span_id(span): span for span in finished if span.name.startswith("sa_crablet.")}
    assert {span.name for span in ours.values()} == {
        "sa_crablet.append",
        "sa_crablet.check",
        "sa_crablet.read",
        "sa_crablet.project",
    }
    assert {parent_of(span) for span in ours.values()} == {span_id(caller)}
    assert sql_under, "no statement seen"
    for statement, current in sql_under:
        assert span_id(current) in ours, statement


def test_a_read_span_lasts_until_the_read_is_exhausted_or_closed(
    make_store: Callable[..., Any], spans: InMemorySpanExporter
) -> None:
    store = make_store(EventStoreConfig(fetch_size=1))
    store.append([Event("Opened", ["account:a"]) for _ in range(3)])
    read = store.read(ACCOUNT)
    next(read)
    assert not named(spans.get_finished_spans(), "sa_crablet.read")
    assert len(list(read)) == 2
    done = one(spans.get_finished_spans(), "sa_crablet.read")
    assert (
        attributes(done).items()
        >= {
            "db.operation.name": "read",
            "sa_crablet.query_items": 1,
            "sa_crablet.events": 3,
            "sa_crablet.position": 3,
        }.items()
    )
    early = store.read(ACCOUNT, after=1)
    next(early)
    early.close()
    stopped = named(spans.get_finished_spans(), "sa_crablet.read")[-1]
    assert attributes(stopped)["sa_crablet.events"] == 1
    assert "sa_crablet.position" not in attributes(stopped)  # no head: it did not finish


def test_a_projection_is_one_span_and_a_stream_a_span_per_batch(
    store: Any, spans: InMemorySpanExporter
) -> None:
    store.append([Event("Opened", ["account:a"]) for _ in range(5)])
    spans.clear()
    model = store.project([counter("n", ACCOUNT)])
    assert model.states == {"n": 5}
    (project,) = spans.get_finished_spans()  # its read is its own: no span of the read
    assert (project.name, attributes(project)["sa_crablet.events"]) == ("sa_crablet.project", 5)
    assert attributes(project)["sa_crablet.position"] == 5
    spans.clear()
    progress = list(store.project_stream([counter("n", ACCOUNT)], every=2))
    assert [p.events for p in progress] == [2, 4, 5]
    batches = spans.get_finished_spans()
    assert [span.name for span in batches] == ["sa_crablet.project_stream"] * 3
    assert [
        (a["sa_crablet.batch"], a["sa_crablet.events"], a["sa_crablet.final"])
        for a in map(attributes, batches)
    ] == [(1, 2, False), (2, 2, False), (3, 1, True)]


def opened_elsewhere(engine: Engine) -> None:
    """A competing writer, outside the command's trace (a context of its own)."""
    token = context.attach(context.Context())
    try:
        EngineEventStore(engine).append(Event("Opened", ["account:a"]))
    finally:
        context.detach(token)


def deposit(engine: Engine, runs: list[int]) -> Callable[[Any, Command], Decision]:
    """A handler that loses the race on its first run."""

    def handle(store: Any, command: Command) -> Decision:
        model = store.project([counter("n", ACCOUNT)])
        runs.append(1)
        if len(runs) == 1:
            opened_elsewhere(engine)
        return Decision(Event("Deposited", ["account:a"]), model.append_condition)

    return handle


def test_a_command_execution_is_a_span_tree_with_its_retries(
    engine: Engine, backend: str, spans: InMemorySpanExporter
) -> None:
    retries = totals("sa_crablet.command.retries", **{"sa_crablet.command.type": "Deposit"})
    executor = CommandExecutor(engine, retry=RetryPolicy(attempts=3, backoff=0.001))
    result = executor.execute(Command("Deposit", id="deposit-1"), deposit(engine, []))
    assert result.attempts == 2
    finished = spans.get_finished_spans()
    execute = one(finished, "sa_crablet.execute")
    assert attributes(execute) | {"db.namespace": None} == {
        "db.system": backend,
        "db.system.name": backend,
        "db.namespace": None,
        "db.operation.name": "execute",
        "sa_crablet.command.id": "deposit-1",
        "sa_crablet.command.type": "Deposit",
        "sa_crablet.position": result.position,
        "sa_crablet.events": 1,
        "sa_crablet.attempts": 2,
        "sa_crablet.retries": 1,
        "sa_crablet.duplicate": False,
        "sa_crablet.conflict": False,
    }
    (retry,) = execute.events
    assert (
        retry.name == "sa_crablet.retry" and dict(retry.attributes or {})["sa_crablet.attempt"] == 1
    )
    tree = render(finished, execute).splitlines()
    assert [line.split(" [")[0] for line in tree] == [
        "sa_crablet.execute",
        "  (event) sa_crablet.retry",
        "  sa_crablet.project",
        "  sa_crablet.append",
        "  sa_crablet.project",
        "  sa_crablet.append",
    ]
    assert "sa_crablet.conflict=True" in tree[3] and "sa_crablet.conflict=False" in tree[5]
    assert totals("sa_crablet.command.retries", **{"sa_crablet.command.type": "Deposit"}) == (
        retries + 1
    )
    assert totals("sa_crablet.operation.duration", **{"db.operation.name": "execute"}) >= 1


@pytest.mark.parametrize("driver", ["default", "asyncpg"])
def test_an_async_command_execution_nests_its_store_spans(
    engine: Engine, backend: str, driver: str, spans: InMemorySpanExporter
) -> None:
    """The span is current in the task; the handler's store calls run in the greenlet
    bridge and still see it (SQLAlchemy hands the task's context to the greenlet)."""
    if backend == "sqlite" and driver == "asyncpg":
        pytest.skip("asyncpg is PostgreSQL's")
    api = (
        "aiosqlite" if backend == "sqlite" else ("psycopg-async" if driver == "default" else driver)
    )

    async def handle(store: AsyncEventStore, command: Command) -> Decision:
        model = await store.project([counter("n", ACCOUNT)])
        return Decision(Event("Deposited", ["account:a"]), model.append_condition)

    async def main() -> None:
        async_engine = create_async_engine(async_url(engine, api), poolclass=NullPool)
        try:
            with tracer().start_as_current_span("request"):
                await AsyncCommandExecutor(async_engine).execute(Command("Deposit"), handle)
                async with AsyncSession(async_engine) as session:
                    await AsyncEventStore(session).read(ACCOUNT).all()
        finally:
            await async_engine.dispose()

    asyncio.run(main())
    finished = spans.get_finished_spans()
    request = one(finished, "request")
    names = [line.split(" [")[0] for line in render(finished, request).splitlines()]
    assert names == [
        "request",
        "  sa_crablet.execute",
        "    sa_crablet.project",
        "    sa_crablet.append",
        "  sa_crablet.read",
    ]


APPEND_ON_SQLITE = """
    import sa_crablet
    from sa_crablet import EngineEventStore, Event, create_sqlite_engine
    engine = create_sqlite_engine(":memory:")
    sa_crablet.create_schema(engine)
    EngineEventStore(engine).append(Event("Opened", ["account:a"]))
    list(EngineEventStore(engine).read(sa_crablet.Query.all()))
"""


def test_nothing_of_opentelemetry_is_imported_by_the_library() -> None:
    """Installed or not, the API stays out of ``sys.modules`` until the application loads
    it: the store only looks for it there."""
    completed = run_python(
        APPEND_ON_SQLITE
        + """
    import sys
    loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
    assert not loaded, loaded
    """
    )
    assert completed.returncode == 0, completed.stderr


def test_the_store_runs_where_opentelemetry_cannot_be_imported() -> None:
    completed = run_python(
        """
    import sys
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError(name)
    sys.meta_path.insert(0, Blocker())
    """
        + APPEND_ON_SQLITE
    )
    assert completed.returncode == 0, completed.stderr


def test_the_api_without_an_sdk_makes_no_spans_and_no_errors() -> None:
    completed = run_python(
        """
    from opentelemetry import metrics, trace
    """
        + APPEND_ON_SQLITE
        + """
    from sa_crablet._observe import otel
    assert otel.current() is not None  # found, and its no-op tracer used
    """
    )
    assert completed.returncode == 0, completed.stderr
