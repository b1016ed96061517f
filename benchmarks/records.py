"""Result records and the settings of a run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.timing import Samples, summary

CRABLET = "sa_crablet"
ENGINE = "sa_crablet (engine)"
"""``EngineEventStore``: the store that owns its transactions."""
ASYNC_PSYCOPG = "sa_crablet async (psycopg)"
ASYNC_ASYNCPG = "sa_crablet async (asyncpg)"
ASYNC_CONTENDERS = (ASYNC_PSYCOPG, ASYNC_ASYNCPG)
"""``AsyncEventStore`` on each async driver; their ratios to the sync store are kept too."""
FLOOR = "floor"
FLOOR_AC = "floor-autocommit"
PEER = "peer"
"""The Python peer, ``eventsourcing``'s PostgreSQL DCB recorder."""
TS_PEER = "TS peer"
"""The TypeScript peer, ``@dcb-es/event-store-postgres`` on Node (when Node can run it)."""
PEERS = (PEER, TS_PEER)
SQLITE_CRABLET = "sa_crablet (SQLite)"
SQLITE_ENGINE = "sa_crablet engine (SQLite)"
SQLITE_FLOOR = "sqlite3 floor"


@dataclass(frozen=True)
class Settings:
    mode: str
    fill: int
    rounds: int
    calls: int  # S1, S2, S2' per round
    read_calls: int  # S4 per round
    decide_calls: int  # S6 per round
    warmup: int
    s3_rounds: int
    s5_rounds: int
    writers: int
    writer_seconds: float
    writer_rounds: int
    scale: bool
    scale_small: int
    scale_large: int
    scale_rounds: int
    scale_calls: int
    sqlite_fill: int
    sqlite_rounds: int
    sqlite_calls: int
    sqlite_read_calls: int
    memory: bool


QUICK = Settings(
    mode="quick",
    fill=10_000,
    rounds=2,
    calls=100,
    read_calls=100,
    decide_calls=60,
    warmup=10,
    s3_rounds=1,
    s5_rounds=1,
    writers=8,
    writer_seconds=1.0,
    writer_rounds=1,
    scale=False,
    scale_small=10_000,
    scale_large=1_000_000,
    scale_rounds=0,
    scale_calls=0,
    sqlite_fill=10_000,
    sqlite_rounds=1,
    sqlite_calls=60,
    sqlite_read_calls=10,
    memory=True,
)

FULL = Settings(
    mode="full",
    fill=100_000,
    rounds=8,
    calls=500,
    read_calls=400,
    decide_calls=200,
    warmup=30,
    s3_rounds=3,
    s5_rounds=3,
    writers=8,
    writer_seconds=8.0,
    writer_rounds=3,
    scale=True,
    scale_small=10_000,
    scale_large=1_000_000,
    scale_rounds=6,
    scale_calls=400,
    sqlite_fill=100_000,
    sqlite_rounds=5,
    sqlite_calls=400,
    sqlite_read_calls=50,
    memory=True,
)


@dataclass
class Record:
    group: str  # "postgresql", "sqlite", "scale"
    scenario: str  # "S1", "S3 10x1000", ...
    title: str
    contender: str
    unit: str
    throughput: float
    p50_ms: float
    p99_ms: float
    calls: int
    units: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    ratio_to_peer: float | None = None
    ratio_to_ts_peer: float | None = None
    ratio_to_floor: float | None = None
    ratio_to_sync: float | None = None  # an async contender's ratio to the sync store

    def as_dict(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in asdict(self).items()}


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def record(
    group: str,
    scenario: str,
    title: str,
    contender: str,
    unit: str,
    samples: Samples,
    per: str = "call",
    **extra: Any,
) -> Record:
    s = summary(samples, per)
    return Record(
        group=group,
        scenario=scenario,
        title=title,
        contender=contender,
        unit=unit,
        throughput=s["throughput"],
        p50_ms=s["p50_ms"],
        p99_ms=s["p99_ms"],
        calls=s["calls"],
        units=s["units"],
        seconds=s["seconds"],
        extra=dict(extra),
    )


def add_ratios(
    records: list[Record],
    peer: str | None = PEER,
    floor: str = FLOOR,
    ts_peer: str | None = TS_PEER,
) -> None:
    """Throughput ratios to each peer and to the floor of the same (group, scenario), and an
    async contender's to the sync store."""
    by_key = {(r.group, r.scenario, r.contender): r for r in records}
    for r in records:
        sync = CRABLET if r.contender in ASYNC_CONTENDERS else None
        for attr, name in (
            ("ratio_to_peer", peer),
            ("ratio_to_ts_peer", ts_peer),
            ("ratio_to_floor", floor),
            ("ratio_to_sync", sync),
        ):
            if name is None:
                continue
            other = by_key.get((r.group, r.scenario, name))
            if other is not None and other.throughput > 0:
                setattr(r, attr, r.throughput / other.throughput)
