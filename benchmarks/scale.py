"""S8: does latency hold as the store grows? S2 and S4 at 10k and at 1M events.

Each contender gets two fresh databases, one per size, measured interleaved in the same
rounds (so the 1M/10k ratio is taken within one time window). To separate the store's size
from the result's size, these stores spread events over ``size / 100`` courses: every
course holds ~100 events at both sizes, so S4 returns ~100 events at 10k and at 1M alike.
Then a full read of the 1M store (S5 at 1M), with its peak memory growth.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import timing
from benchmarks.pg_crablet import CrabletPg
from benchmarks.pg_floor import FloorPg
from benchmarks.pg_peer import PeerPg
from benchmarks.pg_suite import (
    build_databases,
    conditional_appender,
    log,
    measure_memory,
    reader,
)
from benchmarks.records import CRABLET, FLOOR, PEER, Record, Settings, record
from benchmarks.timing import Op
from benchmarks.workload import EventSource, drop_database

G = "scale"


def label(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1000}k"


def run(dsn: str, s: Settings, meta: dict[str, Any], prefix: str) -> list[Record]:
    sizes = (s.scale_small, s.scale_large)
    databases: dict[int, dict[str, str]] = {}
    stores: dict[tuple[str, int], Any] = {}
    records: list[Record] = []
    try:
        for size in sizes:
            log(f"S8: building three stores of {size:,} events ({size // 100:,} courses)")
            databases[size] = build_databases(
                dsn, f"{prefix}_{label(size).lower()}", size, size // 100, meta
            )
            names = databases[size]
            stores[(CRABLET, size)] = CrabletPg(dsn, names[CRABLET])
            stores[(FLOOR, size)] = FloorPg(dsn, names[FLOOR])
            stores[(PEER, size)] = PeerPg(dsn, names[PEER])
        started = time.perf_counter()
        for scenario, title, make in (
            ("S4", "read by query (~100 events)", lambda st, size: reader(st, src(9, size))),
            (
                "S2",
                "append 1 event with condition",
                lambda st, size: conditional_appender(st, src(8, size)),
            ),
        ):
            ops: dict[str, Op] = {
                f"{name}@{size}": make(store, size) for (name, size), store in stores.items()
            }
            results = timing.interleaved(
                ops, rounds=s.scale_rounds, calls=s.scale_calls, warmup=s.warmup
            )
            unit = "reads/s" if scenario == "S4" else "appends/s"
            for key, sm in results.items():
                name, size = key.split("@")
                records.append(
                    record(
                        G,
                        f"S8 {scenario} @{label(int(size))}",
                        f"{title}, {int(size):,}-event store",
                        name,
                        unit,
                        sm,
                        size=int(size),
                        base_scenario=scenario,
                        rows_per_call=sm.units / max(1, sm.calls),
                    )
                )
        log(f"  S8 S2/S4 done in {time.perf_counter() - started:.1f}s")
        records += _full_read_large(dsn, s, stores, databases[s.scale_large])
    finally:
        for store in stores.values():
            store.close()
        for names in databases.values():
            for db in names.values():
                drop_database(dsn, db)
    return records


def src(seed: int, size: int) -> EventSource:
    return EventSource(seed, courses=size // 100)


def _full_read_large(
    dsn: str, s: Settings, stores: dict[tuple[str, int], Any], names: dict[str, str]
) -> list[Record]:
    """S5 on the large store: one timed read each, then peak memory growth (subprocess)."""
    started = time.perf_counter()
    ops: dict[str, Op] = {name: stores[(name, s.scale_large)].read_all for name in names}
    results = timing.interleaved(ops, rounds=1, calls=1, warmup=0)
    records = []
    for name, sm in results.items():
        extra: dict[str, Any] = {"size": s.scale_large, "base_scenario": "S5"}
        if s.memory and name != FLOOR:
            extra.update(measure_memory(dsn, name, names[name]))
        records.append(
            record(
                G,
                f"S5 @{label(s.scale_large)}",
                f"full read of a {s.scale_large:,}-event store",
                name,
                "events/s",
                sm,
                per="unit",
                **extra,
            )
        )
    log(f"  S5 at {label(s.scale_large)} done in {time.perf_counter() - started:.1f}s")
    return records
