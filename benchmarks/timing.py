"""Measurement: per-call latencies, interleaved rounds, and concurrent writer threads.

Contenders of one scenario are measured in the same rounds, each round running every
contender once in a rotating order, so slow phases of a shared, noisy machine hit every
contender alike. Python's garbage collector stays enabled (it is part of what an
application pays); each timed block starts after a ``gc.collect()``.
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Op = Callable[[], int]
"""One call of a contender; returns how many units (events, ops) it completed."""


@dataclass
class Samples:
    latencies_ns: list[int] = field(default_factory=list)
    wall_ns: int = 0
    units: int = 0
    calls: int = 0
    counters: dict[str, int] = field(default_factory=dict)

    def add(self, other: Samples) -> None:
        self.latencies_ns.extend(other.latencies_ns)
        self.wall_ns += other.wall_ns
        self.units += other.units
        self.calls += other.calls
        for key, value in other.counters.items():
            self.counters[key] = self.counters.get(key, 0) + value

    @property
    def calls_per_s(self) -> float:
        return self.calls / (self.wall_ns / 1e9) if self.wall_ns else 0.0

    @property
    def units_per_s(self) -> float:
        return self.units / (self.wall_ns / 1e9) if self.wall_ns else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_ns:
            return float("nan")
        ordered = sorted(self.latencies_ns)
        if q == 50:
            return statistics.median(ordered) / 1e6
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] / 1e6


def timed(op: Op, calls: int) -> Samples:
    samples = Samples()
    lat = samples.latencies_ns
    clock = time.perf_counter_ns
    gc.collect()
    start = clock()
    units = 0
    for _ in range(calls):
        t0 = clock()
        units += op()
        lat.append(clock() - t0)
    samples.wall_ns = clock() - start
    samples.units = units
    samples.calls = calls
    return samples


def rotated(names: Sequence[str], shift: int) -> list[str]:
    shift %= len(names)
    return [*names[shift:], *names[:shift]]


def interleaved(
    ops: dict[str, Op],
    *,
    rounds: int,
    calls: int,
    warmup: int,
    before_round: Callable[[str], None] | None = None,
) -> dict[str, Samples]:
    """Warm every contender up, then ``rounds`` rounds of ``calls`` calls each, interleaved."""
    for op in ops.values():
        for _ in range(warmup):
            op()
    results = {name: Samples() for name in ops}
    names = list(ops)
    for r in range(rounds):
        for name in rotated(names, r):
            if before_round is not None:
                before_round(name)
            results[name].add(timed(ops[name], calls))
    return results


@dataclass
class WriterOutcome:
    latencies_ns: list[int] = field(default_factory=list)
    successes: int = 0
    conflicts: int = 0
    errors: list[str] = field(default_factory=list)


WriterStep = Callable[[], bool]
"""One attempt by a writer thread; True when its append committed, False on a conflict."""


def run_writers(steps: Sequence[WriterStep], seconds: float) -> tuple[Samples, list[str]]:
    """Run one thread per step function until ``seconds`` have passed; pool the outcomes.

    ``units`` counts successful appends; counters hold attempts and conflicts.
    """
    outcomes = [WriterOutcome() for _ in steps]
    barrier = threading.Barrier(len(steps) + 1)
    deadline = [0.0]

    def work(step: WriterStep, out: WriterOutcome) -> None:
        clock = time.perf_counter_ns
        barrier.wait()
        end = deadline[0]
        while time.perf_counter() < end:
            t0 = clock()
            try:
                ok = step()
            except Exception as exc:  # reported, never silently dropped
                out.errors.append(f"{type(exc).__name__}: {exc}")
                if len(out.errors) > 20:
                    return
                continue
            out.latencies_ns.append(clock() - t0)
            if ok:
                out.successes += 1
            else:
                out.conflicts += 1

    threads = [
        threading.Thread(target=work, args=(step, out), daemon=True)
        for step, out in zip(steps, outcomes, strict=True)
    ]
    for thread in threads:
        thread.start()
    gc.collect()
    deadline[0] = time.perf_counter() + seconds
    start = time.perf_counter_ns()
    barrier.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter_ns() - start
    samples = Samples(wall_ns=wall)
    errors: list[str] = []
    for out in outcomes:
        samples.latencies_ns.extend(out.latencies_ns)
        samples.units += out.successes
        samples.calls += out.successes + out.conflicts
        samples.counters["conflicts"] = samples.counters.get("conflicts", 0) + out.conflicts
        errors.extend(out.errors)
    return samples, errors


def summary(samples: Samples, per: str = "call") -> dict[str, Any]:
    """Throughput per call (``per="call"``) or per unit (events, successful appends)."""
    return {
        "throughput": samples.calls_per_s if per == "call" else samples.units_per_s,
        "p50_ms": samples.percentile_ms(50),
        "p99_ms": samples.percentile_ms(99),
        "calls": samples.calls,
        "units": samples.units,
        "seconds": samples.wall_ns / 1e9,
    }
