"""The Python peer: ``eventsourcing``'s ``PostgresDCBRecorderTT``, driven through its
``read(query, after=, limit=)`` and ``append(events, condition)``.

Its payloads are ``bytes``: the application encodes JSON itself (``json.dumps``), and reads
hand the bytes back undecoded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.dcb.api import DCBAppendCondition, DCBEvent, DCBQuery, DCBQueryItem
from eventsourcing.dcb.postgres_tt import PostgresDCBRecorderTT
from eventsourcing.persistence import IntegrityError
from eventsourcing.postgres import PostgresDatastore

from benchmarks.pg_inspect import PeerSchemaInspector
from benchmarks.workload import PEER_PREFIX, Ev, compact, dsn_params


def _event(ev: Ev) -> DCBEvent:
    return DCBEvent(type=ev.type, data=compact(ev.data).encode(), tags=[ev.tag])


def _query(types: Sequence[str], tag: str) -> DCBQuery:
    return DCBQuery(items=[DCBQueryItem(types=list(types), tags=[tag])])


class PeerPg(PeerSchemaInspector):
    name = "peer"

    def __init__(self, dsn: str, dbname: str, pool_size: int = 1) -> None:
        super().__init__(dsn, dbname)
        p = dsn_params(dsn)
        self.datastore = PostgresDatastore(
            dbname=dbname,
            host=p["host"],
            port=p["port"],
            user=p["user"],
            password=p["password"],
            pool_size=pool_size,
        )
        self.recorder = PostgresDCBRecorderTT(self.datastore, events_table_name=PEER_PREFIX)
        self._writers: PeerPg | None = None

    def create_schema(self) -> None:
        self.recorder.create_table()

    # -- operations ----------------------------------------------------------------------------

    def append(self, ev: Ev) -> int:
        return self.recorder.append([_event(ev)])

    def append_if(self, ev: Ev, types: Sequence[str], after: int) -> int | None:
        condition = DCBAppendCondition(fail_if_events_match=_query(types, ev.tag), after=after)
        try:
            return self.recorder.append([_event(ev)], condition)
        except IntegrityError:
            return None

    def append_batch(self, evs: Sequence[Ev]) -> int:
        self.recorder.append([_event(e) for e in evs])
        return len(evs)

    def read(self, types: Sequence[str], tag: str) -> int:
        return self._consume(_query(types, tag))

    def read_all(self) -> int:
        return self._consume(DCBQuery())

    def _consume(self, query: DCBQuery) -> int:
        response = self.recorder.read(query)
        count = 0
        for _ in response:
            count += 1
        _ = response.head
        return count

    def decide(self, types: Sequence[str], tag: str, make: Callable[[int], Ev]) -> bool:
        query = _query(types, tag)
        response = self.recorder.read(query)
        seen = 0
        for _ in response:
            seen += 1
        ev = make(seen)
        condition = DCBAppendCondition(fail_if_events_match=query, after=response.head)
        try:
            self.recorder.append([_event(ev)], condition)
        except IntegrityError:
            return False
        return True

    def writers(self, count: int) -> list[Any]:
        """Threads share one pool of ``count`` connections, as an application would."""
        if self._writers is None:
            self._writers = PeerPg(self.dsn, self.dbname, pool_size=count)
        return [self._writers] * count

    def close(self) -> None:
        if self._writers is not None:
            self._writers.close()
        self.datastore.close()
