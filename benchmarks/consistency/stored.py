"""The whole stored log, read back by plain SQL (not through the store under test), with
the indexes the verifier needs: by position, type, tag and writing transaction."""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from sa_crablet import Head, Query
from sa_crablet.schema import EVENTS_TABLE


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    type: str
    tags: frozenset[str]
    transaction_id: int | None
    attempt: str | None
    index: int | None
    """Its place in its batch (from the marker in its data)."""


def covered(event: StoredEvent, head: Head | None) -> bool:
    """Whether a read with this head saw ``event`` (if the read was right): at or below its
    position and, with a snapshot, written by a transaction visible to it."""
    if head is None or event.position > head.position:
        return False
    snapshot = head.snapshot
    if snapshot is None or event.transaction_id is None:
        return True
    return not snapshot.invisible(event.transaction_id)


def read_log(engine: Engine) -> list[StoredEvent]:
    postgresql = engine.dialect.name == "postgresql"
    xid = "transaction_id::text" if postgresql else "NULL"
    sql = f"SELECT position, type, tags, data, {xid} FROM {EVENTS_TABLE} ORDER BY position"
    with engine.connect() as conn:
        rows = conn.execute(text(sql)).all()
    return [_stored(*row) for row in rows]


def _stored(position: int, type_: str, tags: Any, data: Any, xid: str | None) -> StoredEvent:
    if isinstance(tags, str):  # SQLite: JSON text
        tags = json.loads(tags)
    if isinstance(data, str):
        data = json.loads(data)
    marker = data if isinstance(data, dict) else {}
    attempt = marker.get("attempt")
    index = marker.get("i")
    return StoredEvent(
        position,
        type_,
        frozenset(tags),
        None if xid is None else int(xid),
        attempt if isinstance(attempt, str) else None,
        index if isinstance(index, int) else None,
    )


class Log:
    """The stored events, in position order, with look-ups by type, tag and transaction."""

    def __init__(self, events: list[StoredEvent]) -> None:
        self.events = events
        self.positions = [e.position for e in events]
        self.by_position = {e.position: e for e in events}
        by_type: dict[str, list[StoredEvent]] = defaultdict(list)
        by_tag: dict[str, list[StoredEvent]] = defaultdict(list)
        by_xid: dict[int, list[StoredEvent]] = defaultdict(list)
        for event in events:
            by_type[event.type].append(event)
            for tag in event.tags:
                by_tag[tag].append(event)
            if event.transaction_id is not None:
                by_xid[event.transaction_id].append(event)
        self._lists: dict[tuple[str, str], tuple[list[int], list[StoredEvent]]] = {
            ("type", key): ([e.position for e in value], value) for key, value in by_type.items()
        } | {("tag", key): ([e.position for e in value], value) for key, value in by_tag.items()}
        self.by_xid = dict(by_xid)
        self.xids = sorted(by_xid)

    def _range(self, key: tuple[str, str] | None, low: int, high: int | None) -> list[StoredEvent]:
        """Events of one posting list (all events for ``None``) with ``low < position``
        and, if given, ``position <= high``."""
        if key is None:
            positions, events = self.positions, self.events
        else:
            positions, events = self._lists.get(key, ([], []))
        start = bisect.bisect_right(positions, low)
        end = len(positions) if high is None else bisect.bisect_right(positions, high)
        return events[start:end]

    def matching(self, query: Query, low: int = 0, high: int | None = None) -> list[StoredEvent]:
        """Events matching ``query`` with ``low < position <= high``, in position order."""
        if query.match_all:
            return self._range(None, low, high)
        found: dict[int, StoredEvent] = {}
        for item in query.items:
            if item.tags:
                # Every match carries each of the item's tags: scan the shortest tag list.
                shortest = min((self._range(("tag", tag), low, high) for tag in item.tags), key=len)
                candidates: Iterable[StoredEvent] = shortest
            else:
                candidates = (
                    event
                    for type_ in item.types
                    for event in self._range(("type", type_), low, high)
                )
            for event in candidates:
                if item.matches(event.type, event.tags):
                    found[event.position] = event
        return [found[p] for p in sorted(found)]

    def unseen(
        self, query: Query, head: Head | None, below: int | None = None
    ) -> list[StoredEvent]:
        """Events matching ``query`` that ``head`` did not cover, with a position below
        ``below`` (if given), in position order."""
        high = None if below is None else below - 1
        if head is None:
            return self.matching(query, 0, high)
        found = {e.position: e for e in self.matching(query, head.position, high)}
        for event in self._in_flight(head, high):
            if query.matches(event.type, event.tags):
                found[event.position] = event
        return [found[p] for p in sorted(found)]

    def _in_flight(self, head: Head, high: int | None) -> Iterator[StoredEvent]:
        """Events at or below ``head.position`` (and ``high``) whose transaction the head's
        snapshot did not see."""
        snapshot = head.snapshot
        if snapshot is None:
            return
        limit = head.position if high is None else min(head.position, high)
        start = bisect.bisect_left(self.xids, snapshot.xmax)
        for xid in (*snapshot.xip, *self.xids[start:]):
            if not snapshot.invisible(xid):
                continue
            for event in self.by_xid.get(xid, ()):
                if event.position <= limit:
                    yield event
