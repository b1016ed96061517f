"""The payload columns' type alone, ``json`` against ``jsonb``: ``python -m
benchmarks.payload_type [--rounds 9] [--dsn ...]``.

The same sa_crablet code on two fresh stores, one at revision ``0004_append_only_guard``
(payloads ``jsonb``) and one at head (``json``): S3's shape (10 batches of 1,000 events,
the suite's ~95-byte payload, one transaction per batch) and S5's (one full read, which
grows with the rounds), the two stores interleaved in alternating order. Prints the median
of each and their ratio. The databases are created and dropped here.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

import sa_crablet
from benchmarks.workload import TYPES, course_tag, payload
from sa_crablet import Event, EventStore, Query

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
STORES = {"jsonb": "0004_append_only_guard", "json": "head"}
BATCHES, BATCH = 10, 1000


def batch_appends(engine: Engine, round_: int) -> float:
    """Events per second over ``BATCHES`` committed batches."""
    started = time.perf_counter()
    for b in range(BATCHES):
        events = [
            Event(TYPES[n % 4], [course_tag(n % 1000)], payload(n % 1000, n, 10 + n % 90))
            for n in range((round_ * BATCHES + b) * BATCH, (round_ * BATCHES + b + 1) * BATCH)
        ]
        with Session(engine) as session:
            EventStore(session).append(events)
            session.commit()
    return BATCHES * BATCH / (time.perf_counter() - started)


def full_read(engine: Engine, _round: int) -> float:
    started = time.perf_counter()
    with Session(engine) as session:
        count = sum(1 for _ in EventStore(session).read(Query.all()))
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--url", default=DEFAULT_URL, help="any database on the server")
    args = parser.parse_args()
    admin = create_engine(args.url, isolation_level="AUTOCOMMIT")
    names = {kind: f"sa_crablet_payload_{kind}_{uuid.uuid4().hex[:8]}" for kind in STORES}
    engines: dict[str, Engine] = {}
    try:
        for kind, revision in STORES.items():
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{names[kind]}"'))
            engines[kind] = create_engine(admin.url.set(database=names[kind]))
            sa_crablet.upgrade(engines[kind], revision)
        scenarios: dict[str, Callable[[Engine, int], float]] = {
            "S3 (10 x 1000 events)": batch_appends,
            "S5 (full read)": full_read,
        }
        results: dict[tuple[str, str], list[float]] = {
            (kind, name): [] for kind in STORES for name in scenarios
        }
        for round_ in range(args.rounds):
            order = list(STORES) if round_ % 2 == 0 else list(reversed(STORES))
            for name, scenario in scenarios.items():
                for kind in order:
                    results[kind, name].append(scenario(engines[kind], round_))
        for name in scenarios:
            medians = {kind: statistics.median(results[kind, name]) for kind in STORES}
            print(
                f"{name}: jsonb {medians['jsonb']:,.0f} events/s, json {medians['json']:,.0f} "
                f"events/s, json / jsonb {medians['json'] / medians['jsonb']:.2f}x"
            )
    finally:
        for engine in engines.values():
            engine.dispose()
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
