"""What every fault needs: marked batches, a hand on the server's backends, a judge of the
errors the application sees, and a ledger of what was acknowledged.

* A **marked batch** carries ``{"fault_batch": id, "i": i, "n": size}`` in every event's
  data, so plain SQL over the log can tell a whole batch from a partial one.
* **Backends** are found and killed through PostgreSQL itself: the victim reports its own
  ``pg_backend_pid()``, the fault waits in ``pg_stat_activity`` for the point to reach
  (an advisory-lock wait, an insert under way, a COMMIT waiting for its standby) and
  calls ``pg_terminate_backend``.
* The **judge**: an error is acceptable when it is a ``CrabletError``, or a SQLAlchemy
  ``DBAPIError`` whose ``connection_invalidated`` is set (the connection died), or, while
  the server is down, SQLAlchemy's ``OperationalError`` of a refused connection. Anything
  else (a raw driver error, an ``AttributeError``, an un-invalidated disconnect) and any
  hang is recorded as unexpected and fails the run.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from sa_crablet import ConcurrencyError, CrabletError, Event

T = TypeVar("T")

JOIN_TIMEOUT = 30.0
"""Seconds a victim may take to return after its fault; longer is a hang."""


def marked_batch(
    type_: str, tags: Iterable[str], size: int, pad: int = 0
) -> tuple[str, list[Event]]:
    """A batch id and ``size`` events whose data names the batch, their index and the size
    (``pad`` characters of filler make an insert take longer)."""
    batch = uuid.uuid4().hex
    filler = "x" * pad
    tag_list = list(tags)
    events = [
        Event(type_, tag_list, {"fault_batch": batch, "i": i, "n": size, "pad": filler})
        for i in range(size)
    ]
    return batch, events


def backend_pid(session: Session) -> int:
    """The server process behind ``session``'s connection (opening its transaction)."""
    pid: int = session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    return pid


@dataclass(frozen=True, slots=True)
class Activity:
    """A backend's row of ``pg_stat_activity``; ``xid`` is set once it has written."""

    state: str | None
    wait_event_type: str | None
    wait_event: str | None
    xid: str | None
    query: str


class FaultPointMissed(Exception):
    """The backend never reached the point where the fault was to be injected."""


class Backends:
    """Finds and kills backends of one server, from connections of its own (AUTOCOMMIT,
    pre-pinged so they survive a restart of the server)."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)

    def activity(self, pid: int) -> Activity | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT state, wait_event_type, wait_event, backend_xid::text, query "
                    "FROM pg_stat_activity WHERE pid = :pid"
                ),
                {"pid": pid},
            ).one_or_none()
        return None if row is None else Activity(*row)

    def wait_until(
        self, pid: int, reached: Callable[[Activity], bool], timeout: float = 10.0
    ) -> Activity:
        """Poll until ``pid``'s activity satisfies ``reached``; ``FaultPointMissed`` if it
        never does (or the backend is gone)."""
        deadline = time.monotonic() + timeout
        last: Activity | None = None
        while time.monotonic() < deadline:
            last = self.activity(pid)
            if last is None:
                break
            if reached(last):
                return last
            time.sleep(0.002)
        raise FaultPointMissed(f"backend {pid} never reached the fault point (last: {last})")

    def pids(self, application: str) -> list[int]:
        """The backends of the client connections named ``application``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                {"name": application},
            ).scalars()
            return list(rows)

    def find(
        self, application: str, reached: Callable[[Activity], bool], timeout: float = 10.0
    ) -> int:
        """Poll until a backend of the connections named ``application`` reaches a point:
        its pid (``FaultPointMissed`` if none does). For a store that owns its transactions,
        which borrows a connection per operation: the victim cannot report its backend."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in self.pids(application):
                activity = self.activity(pid)
                if activity is not None and reached(activity):
                    return pid
            time.sleep(0.002)
        raise FaultPointMissed(f"no backend of {application!r} reached the fault point")

    def terminate(self, pid: int) -> bool:
        with self.engine.connect() as conn:
            done: bool = conn.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
            ).scalar_one()
        return done

    def terminate_when(
        self, pid: int, reached: Callable[[Activity], bool], timeout: float = 10.0
    ) -> Activity:
        """Kill ``pid`` as soon as it reaches a point; the activity seen there."""
        seen = self.wait_until(pid, reached, timeout)
        self.terminate(pid)
        return seen

    def dispose(self) -> None:
        self.engine.dispose()


def waiting_for_advisory_lock(activity: Activity) -> bool:
    return activity.wait_event_type == "Lock" and activity.wait_event == "advisory"


def waiting_for_transaction(activity: Activity) -> bool:
    """Blocked behind another transaction (a row or key it inserted and has not committed)."""
    return activity.wait_event_type == "Lock" and activity.wait_event == "transactionid"


def inserting(activity: Activity) -> bool:
    """A statement under way that has written (the backend has a transaction id)."""
    return activity.state == "active" and activity.xid is not None


def committing(activity: Activity) -> bool:
    """COMMIT written locally, waiting for the synchronous standby that never comes."""
    return activity.wait_event == "SyncRep"


COMMIT_WAITING = "sa_crablet-fault-commit-waiting"
"""The ``application_name`` of the commit-waiting engine's connections."""


def commit_waiting_engine(url: str, **options: Any) -> Engine:
    """An engine whose COMMITs wait at the throwaway cluster's absent synchronous standby
    (see ``benchmarks.pg_cluster``) until their backend is killed: the commit record is
    written, the client never hears of it. Its connections are named ``COMMIT_WAITING``."""
    return create_engine(
        url,
        connect_args={"options": "-c synchronous_commit=on", "application_name": COMMIT_WAITING},
        **options,
    )


CONFLICT_SQLSTATES = {"40001": "serialization failure", "40P01": "deadlock"}


def judge(exc: BaseException, *, server_down: bool = False, at_commit: bool = False) -> str | None:
    """The name under which an acceptable error is counted, ``None`` for an unacceptable
    one. ``server_down``: the server was (re)starting, so a refused connection is fine.
    ``at_commit``: raised by the host's own ``session.commit()``, which the store never
    sees, so SQLAlchemy's error for a conflict PostgreSQL found at COMMIT (SERIALIZABLE)
    is the application's to handle."""
    if isinstance(exc, CrabletError):
        return type(exc).__name__
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return f"{type(exc).__name__}(invalidated)"
        if server_down and isinstance(exc, OperationalError):
            return "OperationalError(server down)"
        conflict = CONFLICT_SQLSTATES.get(str(getattr(exc.orig, "sqlstate", "")))
        if at_commit and conflict is not None:
            return f"{type(exc).__name__}({conflict} at COMMIT)"
    return None


def is_conflict(exc: BaseException) -> bool:
    """A lost race, whether the store or the host's COMMIT reported it."""
    if isinstance(exc, ConcurrencyError):
        return True
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(exc, DBAPIError) and str(sqlstate) in CONFLICT_SQLSTATES


def commit_outcome(exc: BaseException) -> str:
    """What an error raised by COMMIT means for the batch: ``failed`` when PostgreSQL
    answered with a conflict (it rolled back), ``unknown`` otherwise (no answer came)."""
    return "failed" if is_conflict(exc) else "unknown"


def describe(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    inner = f" from {type(orig).__module__}.{type(orig).__name__}" if orig is not None else ""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__module__}.{type(exc).__name__}{inner}: {first[:160]}"


@dataclass
class Ledger:
    """What the application was told, per marked batch, and the errors it saw.

    ``acknowledged``: the append's transaction committed and said so; ``failed``: an error
    came before COMMIT was sent, so nothing may be stored; ``unknown``: COMMIT was sent and
    no answer came (it may or may not have committed: all or nothing is all that holds).
    """

    acknowledged: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    scope: str = ""
    """Prefixes what is recorded as unexpected: which fault, on which path."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def outcome(self, batch: str, state: str) -> None:
        """Record what the application was told of ``batch``. A batch executed again after
        a failure (the same command's events) ends acknowledged: a stored copy of the
        failed run would then show as a batch stored twice, which is partial."""
        with self._lock:
            states = {
                "acknowledged": self.acknowledged,
                "failed": self.failed,
                "unknown": self.unknown,
            }
            states[state].add(batch)
            if state == "acknowledged":
                self.failed.discard(batch)
                self.unknown.discard(batch)

    def error(
        self, exc: BaseException, *, server_down: bool = False, at_commit: bool = False
    ) -> bool:
        """Count an error the application saw; ``False`` when it is unacceptable."""
        name = judge(exc, server_down=server_down, at_commit=at_commit)
        with self._lock:
            if name is None:
                self.unexpected.append(f"{self.scope}: {describe(exc)}")
                return False
            self.errors[name] += 1
            return True

    def fault(self, kind: str, count: int = 1) -> None:
        with self._lock:
            self.injected[kind] += count

    def problem(self, message: str) -> None:
        with self._lock:
            self.unexpected.append(f"{self.scope}: {message}")


class Background(Generic[T]):
    """``work()`` in a thread; ``join()`` returns its result or raises its error, and
    turns a victim that does not come back into a recorded hang."""

    def __init__(self, work: Callable[[], T]) -> None:
        self._box: list[tuple[bool, Any]] = []
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], T]) -> None:
        try:
            self._box.append((True, work()))
        except BaseException as exc:
            self._box.append((False, exc))

    def join(self, timeout: float = JOIN_TIMEOUT) -> T:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise Hang(f"no answer within {timeout:.0f} s")
        ok, value = self._box[0]
        if not ok:
            raise value
        result: T = value
        return result


class Hang(Exception):
    """A victim did not return after its fault."""


class Mailbox(Generic[T]):
    """One value handed from a victim thread to the fault (a backend pid)."""

    def __init__(self) -> None:
        self._value: T | None = None
        self._ready = threading.Event()

    def put(self, value: T) -> None:
        self._value = value
        self._ready.set()

    def get(self, timeout: float = 10.0) -> T:
        if not self._ready.wait(timeout) or self._value is None:
            raise FaultPointMissed("the victim never reported its backend")
        return self._value
