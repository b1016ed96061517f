"""The benchmark suite: ``python -m benchmarks`` (full) or ``python -m benchmarks --quick``.

Runs scenarios S1-S8 of the performance brief for sa_crablet, a hand-written psycopg 3
floor and the ``eventsourcing`` DCB recorder (the peer), side by side on the same
PostgreSQL, with sa_crablet's ``AsyncEventStore`` on psycopg and on asyncpg in S1, S2, S4,
S6 and S7, plus sa_crablet on SQLite against a raw ``sqlite3`` floor. Where Node and the npm
registry are at hand, the TypeScript peer ``@dcb-es/event-store-postgres`` joins S1-S7
(installed once into a cache folder, see ``benchmarks.ts_peer.install``); without them it
is skipped, and the report says why. Writes
``benchmarks/results/benchmark[_quick].{json,md}`` and, in full mode with matplotlib,
PNG charts. See ``docs/performance.md`` for the method and the findings.

The PostgreSQL server is found through ``--dsn`` (libpq key=value form), else the
``SA_CRABLET_BENCH_DSN`` environment variable, else ``host=127.0.0.1 port=5432
user=postgres``. The suite creates and drops its own databases (names start with
``--prefix``); the user needs CREATEDB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg

import sa_crablet
from benchmarks import pg_suite, report, scale, sqlite_suite
from benchmarks.records import FULL, QUICK, SQLITE_FLOOR, Record, Settings, add_ratios
from benchmarks.ts_peer import install

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres"
RESULTS = Path(__file__).resolve().parent / "results"
PG_SETTINGS = (
    "shared_buffers",
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "autovacuum",
    "work_mem",
    "effective_cache_size",
    "max_connections",
    "jit",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (~2 minutes)")
    parser.add_argument("--dsn", default=os.environ.get("SA_CRABLET_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--prefix", default="sa_crablet_bench", help="database name prefix")
    parser.add_argument(
        "--only",
        default="postgresql,scale,sqlite",
        help="comma-separated parts to run: postgresql, scale, sqlite",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(pg_suite.SCENARIOS),
        help="comma-separated PostgreSQL scenarios to run: " + ", ".join(pg_suite.SCENARIOS),
    )
    parser.add_argument("--fill", type=int, help="events per PostgreSQL store (default by mode)")
    parser.add_argument(
        "--ts-peer-dir",
        type=Path,
        default=None,
        help="where the TypeScript peer is installed and reused (default: "
        f"${install.DIRECTORY_ENV}, else ~/.cache/sa_crablet-bench/ts-peer-{install.PEER_VERSION})",
    )
    parser.add_argument(
        "--no-ts-peer", action="store_true", help="leave the TypeScript peer out of this run"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--stem", help="results file name stem (default by mode)")
    parser.add_argument("--revision", help="the sa_crablet revision to record (default: git)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when an S7b invariant is violated or a writer (thread or task) failed",
    )
    args = parser.parse_args(argv)
    unknown = set(_listed(args.scenarios)) - set(pg_suite.SCENARIOS)
    if unknown:
        parser.error(f"--scenarios: unknown {', '.join(sorted(unknown))}")
    return args


def _listed(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    memory_gb = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = int(line.split()[1]) / 2**20
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": memory_gb, "os": platform.platform()}


def ts_peer(args: argparse.Namespace, meta: dict[str, Any]) -> install.Installation | None:
    """The TypeScript peer's installation, or None (the reason goes into ``meta``)."""
    found: install.Installation | install.Skipped
    if args.no_ts_peer:
        found = install.Skipped("left out by --no-ts-peer")
    else:
        print(f"TS peer: {install.PEER}@{install.PEER_VERSION} ...", file=sys.stderr, flush=True)
        found = install.prepare(args.ts_peer_dir)
    meta["ts_peer"] = found.describe()
    if isinstance(found, install.Skipped):
        print(f"TS peer skipped: {found.reason}", file=sys.stderr, flush=True)
        return None
    meta["versions"][install.PEER] = install.PEER_VERSION
    meta["versions"]["node"] = found.node_version
    return found


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("sa-crablet", "sqlalchemy", "psycopg", "eventsourcing"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "?"
    import sqlite3

    out["sqlite"] = sqlite3.sqlite_version
    return out


def revision() -> str:
    """The git revision of the sa_crablet being measured (``+dirty`` with local changes)."""
    root = Path(sa_crablet.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "sa_crablet"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def postgresql_info(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, dbname="postgres", autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        rows = conn.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s) ORDER BY name",
            (list(PG_SETTINGS),),
        ).fetchall()
    settings = {}
    for name, setting, unit in rows:
        if unit == "8kB":
            settings[name] = f"{int(setting) * 8 // 1024}MB"
        elif unit == "kB":
            settings[name] = f"{int(setting) // 1024}MB"
        else:
            settings[name] = setting
    return {"version": version[0] if version else "?", "settings": settings}


def failures(records: list[Record]) -> list[Record]:
    """Results that ``--strict`` fails on: an S7b invariant violation (any contender, sync or
    async), a writer that raised, a failed memory measurement."""
    return [
        r
        for r in records
        if r.extra.get("violations") or r.extra.get("errors") or r.extra.get("memory_error")
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    settings: Settings = QUICK if args.quick else FULL
    if args.fill:
        settings = replace(settings, fill=args.fill)
    parts = set(_listed(args.only))
    if args.quick:
        parts.discard("scale")  # S8 needs a 1M-event store: full mode only
    stem = args.stem or ("benchmark_quick" if args.quick else "benchmark")
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "mode": settings.mode,
        "started": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "fill": settings.fill,
        "settings": asdict(settings),
        "machine": machine(),
        "versions": versions(),
        "parts": sorted(parts),
    }
    meta["sa_crablet_revision"] = args.revision or revision()
    records: list[Record] = []
    if parts & {"postgresql", "scale"}:
        meta["postgresql"] = postgresql_info(args.dsn)
    scenarios = _listed(args.scenarios)
    if scenarios != list(pg_suite.SCENARIOS):
        meta["scenarios"] = scenarios
    ts = ts_peer(args, meta) if "postgresql" in parts else None
    steps: list[tuple[str, Callable[[], list[Record]]]] = [
        (
            "postgresql",
            lambda: pg_suite.run(args.dsn, settings, meta, args.prefix, ts, scenarios),
        ),
        ("scale", lambda: scale.run(args.dsn, settings, meta, args.prefix + "_s8")),
        ("sqlite", lambda: sqlite_suite.run(settings, meta)),
    ]
    chart = not args.quick
    written: list[Path] = []
    for part, step in steps:
        if part not in parts:
            continue
        try:
            records += step()
        except Exception as exc:  # keep what the other parts measured; fail at the end
            traceback.print_exc()
            meta.setdefault("errors", []).append(f"{part}: {type(exc).__name__}: {exc}")
        # Written after every part, so a late failure never loses earlier results.
        add_ratios([r for r in records if r.group != "sqlite"])
        add_ratios(
            [r for r in records if r.group == "sqlite"], peer=None, floor=SQLITE_FLOOR, ts_peer=None
        )
        meta["elapsed_s"] = time.perf_counter() - started
        written = report.write(records, meta, args.output, stem, chart)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    print(report.markdown(records, meta, []))
    bad = failures(records)
    for r in bad:
        print(f"WARNING: {r.scenario} {r.contender}: {r.extra}", file=sys.stderr)
    if meta.get("errors"):
        return 1
    return 1 if (args.strict and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
