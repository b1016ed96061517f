"""Untimed look-ups on a contender's database: head, last positions, S7b verification."""

from __future__ import annotations

import json
from typing import Any

from benchmarks.workload import EVENTS_TABLE, PEER_MAIN, PEER_TAGS, TS_PEER_TABLE, connect


class _Inspector:
    events_sql: str
    head_sql: str
    last_sql: str
    scope_sql: str

    def __init__(self, dsn: str, dbname: str) -> None:
        self.dsn = dsn
        self.dbname = dbname

    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with connect(self.dsn, self.dbname) as conn:
            return conn.execute(query, params).fetchall()

    def head(self) -> int:
        return int(self._rows(self.head_sql)[0][0])

    def count(self) -> int:
        return int(self._rows(self.events_sql)[0][0])

    def last_positions(self) -> dict[tuple[str, str], int]:
        """The last position of every (type, tag)."""
        return {(t, g): int(p) for t, g, p in self._rows(self.last_sql)}

    def scope_seen(self, tag: str) -> list[int]:
        """The ``seen`` field of every event carrying ``tag``, in position order."""
        return [int(json.loads(d)["seen"]) for (d,) in self._rows(self.scope_sql, (tag,))]


class CrabletSchemaInspector(_Inspector):
    """sa_crablet's schema (also the floor's)."""

    events_sql = f"SELECT count(*) FROM {EVENTS_TABLE}"
    head_sql = f"SELECT coalesce(max(position), 0) FROM {EVENTS_TABLE}"
    last_sql = f"SELECT type, tags[1], max(position) FROM {EVENTS_TABLE} GROUP BY 1, 2"
    scope_sql = (
        f"SELECT data::text FROM {EVENTS_TABLE} WHERE tags @> ARRAY[%s]::text[] ORDER BY position"
    )


class PeerSchemaInspector(_Inspector):
    events_sql = f"SELECT count(*) FROM {PEER_MAIN}"
    head_sql = f"SELECT coalesce(max(id), 0) FROM {PEER_MAIN}"
    last_sql = (
        f"SELECT m.type, t.tag, max(m.id) FROM {PEER_MAIN} m "
        f"JOIN {PEER_TAGS} t ON t.main_id = m.id GROUP BY 1, 2"
    )
    scope_sql = (
        f"SELECT convert_from(m.data, 'UTF8') FROM {PEER_MAIN} m "
        f"JOIN {PEER_TAGS} t ON t.main_id = m.id WHERE t.tag = %s ORDER BY m.id"
    )


class TsPeerSchemaInspector(_Inspector):
    """The TypeScript peer's one table: positions in ``sequence_position``, the event's data
    inside its ``payload`` text (``{"data": ..., "metadata": ...}``)."""

    events_sql = f"SELECT count(*) FROM {TS_PEER_TABLE}"
    head_sql = f"SELECT coalesce(max(sequence_position), 0) FROM {TS_PEER_TABLE}"
    last_sql = f"SELECT type, tags[1], max(sequence_position) FROM {TS_PEER_TABLE} GROUP BY 1, 2"
    scope_sql = (
        f"SELECT (payload::json -> 'data')::text FROM {TS_PEER_TABLE} "
        "WHERE tags @> ARRAY[%s]::text[] ORDER BY sequence_position"
    )
