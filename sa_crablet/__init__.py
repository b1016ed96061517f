"""sa_crablet: a Dynamic Consistency Boundary event store for SQLAlchemy applications."""

from sa_crablet.config import EventStoreConfig
from sa_crablet.events import Event, SequencedEvent, as_tags, split_tag, tag, tags
from sa_crablet.exceptions import (
    AppendOnlyError,
    ConcurrencyError,
    CrabletError,
    OperationTimeoutError,
    ReadNotFinishedError,
    SchemaError,
    ValidationError,
)
from sa_crablet.maintenance import allow_mutation
from sa_crablet.migrate import create_schema, downgrade, include_object, upgrade
from sa_crablet.query import AppendCondition, Head, Query, QueryItem, Snapshot, fail_if_exists
from sa_crablet.schema import events, metadata
from sa_crablet.sqlite import create_sqlite_engine
from sa_crablet.statements import query_clause
from sa_crablet.store import EventStore, ReadResult

__version__ = "0.1.0"

__all__ = [
    "AppendCondition",
    "AppendOnlyError",
    "ConcurrencyError",
    "CrabletError",
    "Event",
    "EventStore",
    "EventStoreConfig",
    "Head",
    "OperationTimeoutError",
    "Query",
    "QueryItem",
    "ReadNotFinishedError",
    "ReadResult",
    "SchemaError",
    "SequencedEvent",
    "Snapshot",
    "ValidationError",
    "__version__",
    "allow_mutation",
    "as_tags",
    "create_schema",
    "create_sqlite_engine",
    "downgrade",
    "events",
    "fail_if_exists",
    "include_object",
    "metadata",
    "query_clause",
    "split_tag",
    "tag",
    "tags",
    "upgrade",
]
