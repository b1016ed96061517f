"""Where an operation's time goes: round trips (libpq trace), Python profiles, micro-costs.

* :func:`trace_round_trips` turns a libpq protocol trace into round trips per operation and
  the time spent between sending a request and PostgreSQL's ``ReadyForQuery`` (server work
  plus network), the rest of the wall time being the client's.
* :func:`profile_buckets` splits a cProfile run by package (time *inside* each package's
  own functions); waiting on the socket is psycopg's ``wait`` (the blocking C call is not
  visible to cProfile, so it is charged there).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import re
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:(\d\d\.\d+)\t([FB])\t\d+\t(\w+)\t?(.*)$")


def _seconds(stamp: str) -> float:
    return float(stamp)


def parse_trace(text: str) -> list[dict[str, Any]]:
    """Exchanges: from the first frontend message to the next ``ReadyForQuery``."""
    exchanges: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    minute_base = 0.0
    last = 0.0
    for raw in text.splitlines():
        m = LINE.match(raw)
        if m is None:
            continue
        stamp = _seconds(m.group(1)) + minute_base
        if stamp < last - 30:  # the seconds field wrapped to a new minute
            minute_base += 60
            stamp += 60
        last = stamp
        direction, kind, rest = m.group(2), m.group(3), m.group(4)
        if direction == "F":
            if current is None:
                current = {"start": stamp, "label": _label(kind, rest)}
        elif kind == "ReadyForQuery" and current is not None:
            current["seconds"] = stamp - current["start"]
            exchanges.append(current)
            current = None
    return exchanges


def _label(kind: str, rest: str) -> str:
    if kind == "Query":
        return rest.strip().strip('"').split()[0].upper()
    if kind == "Parse":  # Parse "name" "query..." (the query may continue on later lines)
        parts = rest.split('"', 4)
        text = parts[3] if len(parts) > 3 else ""
        words = text.split()
        kind = "Parse (to prepare)" if len(parts) > 1 and parts[1] else "Parse"
        return f"{kind} {words[0].upper()}" if words else kind
    if kind == "Bind":
        name = rest.split('"')[3] if rest.count('"') >= 4 else ""
        return f"Bind(prepared {name})" if name else "Bind"
    return kind


def trace_round_trips(connection: Any, op: Callable[[], Any], calls: int) -> dict[str, Any]:
    """Run ``op`` ``calls`` times with the libpq trace on ``connection`` (a psycopg
    connection the operation uses); return round trips and server/client time per call."""
    fd, name = tempfile.mkstemp(prefix="sa_crablet_trace_", suffix=".txt")
    try:
        connection.pgconn.trace(fd)
        started = time.perf_counter()
        for _ in range(calls):
            op()
        wall = time.perf_counter() - started
        connection.pgconn.untrace()
        os.close(fd)
        fd = -1
        exchanges = parse_trace(Path(name).read_text(errors="replace"))
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(name)
    server = sum(e["seconds"] for e in exchanges)
    per_call = len(exchanges) / calls
    sequence = [e["label"] for e in exchanges[-round(per_call) :]] if exchanges else []
    return {
        "round_trips": per_call,
        "wall_ms": wall / calls * 1000,
        "server_ms": server / calls * 1000,
        "client_ms": (wall - server) / calls * 1000,
        "sequence": sequence,
    }


BUCKETS = (
    ("waiting on PostgreSQL", lambda f, fn: "psycopg" in f and fn in ("wait", "wait_c")),
    ("sa_crablet", lambda f, fn: "/sa_crablet/" in f),
    ("SQLAlchemy", lambda f, fn: "/sqlalchemy/" in f),
    ("psycopg", lambda f, fn: "/psycopg" in f),
    ("json", lambda f, fn: "/json/" in f),
    ("benchmark driver", lambda f, fn: "/benchmarks/" in f),
)


def profile_buckets(op: Callable[[], Any], calls: int, top: int = 12) -> dict[str, Any]:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        op()
    profiler.disable()
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    totals: dict[str, float] = {}
    rows = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        bucket = "other (builtins, stdlib)"
        for name, test in BUCKETS:
            if test(filename, func):
                bucket = name
                break
        totals[bucket] = totals.get(bucket, 0.0) + tottime
        rows.append((tottime, cumtime, ncalls, _short(filename), line, func))
    whole = sum(totals.values()) or 1.0
    rows.sort(reverse=True)
    return {
        "total_s": whole,
        "buckets": {k: v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
        "top": [
            {
                "function": f"{file}:{line}({func})",
                "tottime_share": tt / whole,
                "cumtime_per_call_us": ct / calls * 1e6,
                "calls_per_op": n / calls,
            }
            for tt, ct, n, file, line, func in rows[:top]
        ],
    }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    for package in ("/sa_crablet/", "/benchmarks/"):
        if package in filename:
            return package.strip("/") + "/" + filename.rsplit(package, 1)[1]
    return filename


def pyinstrument_text(op: Callable[[], Any], calls: int) -> str | None:
    try:
        from pyinstrument import Profiler
    except ImportError:
        return None
    profiler = Profiler(interval=0.0002)
    profiler.start()
    for _ in range(calls):
        op()
    profiler.stop()
    text: str = profiler.output_text(unicode=False, color=False, show_all=False)
    return text


def micro_us(fn: Callable[[], Any], number: int = 2000) -> float:
    """Median of 5 timeit runs, microseconds per call."""
    runs = timeit.repeat(fn, number=number, repeat=5)
    return sorted(runs)[2] / number * 1e6
