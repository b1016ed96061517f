"""Fail-fast concurrency limits, shared by every store built from an equal configuration.

A call over the limit fails at once instead of queueing: under overload, callers learn it
immediately and can shed load, rather than piling up connections that wait.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sa_crablet.exceptions import CrabletError


class Limiter:
    def __init__(self, limit: int, error: type[CrabletError], what: str) -> None:
        self.limit = limit
        self._error = error
        self._what = what
        self._slots = threading.BoundedSemaphore(limit)

    def acquire(self) -> None:
        if not self._slots.acquire(blocking=False):
            raise self._error(
                f"too many concurrent {self._what}: the limit is {self.limit}", self.limit
            )

    def release(self) -> None:
        self._slots.release()

    @contextmanager
    def slot(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


_registry: dict[tuple[object, str], Limiter] = {}
_registry_lock = threading.Lock()


def limiter(config: object, kind: str, limit: int, error: type[CrabletError]) -> Limiter:
    """The process-wide limiter of ``kind`` for this configuration (by value)."""
    key = (config, kind)
    with _registry_lock:
        found = _registry.get(key)
        if found is None:
            found = _registry[key] = Limiter(limit, error, kind)
        return found
