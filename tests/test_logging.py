"""Logging: what the store, the executors, projections and migrations log, at which level,
with which ``crablet_*`` facts; silent by default; payloads never, unless asked."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

import sa_crablet
from sa_crablet import (
    AppendCondition,
    Command,
    CommandExecutor,
    ConcurrencyError,
    Decision,
    EngineEventStore,
    Event,
    EventStore,
    EventStoreConfig,
    OperationTimeoutError,
    Query,
    RetryPolicy,
    TooManyAppendsError,
    TooManyProjectionsError,
    ValidationError,
    fail_if_exists,
)
from sa_crablet.migrate import downgrade
from sa_crablet.projectors import counter
from tests.helpers import in_thread, run_python

ACCOUNT = Query.of(tags=["account:a"])
SECRET = "SECRET-PAYLOAD-7f3a"
"""A string only payloads hold: it must appear in no record."""


def facts(record: logging.LogRecord) -> dict[str, Any]:
    return {k[len("crablet_") :]: v for k, v in vars(record).items() if k.startswith("crablet_")}


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every record of the ``sa_crablet`` loggers during the test, DEBUG and up."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep(logging.DEBUG)
    root = logging.getLogger("sa_crablet")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield seen
    root.removeHandler(handler)
    root.setLevel(level)


def has(record: logging.LogRecord, **expected: Any) -> bool:
    """Whether the record carries these facts (and maybe more)."""
    return facts(record).items() >= expected.items()


def of(records: list[logging.LogRecord], logger: str, level: int) -> list[logging.LogRecord]:
    return [r for r in records if r.name == logger and r.levelno == level]


def test_a_conflict_is_an_info_record_with_its_facts(
    store: Any, records: list[logging.LogRecord]
) -> None:
    store.append(Event("Opened", ["account:a"]))
    with pytest.raises(ConcurrencyError):
        store.append(
            [Event("Opened", ["account:a"]), Event("Noted")], AppendCondition(ACCOUNT, after=0)
        )
    (conflict,) = of(records, "sa_crablet.store", logging.INFO)
    assert conflict.getMessage() == (
        "append conflicted: a matching event was appended after the condition's head"
    )
    assert has(
        conflict,
        operation="append",
        events=2,
        conditional=True,
        query_items=1,
        after="0",
        conflict=True,
        conflict_position=1,
        error="ConcurrencyError",
    )
    assert isinstance(facts(conflict)["duration_ms"], float)


def test_operations_are_debug_records(store: Any, records: list[logging.LogRecord]) -> None:
    position = store.append([Event("Opened", ["account:a"]) for _ in range(3)])
    store.check(AppendCondition(ACCOUNT, after=position))
    assert len(list(store.read(ACCOUNT))) == 3
    store.project([counter("n", ACCOUNT)])
    list(store.project_stream([counter("n", ACCOUNT)], every=2))
    debug = [(r.name, facts(r)["operation"]) for r in records if r.levelno == logging.DEBUG]
    assert debug == [
        ("sa_crablet.store", "append"),
        ("sa_crablet.store", "check"),
        ("sa_crablet.store", "read"),
        ("sa_crablet.store", "project"),  # its read and its one batch are its own
        ("sa_crablet.projections", "project_stream"),
        ("sa_crablet.projections", "project_stream"),
    ]
    append, _check, read, project, first, last = (facts(r) for r in records)
    assert (append["events"], append["position"], append["conflict"]) == (3, 3, False)
    assert (read["events"], read["position"], read["query_items"]) == (3, 3, 1)
    assert (project["events"], project["position"]) == (3, 3)
    assert (first["batch"], first["events"], last["batch"], last["events"]) == (1, 2, 2, 1)
    assert last["final"] is True


def opened_elsewhere(engine: Engine) -> None:
    EngineEventStore(engine).append(Event("Opened", ["account:a"]))


def racing(engine: Engine, losses: int) -> Callable[[Any, Command], Decision]:
    """A handler that loses the race on its first ``losses`` runs."""
    runs = []

    def handle(store: Any, command: Command) -> Decision:
        model = store.project([counter("n", ACCOUNT)])
        runs.append(1)
        if len(runs) <= losses:
            opened_elsewhere(engine)
        return Decision(Event("Deposited", ["account:a"], {"note": SECRET}), model.append_condition)

    return handle


def test_a_retried_command_logs_each_lost_race(
    engine: Engine, records: list[logging.LogRecord]
) -> None:
    executor = CommandExecutor(engine, retry=RetryPolicy(attempts=3, backoff=0.001))
    result = executor.execute(Command("Deposit", {"note": SECRET}, id="d-1"), racing(engine, 1))
    assert result.attempts == 2
    (retry,) = of(records, "sa_crablet.executor", logging.INFO)
    assert retry.getMessage().startswith("command Deposit (d-1) lost a race on attempt 1:")
    assert has(retry, operation="execute", command_id="d-1", command_type="Deposit", attempt=1)
    assert 0 <= facts(retry)["delay_ms"] <= 1
    (conflict,) = of(records, "sa_crablet.store", logging.INFO)
    assert facts(conflict)["command_id"] == "d-1"
    (done,) = of(records, "sa_crablet.executor", logging.DEBUG)
    assert has(done, attempts=2, retries=1, duplicate=False)


def test_a_command_that_keeps_losing_gives_up_with_a_warning(
    engine: Engine, records: list[logging.LogRecord]
) -> None:
    executor = CommandExecutor(engine, retry=RetryPolicy(attempts=2, backoff=0))
    with pytest.raises(ConcurrencyError):
        executor.execute(Command("Deposit", id="d-2"), racing(engine, 5))
    (gave_up,) = of(records, "sa_crablet.executor", logging.WARNING)
    assert has(gave_up, attempts=2, command_id="d-2")
    assert len(of(records, "sa_crablet.executor", logging.INFO)) == 1  # one retry


def test_a_duplicate_command_is_an_info_record(
    engine: Engine, records: list[logging.LogRecord]
) -> None:
    executor = CommandExecutor(engine)
    command = Command("Deposit", id="d-3")
    executor.execute(command, racing(engine, 0))
    assert executor.execute(command, racing(engine, 0)).duplicate
    (duplicate,) = of(records, "sa_crablet.executor", logging.INFO)
    assert "was executed before" in duplicate.getMessage()
    assert facts(duplicate)["duplicate"] is True


QUICK = EventStoreConfig(lock_timeout=0.2)


def test_a_timeout_is_a_warning(engine: Engine, records: list[logging.LogRecord]) -> None:
    holder = Session(engine)
    EventStore(holder).append(Event("A", ["k:1"]), fail_if_exists("k:1"))  # holds its lock
    try:
        with Session(engine) as other, pytest.raises(OperationTimeoutError):
            EventStore(other, QUICK).append(Event("A", ["k:1"]), fail_if_exists("k:1"))
    finally:
        holder.rollback()
        holder.close()
    (timeout,) = of(records, "sa_crablet.store", logging.WARNING)
    assert timeout.getMessage() == "append timed out: lock_timeout expired"
    assert has(timeout, operation="append", setting="lock_timeout", error="OperationTimeoutError")


def test_fail_fast_refusals_are_warnings(
    make_store: Callable[..., Any], engine: Engine, records: list[logging.LogRecord]
) -> None:
    one_of_each = EventStoreConfig(max_concurrent_projections=1, max_concurrent_appends=1)
    store = make_store(one_of_each)
    stream = store.project_stream([counter("n", ACCOUNT)])
    with pytest.raises(TooManyProjectionsError):
        store.project([counter("n", ACCOUNT)])
    stream.close()
    (refused,) = of(records, "sa_crablet.store", logging.WARNING)
    assert refused.getMessage() == (
        "project refused: max_concurrent_projections=1 operations are running already"
    )
    assert has(refused, operation="project", limit=1)

    # An append that holds its slot (stopped in its first statement) refuses the next one.
    entered, release = threading.Event(), threading.Event()

    def hold(*_: Any) -> None:
        if threading.current_thread() is not threading.main_thread() and not entered.is_set():
            entered.set()
            release.wait(30)

    event.listen(engine, "before_cursor_execute", hold)
    try:
        thread, _ = in_thread(lambda: EngineEventStore(engine, one_of_each).append(Event("A")))
        assert entered.wait(30)
        with pytest.raises(TooManyAppendsError):
            EngineEventStore(engine, one_of_each).append(Event("B"))
        release.set()
        thread.join(30)
    finally:
        release.set()
        event.remove(engine, "before_cursor_execute", hold)
    refusals = of(records, "sa_crablet.store", logging.WARNING)
    assert has(refusals[-1], operation="append", limit=1)


def test_slow_operations_are_warnings(
    make_store: Callable[..., Any], records: list[logging.LogRecord]
) -> None:
    store = make_store(EventStoreConfig(slow_operation_threshold=1e-9))
    store.append(Event("Opened", ["account:a"]))
    store.project([counter("n", ACCOUNT)])
    slow = of(records, "sa_crablet.store", logging.WARNING)
    assert [facts(r)["operation"] for r in slow] == ["append", "project"]
    assert slow[0].getMessage().startswith("slow append: ")
    assert facts(slow[0])["threshold_ms"] == 0.0
    quiet = make_store(EventStoreConfig(slow_operation_threshold=None))
    quiet.append(Event("Opened", ["account:a"]))
    assert len(of(records, "sa_crablet.store", logging.WARNING)) == 2


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "1", True])
def test_the_slow_threshold_is_validated(value: object) -> None:
    with pytest.raises(ValidationError) as error:
        EventStoreConfig(slow_operation_threshold=value)  # type: ignore[arg-type]
    assert error.value.field == "slow_operation_threshold"


def test_log_payloads_is_a_bool() -> None:
    with pytest.raises(ValidationError) as error:
        EventStoreConfig(log_payloads=1)  # type: ignore[arg-type]
    assert error.value.field == "log_payloads"


def test_migrations_log_their_runs(tmp_path: Path, records: list[logging.LogRecord]) -> None:
    engine = sa_crablet.create_sqlite_engine(str(tmp_path / "events.sqlite3"))
    sa_crablet.upgrade(engine)
    downgrade(engine, "0002_commands")
    engine.dispose()
    runs = of(records, "sa_crablet.migrations", logging.INFO)
    assert [(facts(r)["operation"], facts(r)["from_revision"]) for r in runs] == [
        ("upgrade", "base"),
        ("downgrade", "0005_exact_payloads"),
    ]
    assert facts(runs[1])["to_revision"] == "0002_commands" and facts(runs[1])["steps"] == 3
    assert runs[0].getMessage().startswith("upgrade from base to 0005_exact_payloads: 5 steps")
    steps = of(records, "sa_crablet.migrations", logging.DEBUG)
    assert len(steps) == 8


def everything_said(records: list[logging.LogRecord]) -> str:
    return "\n".join(f"{r.getMessage()} {r.msg} {r.args!r} {vars(r)!r}" for r in records)


def exercise(engine: Engine, store: Any) -> None:
    """Every kind of record: operations, a conflict, a retry, a duplicate, projections."""
    payload = Event("Opened", ["account:a"], {"note": SECRET}, {"by": SECRET})
    store.append([payload])
    with pytest.raises(ConcurrencyError):
        store.append([payload], AppendCondition(ACCOUNT))
    list(store.read(ACCOUNT))
    store.project([counter("n", ACCOUNT)])
    list(store.project_stream([counter("n", ACCOUNT)], every=1))
    executor = CommandExecutor(engine, retry=RetryPolicy(attempts=3, backoff=0))
    command = Command("Deposit", {"note": SECRET}, {"by": SECRET}, id="d-4")
    executor.execute(command, racing(engine, 1))
    executor.execute(command, racing(engine, 0))


def test_payloads_are_never_logged(engine: Engine, records: list[logging.LogRecord]) -> None:
    exercise(engine, EngineEventStore(engine))
    assert {r.levelno for r in records} >= {logging.DEBUG, logging.INFO}
    assert SECRET not in everything_said(records)
    assert "account:a" not in everything_said(records)  # nor tags


def test_payloads_are_logged_when_asked(engine: Engine, records: list[logging.LogRecord]) -> None:
    store = EngineEventStore(engine, EventStoreConfig(log_payloads=True))
    store.append(Event("Opened", ["account:a"], {"note": SECRET}))
    (append,) = records
    assert facts(append)["payload"] == [
        {"type": "Opened", "tags": ["account:a"], "data": {"note": SECRET}, "metadata": None}
    ]


def test_silent_when_the_application_configured_no_logging() -> None:
    """A WARNING (a slow append) goes nowhere: not to Python's last-resort handler."""
    completed = run_python(
        """
        import logging
        import sa_crablet
        from sa_crablet import EngineEventStore, Event, EventStoreConfig
        engine = sa_crablet.create_sqlite_engine(":memory:")
        sa_crablet.create_schema(engine)
        seen = []
        logging.getLogger("sa_crablet").addFilter(lambda r: seen.append(r) or True)
        logging.getLogger("sa_crablet.store").addFilter(lambda r: seen.append(r) or True)
        slow = EventStoreConfig(slow_operation_threshold=1e-9)
        EngineEventStore(engine, slow).append(Event("A"))
        assert [r.levelname for r in seen] == ["WARNING"], seen
        """
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
