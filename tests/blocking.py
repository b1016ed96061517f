"""The async API behind a blocking facade, so that one test body runs on the sync store and on
the async one: ``Blocking(target)`` calls ``target``'s methods and runs whatever they return
that is awaitable on the calling thread's event loop; async iterators become iterators.

Each thread has its own loop (tests race threads); async engines used this way take a
``NullPool``, so no connection is ever shared between two loops.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

_local = threading.local()


def loop_runner() -> asyncio.Runner:
    """This thread's event loop, made on first use."""
    runner = getattr(_local, "runner", None)
    if runner is None:
        runner = _local.runner = asyncio.Runner()
    return runner


def run(awaitable: Any) -> Any:
    """Run a coroutine to completion on this thread's loop."""

    async def wrapper() -> Any:
        return await awaitable

    return loop_runner().run(wrapper())


def close_loop() -> None:
    runner = getattr(_local, "runner", None)
    if runner is not None:
        runner.close()
        _local.runner = None


class Blocking:
    """``target``, with every awaitable result awaited (on the event loop of the thread that
    made the facade, so that a session started there may be used from another thread while
    that one waits) and async iterators made blocking."""

    def __init__(self, target: Any, runner: asyncio.Runner | None = None) -> None:
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "runner", runner or loop_runner())

    def run(self, awaitable: Any) -> Any:
        async def wrapper() -> Any:
            return await awaitable

        return self.runner.run(wrapper())

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.target, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.wrap(attribute(*(_unwrap(a) for a in args), **kwargs))

        return call

    def wrap(self, value: Any) -> Any:
        if inspect.isawaitable(value) and not hasattr(value, "__aenter__"):
            value = self.run(value)
        if isinstance(value, AsyncIterator):
            return BlockingIterator(value, self.runner)
        if type(value).__module__.startswith(("sqlalchemy.ext.asyncio", "sa_crablet.async")):
            return Blocking(value, self.runner)  # an AsyncConnection, a transaction, ...
        return value

    def __enter__(self) -> Blocking:
        enter = getattr(self.target, "__aenter__", None)
        if enter is not None:
            self.run(enter())
        return self

    def __exit__(self, *exc: Any) -> None:
        leave = getattr(self.target, "__aexit__", None)
        if leave is not None:
            self.run(leave(*exc))


class BlockingIterator(Blocking):
    """An async iterator (a read, a projection stream) as an iterator; ``close()`` is its
    ``aclose()``; other attributes (``head``) pass through."""

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return self.run(self.target.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        self.run(self.target.aclose())


def _unwrap(value: Any) -> Any:
    return value.target if isinstance(value, Blocking | Awaiting) else value


class Awaiting:
    """The mirror of :class:`Blocking`: a sync object behind an async facade, so that a test
    body written against the async API also runs on the sync one. A method runs at once
    (in the calling thread) and hands back an awaitable of its result; an iterator comes
    back as an async iterator."""

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "target", target)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.target, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            value = attribute(*(_unwrap(a) for a in args), **kwargs)
            if isinstance(value, Iterator):
                return AwaitingIterator(value)
            return _ready(value)

        return call

    async def __aenter__(self) -> Awaiting:
        self.target.__enter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.target.__exit__(*exc)


class AwaitingIterator(Awaiting):
    """A read or a projection stream as the async API hands them back."""

    def __aiter__(self) -> AwaitingIterator:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self.target)
        except StopIteration:
            raise StopAsyncIteration from None

    async def all(self) -> list[Any]:
        return list(self.target)

    async def aclose(self) -> None:
        self.target.close()


async def _ready(value: Any) -> Any:
    return value


class ThreadBarrier:
    """A ``threading.Barrier`` with the async API's ``await barrier.wait()``."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=30)

    async def wait(self) -> None:
        self.barrier.wait()
