"""The fault run: ``python -m benchmarks.faults [--rounds N] [--workers N] [--seconds S]``.

On a throwaway PostgreSQL 15 cluster of its own (see ``benchmarks.pg_cluster``), for each
round and each execution path (psycopg directly, SQLAlchemy Core), in a fresh database:
every kill of ``KILLS`` (backends terminated mid-append, mid-read, mid-command, at
COMMIT), then one restart of the cluster under load (``benchmarks.restart_load``). After
each round the log is checked with plain SQL (``benchmarks.fault_log``).

Prints the faults injected by kind, the errors the application saw by kind, and the
partial writes seen. Exits 1 when a partial write was seen, an error was neither a
library error nor SQLAlchemy's for a dead connection, something hung, or a unit of work
after a fault failed.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from sqlalchemy import create_engine

import sa_crablet
from benchmarks.fault_appends import (
    kill_at_commit,
    kill_lock_holder,
    kill_mid_batch,
    kill_waiting_for_lock,
)
from benchmarks.fault_commands import (
    kill_command_at_commit,
    kill_in_handler_host,
    kill_in_handler_managed,
    kill_while_recording,
)
from benchmarks.fault_kit import FaultPointMissed, Ledger, describe
from benchmarks.fault_log import LogReport, inspect_log
from benchmarks.fault_reads import (
    KILL_POINTS,
    kill_between_pages,
    kill_during_projection,
    stop_after_kill,
)
from benchmarks.fault_target import ISOLATION, PATHS, Target
from benchmarks.pg_cluster import Cluster, ClusterUnavailable, throwaway_cluster
from benchmarks.restart_load import IDLE_POOL, RestartReport, restart_under_load

REQUIRE_VARIABLE = "SA_CRABLET_REQUIRE_POSTGRES"
LEVELS = ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]

Kill = Callable[[Target, Ledger], None]

KILLS: dict[str, Kill] = {
    "lock-wait": kill_waiting_for_lock,
    "lock-holder": kill_lock_holder,
    "mid-batch": partial(kill_mid_batch, conditional=False),
    "mid-batch-conditional": partial(kill_mid_batch, conditional=True),
    "commit": kill_at_commit,
    "read-first-page": partial(kill_between_pages, kill_after=KILL_POINTS[0]),
    "read-in-cursor": partial(kill_between_pages, kill_after=KILL_POINTS[1]),
    "projection": partial(kill_during_projection, kill_after=KILL_POINTS[1]),
    "early-stop-first-page": partial(stop_after_kill, kill_after=KILL_POINTS[0]),
    "early-stop-in-cursor": partial(stop_after_kill, kill_after=KILL_POINTS[1]),
    "handler-host-read": partial(kill_in_handler_host, point="read"),
    "handler-host-decide": partial(kill_in_handler_host, point="decide"),
    "handler-sessionmaker": partial(kill_in_handler_managed, bind="sessionmaker"),
    "handler-engine": partial(kill_in_handler_managed, bind="engine"),
    "command-record": kill_while_recording,
    "command-commit": kill_command_at_commit,
}
"""Every kill, by name; each leaves the application able to do its next unit of work."""


def migrated_database(cluster: Cluster, name: str) -> str:
    """A fresh database on ``cluster`` with sa_crablet's schema; its URL."""
    url = cluster.create_database(f"faults_{name}_{uuid.uuid4().hex[:8]}")
    engine = create_engine(url)
    try:
        sa_crablet.upgrade(engine)
    finally:
        engine.dispose()
    return url


def open_target(
    cluster: Cluster, path: str, pre_ping: bool = False, isolation: str = ISOLATION
) -> Target:
    """A fresh, migrated database on ``cluster`` and the application's view of it."""
    return Target.open(migrated_database(cluster, path), path, pre_ping, isolation)


def run_kills(target: Target, ledger: Ledger, names: list[str] | None = None) -> None:
    for name in names or list(KILLS):
        ledger.scope = f"{target.path} {name}"
        try:
            KILLS[name](target, ledger)
        except FaultPointMissed as missed:
            ledger.problem(str(missed))
        except Exception as exc:  # an error outside the victims' own code
            ledger.problem(f"the fault itself failed: {describe(exc)}")
    ledger.scope = target.path


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.faults", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every fault (1)")
    parser.add_argument("--workers", type=int, default=4, help="appending threads (4)")
    parser.add_argument(
        "--seconds", type=float, default=6.0, help="length of the load around each restart (6)"
    )
    parser.add_argument(
        "--restart-mode",
        choices=("fast", "immediate", "alternate"),
        default="alternate",
        help="pg_ctl stop mode of the restart (alternate)",
    )
    parser.add_argument(
        "--paths", default=",".join(PATHS), help="execution paths, comma-separated (direct,core)"
    )
    parser.add_argument(
        "--isolation",
        choices=[*LEVELS, "all"],
        default=ISOLATION,
        help=f"the application's isolation level, or all three ({ISOLATION})",
    )
    parser.add_argument(
        "--pre-ping", action="store_true", help="give the application's engine pool_pre_ping=True"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show SQLAlchemy's own logging of the faults (cursors it could not close)",
    )
    parser.add_argument(
        "--require-postgres",
        action="store_true",
        help=f"exit 1, not 0, when no throwaway cluster can be made (or {REQUIRE_VARIABLE}=1)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not args.verbose:  # a dead connection's cursor cannot be closed: expected here
        logging.getLogger("sqlalchemy").setLevel(logging.CRITICAL)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    levels = LEVELS if args.isolation == "all" else [args.isolation]
    started = time.monotonic()
    runs: list[Run] = []
    try:
        with throwaway_cluster() as cluster:
            print(f"throwaway cluster on 127.0.0.1:{cluster.port}", flush=True)
            for round_ in range(args.rounds):
                mode = args.restart_mode
                if mode == "alternate":
                    mode = "fast" if round_ % 2 == 0 else "immediate"
                for path, level in itertools.product(paths, levels):
                    run = run_all(cluster, path, level, mode, args)
                    runs.append(run)
                    print(
                        f"round {round_ + 1} {path} {level}: "
                        f"{sum(run.ledger.injected.values())} faults, "
                        f"{run.log.partial_writes} partial writes, "
                        f"{len(run.ledger.unexpected)} unexpected",
                        flush=True,
                    )
    except ClusterUnavailable as missing:
        print(f"no throwaway cluster: {missing}", file=sys.stderr)
        required = args.require_postgres or os.environ.get(REQUIRE_VARIABLE) == "1"
        return 1 if required else 0
    return summarize(runs, time.monotonic() - started)


@dataclass(frozen=True, slots=True)
class Run:
    """Every fault once on one path at one isolation level, in a database of its own."""

    path: str
    isolation: str
    ledger: Ledger
    log: LogReport
    restart: RestartReport


def run_all(
    cluster: Cluster, path: str, isolation: str, mode: str, args: argparse.Namespace
) -> Run:
    target = open_target(cluster, path, args.pre_ping, isolation)
    ledger = Ledger()
    try:
        run_kills(target, ledger)
        restart = restart_under_load(
            cluster, target, ledger, workers=args.workers, seconds=args.seconds, mode=mode
        )
        log = inspect_log(target.engine, ledger)
    finally:
        target.close()
    return Run(path, isolation, ledger, log, restart)


def summarize(runs: list[Run], elapsed: float) -> int:
    injected: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    unexpected: list[str] = []
    for run in runs:
        injected.update(run.ledger.injected)
        errors.update(run.ledger.errors)
        unexpected += run.ledger.unexpected
    logs = [run.log for run in runs]
    print(f"\nfaults injected: {sum(injected.values())} in {elapsed:.0f} s")
    for kind, count in sorted(injected.items()):
        print(f"  {kind:24} {count}")
    print("errors seen by the application:")
    for name, count in sorted(errors.items()):
        print(f"  {name:40} {count}")
    print("restarts under load:")
    for run in runs:
        r = run.restart
        print(
            f"  {run.path:7} {run.isolation:16} {r.units} units, next unit after restart ok for "
            f"{sum(r.after_restart)}/{len(r.after_restart)} workers; idle pool units failed "
            f"after restart: {r.idle_failures}/{IDLE_POOL} without pre-ping, "
            f"{r.idle_failures_pre_ping}/{IDLE_POOL} with"
        )
    fields = (
        "batches",
        "partial_batches",
        "lost",
        "phantoms",
        "commands_without_events",
        "events_without_command",
        "duplicate_positions",
        "unknown_stored",
        "unknown_absent",
    )
    print("log:")
    for name in fields:
        print(f"  {name:24} {sum(getattr(log, name) for log in logs)}")
    partial_writes = sum(log.partial_writes for log in logs)
    print(f"partial writes seen: {partial_writes}")
    print(f"unexpected errors, hangs and failed recoveries: {len(unexpected)}")
    for line in unexpected:
        print(f"  {line}")
    return 1 if partial_writes or unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
