"""How many advisory lock keys each open transaction has taken, to cap the total (see
:mod:`sa_crablet._plans.locks`): the one piece of state the store keeps across operations."""

from __future__ import annotations

import threading
import weakref

from sa_crablet._plans.locks import ESCALATED, MAX_KEYS_PER_TRANSACTION, LockPlan


class Ledger:
    """How many keys each open transaction has locked so far, to cap the total.

    Keyed by the transaction object (SQLAlchemy's, one per transaction), held weakly, so an
    ended transaction's entry goes with it. The count is an upper bound: keys taken twice,
    or released by a rolled-back savepoint, still count, which can only escalate early.
    """

    def __init__(self) -> None:
        self._taken: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def admit(self, transaction: object | None, wanted: LockPlan) -> LockPlan:
        """``wanted``, or the escalated plan if the transaction's keys would exceed the cap
        (or it already holds the global key exclusively, which covers everything)."""
        if transaction is None:  # the operation's own transaction: nothing accumulates
            return wanted
        with self._lock:
            taken = self._taken.get(transaction, 0)
            if taken < 0:  # escalated before: the global key covers every later append
                return ESCALATED
            total = taken + len(wanted.keys)
            if wanted.escalated or total > MAX_KEYS_PER_TRANSACTION:
                self._taken[transaction] = -1
                return ESCALATED
            self._taken[transaction] = total
            return wanted


LEDGER = Ledger()
