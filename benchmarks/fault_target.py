"""The application under fault: its engine and store configuration on one database of the
throwaway cluster, the means to kill its backends, and its next unit of work."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from benchmarks.fault_kit import (
    Backends,
    Background,
    Hang,
    Ledger,
    commit_outcome,
    commit_waiting_engine,
    marked_batch,
)
from sa_crablet import AppendCondition, EventStore, EventStoreConfig, Query

PATHS = {
    "direct": EventStoreConfig(),
    "core": EventStoreConfig(direct_execution=False),
}
"""The two PostgreSQL execution paths: psycopg directly (the default) and SQLAlchemy Core."""
ISOLATION = "READ COMMITTED"


@dataclass(frozen=True, slots=True)
class Target:
    """``engine``: the application's; ``commit_waiting``: the same database, but every
    COMMIT waits for the absent standby until its backend is killed."""

    url: str
    path: str
    config: EventStoreConfig
    engine: Engine
    commit_waiting: Engine
    backends: Backends

    @classmethod
    def open(
        cls, url: str, path: str, pre_ping: bool = False, isolation: str = ISOLATION
    ) -> Target:
        """The application on ``url``, its store on ``path``, its transactions at the
        ``isolation`` level."""
        pool = {"pool_size": 10, "max_overflow": 10, "pool_pre_ping": pre_ping}
        return cls(
            url,
            path,
            PATHS[path],
            create_engine(url, isolation_level=isolation, **pool),
            commit_waiting_engine(url, isolation_level=isolation),
            Backends(url),
        )

    def store(self, session: Session, config: EventStoreConfig | None = None) -> EventStore:
        return EventStore(session, config or self.config)

    def close(self) -> None:
        self.engine.dispose()
        self.commit_waiting.dispose()
        self.backends.dispose()


def boundary(name: str) -> str:
    """A tag no other fault uses."""
    return f"{name}:{uuid.uuid4().hex[:12]}"


def next_unit(
    engine: Engine, config: EventStoreConfig, ledger: Ledger, *, server_down: bool = False
) -> bool:
    """The application's next unit of work: a conditional append on a boundary of its own,
    committed. ``True`` when it was acknowledged; otherwise its error is counted (and
    judged) and ``False`` returned."""
    tag = boundary("next")
    batch, events = marked_batch("Next", [tag], 2)
    committing = False
    try:
        with Session(engine) as session:
            store = EventStore(session, config)
            store.append(events, AppendCondition(Query.of(tags=[tag]), None))
            committing = True
            session.commit()
    except Exception as exc:
        ledger.outcome(batch, commit_outcome(exc) if committing else "failed")
        ledger.error(exc, server_down=server_down, at_commit=committing)
        return False
    ledger.outcome(batch, "acknowledged")
    return True


def recover(target: Target, ledger: Ledger, after: str) -> None:
    """After a fault, the next unit of work must succeed."""
    if not next_unit(target.engine, target.config, ledger):
        ledger.problem(f"the next unit of work after {after} failed")


def expect_killed(victim: Background[Any], ledger: Ledger, batch: str, state: str) -> bool:
    """Join a victim whose backend was killed: it must fail with an acceptable error, in
    time. ``state`` is what that failure means for its batch (``failed`` when COMMIT was
    never sent, ``unknown`` when it was). ``True`` when all of that held."""
    try:
        victim.join()
    except Hang as hang:
        ledger.problem(f"hang: {hang}")
        return False
    except Exception as exc:
        ledger.outcome(batch, state)
        return ledger.error(exc)
    ledger.problem("a victim whose backend was killed reported success")
    ledger.outcome(batch, "acknowledged")
    return False
