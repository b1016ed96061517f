"""One restart of the cluster while worker threads append in a loop.

Each worker repeats units of work, each in a ``Session`` of its own, committed: an
unconditional append, a conditional append on the worker's own boundary, a conditional
append on a boundary all workers share (conflicts there are ``ConcurrencyError``). Every
batch is marked, and the ledger records what the worker was told: acknowledged (COMMIT
returned), failed (an error before COMMIT was sent) or unknown (COMMIT sent, no answer).

A third of the way in, the cluster is restarted (``pg_ctl restart``, ``fast`` or
``immediate``). Errors during the outage are judged as usual, plus refused connections
while the server is down. Once the server accepts connections again, each worker's next
unit of work (on its own boundary, so nothing can conflict with it) must succeed.

Two idle engines with warm pools, one with ``pool_pre_ping=True`` and one without, show
what an application that was idle during the restart meets afterwards.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from benchmarks.fault_kit import Ledger, commit_outcome, describe, is_conflict, marked_batch
from benchmarks.fault_target import Target, next_unit
from benchmarks.pg_cluster import Cluster
from sa_crablet import AppendCondition, EventStoreConfig, Query

IDLE_POOL = 3
"""Connections warmed into each idle engine's pool before the restart."""
MAX_OVERRUN = 30.0
"""Seconds a worker may go on past the run's end to get its unit after the restart."""


@dataclass
class Window:
    """When the server was down: from the restart's start until it accepted connections."""

    began: float | None = None
    ready: float | None = None

    def overlaps(self, start: float, end: float) -> bool:
        if self.began is None or end < self.began:
            return False
        return self.ready is None or start <= self.ready


@dataclass(frozen=True, slots=True)
class RestartReport:
    """``after_restart``: per worker, whether its next unit after the restart succeeded;
    ``idle_failures``: units failed, of ``IDLE_POOL`` run one after the other, on the idle
    engine without pre-ping and on the one with it."""

    units: int
    after_restart: tuple[bool, ...]
    idle_failures: int
    idle_failures_pre_ping: int
    seconds: float


@dataclass
class _Worker:
    index: int
    target: Target
    ledger: Ledger
    window: Window
    shared: str
    own: str = field(default_factory=lambda: f"own:{uuid.uuid4().hex[:12]}")
    units: int = 0
    after_restart: bool | None = None

    def run(self, deadline: float) -> None:
        kinds = itertools.cycle(("unconditional", "own", "shared"))
        while True:
            started = time.monotonic()
            ready = self.window.ready
            first_after = ready is not None and started >= ready and self.after_restart is None
            if self.after_restart is not None and started >= deadline:
                return
            if started >= deadline + MAX_OVERRUN:
                self.ledger.problem(f"worker {self.index}: no unit of work after the restart")
                return
            error = self.unit("own" if first_after else next(kinds), started)
            if first_after:
                # A lost race (SERIALIZABLE's at COMMIT included) is the database working.
                self.after_restart = error is None or is_conflict(error)
                if error is not None and not self.after_restart:
                    self.ledger.problem(
                        f"worker {self.index}'s next unit of work after the restart failed: "
                        f"{describe(error)}"
                    )
            if error is not None:
                time.sleep(0.02)  # no busy loop while the server is away

    def unit(self, kind: str, started: float) -> Exception | None:
        self.units += 1
        tag = self.shared if kind == "shared" else self.own
        batch, events = marked_batch("Load", [tag, f"worker:{self.index}"], random.randint(1, 4))
        committing = False
        try:
            with Session(self.target.engine) as session:
                store = self.target.store(session)
                condition = None
                if kind != "unconditional":
                    query = Query.of(tags=[tag])
                    result = store.read(query)
                    for _ in result:
                        pass
                    condition = AppendCondition(query, result.head)
                store.append(events, condition)
                committing = True
                session.commit()
        except Exception as exc:
            self.ledger.outcome(batch, commit_outcome(exc) if committing else "failed")
            down = self.window.overlaps(started, time.monotonic())
            self.ledger.error(exc, server_down=down, at_commit=committing)
            return exc
        self.ledger.outcome(batch, "acknowledged")
        return None


def warm_engine(url: str, pre_ping: bool) -> Engine:
    """An engine with ``IDLE_POOL`` connections made and returned to its pool."""
    engine = create_engine(url, pool_size=IDLE_POOL, pool_pre_ping=pre_ping)
    connections = [engine.connect() for _ in range(IDLE_POOL)]
    for connection in connections:
        connection.close()
    return engine


def idle_units(engine: Engine, config: EventStoreConfig, ledger: Ledger) -> list[bool]:
    """Whether each of ``IDLE_POOL`` units of work, run one after the other on ``engine``,
    succeeded; then the engine is disposed of."""
    try:
        return [next_unit(engine, config, ledger) for _ in range(IDLE_POOL)]
    finally:
        engine.dispose()


def restart_under_load(
    cluster: Cluster,
    target: Target,
    ledger: Ledger,
    *,
    workers: int,
    seconds: float,
    mode: str = "fast",
) -> RestartReport:
    ledger.scope = f"{target.path} restart"
    window = Window()
    shared = f"shared:{uuid.uuid4().hex[:12]}"
    crew = [_Worker(i, target, ledger, window, shared) for i in range(workers)]
    idle = warm_engine(target.url, False)
    idle_pinged = warm_engine(target.url, True)
    began = time.monotonic()
    deadline = began + seconds
    threads = [threading.Thread(target=w.run, args=(deadline,), daemon=True) for w in crew]
    for thread in threads:
        thread.start()
    time.sleep(seconds / 3)
    window.began = time.monotonic()
    cluster.restart(mode)
    window.ready = time.monotonic()
    ledger.fault(f"restart-{mode}")
    for thread in threads:
        thread.join(seconds + MAX_OVERRUN + 30)
        if thread.is_alive():
            ledger.problem("hang: a worker did not finish")
    idle_failures = idle_units(idle, target.config, ledger).count(False)
    idle_failures_pre_ping = idle_units(idle_pinged, target.config, ledger).count(False)
    after = tuple(bool(w.after_restart) for w in crew)
    if idle_failures_pre_ping:
        ledger.problem(
            f"{idle_failures_pre_ping} unit(s) failed after the "
            "restart on an idle engine with pool_pre_ping=True"
        )
    return RestartReport(
        units=sum(w.units for w in crew),
        after_restart=after,
        idle_failures=idle_failures,
        idle_failures_pre_ping=idle_failures_pre_ping,
        seconds=time.monotonic() - began,
    )
