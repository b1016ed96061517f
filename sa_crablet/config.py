"""Store configuration."""

from __future__ import annotations

from dataclasses import dataclass

from sa_crablet.exceptions import ValidationError


@dataclass(frozen=True, slots=True)
class EventStoreConfig:
    """How an :class:`~sa_crablet.EventStore` behaves.

    ``max_batch_size``: most events one ``append`` accepts.
    ``lock_timeout`` / ``statement_timeout``: seconds, applied to each store operation only
    (PostgreSQL ``SET LOCAL`` for the operation, then the host's values are restored; on
    SQLite the busy timeout and an interrupt). ``None`` leaves the database's settings alone.
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
    """

    max_batch_size: int = 1000
    lock_timeout: float | None = None
    statement_timeout: float | None = None
    fetch_size: int = 1000
    max_concurrent_projections: int = 100
    max_concurrent_appends: int = 100
    direct_execution: bool = True

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
        for name in ("lock_timeout", "statement_timeout"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValidationError(name, value, "must be a positive number of seconds or None")
