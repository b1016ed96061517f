"""What the examples share: the command line, the database, printing and invariant checks.

Every example runs with no arguments on a temporary SQLite file, or on PostgreSQL with
``--database-url URL`` (or the ``DATABASE_URL`` environment variable). A PostgreSQL database
may already hold sa_crablet's tables and other runs' events: examples never truncate
anything, and every id they use starts with a fresh run id, so their queries only ever see
their own events.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.orm import Session

import sa_crablet
from sa_crablet import AppendCondition, Query

DATABASE_URL_VARIABLE = "DATABASE_URL"


# -- the database --------------------------------------------------------------------------------


def normalize_url(url: str) -> str:
    """Use psycopg 3 for ``postgres://`` and ``postgresql://`` URLs (the driver installed
    with sa_crablet); leave every other URL alone."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def engine_for(url: str, *, connections: int = 5) -> Engine:
    """An engine for ``url``: SQLite files through ``create_sqlite_engine`` (WAL, busy
    timeout), anything else through ``create_engine`` with a pool of ``connections``."""
    parsed = make_url(normalize_url(url))
    pool: dict[str, Any] = {"pool_size": connections, "max_overflow": 5}
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ":memory:"
        if path == ":memory:":
            raise SystemExit("the examples need a SQLite file (sqlite:///path), not :memory:")
        return sa_crablet.create_sqlite_engine(path, **pool)
    return create_engine(parsed, **pool)


@dataclass(frozen=True)
class Database:
    """A migrated database and this run's id."""

    engine: Engine
    description: str
    run_id: str

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def id(self, name: str) -> str:
        """An id unique to this run: ``<run id>-<name>``."""
        return f"{self.run_id}-{name}"

    def short(self, text: object) -> str:
        """``text`` without this run's id prefixes, for printing."""
        return str(text).replace(f"{self.run_id}-", "")

    def session(self) -> Session:
        return Session(self.engine)


@contextmanager
def open_database(url: str | None, *, connections: int = 5) -> Iterator[Database]:
    """The database of ``url`` (migrated to the current schema), or a temporary SQLite file
    that is deleted afterwards."""
    run_id = "r" + uuid.uuid4().hex[:7]
    if url is None:
        with tempfile.TemporaryDirectory(prefix="sa_crablet_example_") as directory:
            path = Path(directory) / "events.sqlite3"
            engine = sa_crablet.create_sqlite_engine(
                str(path), pool_size=connections, max_overflow=5
            )
            try:
                sa_crablet.upgrade(engine)
                yield Database(engine, f"SQLite, temporary file {path}", run_id)
            finally:
                engine.dispose()
        return
    engine = engine_for(url, connections=connections)
    try:
        sa_crablet.upgrade(engine)
        shown = engine.url.render_as_string(hide_password=True)
        yield Database(engine, f"{engine.dialect.name}, {shown}", run_id)
    finally:
        engine.dispose()


# -- the command line ----------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--database-url``; examples add their own options."""
    result = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    result.add_argument(
        "--database-url",
        default=None,
        help=(
            "SQLAlchemy URL of the database to use, e.g. "
            "postgresql+psycopg://postgres@127.0.0.1:5432/postgres "
            f"(default: ${DATABASE_URL_VARIABLE}, else a temporary SQLite file)"
        ),
    )
    return result


def positive_int(text: str) -> int:
    """An ``argparse`` type: an int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run(
    example: Callable[[argparse.Namespace, Database], None],
    arguments: argparse.ArgumentParser,
    argv: list[str] | None = None,
    *,
    connections: Callable[[argparse.Namespace], int] = lambda _args: 5,
) -> None:
    """Parse the command line, open the database, run ``example`` and report success.

    An example that finds a violated invariant calls :func:`fail` (exit status 1).
    """
    args = arguments.parse_args(argv)
    url = args.database_url or os.environ.get(DATABASE_URL_VARIABLE) or None
    with open_database(url, connections=connections(args)) as database:
        print(f"database: {database.description}")
        print(f"run id:   {database.run_id} (every id starts with it; not shown below)")
        example(args, database)
    print("\nall invariants hold")


# -- printing and checking -----------------------------------------------------------------------


def section(title: str) -> None:
    print(f"\n== {title}")


def say(text: str) -> None:
    print(f"   {text}")


def fail(message: str) -> NoReturn:
    """Report a violated invariant and exit with status 1."""
    print(f"\nINVARIANT VIOLATED: {message}", flush=True)
    sys.exit(f"invariant violated: {message}")


def check(condition: bool, message: str) -> None:
    """Print ``message`` as a checked invariant, or :func:`fail` with it."""
    if not condition:
        fail(message)
    print(f"   ok: {message}")


def describe_query(query: Query) -> str:
    """A query in one line: ``(TypeA|TypeB with tag1, tag2) OR (...)``."""
    if query.match_all:
        return "(every event)"
    items = []
    for item in query.items:
        types = "|".join(item.types) or "any type"
        tags = ", ".join(item.tags) or "any tags"
        items.append(f"({types} with {tags})")
    return " OR ".join(items)


def describe_condition(condition: AppendCondition) -> str:
    """An append condition in words, one query item per line."""
    lines = ["fail if an event matching"]
    query = condition.fail_if_events_match
    items = ["(every event)"] if query.match_all else describe_query(query).split(" OR ")
    lines.extend(f"     {'OR ' if i else '   '}{item}" for i, item in enumerate(items))
    lines.append(f"   was appended after head {condition.after}")
    return "\n   ".join(lines)
