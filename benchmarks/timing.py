"""Measurement: per-call latencies, interleaved rounds, and concurrent writers (threads,
or asyncio tasks in one event loop).

Contenders of one scenario are measured in the same rounds, each round running every
contender once in a rotating order, so slow phases of a shared, noisy machine hit every
contender alike. Python's garbage collector stays enabled (it is part of what an
application pays); each timed block starts after a ``gc.collect()``.

An async contender's block of calls runs as one coroutine on its event loop, and its calls
are timed inside it: a figure never includes starting the loop, only the awaited call.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

Op = Callable[[], int]
"""One call of a contender; returns how many units (events, ops) it completed."""

AsyncCall = Callable[[], Awaitable[int]]
"""One call of an async contender, awaited; returns how many units it completed."""


@dataclass(frozen=True)
class Loop:
    """The event loop an async contender lives on (its engine's connections belong to it);
    ``run`` runs a coroutine on it to completion from the benchmark's synchronous code."""

    runner: asyncio.Runner

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def close(self) -> None:
        self.runner.close()


@dataclass(frozen=True)
class AsyncOp:
    """An async contender's call and the loop it runs on."""

    loop: Loop
    call: AsyncCall


@dataclass(frozen=True)
class BlockOp:
    """A contender that runs in another process: ``run(calls)`` has it perform a block of
    ``calls`` calls there, each timed there, and returns their samples (so a figure never
    includes the trip to that process, only the calls)."""

    run: Callable[[int], Samples]


AnyOp = Op | AsyncOp | BlockOp


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


def timed(op: AnyOp, calls: int) -> Samples:
    if isinstance(op, BlockOp):
        return op.run(calls)
    if isinstance(op, AsyncOp):
        gc.collect()
        return op.loop.run(_timed_async(op.call, calls))
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


async def _timed_async(call: AsyncCall, calls: int) -> Samples:
    """:func:`timed`, awaiting each call on the running loop."""
    samples = Samples()
    lat = samples.latencies_ns
    clock = time.perf_counter_ns
    start = clock()
    units = 0
    for _ in range(calls):
        t0 = clock()
        units += await call()
        lat.append(clock() - t0)
    samples.wall_ns = clock() - start
    samples.units = units
    samples.calls = calls
    return samples


def rotated(names: Sequence[str], shift: int) -> list[str]:
    shift %= len(names)
    return [*names[shift:], *names[:shift]]


def interleaved(
    ops: Mapping[str, AnyOp],
    *,
    rounds: int,
    calls: int,
    warmup: int,
    before_round: Callable[[str], None] | None = None,
) -> dict[str, Samples]:
    """Warm every contender up, then ``rounds`` rounds of ``calls`` calls each, interleaved."""
    for op in ops.values():
        if isinstance(op, BlockOp):
            if warmup:
                op.run(warmup)
            continue
        if isinstance(op, AsyncOp):
            op.loop.run(_timed_async(op.call, warmup))
            continue
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

AsyncWriterStep = Callable[[], Awaitable[bool]]
"""The same, awaited by a writer task."""

_MAX_ERRORS = 20
"""A writer that failed this often stops (every error is reported)."""


def _attempted(out: WriterOutcome, t0: int, ok: bool) -> None:
    out.latencies_ns.append(time.perf_counter_ns() - t0)
    if ok:
        out.successes += 1
    else:
        out.conflicts += 1


def _failed(out: WriterOutcome, exc: Exception) -> bool:
    """Record an error; whether the writer should stop."""
    out.errors.append(f"{type(exc).__name__}: {exc}")
    return len(out.errors) > _MAX_ERRORS


def run_writers(steps: Sequence[WriterStep], seconds: float) -> tuple[Samples, list[str]]:
    """Run one thread per step function until ``seconds`` have passed; pool the outcomes.

    ``units`` counts successful appends; counters hold attempts and conflicts.
    """
    outcomes = [WriterOutcome() for _ in steps]
    barrier = threading.Barrier(len(steps) + 1)
    deadline = [0.0]

    def work(step: WriterStep, out: WriterOutcome) -> None:
        barrier.wait()
        end = deadline[0]
        while time.perf_counter() < end:
            t0 = time.perf_counter_ns()
            try:
                ok = step()
            except Exception as exc:  # reported, never silently dropped
                if _failed(out, exc):
                    return
                continue
            _attempted(out, t0, ok)

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
    return _pooled(outcomes, time.perf_counter_ns() - start)


async def run_tasks(steps: Sequence[AsyncWriterStep], seconds: float) -> tuple[Samples, list[str]]:
    """:func:`run_writers` with one asyncio task per step, all in the running event loop
    (so on one thread: the tasks interleave at their awaits)."""
    outcomes = [WriterOutcome() for _ in steps]
    end = 0.0

    async def work(step: AsyncWriterStep, out: WriterOutcome) -> None:
        while time.perf_counter() < end:
            t0 = time.perf_counter_ns()
            try:
                ok = await step()
            except Exception as exc:  # reported, never silently dropped
                if _failed(out, exc):
                    return
                continue
            _attempted(out, t0, ok)

    gc.collect()
    # Created before the clock starts; none runs before the gather below awaits them all.
    tasks = [work(step, out) for step, out in zip(steps, outcomes, strict=True)]
    end = time.perf_counter() + seconds
    start = time.perf_counter_ns()
    await asyncio.gather(*tasks)
    return _pooled(outcomes, time.perf_counter_ns() - start)


def _pooled(outcomes: Sequence[WriterOutcome], wall: int) -> tuple[Samples, list[str]]:
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
