"""Advisory lock keys that make appends race-free on PostgreSQL.

A conditional append (and ``check()``) takes an EXCLUSIVE lock on a key for each item of its
condition; every append, conditional or not, takes a SHARED lock on every key its own events
could be matched through. Any event that matches a condition item carries that item's key
among its own keys (an event of type ``t`` with tag ``g`` locks ``(t, g)``, ``(*, g)``,
``(t, *)`` and ``(*, *)``; an item locks ``(t, g0)`` for each of its types and one of its
tags), so an append and a condition whose scope covers its events always meet on a key: the
later one waits for the earlier one's transaction to end.

Why unconditional appends lock too: without it, an unconditional append can insert an
in-scope event, stay uncommitted while a conditional append checks (and sees nothing), then
commit *below* the conditional append's event. Replayed in position order, the decision would
have been taken on a state it never saw. With the shared lock, the conditional append waits
for it, then checks on a fresh snapshot and sees the event.

PostgreSQL's lock table is shared by every session (``max_locks_per_transaction`` times the
number of connections), so one operation never takes more than :data:`MAX_KEYS` keys, and a
transaction's appends together no more than :data:`MAX_KEYS_PER_TRANSACTION`: beyond either,
the operation takes the global key ``(*, *)`` exclusively instead. Every append shares that
key, so holding it exclusively excludes every other append and condition for the rest of the
transaction, which covers whatever finer keys it would have taken.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from sa_crablet.events import Event
from sa_crablet.query import Query

ANY = "*"

MAX_KEYS = 64
"""Most keys one operation locks before it takes the global key exclusively instead."""
MAX_KEYS_PER_TRANSACTION = 256
"""Most keys the appends of one transaction lock together, likewise."""


@lru_cache(maxsize=65536)
def lock_key(type_: str, tag: str) -> int:
    """A signed 64-bit key for the boundary ``(type, tag)``; lengths keep it unambiguous.
    (Cached: the same boundaries come back with every append to them.)"""
    raw = f"{len(type_)}:{type_}|{tag}".encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big", signed=True)


GLOBAL_KEY = lock_key(ANY, ANY)


@dataclass(frozen=True, slots=True)
class LockPlan:
    """The keys one operation locks, sorted (one global order: no deadlock between two
    single operations), and for each whether it is taken exclusively."""

    keys: tuple[int, ...]
    exclusive: tuple[bool, ...]

    @property
    def escalated(self) -> bool:
        """Whether this plan holds the global key exclusively (which covers every key)."""
        return self.keys == (GLOBAL_KEY,) and self.exclusive == (True,)


ESCALATED = LockPlan((GLOBAL_KEY,), (True,))


def condition_keys(query: Query, most: int | None = None) -> set[int] | None:
    """The exclusive keys of a condition, or ``None`` once there would be more than
    ``most``; ``Query.all()`` has the global key alone."""
    if query.match_all:
        return {GLOBAL_KEY}
    pairs: set[tuple[str, str]] = set()
    for item in query.items:
        # Any one of the item's tags is enough: a matching event carries all of them.
        tag = item.tags[0] if item.tags else ANY
        pairs.update((type_, tag) for type_ in item.types or (ANY,))
        if most is not None and len(pairs) > most:
            return None
    return {lock_key(type_, tag) for type_, tag in pairs}


def event_keys(events: Iterable[Event], most: int | None = None) -> set[int] | None:
    """The shared keys of ``events``, or ``None`` once there would be more than ``most``
    (counted before any is hashed: a large batch escalates without hashing its pairs)."""
    pairs = {(ANY, ANY)}
    for event in events:
        pairs.add((event.type, ANY))
        for tag in event.tags:
            pairs.add((event.type, tag))
            pairs.add((ANY, tag))
        if most is not None and len(pairs) > most:
            return None
    return {lock_key(type_, tag) for type_, tag in pairs}


def plan(query: Query | None, events: Iterable[Event]) -> LockPlan:
    """The keys for an append of ``events`` under a condition on ``query`` (``None``: an
    unconditional append; no events: ``check()``). Exclusive wins over shared."""
    exclusive = condition_keys(query, MAX_KEYS) if query is not None else set()
    if exclusive is None or GLOBAL_KEY in exclusive:
        return ESCALATED
    shared = event_keys(events, MAX_KEYS - len(exclusive))
    if shared is None or len(exclusive | shared) > MAX_KEYS:
        return ESCALATED
    keys = sorted(exclusive | shared)
    return LockPlan(tuple(keys), tuple(key in exclusive for key in keys))
