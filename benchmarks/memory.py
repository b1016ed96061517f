"""S5 memory: the peak memory growth of one full read, in a fresh interpreter.

Run by the suite as ``python -m benchmarks.memory CONTENDER --dsn DSN --db DATABASE``;
prints one JSON line. Two passes over the whole store, after a warm-up read:

1. without tracing: the growth of the process's resident set (``VmHWM`` after the read
   minus ``VmRSS`` before it, with the high-water mark reset through
   ``/proc/self/clear_refs``). It includes what libpq holds (a client-side result set
   lives in C memory that ``tracemalloc`` cannot see).
2. with ``tracemalloc``: the peak of Python allocations above the baseline.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

from benchmarks.workload import TYPES, course_tag

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def open_contender(name: str, dsn: str, db: str) -> Any:
    if name == "sa_crablet":
        from benchmarks.pg_crablet import CrabletPg

        return CrabletPg(dsn, db)
    if name == "sa_crablet (engine)":
        from benchmarks.pg_crablet import EnginePg

        return EnginePg(dsn, db)
    if name == "floor":
        from benchmarks.pg_floor import FloorPg

        return FloorPg(dsn, db)
    if name == "peer":
        from benchmarks.pg_peer import PeerPg

        return PeerPg(dsn, db)
    raise SystemExit(f"unknown contender {name!r}")


def measure(name: str, dsn: str, db: str) -> dict[str, Any]:
    store = open_contender(name, dsn, db)
    store.read(TYPES, course_tag(1))  # connections, type adapters and caches are ready
    gc.collect()
    rss_growth_mb = None
    before = _status_kb("VmRSS")
    if before is not None and _reset_peak():
        store.read_all()
        peak = _status_kb("VmHWM")
        if peak is not None:
            rss_growth_mb = (peak - before) / 1024
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    events = store.read_all()
    traced_seconds = time.perf_counter() - started
    _current, peak_traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    store.close()
    return {
        "events_read": events,
        "tracemalloc_peak_mb": (peak_traced - baseline) / 2**20,
        "rss_growth_mb": rss_growth_mb,
        "traced_read_seconds": traced_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("contender", choices=["sa_crablet", "sa_crablet (engine)", "floor", "peer"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    print(json.dumps(measure(args.contender, args.dsn, args.db)))


if __name__ == "__main__":
    main()
