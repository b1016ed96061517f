"""The consistency checker (``benchmarks.consistency``), run briefly on both backends.

Many workers make random decisions in varied host transactions; afterwards the whole
stored log is checked against what each of them read, appended and was told (see
``docs/testing.md``). The runs assert no violation and a floor of work done; two controls
(check-then-insert without the store's protection, heads carried as bare positions) must
produce violations, so the checker is shown able to fail.

The verifier itself is also run on small hand-written histories, one per kind of violation.
"""

from __future__ import annotations

from array import array

import pytest

from benchmarks.consistency import Settings, Summary, run
from benchmarks.consistency.history import (
    AUTOCOMMIT,
    CARRIED_HEAD,
    COMMITTED,
    ROLLED_BACK,
    AppendRecord,
    CheckRecord,
    Decision,
    Op,
    ReadRecord,
    Unit,
)
from benchmarks.consistency.stored import StoredEvent
from benchmarks.consistency.verify import verify
from sa_crablet import Head, Query
from sa_crablet.query import Snapshot

PG_SECONDS = 4.0
SHORT_SECONDS = 3.0
CORRECT_PG_HOSTS = ("read-committed/*", "repeatable-read/*", "serializable/*", "autocommit/*")
"""Every PostgreSQL host."""


def require_work(summary: Summary, *, unconditional: bool) -> None:
    """A floor of work done, so that "no violation" means something."""
    figures = {
        "events checked": (summary.events_checked, 40),
        "conditional appends accepted": (summary.conditional_accepted, 15),
        "conditional appends refused": (summary.conditional_refused, 15),
        "checks passed": (summary.checks_passed, 3),
        # On SQLite few reads are overtaken before their check: no floor there.
        "checks refused": (summary.checks_refused, 1 if summary.backend == "postgresql" else 0),
        "reads": (summary.reads, 60),
    }
    if unconditional:
        figures["unconditional appends accepted"] = (summary.unconditional_accepted, 15)
    short = {name: f"{v} < {floor}" for name, (v, floor) in figures.items() if v < floor}
    unused = [host for host in summary.hosts if not summary.by_host.get(host)]
    if any(host.endswith("/core-listener") for host in summary.hosts) and not (
        summary.core_statements
    ):
        short["core statements seen"] = "0: the core-listener hosts did not go through Core"
    if short or unused:
        pytest.fail(f"too little work: {short}, hosts unused: {unused}\n{summary.render()}")


def assert_consistent(summary: Summary) -> None:
    assert summary.violation_count == 0, summary.render()


# -- PostgreSQL ------------------------------------------------------------------------------------


def test_postgresql_conditional_decisions_in_every_correct_host(postgres_server_url: str) -> None:
    settings = Settings(seconds=PG_SECONDS, seed=1, hosts=CORRECT_PG_HOSTS, unconditional=False)
    summary = run(settings, url=postgres_server_url)
    assert summary.workers == 20
    require_work(summary, unconditional=False)
    assert_consistent(summary)


def test_postgresql_every_host_and_every_kind_of_append(postgres_server_url: str) -> None:
    summary = run(Settings(seconds=PG_SECONDS, seed=2), url=postgres_server_url)
    require_work(summary, unconditional=True)
    assert_consistent(summary)


def test_postgresql_unconditional_appends_in_flight(postgres_server_url: str) -> None:
    settings = Settings(seconds=PG_SECONDS, seed=3, hosts=CORRECT_PG_HOSTS)
    summary = run(settings, url=postgres_server_url)
    require_work(summary, unconditional=True)
    assert_consistent(summary)


def test_postgresql_autocommit_through_core(postgres_server_url: str) -> None:
    settings = Settings(
        seconds=PG_SECONDS,
        seed=4,
        hosts=("autocommit/core-*", "read-committed/direct"),
        unconditional=False,
    )
    summary = run(settings, url=postgres_server_url)
    require_work(summary, unconditional=False)
    assert_consistent(summary)


def test_postgresql_paged_reads(postgres_server_url: str) -> None:
    """Reads longer than a page of 5 go on through a server-side cursor; their heads keep
    the first page's snapshot."""
    settings = Settings(
        seconds=SHORT_SECONDS,
        seed=9,
        hosts=("read-committed/*", "repeatable-read/*", "serializable/*"),
        unconditional=False,
        fetch_size=5,
    )
    summary = run(settings, url=postgres_server_url)
    require_work(summary, unconditional=False)
    assert_consistent(summary)


def test_postgresql_autocommit_paged_reads(postgres_server_url: str) -> None:
    settings = Settings(
        seconds=SHORT_SECONDS,
        seed=10,
        hosts=("autocommit/direct", "read-committed/direct"),
        unconditional=False,
        fetch_size=5,
    )
    summary = run(settings, url=postgres_server_url)
    require_work(summary, unconditional=False)
    assert_consistent(summary)


def test_control_check_then_insert_is_caught(postgres_server_url: str) -> None:
    """Re-read, and if nothing is new append unconditionally: two such hosts both see
    nothing and both commit. The checker must say so."""
    settings = Settings(
        seconds=SHORT_SECONDS, seed=5, hosts=CORRECT_PG_HOSTS, decider="naive", unconditional=False
    )
    summary = run(settings, url=postgres_server_url)
    assert summary.violations_of("lost-condition", decider="naive"), summary.render()


def test_control_bare_position_heads_are_caught(postgres_server_url: str) -> None:
    """``after=head.position`` (and incremental reads after a bare position) while
    unconditional writers are in flight: events committed below the position after the
    read are never seen. The checker must say so. The race needs a writer's commit to land
    inside a reader's window, which a loaded machine can make rare in one short run: up to
    four runs (new seeds), and the checker must catch it in one of them."""
    for seed in range(6, 10):
        settings = Settings(
            seconds=SHORT_SECONDS, seed=seed, hosts=CORRECT_PG_HOSTS, decider="position"
        )
        summary = run(settings, url=postgres_server_url)
        lost = summary.violations_of("lost-condition", decider="position")
        gaps = summary.violations_of("read-gap")
        if lost or gaps:
            return
    raise AssertionError(summary.render())


# -- SQLite ----------------------------------------------------------------------------------------


def test_sqlite_decisions() -> None:
    settings = Settings(
        backend="sqlite",
        seconds=SHORT_SECONDS,
        seed=7,
        hosts=("sqlite/deferred", "sqlite/begin-immediate"),
    )
    summary = run(settings)
    assert summary.workers == 4
    require_work(summary, unconditional=True)
    assert_consistent(summary)


def test_sqlite_host_issued_begin() -> None:
    summary = run(Settings(backend="sqlite", seconds=SHORT_SECONDS, seed=8))
    require_work(summary, unconditional=True)
    assert_consistent(summary)


# -- the verifier on hand-written histories --------------------------------------------------------

QUERY = Query.of(tags=["g"])


def event(position: int, attempt: str, index: int = 0, xid: int | None = None) -> StoredEvent:
    return StoredEvent(position, "T", frozenset({"g"}), xid, attempt, index)


def append(
    attempt: str, count: int, last: int | None, decision: Decision | None = None, **times: float
) -> AppendRecord:
    outcome = "ok" if last is not None else "refused"
    return AppendRecord(
        attempt, count, decision, outcome, last, times.get("start", 1.0), times.get("end", 1.1)
    )


def unit(id: str, *ops: Op, outcome: str = COMMITTED, begin: float = 0.0) -> Unit:
    done = begin + 2.0 if outcome == COMMITTED else None
    return Unit(id, 0, "h", ops, outcome, begin, None if done is None else done - 0.1, done)


def read(head: Head, *positions: int, start: float = 1.0) -> ReadRecord:
    return ReadRecord("read", QUERY, None, head, array("q", positions), start, start + 0.1)


def kinds(units: list[Unit], events: list[StoredEvent], backend: str = "postgresql") -> list[str]:
    return sorted(v.kind for v in verify(units, events, backend).violations)


def test_verifier_passes_a_consistent_history() -> None:
    head = Head(1, Snapshot(10, 11, (), None))
    decision = Decision(QUERY, head, CARRIED_HEAD)
    units = [
        unit("a", append("a.1", 1, 1)),
        unit("b", read(head, 1, start=3.0), append("b.1", 2, 3, decision), begin=3.0),
    ]
    events = [event(1, "a.1", xid=10), event(2, "b.1", 0, 12), event(3, "b.1", 1, 12)]
    assert kinds(units, events) == []


def test_verifier_catches_a_condition_over_an_in_flight_event() -> None:
    # Event 1's transaction (10) was in flight when the head was read: not covered.
    head = Head(2, Snapshot(10, 12, (10,), None))
    decision = Decision(QUERY, head, CARRIED_HEAD)
    units = [
        unit("a", append("a.1", 1, 1)),
        unit("c", append("c.1", 1, 2)),
        unit("b", read(head, 2), append("b.1", 1, 3, decision)),
    ]
    events = [event(1, "a.1", xid=10), event(2, "c.1", xid=11), event(3, "b.1", xid=12)]
    assert kinds(units, events) == ["lost-condition"]


def test_verifier_catches_a_read_that_skips_a_covered_event() -> None:
    units = [unit("a", append("a.1", 2, 2)), unit("b", read(Head(2), 2, start=0.5))]
    assert kinds(units, [event(1, "a.1", 0), event(2, "a.1", 1)], "sqlite") == ["read-gap"]


def test_verifier_catches_a_read_that_misses_an_earlier_commit() -> None:
    # Committed at 2.0 (its unit's commit_done); the read's transaction began at 5.0.
    units = [unit("a", append("a.1", 1, 1)), unit("b", read(Head(0), start=5.0), begin=5.0)]
    assert kinds(units, [event(1, "a.1")], "sqlite") == ["stale-read"]


def test_verifier_catches_a_check_that_misses_an_earlier_commit() -> None:
    decision = Decision(QUERY, Head(0), CARRIED_HEAD)
    passed = CheckRecord(decision, True, 5.0, 5.1)
    units = [unit("a", append("a.1", 1, 1)), unit("b", passed, begin=5.0)]
    assert kinds(units, [event(1, "a.1")], "sqlite") == ["check-missed"]


def test_verifier_catches_stored_events_of_refused_and_rolled_back_appends() -> None:
    units = [
        unit("a", append("a.1", 1, None)),
        unit("b", append("b.1", 1, 2), outcome=ROLLED_BACK),
    ]
    assert kinds(units, [event(1, "a.1"), event(2, "b.1"), event(3, "x.1")]) == ["phantom"] * 3


def test_verifier_catches_a_partial_or_misordered_batch() -> None:
    units = [
        unit("a", append("a.1", 2, 2)),
        unit("b", append("b.1", 2, 4), outcome=AUTOCOMMIT),
    ]
    events = [event(1, "a.1", 0), event(3, "b.1", 1), event(4, "b.1", 0)]
    assert kinds(units, events) == ["batch", "missing"]
