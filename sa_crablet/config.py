"""Store configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sa_crablet._validation import check_seconds
from sa_crablet.exceptions import ValidationError


@dataclass(frozen=True, slots=True)
class EventStoreConfig:
    """How an :class:`~sa_crablet.EventStore` behaves.

    ``max_batch_size``: most events one ``append`` accepts.
    ``lock_timeout`` / ``statement_timeout``: seconds, applied to each store operation only
    (PostgreSQL ``SET LOCAL`` for the operation, then the host's values are restored; on
    SQLite the busy timeout and an interrupt). ``None`` leaves the database's settings alone.
    Finite and above 0, at most 2,147,483.647 (PostgreSQL's limit); sent in whole
    milliseconds, rounded up (never 0, which would mean "no timeout").
    ``fetch_size``: rows fetched per round trip when streaming a read.
    ``max_concurrent_projections`` / ``max_concurrent_appends``: fail-fast limits, shared by
    every store in the process whose configuration is equal to this one; a call over the
    limit raises ``TooManyProjectionsError`` / ``TooManyAppendsError`` at once.
    ``direct_execution``: on PostgreSQL with psycopg, run the store's own append and read
    statements directly on the Session's DBAPI connection (same connection, same
    transaction), skipping SQLAlchemy Core's per-call overhead. Core is still used whenever
    the engine echoes SQL or has ``before_cursor_execute`` / ``after_cursor_execute`` /
    ``handle_error`` listeners, so tracing and logging see every statement; ``False`` always
    uses Core.
    ``slow_operation_threshold``: seconds; an append, check, projection or command
    execution that takes longer is logged as a WARNING (``sa_crablet.store``,
    ``sa_crablet.executor``). ``None`` logs none. Finite and above 0.
    ``log_payloads``: let the store's log records carry event and command data (and
    metadata). Off by default: payloads may hold personal data, and log records travel far.
    Spans and metrics never carry them.
    """

    max_batch_size: int = 1000
    lock_timeout: float | None = None
    statement_timeout: float | None = None
    fetch_size: int = 1000
    max_concurrent_projections: int = 100
    max_concurrent_appends: int = 100
    direct_execution: bool = True
    slow_operation_threshold: float | None = 1.0
    log_payloads: bool = False

    def __post_init__(self) -> None:
        for name in (
            "max_batch_size",
            "fetch_size",
            "max_concurrent_projections",
            "max_concurrent_appends",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(name, value, "must be a positive int")
        if not isinstance(self.direct_execution, bool):
            raise ValidationError("direct_execution", self.direct_execution, "must be a bool")
        if not isinstance(self.log_payloads, bool):
            raise ValidationError("log_payloads", self.log_payloads, "must be a bool")
        slow = self.slow_operation_threshold
        # A store made per request makes its default configuration too: a plain float in
        # range is let through without the general check.
        if slow is not None and not (type(slow) is float and 0.0 < slow < math.inf):
            check_seconds("slow_operation_threshold", slow, positive=True)
        for name in ("lock_timeout", "statement_timeout"):
            value = getattr(self, name)
            if value is None:
                continue
            check_seconds(name, value, positive=True)
            if value > MAX_TIMEOUT_MS / 1000 or timeout_ms(value) > MAX_TIMEOUT_MS:
                raise ValidationError(
                    name, value, f"at most {MAX_TIMEOUT_MS / 1000} seconds (PostgreSQL's limit)"
                )


MAX_TIMEOUT_MS = 2**31 - 1
"""PostgreSQL's largest ``lock_timeout`` / ``statement_timeout`` (milliseconds)."""


def timeout_ms(seconds: float) -> int:
    """A timeout in whole milliseconds, rounded up and never 0 (which means "no timeout" to
    PostgreSQL and "do not wait" to SQLite). Rounded to the nanosecond first, so binary
    fractions do not add a millisecond (0.3 s is 300 ms, not 301)."""
    return max(1, math.ceil(round(seconds * 1000, 6)))
