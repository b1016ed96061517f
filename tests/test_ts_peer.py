"""The TypeScript peer in the benchmark suite (``benchmarks.ts_peer``, ``benchmarks.pg_ts_peer``).

The manifest rewrite that makes the published package installable, the skips (no Node, no
registry), the report's "best peer" and its note on a skipped peer are checked without Node.
With Node and the registry (or an installation already in the cache), the driver runs tiny
blocks of S1, S2, S4 and S7 against a fresh PostgreSQL database.
"""

from __future__ import annotations

import copy
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url

from benchmarks import pg_ts_peer, report
from benchmarks.pg_suite import build_databases
from benchmarks.pg_ts_peer import TsPeerPg
from benchmarks.records import ENGINE, PEER, TS_PEER, Record, add_ratios
from benchmarks.ts_peer import install
from benchmarks.workload import (
    TS_PEER_TABLE,
    TYPES,
    EventSource,
    connect,
    course_tag,
    drop_database,
)

PUBLISHED = {
    "name": "@dcb-es/event-store-postgres",
    "version": "7.0.1",
    "type": "module",
    "exports": {".": {"types": "./dist/index.d.ts", "import": "./dist/index.js"}},
    "scripts": {"build": "tsc -p tsconfig.json", "prepublishOnly": "exit 1"},
    "dependencies": {
        "@dcb-es/event-store": "workspace:*",
        "pg": "^8.11.5",
        "pg-copy-streams": "^7.0.0",
    },
    "devDependencies": {"testcontainers": "^10.9.0"},
}
"""The fields of the peer's published manifest that the rewrite reads or changes."""


# -- installing, without Node ---------------------------------------------------------------------


def test_the_workspace_dependency_points_at_the_sibling_folder() -> None:
    published = copy.deepcopy(PUBLISHED)
    rewritten = install.rewrite_manifest(published, {install.SIBLING: "../event-store"})
    assert rewritten["dependencies"] == {
        "@dcb-es/event-store": "file:../event-store",
        "pg": "^8.11.5",
        "pg-copy-streams": "^7.0.0",
    }
    assert "devDependencies" not in rewritten and "scripts" not in rewritten
    assert rewritten["exports"] == PUBLISHED["exports"]  # what Node resolves is untouched
    assert published == PUBLISHED  # the input is left as it was


def test_a_workspace_dependency_without_a_sibling_is_refused() -> None:
    with pytest.raises(ValueError, match="@dcb-es/event-store"):
        install.rewrite_manifest(PUBLISHED, {})


def test_the_scratch_project_depends_on_both_folders_and_on_pg() -> None:
    peer = install.rewrite_manifest(PUBLISHED, {install.SIBLING: "../event-store"})
    root = install.root_manifest(peer)
    assert root["private"] is True
    assert root["dependencies"] == {
        "@dcb-es/event-store": "file:vendor/event-store",
        "@dcb-es/event-store-postgres": "file:vendor/event-store-postgres",
        "pg": "^8.11.5",
    }


def test_npm_errors_are_reduced_to_what_went_wrong() -> None:
    output = (
        "npm error code ECONNREFUSED\nnpm error syscall connect\n"
        "npm error FetchError: request to http://127.0.0.1:9/x failed\n"
        "npm error     at ClientRequest.<anonymous> (index.js:130:14)\n"
        "npm error A complete log of this run can be found in: /tmp/x.log\n"
    )
    assert install.npm_error(output) == (
        "code ECONNREFUSED / FetchError: request to http://127.0.0.1:9/x failed"
    )


def test_without_node_the_peer_is_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no node, no npm
    found = install.prepare(tmp_path / "peer")
    assert isinstance(found, install.Skipped)
    assert "node is not installed" in found.reason
    assert found.describe()["status"] == "skipped"
    assert not (tmp_path / "peer").exists()


@pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")), reason="needs node, npm")
def test_without_the_registry_the_peer_is_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")  # nothing listens there
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    found = install.prepare(tmp_path / "cache" / "peer")
    assert isinstance(found, install.Skipped)
    assert "npm pack" in found.reason and "ECONNREFUSED" in found.reason
    assert list((tmp_path / "cache").iterdir()) == []  # no half-built folder left behind


# -- the report -----------------------------------------------------------------------------------


def _record(scenario: str, contender: str, throughput: float) -> Record:
    return Record("postgresql", scenario, "", contender, "appends/s", throughput, 1, 1, 1, 1, 1)


def test_the_best_peer_is_the_faster_one_per_scenario() -> None:
    records = [
        _record("S1", ENGINE, 900),
        _record("S1", PEER, 600),
        _record("S1", TS_PEER, 1200),
        _record("S2", ENGINE, 900),
        _record("S2", PEER, 600),
    ]
    add_ratios(records)
    assert report.best_peer(records, "S1") == (0.75, TS_PEER)
    assert report.best_peer(records, "S2") == (1.5, PEER)  # the TS peer did not run
    assert report.best_peer(records, "S3") is None
    rows = {t["scenario"]: t for t in report.targets(records, "full")}
    assert rows["S1 engine-owned"]["vs_best_peer"] == f"0.75x ({TS_PEER})"
    assert rows["S1 engine-owned"]["met"] is True  # the targets stay against the peer: 1.5x


def _meta(ts_peer: dict[str, Any]) -> dict[str, Any]:
    settings: dict[str, float] = {"rounds": 1, "calls": 1, "read_calls": 1, "decide_calls": 1}
    settings |= {"writer_rounds": 1, "writer_seconds": 1.0, "writers": 8}
    return {
        "mode": "quick",
        "started": "now",
        "fill": 10,
        "settings": settings,
        "machine": {"cpu": "cpu", "cores": 2, "memory_gb": 1.0},
        "versions": {"python": "3"},
        "ts_peer": ts_peer,
    }


def test_the_report_says_why_the_ts_peer_was_skipped() -> None:
    skipped = install.Skipped("node is not installed").describe()
    text = report.markdown([_record("S1", ENGINE, 900)], _meta(skipped), [])
    assert "was **skipped** in this run: node is not installed" in text


# -- the driver, with Node and PostgreSQL ---------------------------------------------------------


@pytest.fixture(scope="module")
def installation() -> install.Installation:
    found = install.prepare()
    if isinstance(found, install.Skipped):
        pytest.skip(f"the TypeScript peer cannot run here: {found.reason}")
    return found


@pytest.fixture
def ts_store(postgres_server_url: str, installation: install.Installation) -> Iterator[TsPeerPg]:
    url = make_url(postgres_server_url)
    dsn = f"host={url.host or '127.0.0.1'} port={url.port or 5432} user={url.username}"
    if url.password:
        dsn += f" password={url.password}"
    prefix = f"sa_crablet_test_ts_{uuid.uuid4().hex[:8]}"
    names = build_databases(dsn, prefix, 200, 10, {}, [TS_PEER], installation)
    store = TsPeerPg(dsn, names[TS_PEER], installation, pool_size=2)
    try:
        yield store
    finally:
        store.close()
        drop_database(dsn, names[TS_PEER])


@pytest.mark.postgresql_only
def test_the_driver_runs_the_scenarios_blocks(ts_store: TsPeerPg) -> None:
    assert ts_store.count() == 200  # ensureInstalled's table, filled by the suite

    appended = pg_ts_peer.appender(ts_store, EventSource(1, courses=10)).run(3)
    assert (appended.calls, appended.units, len(appended.latencies_ns)) == (3, 3, 3)
    assert appended.wall_ns >= sum(appended.latencies_ns) > 0
    assert ts_store.count() == 203

    conditional = pg_ts_peer.conditional_appender(ts_store, EventSource(2, courses=10))
    assert conditional.run(2).units == 2
    assert conditional.run(2).units == 2  # the second block goes on from the first's position

    read = pg_ts_peer.reader(ts_store, EventSource(4, courses=10)).run(2)
    src = EventSource(4, courses=10)  # the courses the reader drew
    assert read.units == sum(_events_on(ts_store, course_tag(src.course())) for _ in range(2)) > 0

    (distinct, errors_a), (hot, errors_b) = pg_ts_peer.writers(ts_store, 2, 0.3, "course:hot-0")
    assert errors_a == errors_b == []
    assert distinct.units > 0 and distinct.counters["conflicts"] == 0
    assert hot.units > 0
    seen = ts_store.scope_seen("course:hot-0")  # each decision saw every earlier one
    assert seen == list(range(hot.units))


def _events_on(store: TsPeerPg, tag: str) -> int:
    """How many events of the four types carry ``tag`` (every event has one of them)."""
    with connect(store.dsn, store.dbname) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {TS_PEER_TABLE} WHERE tags @> ARRAY[%s]::text[] "
            "AND type = ANY(%s)",
            (tag, list(TYPES)),
        ).fetchone()
    assert row is not None
    return int(row[0])
