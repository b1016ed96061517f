"""Backends killed between the pages of a streamed read (``fetch_size`` small): after the
first page (before the server-side cursor is opened) or in the middle of the cursor.

The consumer must get an error, never a read that ends early as if complete, and the
events it did get must be the read's first ones, in order. A streaming projection killed
the same way must fail and give its projection slot back. A consumer that stops early
after the kill (closing the read, as a ``break`` out of a projection does) must not get
anything but an acceptable error from ``close()``.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.orm import Session

from benchmarks.fault_kit import Ledger, backend_pid, marked_batch
from benchmarks.fault_target import Target, boundary, recover
from sa_crablet import Query
from sa_crablet.projectors import counter

READ_EVENTS = 40
PAGE = 5
KILL_POINTS = (PAGE, PAGE + 3)
"""After the first page, and inside the cursor's pages."""


def _stored(target: Target, ledger: Ledger, name: str) -> Query:
    """A boundary holding ``READ_EVENTS`` committed events, ``i`` = 0, 1, ... in order."""
    tag = boundary(name)
    batch, events = marked_batch("Paged", [tag], READ_EVENTS)
    with Session(target.engine) as session:
        target.store(session).append(events)
        session.commit()
    ledger.outcome(batch, "acknowledged")
    return Query.of(tags=[tag])


def kill_between_pages(target: Target, ledger: Ledger, *, kill_after: int) -> None:
    query = _stored(target, ledger, "read")
    config = replace(target.config, fetch_size=PAGE)
    seen: list[int] = []
    with Session(target.engine) as session:
        pid = backend_pid(session)
        try:
            for event in target.store(session, config).read(query):
                seen.append(event.data["i"])
                if len(seen) == kill_after:
                    target.backends.terminate(pid)
                    ledger.fault("read")
        except Exception as exc:
            ledger.error(exc)
        else:
            ledger.problem(
                f"a read ended after {len(seen)} of {READ_EVENTS} "
                "events without an error, its backend killed"
            )
        session.rollback()
    if seen != list(range(len(seen))):
        ledger.problem(f"a killed read delivered {seen}, not its first events")
    recover(target, ledger, "a kill between pages")


def stop_after_kill(target: Target, ledger: Ledger, *, kill_after: int) -> None:
    """Kill the read's backend, then stop reading: close the read, and a projection."""
    query = _stored(target, ledger, "early-stop")
    config = replace(target.config, fetch_size=PAGE)
    for consumer in ("read", "projection"):
        with Session(target.engine) as session:
            pid = backend_pid(session)
            store = target.store(session, config)
            stream = (
                store.read(query)
                if consumer == "read"
                else store.project_stream([counter("n", query)], every=1)
            )
            try:
                for count, _ in enumerate(stream, 1):
                    if count == kill_after:
                        target.backends.terminate(pid)
                        ledger.fault("early-stop")
                        break
                stream.close()
            except Exception as exc:
                ledger.error(exc)
            try:
                session.rollback()
            except Exception as exc:  # the application's own rollback on a dead connection
                ledger.error(exc)
    recover(target, ledger, "an early stop after a kill")


def kill_during_projection(target: Target, ledger: Ledger, *, kill_after: int) -> None:
    query = _stored(target, ledger, "projection")
    # One slot only: a slot not given back by the failed projection fails the next one.
    config = replace(target.config, fetch_size=PAGE, max_concurrent_projections=1)
    projector = counter("n", query)
    with Session(target.engine) as session:
        pid = backend_pid(session)
        finished = False
        try:
            for progress in target.store(session, config).project_stream([projector], every=1):
                if progress.events == kill_after:
                    target.backends.terminate(pid)
                    ledger.fault("projection")
                finished = progress.model is not None
        except Exception as exc:
            ledger.error(exc)
        else:
            if finished:
                ledger.problem("a projection whose backend was killed reported a model")
        session.rollback()
    try:
        with Session(target.engine) as session:
            model = target.store(session, config).project([projector])
        if model.states["n"] != READ_EVENTS:
            ledger.problem(
                f"the projection after the fault counted {model.states['n']} of {READ_EVENTS}"
            )
    except Exception as exc:
        ledger.error(exc)
        ledger.problem(f"the projection after the fault failed: {exc!r}")
    recover(target, ledger, "a kill during a projection")
