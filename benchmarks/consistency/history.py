"""What the workers did, as they saw it: every read, append and check, grouped by the host
transaction (a *unit*) it ran in, with the times the verifier needs to reason about order.

Times are ``time.monotonic()`` readings taken in the worker's thread: ``start`` just before a
call, ``end`` just after it returned, ``commit_start`` just before ``Session.commit()``,
``commit_done`` just after it returned. So an event whose unit's ``commit_done`` is earlier
than another call's ``start`` was certainly committed before that call began.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from sa_crablet import Head, Query

COMMITTED = "committed"
ROLLED_BACK = "rolled-back"
"""The host rolled back on purpose."""
ABORTED = "aborted"
"""A call failed in a way that left the transaction unusable (or unexpectedly): rolled back."""
COMMIT_FAILED = "commit-failed"
"""``commit()`` raised a serialization failure or deadlock: nothing was committed."""
COMMIT_UNKNOWN = "commit-unknown"
"""``commit()`` raised something else: whether it committed is unknown."""
AUTOCOMMIT = "autocommit"
"""Each store call was its own transaction: a call that returned has committed."""

# How a decision's head travelled to its append condition.
CARRIED_HEAD = "head"
CARRIED_TEXT = "text"
"""``Head.parse(str(head))``."""
CARRIED_POSITION = "position"
"""A bare ``head.position`` (the control that shows the weaker guarantee of an integer)."""
CARRIED_NONE = "none"
"""No ``after``: "only if nothing matches"."""
CARRIED_NAIVE = "naive"
"""No condition at all: the host re-read and, seeing nothing new, appended unconditionally
(the check-then-insert control)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What a decision knew: its query and the head of the read it folded (``None`` when it
    read nothing), and how that head reached the append condition. The verifier judges a
    decision by the head the *read* returned, whatever form travelled to the store."""

    query: Query
    head: Head | None
    carried: str

    @property
    def protected(self) -> bool:
        """Whether the store was asked to protect this decision with its full head."""
        return self.carried in (CARRIED_HEAD, CARRIED_TEXT, CARRIED_NONE)


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """A read (or a projection): what it asked and what it returned.

    ``positions`` are the events returned, in the order returned; ``after`` is what the
    store was given (a bare position as a ``Head`` without snapshot). ``kind`` is ``"read"``,
    ``"last"`` (backwards with ``limit``) or ``"project"``; a projection also records, per
    projector, its query and the positions folded into it (``projected``), and ``after``
    is ``None`` for it when its states carry every earlier event forward."""

    kind: str
    query: Query
    after: Head | None
    head: Head
    positions: array[int]
    start: float
    end: float
    limit: int | None = None
    projected: tuple[tuple[Query, array[int]], ...] = ()
    known: Head | None = None
    """When ``after`` was a bare position: the full head it was taken from. The read must
    return every event its head covers that ``known`` did not."""

    @property
    def since(self) -> Head | None:
        """What the reader already knew: events this head covers need not be returned."""
        return self.known if self.known is not None else self.after


@dataclass(frozen=True, slots=True)
class AppendRecord:
    """One ``append`` call. ``attempt`` is the marker in every event's data; ``decision``
    is ``None`` for an unconditional append. ``outcome``: ``"ok"`` (returned ``last``),
    ``"refused"`` (``ConcurrencyError``) or ``"error"``."""

    attempt: str
    count: int
    decision: Decision | None
    outcome: str
    last: int | None
    start: float
    end: float

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass(frozen=True, slots=True)
class CheckRecord:
    """One ``store.check(condition)`` call for a decision that appends nothing."""

    decision: Decision
    passed: bool
    start: float
    end: float


Op = ReadRecord | AppendRecord | CheckRecord


@dataclass(frozen=True, slots=True)
class Unit:
    """One host transaction (or, under AUTOCOMMIT, one run of calls each committed alone)."""

    id: str
    worker: int
    host: str
    ops: tuple[Op, ...]
    outcome: str
    begin: float
    commit_start: float | None
    commit_done: float | None
    errors: tuple[str, ...] = ()
    cause: str | None = None
    """Why an aborted unit was aborted: the database's code for the refusal."""

    @property
    def autocommit(self) -> bool:
        return self.outcome == AUTOCOMMIT

    def committed(self, append: AppendRecord) -> bool:
        """Whether ``append``'s events are in the store for good."""
        return append.ok and self.outcome in (COMMITTED, AUTOCOMMIT)

    def commit_done_of(self, append: AppendRecord) -> float:
        """When ``append``'s events were certainly committed (only if :meth:`committed`)."""
        if self.autocommit:
            return append.end
        assert self.commit_done is not None
        return self.commit_done

    def read_begin(self, read: ReadRecord) -> float:
        """No later than the start of the snapshot ``read`` was served from."""
        return read.start if self.autocommit else self.begin

    def lock_release(self, check: CheckRecord) -> float:
        """No later than when the locks a passed ``check`` took were released."""
        if self.outcome == COMMITTED and self.commit_start is not None:
            return self.commit_start
        return check.start


@dataclass
class UnitLog:
    """A unit being recorded by its worker."""

    id: str
    worker: int
    host: str
    begin: float
    ops: list[Op] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    commit_start: float | None = None
    attempts: int = 0

    def next_attempt(self) -> str:
        """A marker for the next append's events, unique in the run."""
        self.attempts += 1
        return f"{self.id}.{self.attempts}"

    def close(
        self, outcome: str, commit_done: float | None = None, cause: str | None = None
    ) -> Unit:
        return Unit(
            self.id,
            self.worker,
            self.host,
            tuple(self.ops),
            outcome,
            self.begin,
            self.commit_start,
            commit_done,
            tuple(self.errors),
            cause,
        )
