"""A run: a fresh database, N workers for a bounded time, then the verdict."""

from __future__ import annotations

import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, create_engine, make_url, text

import sa_crablet
from benchmarks.consistency.history import Unit
from benchmarks.consistency.hosts import (
    Host,
    StatementCounter,
    postgresql_hosts,
    sqlite_hosts,
)
from benchmarks.consistency.stored import read_log
from benchmarks.consistency.summary import Summary, summarize
from benchmarks.consistency.verify import Violation, verify
from benchmarks.consistency.worker import DECIDERS, Worker
from benchmarks.consistency.workload import Vocabulary
from sa_crablet.exceptions import ValidationError

BACKENDS = ("postgresql", "sqlite")
DEFAULT_WORKERS = {"postgresql": 20, "sqlite": 4}
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True, slots=True)
class Settings:
    """``hosts``: shell-style patterns over the host names (see :mod:`.hosts`), all when
    empty. ``decider``: ``"store"``, or a control, ``"naive"`` or ``"position"`` (see
    :mod:`.worker`). ``unconditional``: mix unconditional appends in. ``jitter``: short
    random pauses that widen the windows in which transactions overlap; ``think``: the
    longest of those between a decision's read and its append (seconds); ``max_ops``: the
    most operations in one host transaction (one to three); ``deadlock_timeout``: seconds,
    PostgreSQL's setting for the workers' connections (setting it needs a superuser;
    ``None`` keeps the server's); ``fetch_size``: if given, half the transactions read with
    it (``EventStoreConfig.fetch_size``), so longer reads page through a server-side cursor.
    ``contiguous_batches``: count a batch that other events interleave as a violation."""

    backend: str = "postgresql"
    seconds: float = 5.0
    workers: int | None = None
    seed: int = 0
    hosts: tuple[str, ...] = ()
    decider: str = "store"
    unconditional: bool = True
    jitter: bool = True
    think: float = 0.002
    max_ops: int = 3
    deadlock_timeout: float | None = 0.05
    fetch_size: int | None = None
    contiguous_batches: bool = False
    vocabulary: Vocabulary = field(default_factory=Vocabulary)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValidationError("backend", self.backend, f"one of {', '.join(BACKENDS)}")
        if self.decider not in DECIDERS:
            raise ValidationError("decider", self.decider, f"one of {', '.join(DECIDERS)}")
        if self.seconds <= 0:
            raise ValidationError("seconds", self.seconds, "must be positive")
        if self.workers is not None and self.workers < 1:
            raise ValidationError("workers", self.workers, "must be positive")

    @property
    def worker_count(self) -> int:
        return self.workers or DEFAULT_WORKERS[self.backend]


def run(settings: Settings, *, url: str | None = None, path: str | None = None) -> Summary:
    """Run the checker. PostgreSQL: ``url`` is a SQLAlchemy URL of a server, on which a
    fresh database is created and dropped afterwards. SQLite: ``path`` is the database
    file (a fresh one in a temporary directory by default)."""
    if settings.backend == "postgresql":
        with _postgresql_database(url or DEFAULT_URL) as database_url:
            options = {}
            if settings.deadlock_timeout is not None:
                # Two appends in one transaction can deadlock with another such transaction:
                # found after deadlock_timeout (1 s by default), while every worker queued
                # behind them waits. Found sooner, the run does more work in its time.
                timeout = f"{round(settings.deadlock_timeout * 1000)}ms"
                options["options"] = f"-c deadlock_timeout={timeout}"
            engine = create_engine(
                database_url,
                pool_size=settings.worker_count,
                max_overflow=4,
                connect_args=options,
            )
            try:
                return _run_on(engine, settings)
            finally:
                engine.dispose()
    with tempfile.TemporaryDirectory(prefix="sa_crablet_consistency_") as scratch:
        engine = sa_crablet.create_sqlite_engine(path or str(Path(scratch) / "events.sqlite3"))
        try:
            return _run_on(engine, settings)
        finally:
            engine.dispose()


@contextmanager
def _postgresql_database(server_url: str) -> Iterator[str]:
    server = make_url(server_url)
    name = f"sa_crablet_consistency_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _run_on(engine: Engine, settings: Settings) -> Summary:
    sa_crablet.upgrade(engine)
    counter = StatementCounter()
    if settings.backend == "postgresql":
        hosts = postgresql_hosts(engine, settings.hosts, counter)
    else:
        hosts = sqlite_hosts(engine, settings.hosts)
    units, crashes, elapsed = _run_workers(hosts, settings)
    verdict = verify(units, read_log(engine), settings.backend, settings.contiguous_batches)
    verdict.violations.extend(Violation("unexpected-error", crash) for crash in crashes)
    return summarize(
        backend=settings.backend,
        workers=settings.worker_count,
        seconds=elapsed,
        seed=settings.seed,
        decider=settings.decider,
        hosts=tuple(h.name for h in hosts),
        units=units,
        verdict=verdict,
        core_statements=counter.count,
    )


def _run_workers(hosts: list[Host], settings: Settings) -> tuple[list[Unit], list[str], float]:
    count = settings.worker_count
    barrier = threading.Barrier(count + 1)
    started = time.monotonic()
    workers = [
        Worker(
            i,
            hosts,
            settings.vocabulary,
            settings.decider,
            settings.unconditional,
            settings.seed,
            started,
            started + settings.seconds,
            settings.jitter,
            settings.think,
            settings.max_ops,
            settings.fetch_size,
        )
        for i in range(count)
    ]
    crashes: list[str] = []

    def target(worker: Worker) -> None:
        try:
            worker.run(barrier)
        except BaseException:  # a crash outside a unit: reported, never silent
            crashes.append(f"worker {worker.index} crashed:\n{traceback.format_exc()}")

    threads = [threading.Thread(target=target, args=(w,), daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return [unit for worker in workers for unit in worker.units], crashes, elapsed
