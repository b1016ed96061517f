"""Backends killed in the middle of appends, at points reached deterministically:

* ``lock-wait``: a conditional append waiting for the advisory lock another transaction
  holds on its boundary; the holder then commits normally.
* ``lock-holder``: the transaction holding that lock; the waiter then goes on and commits.
* ``mid-batch``: a batch of ``max_batch_size`` events killed while its INSERT is under way
  (the backend has written, the statement is still active); when the statement finished
  first, the kill lands with the batch written and uncommitted (``before-commit``).
* ``commit``: the COMMIT itself, waiting at the absent synchronous standby after its commit
  record was written. The application hears nothing back: the batch is ``unknown`` (here
  in fact committed), and must be stored whole or not at all.

Every fault ends with the application's next unit of work, which must succeed.
"""

from __future__ import annotations

import threading

from sqlalchemy.orm import Session

from benchmarks.fault_kit import (
    Background,
    Ledger,
    Mailbox,
    backend_pid,
    committing,
    marked_batch,
    waiting_for_advisory_lock,
)
from benchmarks.fault_target import Target, boundary, expect_killed, recover
from sa_crablet import AppendCondition, Query

MID_BATCH_ATTEMPTS = 5
"""Tries at catching a batch's INSERT under way before settling for a kill after it."""
BIG_PAD = 2000
"""Characters of filler per event of the big batch: enough to make its INSERT last."""


class _LockContest:
    """Two conditional appends on one fresh boundary: the holder's, appended (so holding
    the boundary's lock) in ``holder``, and the waiter's, started in a thread of its own
    and waiting for that lock when the contest is entered."""

    def __init__(self, target: Target, holder: Session) -> None:
        tag = boundary("lock")
        self.condition = AppendCondition(Query.of(tags=[tag]), None)
        self.held, held_events = marked_batch("Held", [tag], 3)
        self.waited, self.waited_events = marked_batch("Waited", [tag], 3)
        self.target = target
        self.holder_pid = backend_pid(holder)
        target.store(holder).append(held_events, self.condition)
        pid: Mailbox[int] = Mailbox()
        self.waiter = Background(lambda: self._wait(pid))
        self.waiter_pid = pid.get()
        target.backends.wait_until(self.waiter_pid, waiting_for_advisory_lock)

    def _wait(self, pid: Mailbox[int]) -> object:
        with Session(self.target.engine) as session:
            pid.put(backend_pid(session))
            self.target.store(session).append(self.waited_events, self.condition)
            session.commit()
        return None


def kill_waiting_for_lock(target: Target, ledger: Ledger) -> None:
    with Session(target.engine) as holder:
        contest = _LockContest(target, holder)
        target.backends.terminate(contest.waiter_pid)
        ledger.fault("lock-wait")
        expect_killed(contest.waiter, ledger, contest.waited, "failed")
        holder.commit()
    ledger.outcome(contest.held, "acknowledged")
    recover(target, ledger, "a kill during a lock wait")


def kill_lock_holder(target: Target, ledger: Ledger) -> None:
    """The other way round: kill the transaction holding the boundary's lock. The waiter
    goes on, its check finds nothing (the holder's events died with it) and it commits."""
    with Session(target.engine) as holder:
        contest = _LockContest(target, holder)
        target.backends.terminate(contest.holder_pid)
        ledger.fault("lock-holder")
        try:
            contest.waiter.join()
            ledger.outcome(contest.waited, "acknowledged")
        except Exception as exc:
            ledger.error(exc)
            ledger.problem(f"the waiter failed after the lock holder was killed: {exc!r}")
        try:
            holder.commit()
            ledger.problem("a transaction whose backend was killed committed")
        except Exception as exc:  # its backend was gone before COMMIT was sent
            ledger.outcome(contest.held, "failed")
            ledger.error(exc)
    recover(target, ledger, "a kill of a lock holder")


def kill_mid_batch(target: Target, ledger: Ledger, *, conditional: bool) -> None:
    """Kill a big batch's append while its INSERT runs (trying again a few times when the
    statement is faster than the poll); the transaction is never committed."""
    for _ in range(MID_BATCH_ATTEMPTS):
        if _kill_big_batch(target, ledger, conditional):
            break
    recover(target, ledger, "a kill during a batch")


def _kill_big_batch(target: Target, ledger: Ledger, conditional: bool) -> bool:
    """One try; ``True`` when the kill landed while the INSERT was still running."""
    tag = boundary("batch")
    condition = AppendCondition(Query.of(tags=[tag]), None) if conditional else None
    batch, events = marked_batch("Bulk", [tag], target.config.max_batch_size, pad=BIG_PAD)
    pid: Mailbox[int] = Mailbox()
    gate = threading.Event()

    def victim() -> object:
        with Session(target.engine) as session:
            pid.put(backend_pid(session))
            target.store(session).append(events, condition)
            gate.wait(30)  # COMMIT only once the fault has been injected
            session.commit()
        return None

    appending = Background(victim)
    seen = target.backends.terminate_when(pid.get(), lambda a: a.xid is not None)
    gate.set()
    mid = seen.state == "active"
    ledger.fault("mid-batch" if mid else "before-commit")
    expect_killed(appending, ledger, batch, "failed")
    return mid


def kill_at_commit(target: Target, ledger: Ledger) -> None:
    """Kill the backend while its COMMIT waits for the standby: written, unanswered."""
    tag = boundary("commit")
    batch, events = marked_batch("Committed", [tag], 4)
    pid: Mailbox[int] = Mailbox()
    sent = threading.Event()

    def victim() -> object:
        with Session(target.commit_waiting) as session:
            pid.put(backend_pid(session))
            target.store(session).append(events, AppendCondition(Query.of(tags=[tag]), None))
            sent.set()
            session.commit()
        return None

    committer = Background(victim)
    target.backends.terminate_when(pid.get(), committing)
    ledger.fault("commit")
    if not sent.is_set():
        ledger.problem("the COMMIT-time kill landed before COMMIT")
    expect_killed(committer, ledger, batch, "unknown")
    recover(target, ledger, "a kill during COMMIT")
