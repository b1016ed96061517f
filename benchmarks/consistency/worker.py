"""One worker: random decisions, each in a randomly chosen host, until the deadline.

A unit is one host transaction of one to three operations: a decision (read, fold, append
with the read's head), a projection-based decision, a ``Query.all()`` decision, an
unconditional append, a read, or a ``check()`` that appends nothing. The host sometimes
rolls back on purpose, and short random pauses widen the windows in which concurrent
transactions overlap. Everything is recorded (see :mod:`.history`); nothing is judged here.

The ``decider`` chooses how a decision reaches the store: ``"store"`` (an
``AppendCondition`` with the read's ``Head``, or its text form parsed back), or one of two
controls that the verifier must catch: ``"naive"`` (re-read, and if nothing is new append
*unconditionally*: check-then-insert without the store's protection) and ``"position"``
(``after=head.position``: a bare integer, which loses the head's snapshot).
"""

from __future__ import annotations

import random
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from benchmarks.consistency.history import (
    ABORTED,
    AUTOCOMMIT,
    CARRIED_HEAD,
    CARRIED_NAIVE,
    CARRIED_NONE,
    CARRIED_POSITION,
    CARRIED_TEXT,
    COMMIT_FAILED,
    COMMIT_UNKNOWN,
    COMMITTED,
    ROLLED_BACK,
    AppendRecord,
    CheckRecord,
    Decision,
    ReadRecord,
    Unit,
    UnitLog,
)
from benchmarks.consistency.hosts import Host
from benchmarks.consistency.workload import Vocabulary, random_events, random_query
from sa_crablet import (
    AppendCondition,
    ConcurrencyError,
    DecisionModel,
    Event,
    EventStore,
    Head,
    Query,
    SequencedEvent,
    StateProjector,
)

DECIDERS = ("store", "naive", "position")
SERIALIZATION_FAILURES = ("40001", "40P01")
ROLLBACK_SHARE = 0.08
PAGED_SHARE = 0.5
"""Transactions whose store reads in pages of ``fetch_size``, when one is given."""
OPS_PER_UNIT = (1,) * 18 + (2, 3)
"""Operations per host transaction: mostly one; several ones can deadlock each other."""


def _collect(state: list[int], event: SequencedEvent) -> list[int]:
    state.append(event.position)
    return state


def positions_projector(id: str, query: Query) -> StateProjector[list[int]]:
    """A projector whose state is the positions it was given, in order."""
    return StateProjector(id, query, None, _collect, factory=list)


def driver_code(exc: BaseException) -> str | None:
    """The SQLSTATE (or SQLite error name) behind a driver error or a library error."""
    cause = exc if isinstance(exc, DBAPIError) else exc.__cause__
    orig = getattr(cause, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    return None if code is None else str(code)


def describe(where: str, exc: BaseException, elapsed: float | None = None) -> str:
    """An unexpected error as evidence: where, the exception, the driver's code, and how
    long the call that raised it took."""
    code = driver_code(exc)
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    took = f" after {elapsed * 1000:.1f} ms" if elapsed is not None else ""
    return f"{where}: {kind}{f' [{code}]' if code else ''}{took}: {first_line}"


class Unusable(Exception):
    """The transaction can no longer be used (a refusal that aborted it): roll back."""


class Worker:
    def __init__(
        self,
        index: int,
        hosts: list[Host],
        vocabulary: Vocabulary,
        decider: str,
        unconditional: bool,
        seed: int,
        started: float,
        deadline: float,
        jitter: bool = True,
        think: float = 0.002,
        max_ops: int = 3,
        fetch_size: int | None = None,
    ) -> None:
        self.index = index
        self.hosts = hosts
        self.vocabulary = vocabulary
        self.decider = decider
        self.unconditional = unconditional
        self.rng = random.Random(f"{seed}:{index}")
        self.started = started
        self.deadline = deadline
        self.jitter = jitter
        self.think = think
        self.max_ops = max_ops
        self.fetch_size = fetch_size
        self.units: list[Unit] = []
        self._seq = 0
        # Carried from a committed unit to a later one, as a web form or a message would.
        self._remembered: Decision | None = None
        self._model: tuple[list[StateProjector[list[int]]], DecisionModel] | None = None
        self._all_head: Head | None = None
        self._pending: dict[str, Any] = {}
        # The latest store call and when it began (evidence for an unexpected error).
        self._call_name = "begin"
        self._call_start = 0.0

    # -- the loop ------------------------------------------------------------------------------

    def run(self, barrier: threading.Barrier) -> None:
        barrier.wait()
        while time.monotonic() < self.deadline:
            unit = self._unit()
            self.units.append(unit)
            if unit.outcome in (COMMITTED, AUTOCOMMIT):
                for name, value in self._pending.items():
                    setattr(self, name, value)
            self._pending.clear()

    def _unit(self) -> Unit:
        host = self.rng.choice(self.hosts)
        self._seq += 1
        log = UnitLog(f"w{self.index}.{self._seq}", self.index, host.name, time.monotonic())
        self._call_name, self._call_start = "begin", log.begin
        ended = AUTOCOMMIT if host.autocommit else None
        with Session(host.bind) as session:
            config = host.config
            if self.fetch_size is not None and self.rng.random() < PAGED_SHARE:
                # Reads longer than a page go on through a server-side cursor.
                config = replace(config, fetch_size=self.fetch_size)
            store = EventStore(session, config)
            try:
                if host.begin is not None:
                    session.connection().exec_driver_sql(host.begin)
                for _ in range(min(self.max_ops, self.rng.choice(OPS_PER_UNIT))):
                    self._operation()(store, log)
                if self.rng.random() < ROLLBACK_SHARE:
                    session.rollback()
                    return log.close(ended or ROLLED_BACK)
                self._pause(0.2, 0.003)
                return self._commit(session, log, host)
            except Unusable as exc:
                session.rollback()
                refusal = exc.__cause__
                cause = None if refusal is None else driver_code(refusal)
                return log.close(ended or ABORTED, cause=cause or "refused")
            except Exception as exc:  # anything but a refusal is an unexpected error
                elapsed = time.monotonic() - self._call_start
                where = f"{host.name} {log.id} {self._call_name}"
                log.errors.append(describe(where, exc, elapsed))
                session.rollback()
                return log.close(ended or ABORTED)

    def _commit(self, session: Session, log: UnitLog, host: Host) -> Unit:
        if host.autocommit:
            session.commit()
            return log.close(AUTOCOMMIT)
        log.commit_start = time.monotonic()
        try:
            session.commit()
        except DBAPIError as exc:
            session.rollback()
            if getattr(exc.orig, "sqlstate", None) in SERIALIZATION_FAILURES:
                return log.close(COMMIT_FAILED)
            log.errors.append(describe(f"{host.name} {log.id} commit", exc))
            return log.close(COMMIT_UNKNOWN)
        return log.close(COMMITTED, time.monotonic())

    def _operation(self) -> Callable[[EventStore, UnitLog], None]:
        choices: list[tuple[float, Callable[[EventStore, UnitLog], None]]] = [
            (0.30, self._decide),
            (0.15, self._project),
            (0.04, self._decide_all),
            (0.25 if self.unconditional else 0.0, self._append_unconditionally),
            (0.13, self._just_read),
            (0.13, self._check),
        ]
        weights = [weight for weight, _ in choices]
        return self.rng.choices([op for _, op in choices], weights)[0]

    # -- operations ----------------------------------------------------------------------------

    def _decide(self, store: EventStore, log: UnitLog) -> None:
        """Read (or recall) a query's events, fold, append with the read's head."""
        roll = self.rng.random()
        remembered = self._remembered
        if remembered is not None and remembered.head is not None and roll < 0.1:
            # A head from an earlier transaction, carried as text (or as a bare position).
            self._remembered = None
            self._decide_on(store, log, remembered.query, remembered.head, text=True)
        elif roll < 0.15 and self.decider == "store":
            query = self._query()
            events = self._events(log)
            decision = Decision(query, None, CARRIED_NONE)
            self._append(store, log, events, AppendCondition(query), decision)
        else:
            query = self._query()
            last = roll < 0.25  # "the last such event": backwards, limit 1
            read = self._read(store, log, query, backwards=last, limit=1 if last else None)
            self._think()
            self._decide_on(store, log, query, read.head)

    def _decide_on(
        self, store: EventStore, log: UnitLog, query: Query, head: Head, text: bool = False
    ) -> None:
        events = self._events(log)
        if self.decider == "naive":
            again = self._read(store, log, query, after=head)
            if again.positions:
                return  # something new: this host decides not to append
            self._append(store, log, events, None, Decision(query, again.head, CARRIED_NAIVE))
            return
        if self.decider == "position":
            decision = Decision(query, head, CARRIED_POSITION)
            after: Head | int = head.position
        elif text or self.rng.random() < 0.5:
            decision, after = Decision(query, head, CARRIED_TEXT), Head.parse(str(head))
        else:
            decision, after = Decision(query, head, CARRIED_HEAD), head
        if self._append(store, log, events, AppendCondition(query, after), decision):
            self._pending["_remembered"] = decision

    def _carry(self, head: Head) -> Head | int:
        """A head as this decider carries it to a later call."""
        return head.position if self.decider == "position" else Head.parse(str(head))

    def _project(self, store: EventStore, log: UnitLog) -> None:
        """A decision model of one projector per query item, sometimes continued from an
        earlier model's head and states."""
        start = self._called("project")
        previous = self._model
        try:
            if previous is not None and self.rng.random() < 0.4:
                self._model = None  # continued at most once per commit
                projectors = previous[0]
                states = {key: list(value) for key, value in previous[1].states.items()}
                model = store.project(
                    projectors, after=self._carry(previous[1].head), states=states
                )
            else:
                query = self._query()
                projectors = [
                    positions_projector(f"p{i}", Query([item]))
                    for i, item in enumerate(query.items)
                ]
                model = store.project(projectors)
        except ConcurrencyError as exc:
            raise Unusable from exc
        projected = tuple((p.query, array("q", model.states[p.id])) for p in projectors)
        union = sorted({position for _, folded in projected for position in folded})
        query = model.append_condition.fail_if_events_match
        log.ops.append(
            ReadRecord(
                "project",
                query,
                None,
                model.head,
                array("q", union),
                start,
                time.monotonic(),
                projected=projected,
            )
        )
        self._pending["_model"] = (projectors, model)
        self._think()
        self._decide_on(store, log, query, model.head)

    def _decide_all(self, store: EventStore, log: UnitLog) -> None:
        """Everything since this worker's last look at the whole log; sometimes a decision
        on it (conflicts with any event appended since)."""
        known = self._all_head
        after = None if known is None else self._carry(known)
        read = self._read(store, log, Query.all(), after=after, known=known)
        self._pending["_all_head"] = read.head
        if self.rng.random() < 0.5:
            self._decide_on(store, log, Query.all(), read.head)

    def _append_unconditionally(self, store: EventStore, log: UnitLog) -> None:
        self._append(store, log, self._events(log), None, None)
        self._pause(0.3, 0.005)  # an unconditional writer still in flight

    def _just_read(self, store: EventStore, log: UnitLog) -> None:
        if self.rng.random() < 0.15:
            self._read(store, log, self._query(), backwards=True, limit=self.rng.randint(1, 3))
        else:
            self._read(store, log, self._query())

    def _check(self, store: EventStore, log: UnitLog) -> None:
        """A decision that appends nothing: ``check()`` its read's condition."""
        query = self._query()
        read = self._read(store, log, query)
        self._think()
        text = self.rng.random() < 0.5
        after = Head.parse(str(read.head)) if text else read.head
        decision = Decision(query, read.head, CARRIED_TEXT if text else CARRIED_HEAD)
        start = self._called("check")
        try:
            store.check(AppendCondition(query, after))
        except ConcurrencyError as exc:
            log.ops.append(CheckRecord(decision, False, start, time.monotonic()))
            if not exc.transaction_usable:
                raise Unusable from exc
            return
        log.ops.append(CheckRecord(decision, True, start, time.monotonic()))

    # -- recorded store calls ------------------------------------------------------------------

    def _read(
        self,
        store: EventStore,
        log: UnitLog,
        query: Query,
        *,
        after: Head | int | None = None,
        known: Head | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> ReadRecord:
        """``known``: the full head that ``after`` was made from (when it is a bare
        position), which the verifier holds the read to."""
        start = self._called("read")
        try:
            result = store.read(query, after=after, backwards=backwards, limit=limit)
            positions = array("q", (event.position for event in result))
            head = result.head
        except ConcurrencyError as exc:  # a serialization failure: the transaction is gone
            raise Unusable from exc
        kind = "last" if backwards else "read"
        record = ReadRecord(
            kind,
            query,
            Head(after) if isinstance(after, int) else after,
            head,
            positions,
            start,
            time.monotonic(),
            limit=limit,
            known=known,
        )
        log.ops.append(record)
        return record

    def _append(
        self,
        store: EventStore,
        log: UnitLog,
        events: list[Event],
        condition: AppendCondition | None,
        decision: Decision | None,
    ) -> bool:
        """Append and record the outcome; ``True`` if accepted, ``False`` if refused with
        the transaction still usable."""
        assert isinstance(events[0].data, dict)
        attempt = str(events[0].data["attempt"])
        start = self._called("append")
        try:
            last = store.append(events, condition)
        except ConcurrencyError as exc:
            log.ops.append(
                AppendRecord(
                    attempt, len(events), decision, "refused", None, start, time.monotonic()
                )
            )
            if not exc.transaction_usable:
                raise Unusable from exc
            return False
        except Exception:
            log.ops.append(
                AppendRecord(attempt, len(events), decision, "error", None, start, time.monotonic())
            )
            raise
        log.ops.append(
            AppendRecord(attempt, len(events), decision, "ok", last, start, time.monotonic())
        )
        return True

    def _called(self, name: str) -> float:
        self._call_name, self._call_start = name, time.monotonic()
        return self._call_start

    # -- randomness ----------------------------------------------------------------------------

    def _names(self) -> tuple[list[str], list[str]]:
        return self.vocabulary.names(time.monotonic() - self.started)

    def _query(self) -> Query:
        return random_query(self.rng, *self._names())

    def _events(self, log: UnitLog) -> list[Event]:
        return random_events(self.rng, *self._names(), log.next_attempt())

    def _think(self) -> None:
        """Between a decision's read and its append: the longer, the more concurrent
        writers commit in between."""
        self._pause(0.5, self.think)

    def _pause(self, chance: float, longest: float) -> None:
        if self.jitter and self.rng.random() < chance:
            time.sleep(self.rng.uniform(0, longest))
