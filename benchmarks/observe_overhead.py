"""What observability costs an append: CPU per ``EngineEventStore(engine).append([event])``
on PostgreSQL, for two checkouts of sa_crablet side by side (before and after a change),
each in processes of its own, alternated so that the machine's drift falls on both.

    python -m benchmarks.observe_overhead --build before=/path/a --build after=/path/b

Each ``--build`` names a directory holding an ``sa_crablet`` package. ``--mode``: ``absent``
(OpenTelemetry not loaded, logging at its defaults), ``api`` (the API loaded, no SDK: its
no-op tracer and meter), ``sdk`` (the SDK's TracerProvider, spans exported to memory, and
MeterProvider with an in-memory reader), ``debug`` (the ``sa_crablet`` loggers at DEBUG, to
a handler that drops the records). Prints the median CPU
time per append (``time.process_time``: this process only, not the server's), and, measured
within each process, the difference between the append as the store runs it and its own
function without the observing wrapper (blocks alternated: the wrapper's cost alone).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DATABASE = "sa_crablet_observe_bench"
MODES = ("absent", "api", "sdk", "debug")
# A checkout before the change has no wrapper: its "observed minus bare" is the noise.

CHILD = r"""
import json, logging, sys, time
mode, url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode in ("api", "sdk"):
    from opentelemetry import metrics, trace
if mode == "sdk":
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
if mode == "debug":
    logging.getLogger("sa_crablet").setLevel(logging.DEBUG)
    logging.getLogger("sa_crablet").addHandler(logging.NullHandler())
from sqlalchemy import create_engine
import sa_crablet
from sa_crablet import EngineEventStore, Event
engine = create_engine(url)
event = [Event("Bench", ["bench:1"], {"n": 1})]
for _ in range(500):
    EngineEventStore(engine).append(event)
start = time.process_time()
for _ in range(count):
    EngineEventStore(engine).append(event)
    if mode == "sdk" and len(exporter.get_finished_spans()) > 1000:
        exporter.clear()
cpu = time.process_time() - start
# The same loop, alternating blocks observed and not (the operation's own function, which
# the observing wrapper calls), in this one process: the wrapper's cost alone.
bare = getattr(EngineEventStore.append, "__wrapped__", EngineEventStore.append)
blocks = {"observed": [], "bare": []}
for _ in range(10):
    for name, append in (("observed", EngineEventStore.append), ("bare", bare)):
        block = time.process_time()
        for _ in range(count // 20):
            append(EngineEventStore(engine), event)
        blocks[name].append((time.process_time() - block) / (count // 20) * 1e6)
# The wrapper alone, around a function that does nothing (timeit's best of five): what the
# loop above cannot resolve on a busy machine.
import timeit
wrapper = 0.0
try:
    from sa_crablet._observe.operations import appending
except ImportError:  # a checkout without it
    pass
else:
    class Store:
        config = sa_crablet.EventStoreConfig()
    def nothing(store, events, condition=None, *, command=None):
        return 1
    observed, store = appending(nothing), Store()
    def best(fn):
        return min(timeit.repeat(lambda: fn(store, event), number=100_000, repeat=5)) * 10
    wrapper = best(observed) - best(nothing)
print(json.dumps({
    "file": sa_crablet.__file__, "us": cpu / count * 1e6, "blocks": blocks, "wrapper_us": wrapper
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="append", required=True, help="name=directory")
    parser.add_argument("--mode", choices=MODES, default="absent")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--url", default=os.environ.get("SA_CRABLET_BENCH_URL", DEFAULT_URL))
    args = parser.parse_args()
    builds = dict(build.split("=", 1) for build in args.build)
    url = prepare(args.url, next(iter(builds.values())))
    results: dict[str, list[float]] = {name: [] for name in builds}
    paired: dict[str, list[float]] = {name: [] for name in builds}
    wrapper: dict[str, list[float]] = {name: [] for name in builds}
    for _ in range(args.rounds):
        for name, path in builds.items():
            us, blocks, alone = run(path, args.mode, url, args.count)
            wrapper[name].append(alone)
            results[name].append(us)
            paired[name].extend(
                o - b for o, b in zip(blocks["observed"], blocks["bare"], strict=True)
            )
    for name, times in results.items():
        print(
            f"{name:>10} ({args.mode}): median {statistics.median(times):7.2f} us CPU/append, "
            f"runs {', '.join(f'{t:.1f}' for t in times)}; in-process, observed minus bare "
            f"(blocks side by side): median {statistics.median(paired[name]):+.2f} us; "
            f"the wrapper alone: {statistics.median(wrapper[name]):.3f} us"
        )


def prepare(server_url: str, build: str) -> str:
    """A database of the benchmark's own, migrated (made again if it is there)."""
    code = (
        "import sys; from sqlalchemy import create_engine, make_url, text; import sa_crablet;"
        "server = make_url(sys.argv[1]);"
        "admin = create_engine(server, isolation_level='AUTOCOMMIT');"
        "c = admin.connect();"
        f"c.execute(text('DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)'));"
        f"c.execute(text('CREATE DATABASE {DATABASE}'));"
        f"url = server.set(database='{DATABASE}');"
        "sa_crablet.upgrade(create_engine(url));"
        "print(url.render_as_string(hide_password=False))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, server_url],
        cwd=build,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def run(build: str, mode: str, url: str, count: int) -> tuple[float, dict[str, list[float]], float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, url, str(count)],
        cwd=build,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(build).resolve())},
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert str(Path(result["file"]).resolve()).startswith(str(Path(build).resolve())), result
    return float(result["us"]), result["blocks"], float(result["wrapper_us"])


if __name__ == "__main__":
    main()
