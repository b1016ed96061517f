"""Streaming reads and projections over a large history: ``python -m examples.streaming``.

Appends ``--events`` events (default 100,000) in batches of ``--batch-size``, then:

1. reads them all with ``store.read`` (rows are fetched ``fetch_size`` at a time, never
   all at once), and
2. folds them with ``store.project_stream``, which reports progress every
   ``--progress-every`` events and ends with the decision model,

printing events per second and the peak memory growth of each (measured with
``tracemalloc`` in a second, untimed pass: tracing slows Python down several times).
Memory must stay bounded: the example fails if either grows by more than
``--memory-limit-mb`` (default 50 MB), which holding the whole history in memory would
(``--compare`` shows how much).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from examples._common import Database, check, fail, parser, positive_int, run, say, section
from sa_crablet import (
    Event,
    EventStore,
    Query,
    SequencedEvent,
    StateProjector,
)
from sa_crablet.events import tag
from sa_crablet.projection import ProjectionProgress
from sa_crablet.projectors import counter, fold, last_event

READING, ALARM = "ReadingRecorded", "AlarmRaised"
SENSORS = 10
ALARM_EVERY = 50


@dataclass
class Expected:
    readings: int = 0
    alarms: int = 0
    value_sum: int = 0


@dataclass
class Measured:
    seconds: float = 0.0
    peak_bytes: int = 0


@contextmanager
def measured() -> Iterator[Measured]:
    """Time a block and trace the peak growth of Python allocations inside it."""
    result = Measured()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - started
        result.peak_bytes = tracemalloc.get_traced_memory()[1] - baseline
        tracemalloc.stop()


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f} events/s" if seconds > 0 else "n/a"


def generate(db: Database, stream: str, count: int, batch_size: int) -> Expected:
    expected = Expected()
    started = time.perf_counter()
    for start in range(0, count, batch_size):
        batch = []
        for n in range(start, min(start + batch_size, count)):
            sensor = n % SENSORS
            tags = [stream, tag("sensor", f"{stream}-{sensor}")]
            if n % ALARM_EVERY == ALARM_EVERY - 1:
                batch.append(Event(ALARM, tags, {"seq": n, "sensor": sensor}))
                expected.alarms += 1
            else:
                value = n % 97
                batch.append(Event(READING, tags, {"seq": n, "sensor": sensor, "value": value}))
                expected.readings += 1
                expected.value_sum += value
        with db.session() as session:
            EventStore(session).append(batch)
            session.commit()
    seconds = time.perf_counter() - started
    say(f"appended {count:,} events in {seconds:.2f} s ({rate(count, seconds)})")
    return expected


def read_all(db: Database, query: Query) -> tuple[int, int, int]:
    """Consume a streamed read: (events, sum of values, last position); fail on disorder."""
    seen, value_sum, previous = 0, 0, 0
    with db.session() as session:
        for event in EventStore(session).read(query):
            if event.position <= previous:
                fail("a read returned events out of position order")
            previous = event.position
            seen += 1
            value_sum += int(event.data.get("value", 0))
    return seen, value_sum, previous


def project_all(
    db: Database, projectors: list[StateProjector[Any]], every: int, report: bool
) -> ProjectionProgress:
    """Consume a streaming projection, printing its progress if ``report``."""
    started = time.perf_counter()
    with db.session() as session:
        for progress in EventStore(session).project_stream(projectors, every=every):
            if progress.done:
                return progress
            if report:
                elapsed = time.perf_counter() - started
                say(
                    f"... {progress.events:>9,} events folded, at position {progress.position} "
                    f"({rate(progress.events, elapsed)})"
                )
    fail("the projection stream ended without its model")


def main(args: argparse.Namespace, db: Database) -> None:
    count, limit = args.events, args.memory_limit_mb * 1024 * 1024
    every = args.progress_every or max(1, count // 5)
    stream = tag("stream", db.id("sensors"))
    query = Query.of(tags=[stream])

    section(f"generate {count:,} events in batches of {args.batch_size}")
    expected = generate(db, stream, count, args.batch_size)

    section("read them streamed: store.read")
    started = time.perf_counter()
    seen, value_sum, last_position = read_all(db, query)
    seconds = time.perf_counter() - started
    say(f"{seen:,} events in {seconds:.2f} s ({rate(seen, seconds)})")
    check(seen == count, f"the read returned all {count:,} events, in position order")
    check(value_sum == expected.value_sum, "their values add up")
    with measured() as reading:  # a second pass: tracemalloc slows Python down a lot
        read_all(db, query)
    say(f"peak memory growth while reading (traced pass): {reading.peak_bytes / 1e6:.1f} MB")

    section("project them streamed: store.project_stream")
    projectors: list[StateProjector[Any]] = [
        counter("readings", Query.of(types=[READING], tags=[stream])),
        counter("alarms", Query.of(types=[ALARM], tags=[stream])),
        fold("value_sum", types=[READING], tags=[stream], initial=0, transition=add_value),
        last_event("last", query),
    ]
    started = time.perf_counter()
    final = project_all(db, projectors, every, report=True)
    seconds = time.perf_counter() - started
    assert final.model is not None
    states = final.model.states
    say(f"{final.events:,} events in {seconds:.2f} s ({rate(final.events, seconds)})")
    say(
        f"states: readings={states['readings']:,} alarms={states['alarms']:,} "
        f"value_sum={states['value_sum']:,} last=#{states['last'].position}"
    )
    check(
        (states["readings"], states["alarms"], states["value_sum"])
        == (expected.readings, expected.alarms, expected.value_sum),
        "the projected states match what was appended",
    )
    check(final.model.head.position == last_position, "the model's head is the last event")
    with measured() as projecting:
        project_all(db, projectors, every, report=False)
    say(f"peak memory growth while projecting (traced): {projecting.peak_bytes / 1e6:.1f} MB")

    if args.compare:
        section("for comparison: the same read collected into a list")
        with measured() as listing, db.session() as session:
            everything = list(EventStore(session).read(query))
        say(f"{len(everything):,} events held at once: {listing.peak_bytes / 1e6:.1f} MB")
        del everything

    section("memory stays bounded")
    for name, peak in (("read", reading.peak_bytes), ("projection", projecting.peak_bytes)):
        check(
            peak <= limit,
            f"{name}: peak growth {peak / 1e6:.1f} MB <= {args.memory_limit_mb} MB",
        )


add_value: Callable[[int, SequencedEvent], int] = lambda total, e: total + int(e.data["value"])  # noqa: E731


def arguments() -> argparse.ArgumentParser:
    result = parser(__doc__ or "")
    result.add_argument(
        "--events", type=positive_int, default=100_000, help="events (default: %(default)s)"
    )
    result.add_argument(
        "--batch-size",
        type=positive_int,
        default=1000,
        help="events per append (default: %(default)s, the store's max_batch_size)",
    )
    result.add_argument(
        "--progress-every",
        type=positive_int,
        default=None,
        help="projection progress every N events (default: a fifth of --events)",
    )
    result.add_argument(
        "--compare",
        action="store_true",
        help="also measure the same read collected into a list (memory grows with --events)",
    )
    result.add_argument(
        "--memory-limit-mb",
        type=positive_int,
        default=50,
        help="fail if a read or projection grows memory by more (default: %(default)s)",
    )
    return result


if __name__ == "__main__":
    run(main, arguments())
