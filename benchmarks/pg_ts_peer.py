"""The TypeScript peer: ``@dcb-es/event-store-postgres`` 7.0.1 (``PostgresEventStore`` with
its defaults: advisory locks, the read barrier, one stored-function call per append), run by
Node in a child process (``benchmarks/ts_peer/driver.mjs``).

This side generates the events from the same :class:`EventSource` seeds as the other
contenders and sends each block of calls to the driver; the driver runs and times the calls
(``process.hrtime``) and answers with the latencies and the block's wall time, which become
the same :class:`~benchmarks.timing.Samples` the other contenders give. A block is one
:class:`~benchmarks.timing.BlockOp`, so the peer takes its turn in the same interleaved
rounds. S7's writers are async tasks in the driver's one event loop, over a ``pg`` pool of
one connection per writer (Node's model, and the one the peer is built for).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from typing import IO, Any

from benchmarks.pg_inspect import TsPeerSchemaInspector
from benchmarks.records import TS_PEER
from benchmarks.timing import BlockOp, Samples
from benchmarks.ts_peer.install import DRIVER, Installation
from benchmarks.workload import (
    COURSES,
    SUBSCRIBED,
    TYPES,
    Ev,
    EventSource,
    course_tag,
    dsn_params,
    make_subscription,
    payload,
)

WRITER_EVENTS = 256
"""Events (or decision payloads) generated per S7 writer; a writer cycles through them."""

Wire = list[Any]
"""An event as the driver reads it: ``[type, tag, data]``."""


def wire(ev: Ev) -> Wire:
    return [ev.type, ev.tag, ev.data]


def samples(answer: dict[str, Any]) -> Samples:
    """The driver's answer for a block of calls, as the suite's samples."""
    return Samples(
        latencies_ns=[int(n) for n in answer["latencies_ns"]],
        wall_ns=int(answer["wall_ns"]),
        units=int(answer["units"]),
        calls=int(answer["calls"]),
        counters={k: int(v) for k, v in answer.get("counters", {}).items()},
    )


class TsPeerPg(TsPeerSchemaInspector):
    """The driver process on database ``dbname``; :meth:`call` sends it one request."""

    name = TS_PEER

    def __init__(
        self, dsn: str, dbname: str, installation: Installation, pool_size: int = 1
    ) -> None:
        super().__init__(dsn, dbname)
        self.installation = installation
        p = dsn_params(dsn)
        env = {
            **os.environ,
            "PGHOST": p["host"],
            "PGPORT": str(p["port"]),
            "PGUSER": p["user"],
            "PGPASSWORD": p["password"],
            "PGDATABASE": dbname,
        }
        # The driver's stderr, kept for the message when it fails; closed by close().
        self._stderr: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115
        command = [
            installation.node,
            "--expose-gc",  # the driver collects garbage before each timed block
            str(DRIVER),
            str(installation.directory),
            str(pool_size),
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request, wait for its answer; a driver error raises ``RuntimeError``."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(json.dumps(request, separators=(",", ":")) + "\n")
            stdin.flush()
            line = stdout.readline()
        except OSError as exc:
            raise RuntimeError(f"{self.name}: the driver is gone ({exc}): {self._tail()}") from exc
        if not line:
            raise RuntimeError(f"{self.name}: the driver exited: {self._tail()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.name} ({request['op']}): {answer['error']}")
        return answer

    def _tail(self) -> str:
        self._stderr.seek(0)
        return " / ".join(self._stderr.read().strip().splitlines()[-5:])

    def create_schema(self) -> None:
        self.call({"op": "install"})  # PostgresEventStore.ensureInstalled()

    def block(self, request: dict[str, Any]) -> Samples:
        return samples(self.call(request))

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                self._process.stdin.write('{"op":"close"}\n')
                self._process.stdin.close()
                self._process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._stderr.close()


# -- the scenarios' blocks ------------------------------------------------------------------------


def appender(store: TsPeerPg, src: EventSource) -> BlockOp:
    """S1: one event per call, no condition."""
    return BlockOp(
        lambda calls: store.block(
            {"op": "append", "events": [wire(src.event()) for _ in range(calls)]}
        )
    )


def conditional_appender(store: TsPeerPg, src: EventSource) -> BlockOp:
    """S2: as :func:`benchmarks.pg_suite.conditional_appender`; the driver chains ``after``
    within a block and hands the last one back for the next."""
    after: list[int | None] = [None]

    def run(calls: int) -> Samples:
        if after[0] is None:
            after[0] = store.head()
        events = [wire(src.event()) for _ in range(calls)]
        answer = store.call({"op": "append_if", "events": events, "after": after[0]})
        after[0] = int(answer["after"])
        return samples(answer)

    return BlockOp(run)


def rejected_appender(
    store: TsPeerPg, src: EventSource, keys: list[tuple[str, str]], last: dict[tuple[str, str], int]
) -> BlockOp:
    """S2': as :func:`benchmarks.pg_suite.s2_rejected`'s appender: each append one stale."""

    def run(calls: int) -> Samples:
        items = []
        for _ in range(calls):
            type_, tag = keys[src.rng.randrange(len(keys))]
            data = payload(int(tag.split(":")[1]), 1, 50)
            items.append([type_, tag, data, last[(type_, tag)] - 1])
        return store.block({"op": "reject", "items": items})

    return BlockOp(run)


def batcher(store: TsPeerPg, src: EventSource, size: int) -> BlockOp:
    """S3: one batch of ``size`` events per call."""

    def run(calls: int) -> Samples:
        batches = [[wire(e) for e in src.batch(size)] for _ in range(calls)]
        return store.block({"op": "batch", "batches": batches})

    return BlockOp(run)


def reader(store: TsPeerPg, src: EventSource) -> BlockOp:
    """S4: the four types on one course's tag, every event consumed."""

    def run(calls: int) -> Samples:
        tags = [course_tag(src.course()) for _ in range(calls)]
        return store.block({"op": "read", "types": list(TYPES), "tags": tags})

    return BlockOp(run)


def full_reader(store: TsPeerPg) -> BlockOp:
    """S5: the whole store, every event consumed."""
    return BlockOp(lambda calls: store.block({"op": "read_all", "calls": calls}))


def measure_memory(store: TsPeerPg) -> dict[str, Any]:
    """S5's memory in a fresh driver process on ``store``'s database: the resident set's
    growth over one full read, measured as :mod:`benchmarks.memory` measures the Python
    contenders' (there is no ``tracemalloc`` figure for Node)."""
    fresh = TsPeerPg(store.dsn, store.dbname, store.installation)
    try:
        return fresh.call({"op": "memory", "types": list(TYPES), "tag": course_tag(1)})
    finally:
        fresh.close()


def _decision(tag: str, src: EventSource) -> Any:
    """A decision's payload (the driver sets its ``seen``), drawn as the other contenders
    draw theirs."""
    return make_subscription(tag, src)(0).data


def decider(store: TsPeerPg, src: EventSource, conflicts: dict[str, int]) -> BlockOp:
    """S6: decision cycles (``buildDecisionModel`` over the four types on one tag, then the
    append under its condition), one writer."""

    def run(calls: int) -> Samples:
        items = []
        for _ in range(calls):
            tag = course_tag(src.course())
            items.append([tag, _decision(tag, src)])
        request = {"op": "decide", "types": list(TYPES), "type": SUBSCRIBED, "items": items}
        result = store.block(request)
        conflicts[TS_PEER] = conflicts.get(TS_PEER, 0) + result.counters.get("conflicts", 0)
        return result

    return BlockOp(run)


def writers(
    store: TsPeerPg, count: int, seconds: float, hot: str
) -> tuple[tuple[Samples, list[str]], tuple[Samples, list[str]]]:
    """One S7a run (writer i on course ``COURSES + i``, conditional on its own head) and one
    S7b run (decision cycles on tag ``hot``), seeded as the other contenders' writers."""
    head = store.head()
    distinct = [
        {
            "events": [wire(src.event(k=COURSES + i)) for _ in range(WRITER_EVENTS)],
            "after": head,
        }
        for i, src in _sources(100, count)
    ]
    a = store.call({"op": "distinct_writers", "writers": distinct, "seconds": seconds})
    hot_writers = [
        {"tag": hot, "datas": [_decision(hot, src) for _ in range(WRITER_EVENTS)]}
        for _i, src in _sources(200, count)
    ]
    request = {
        "op": "hot_writers",
        "types": list(TYPES),
        "type": SUBSCRIBED,
        "writers": hot_writers,
        "seconds": seconds,
    }
    b = store.call(request)
    return (samples(a), list(a["errors"])), (samples(b), list(b["errors"]))


def _sources(seed: int, count: int) -> Sequence[tuple[int, EventSource]]:
    return [(i, EventSource(seed + i)) for i in range(count)]
