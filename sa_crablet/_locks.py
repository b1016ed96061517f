"""Advisory lock keys that make conditional appends race-free on PostgreSQL.

A conditional append takes an EXCLUSIVE lock on a key for each item of its condition, and a
SHARED lock on every key its own events could be matched through. Any event that matches a
condition item carries that item's key among its own keys (an event of type ``t`` with tag
``g`` locks ``(t, g)``, ``(*, g)``, ``(t, *)`` and ``(*, *)``; an item locks ``(t, g0)`` for
each of its types and one of its tags), so two conditional appends whose scopes could see
each other's events always meet on a key: one waits for the other to commit, then checks
in a fresh statement and sees its events.

Unconditional appends take no lock: whatever they write is either visible to a later
check, or covered by the reader's snapshot (see ``Head``), so no anomaly needs them to wait.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sa_crablet.events import Event
from sa_crablet.query import Query

ANY = "*"

MAX_SHARED_KEYS = 256
"""Above this many shared keys a batch takes the global key exclusively instead, so a large
batch cannot exhaust PostgreSQL's lock table (``max_locks_per_transaction``)."""


def lock_key(type_: str, tag: str) -> int:
    """A signed 64-bit key for the boundary ``(type, tag)``; lengths keep it unambiguous."""
    raw = f"{len(type_)}:{type_}|{tag}".encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big", signed=True)


GLOBAL_KEY = lock_key(ANY, ANY)


def condition_keys(query: Query) -> set[int]:
    if query.match_all:
        return {GLOBAL_KEY}
    keys: set[int] = set()
    for item in query.items:
        # Any one of the item's tags is enough: a matching event carries all of them.
        tag = item.tags[0] if item.tags else ANY
        for type_ in item.types or (ANY,):
            keys.add(lock_key(type_, tag))
    return keys


def event_keys(events: Iterable[Event]) -> set[int]:
    keys = {GLOBAL_KEY}
    for event in events:
        keys.add(lock_key(event.type, ANY))
        for tag in event.tags:
            keys.add(lock_key(event.type, tag))
            keys.add(lock_key(ANY, tag))
    return keys


def plan(query: Query, events: Iterable[Event]) -> tuple[list[int], list[bool]]:
    """Sorted keys and whether each is exclusive (exclusive wins over shared)."""
    exclusive = condition_keys(query)
    shared = event_keys(events)
    if len(shared) > MAX_SHARED_KEYS:
        # Every conditional append shares GLOBAL_KEY, so holding it exclusively excludes
        # them all, which covers every key this batch would otherwise have shared.
        shared = set()
        exclusive.add(GLOBAL_KEY)
    keys = sorted(exclusive | shared)
    return keys, [key in exclusive for key in keys]
