"""The library's loggers, and how a record carries its facts.

Four loggers under ``sa_crablet``, by what they report: ``sa_crablet.store`` (appends,
checks, reads, projections), ``sa_crablet.executor`` (command executions, retries,
duplicates), ``sa_crablet.projections`` (streaming projection batches) and
``sa_crablet.migrations`` (upgrade and downgrade runs). ``sa_crablet`` itself has a
``NullHandler``, so a program that configured no logging prints nothing (Python's "last
resort" handler would print our WARNINGs to stderr).

Every record carries its facts as flat attributes named ``crablet_*`` (``extra=``), the
same names whatever the message says, for a JSON formatter or a filter to use. A fact that
is not known is absent, never ``None``. Payloads (event and command data, metadata) are
never among them unless ``EventStoreConfig.log_payloads`` asks for them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

ROOT = logging.getLogger("sa_crablet")
ROOT.addHandler(logging.NullHandler())

STORE = logging.getLogger("sa_crablet.store")
EXECUTOR = logging.getLogger("sa_crablet.executor")
PROJECTIONS = logging.getLogger("sa_crablet.projections")
MIGRATIONS = logging.getLogger("sa_crablet.migrations")

PREFIX = "crablet_"
"""Of every fact's attribute name on a ``LogRecord``."""

Facts = dict[str, Any]
"""What a record or a span says, by short name (``events``, ``position``...): the record's
attributes are ``crablet_<name>``, the span's ``sa_crablet.<name>``."""


def emit(
    logger: logging.Logger, level: int, message: str, args: tuple[Any, ...], facts: Facts
) -> None:
    """Log ``message % args`` with the facts as the record's ``crablet_*`` attributes."""
    extra = {PREFIX + name: value for name, value in facts.items() if value is not None}
    # stacklevel: the record names the library function that reported, not this helper.
    logger.log(level, message, *args, extra=extra, stacklevel=2)


def payload_of(events: Any) -> list[dict[str, Any]]:
    """What ``log_payloads`` adds to an append's records: the events as plain values."""
    return [
        {"type": e.type, "tags": list(e.tags), "data": e.data, "metadata": _plain(e.metadata)}
        for e in events
    ]


def _plain(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if metadata is None else dict(metadata)


def milliseconds(seconds: float) -> float:
    """A duration as a record shows it: milliseconds, to the microsecond."""
    return round(seconds * 1000, 3)
