"""Faults on a throwaway PostgreSQL cluster: backends killed mid-append, mid-read and
mid-command, COMMITs left unanswered, a restart under load (see ``benchmarks.faults``;
``python -m benchmarks.faults`` runs the same faults longer).

After each fault: nothing partial is stored (checked with plain SQL), every error the
application saw is a ``CrabletError`` or SQLAlchemy's for a dead connection, nothing hung,
and the application's next unit of work succeeds. Both execution paths, every time.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, PendingRollbackError
from sqlalchemy.orm import Session

from benchmarks.fault_kit import Ledger, judge, marked_batch
from benchmarks.fault_log import inspect_log
from benchmarks.fault_target import PATHS, Target
from benchmarks.faults import KILLS, migrated_database, run_kills
from benchmarks.pg_cluster import Cluster, throwaway_cluster, unavailable_reason
from benchmarks.restart_load import IDLE_POOL, idle_units, restart_under_load, warm_engine
from sa_crablet import (
    ConcurrencyError,
    EventStore,
    commands_table,
    events_table,
)
from tests.conftest import _require_postgres

pytestmark = pytest.mark.postgresql_only

INJECTED = {
    "lock-wait": ("lock-wait", 1),
    "lock-holder": ("lock-holder", 1),
    "mid-batch": ("mid-batch", 1),
    "mid-batch-conditional": ("mid-batch", 1),
    "commit": ("commit", 1),
    "read-first-page": ("read", 1),
    "read-in-cursor": ("read", 1),
    "projection": ("projection", 1),
    "early-stop-first-page": ("early-stop", 2),
    "early-stop-in-cursor": ("early-stop", 2),
    "handler-host-read": ("handler-host", 1),
    "handler-host-decide": ("handler-host", 1),
    "handler-sessionmaker": ("handler-managed", 1),
    "handler-engine": ("handler-managed", 1),
    "command-record": ("command-record", 1),
    "command-commit": ("command-commit", 1),
}
"""For each kill: the kind of fault it counts, and how many it must have injected."""


@pytest.fixture(scope="session")
def fault_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    reason = unavailable_reason()
    if reason is not None:
        message = f"no throwaway PostgreSQL cluster: {reason}"
        if _require_postgres(request.config):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def fault_databases(fault_cluster: Cluster) -> dict[str, str]:
    """One migrated database per execution path, shared by the kills."""
    return {path: migrated_database(fault_cluster, path) for path in PATHS}


@pytest.fixture(params=list(PATHS))
def target(request: pytest.FixtureRequest, fault_databases: dict[str, str]) -> Iterator[Target]:
    """Fresh engines for every test: no test inherits another's dead connections."""
    opened = Target.open(fault_databases[request.param], request.param)
    yield opened
    opened.close()


def assert_clean(target: Target, ledger: Ledger) -> None:
    assert ledger.unexpected == []
    log = inspect_log(target.engine, ledger)
    assert log.partial_writes == 0, log


@pytest.mark.parametrize("kill", list(KILLS))
def test_kill(target: Target, kill: str) -> None:
    ledger = Ledger()
    run_kills(target, ledger, [kill])
    assert_clean(target, ledger)
    kind, count = INJECTED[kill]
    assert ledger.injected[kind] == count
    if kind != "early-stop":  # a consumer that stopped asks nothing more: it may hear nothing
        assert ledger.errors, "the application never heard of the fault"


def test_every_kill_has_an_expectation() -> None:
    assert set(INJECTED) == set(KILLS)


def test_an_unanswered_commit_did_commit(target: Target) -> None:
    """The COMMIT-time kill lands after the commit record: the batch the application got
    an error for is stored, whole. That is why such a batch is "unknown", not failed."""
    ledger = Ledger()
    run_kills(target, ledger, ["commit"])
    assert len(ledger.unknown) == 1
    assert inspect_log(target.engine, ledger).unknown_stored == 1


@pytest.mark.parametrize("path", list(PATHS))
def test_restart_under_load(
    fault_cluster: Cluster, fault_databases: dict[str, str], path: str
) -> None:
    target = Target.open(fault_databases[path], path)
    ledger = Ledger()
    try:
        report = restart_under_load(fault_cluster, target, ledger, workers=3, seconds=2.5)
        assert_clean(target, ledger)
    finally:
        target.close()
    assert report.after_restart == (True, True, True)
    assert report.idle_failures_pre_ping == 0
    assert ledger.injected == {"restart-fast": 1}
    assert ledger.errors["OperationalError(invalidated)"] >= 1, "no work was in flight"
    assert len(ledger.acknowledged) > 3


@pytest.mark.parametrize("path", list(PATHS))
def test_idle_pool_after_restart(
    fault_cluster: Cluster,
    fault_databases: dict[str, str],
    path: str,
) -> None:
    """Without pre-ping, the first unit of work after a restart meets a dead connection;
    its error invalidates the whole pool, so the next ones succeed. With pre-ping, none
    fails."""
    url, config = fault_databases[path], PATHS[path]
    idle, pinged = warm_engine(url, False), warm_engine(url, True)
    fault_cluster.restart("fast")
    ledger = Ledger()
    assert idle_units(pinged, config, ledger) == [True] * IDLE_POOL
    assert idle_units(idle, config, ledger) == [False] + [True] * (IDLE_POOL - 1)
    assert ledger.unexpected == []


def test_judge_accepts_only_clear_errors() -> None:
    """The control of every assertion above on errors: what the judge lets through."""
    died = psycopg.OperationalError("server closed the connection unexpectedly")
    assert judge(ConcurrencyError("lost a race")) == "ConcurrencyError"
    invalidated = OperationalError("SELECT 1", {}, died, connection_invalidated=True)
    assert judge(invalidated) == "OperationalError(invalidated)"
    alive = OperationalError("SELECT 1", {}, died, connection_invalidated=False)
    assert judge(alive) is None
    assert judge(alive, server_down=True) == "OperationalError(server down)"
    serialization = psycopg.errors.SerializationFailure("could not serialize access")
    at_commit = OperationalError("COMMIT", {}, serialization, connection_invalidated=False)
    assert judge(at_commit) is None  # from the store it would have been ConcurrencyError
    assert judge(at_commit, at_commit=True) == "OperationalError(serialization failure at COMMIT)"
    assert judge(died) is None  # a raw driver error
    assert judge(AttributeError("'NoneType' object has no attribute 'cursor'")) is None
    assert judge(PendingRollbackError("roll back first")) is None


def test_log_inspection_counts_each_kind_of_damage(fault_cluster: Cluster) -> None:
    """The control of every assertion above on the log: damage planted by hand is found."""
    engine = create_engine(migrated_database(fault_cluster, "damage"))
    ledger = Ledger()
    whole, whole_events = marked_batch("Whole", ["damage:1"], 3)
    _, part_events = marked_batch("Part", ["damage:1"], 3)
    phantom, phantom_events = marked_batch("Phantom", ["damage:1"], 1)
    lost, _ = marked_batch("Lost", ["damage:1"], 2)
    try:
        with Session(engine) as session:
            store = EventStore(session)
            store.append(whole_events)
            store.append(part_events[:2])
            store.append(phantom_events)
            session.execute(
                text(
                    f"INSERT INTO {commands_table.name} (id, type, event_count, last_position) "
                    "VALUES ('empty', 'T', 2, 1)"
                )
            )
            session.execute(
                text(
                    f"INSERT INTO {events_table.name} (type, tags, command_id) "
                    "VALUES ('Orphan', ARRAY['damage:2'], 'ghost')"
                )
            )
            session.commit()
        ledger.outcome(whole, "acknowledged")
        ledger.outcome(lost, "acknowledged")
        ledger.outcome(phantom, "failed")
        log = inspect_log(engine, ledger)
    finally:
        engine.dispose()
    assert (log.partial_batches, log.lost, log.phantoms) == (1, 1, 1)
    assert (log.commands_without_events, log.events_without_command) == (1, 1)
    assert log.partial_writes == 5
