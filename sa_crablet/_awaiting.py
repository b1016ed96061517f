"""Awaiting from synchronous code, inside SQLAlchemy's greenlet bridge: how the store's one
(synchronous) logic drives asynchronous drivers and handlers (see
:mod:`sa_crablet.async_store`).
"""

from __future__ import annotations

import inspect
from typing import Any

from sqlalchemy.exc import MissingGreenlet

try:  # SQLAlchemy 2.1 names it await_; 2.0 only had await_only
    from sqlalchemy.util import await_ as await_
except ImportError:  # pragma: no cover - SQLAlchemy 2.0
    from sqlalchemy.util import await_only as await_


def outside_the_bridge(error: BaseException) -> bool:
    """Whether ``error`` says an async driver was used outside the greenlet bridge: I/O
    from a finalizer, say, with no event loop to run it. (SQLAlchemy may wrap its
    ``MissingGreenlet`` in a ``StatementError``.)"""
    return isinstance(error, MissingGreenlet) or isinstance(error.__cause__, MissingGreenlet)


def awaited(value: Any) -> Any:
    """``value``, awaited first if it is awaitable (an async driver's method returned a
    coroutine where a sync one returns the result)."""
    return await_(value) if inspect.isawaitable(value) else value


__all__ = ["await_", "awaited", "outside_the_bridge"]
