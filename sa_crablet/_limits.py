"""Fail-fast concurrency limits, shared by every store built from an equal configuration.

A call over the limit fails at once instead of queueing: under overload, callers learn it
immediately and can shed load, rather than piling up connections that wait.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sa_crablet.exceptions import CrabletError

LimitError = Callable[[str | None, int], CrabletError]
"""``TooManyAppendsError`` or ``TooManyProjectionsError``: (message, limit) -> error."""


class Limiter:
    """At most ``limit`` holders at once; one more fails at once (``error``). A counter
    under a lock: nothing ever waits on it but for the counter's own update."""

    __slots__ = ("_count", "_error", "_lock", "limit")

    def __init__(self, limit: int, error: LimitError) -> None:
        self.limit = limit
        self._error = error
        self._lock = threading.Lock()
        self._count = 0

    def acquire(self) -> None:
        with self._lock:
            if self._count >= self.limit:
                raise self._error(None, self.limit)  # its message names the setting
            self._count += 1

    def release(self) -> None:
        with self._lock:
            if self._count <= 0:
                raise RuntimeError("a limiter slot released more often than acquired")
            self._count -= 1

    def slot(self) -> _Slot:
        """A slot for the ``with`` block."""
        return _Slot(self)


class _Slot:
    __slots__ = ("_limiter",)

    def __init__(self, limiter: Limiter) -> None:
        self._limiter = limiter

    def __enter__(self) -> None:
        self._limiter.acquire()

    def __exit__(self, *exc: object) -> None:
        self._limiter.release()


_registry: dict[tuple[object, str], Limiter] = {}
_registry_lock = threading.Lock()


def limiter(config: object, kind: str, limit: int, error: LimitError) -> Limiter:
    """The process-wide limiter of ``kind`` for this configuration (by value)."""
    key = (config, kind)
    with _registry_lock:
        found = _registry.get(key)
        if found is None:
            found = _registry[key] = Limiter(limit, error)
        return found
