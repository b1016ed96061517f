"""``python -m benchmarks.consistency``: run the consistency checker, print what it did and
every violation with its evidence; exit status 1 on any violation."""

from __future__ import annotations

import argparse
import os
import random
import sys

from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import URL

from benchmarks.consistency.hosts import PG_HOSTS, SQLITE_HOSTS
from benchmarks.consistency.runner import BACKENDS, DEFAULT_URL, DEFAULT_WORKERS, Settings, run
from benchmarks.consistency.worker import DECIDERS
from benchmarks.consistency.workload import Vocabulary


def url_of_dsn(dsn: str) -> str:
    """A SQLAlchemy URL for a libpq ``key=value`` connection string."""
    params = {key: str(value) for key, value in conninfo_to_dict(dsn).items()}
    port = params.get("port")
    return URL.create(
        "postgresql+psycopg",
        username=params.get("user"),
        password=params.get("password"),
        host=params.get("host"),
        port=int(port) if port else None,
        database=params.get("dbname"),
    ).render_as_string(hide_password=False)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.consistency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--backend", choices=BACKENDS, default="postgresql")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the workers run")
    parser.add_argument(
        "--workers",
        type=int,
        help=f"default {DEFAULT_WORKERS['postgresql']} on PostgreSQL, "
        f"{DEFAULT_WORKERS['sqlite']} on SQLite",
    )
    parser.add_argument("--seed", type=int, help="seed of the workers' choices (default: random)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--url",
        help="SQLAlchemy URL of a PostgreSQL server (a fresh database is created and dropped "
        "there); default $SA_CRABLET_TEST_DATABASE_URL, else $SA_CRABLET_BENCH_DSN, else "
        f"{DEFAULT_URL}",
    )
    where.add_argument("--dsn", help="the server as a libpq key=value string instead")
    parser.add_argument("--path", help="SQLite database file (default: a fresh temporary one)")
    parser.add_argument(
        "--hosts",
        default="",
        help="comma-separated shell patterns over host names (default: all); PostgreSQL: "
        f"{', '.join(PG_HOSTS)}; SQLite: {', '.join(SQLITE_HOSTS)}",
    )
    parser.add_argument(
        "--decider",
        choices=DECIDERS,
        default="store",
        help="how decisions reach the store; naive and position are controls that must fail",
    )
    parser.add_argument(
        "--no-unconditional", action="store_true", help="no unconditional appends in the mix"
    )
    parser.add_argument("--no-jitter", action="store_true", help="no random pauses")
    parser.add_argument(
        "--think-ms",
        type=float,
        default=2.0,
        help="longest pause between a decision's read and its append",
    )
    parser.add_argument(
        "--max-ops",
        type=int,
        choices=(1, 2, 3),
        default=3,
        help="most operations (decisions, appends, reads, checks) in one host transaction",
    )
    parser.add_argument(
        "--deadlock-timeout-ms",
        type=float,
        default=50.0,
        help="PostgreSQL deadlock_timeout for the workers' connections (needs a superuser; "
        "0 keeps the server's)",
    )
    parser.add_argument(
        "--fetch-size",
        type=int,
        help="half the transactions read in pages of this many events (server-side cursors "
        "past the first page); default: the store's",
    )
    parser.add_argument("--types", type=int, default=6, help="event types in the pool")
    parser.add_argument("--tags", type=int, default=8, help="tags in the pool")
    parser.add_argument(
        "--generation-seconds",
        type=float,
        default=2.0,
        help="the pool is renewed this often, so scopes do not grow without bound",
    )
    parser.add_argument(
        "--contiguous-batches",
        action="store_true",
        help="count a batch that other events' positions interleave as a violation",
    )
    parser.add_argument("--show", type=int, default=20, help="violations printed per kind")
    return parser.parse_args(argv)


def server_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url)
    if args.dsn:
        return url_of_dsn(args.dsn)
    if os.environ.get("SA_CRABLET_TEST_DATABASE_URL"):
        return os.environ["SA_CRABLET_TEST_DATABASE_URL"]
    if os.environ.get("SA_CRABLET_BENCH_DSN"):
        return url_of_dsn(os.environ["SA_CRABLET_BENCH_DSN"])
    return DEFAULT_URL


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    settings = Settings(
        backend=args.backend,
        seconds=args.seconds,
        workers=args.workers,
        seed=args.seed if args.seed is not None else random.randrange(2**31),
        hosts=tuple(p for p in args.hosts.split(",") if p),
        decider=args.decider,
        unconditional=not args.no_unconditional,
        jitter=not args.no_jitter,
        contiguous_batches=args.contiguous_batches,
        think=args.think_ms / 1000,
        max_ops=args.max_ops,
        fetch_size=args.fetch_size,
        deadlock_timeout=args.deadlock_timeout_ms / 1000 or None,
        vocabulary=Vocabulary(args.types, args.tags, args.generation_seconds),
    )
    summary = run(settings, url=server_url(args), path=args.path)
    print(summary.render(args.show))
    return 1 if summary.violation_count else 0


if __name__ == "__main__":
    sys.exit(main())
