"""The host applications a decision can run in: isolation level, execution path, who begins.

PostgreSQL hosts are ``<isolation>/<path>``: isolation ``read-committed``,
``repeatable-read``, ``serializable`` or ``autocommit`` (each store call its own
transaction); path ``direct`` (the store's default: statements straight on psycopg),
``core-listener`` (an engine with a ``before_cursor_execute`` listener, so the store runs
through SQLAlchemy Core) or ``core-config`` (``EventStoreConfig(direct_execution=False)``).
SQLite hosts are ``sqlite/deferred`` (the driver begins a transaction at the first write),
``sqlite/begin`` and ``sqlite/begin-immediate`` (the host issues that statement itself
before its first read).
"""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event

from sa_crablet import EventStoreConfig
from sa_crablet.exceptions import ValidationError

PG_ISOLATIONS = {
    "read-committed": "READ COMMITTED",
    "repeatable-read": "REPEATABLE READ",
    "serializable": "SERIALIZABLE",
    "autocommit": "AUTOCOMMIT",
}
PG_PATHS = ("direct", "core-listener", "core-config")
SQLITE_BEGINS = {"deferred": None, "begin": "BEGIN", "begin-immediate": "BEGIN IMMEDIATE"}

PG_HOSTS = tuple(f"{iso}/{path}" for iso in PG_ISOLATIONS for path in PG_PATHS)
SQLITE_HOSTS = tuple(f"sqlite/{name}" for name in SQLITE_BEGINS)


@dataclass(frozen=True, slots=True)
class Host:
    """``bind`` is what the host's ``Session`` binds to; ``begin`` the statement the host
    issues itself before its first read (SQLite), if any."""

    name: str
    bind: Engine
    config: EventStoreConfig
    autocommit: bool
    begin: str | None = None


class StatementCounter:
    """A ``before_cursor_execute`` listener: counts what Core executed (proof that the
    ``core-listener`` hosts did go through Core)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, *_args: Any) -> None:
        with self._lock:
            self.count += 1


def select_hosts(names: tuple[str, ...], patterns: tuple[str, ...]) -> tuple[str, ...]:
    """The hosts among ``names`` that match any of ``patterns`` (shell-style, e.g.
    ``read-committed/*``); every one when there are no patterns."""
    if not patterns:
        return names
    chosen = tuple(n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns))
    if not chosen:
        raise ValidationError("hosts", ",".join(patterns), f"matches none of {', '.join(names)}")
    return chosen


def postgresql_hosts(
    engine: Engine, patterns: tuple[str, ...], counter: StatementCounter
) -> list[Host]:
    # A view of the engine with a listener of its own: same pool, and only the views made
    # from it carry the listener.
    listened = engine.execution_options()
    event.listen(listened, "before_cursor_execute", counter)
    core = EventStoreConfig(direct_execution=False)
    hosts: list[Host] = []
    for name in select_hosts(PG_HOSTS, patterns):
        isolation, path = name.split("/")
        base = listened if path == "core-listener" else engine
        bind = base.execution_options(isolation_level=PG_ISOLATIONS[isolation])
        config = core if path == "core-config" else EventStoreConfig()
        hosts.append(Host(name, bind, config, isolation == "autocommit"))
    return hosts


def sqlite_hosts(engine: Engine, patterns: tuple[str, ...]) -> list[Host]:
    return [
        Host(name, engine, EventStoreConfig(), False, SQLITE_BEGINS[name.split("/")[1]])
        for name in select_hosts(SQLITE_HOSTS, patterns)
    ]
