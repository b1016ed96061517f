"""sa_crablet: a Dynamic Consistency Boundary event store for SQLAlchemy applications."""

from sa_crablet.commands import Command, CommandRecord, CommandResult, Decision
from sa_crablet.config import EventStoreConfig
from sa_crablet.events import Event, SequencedEvent, as_tags, split_tag, tag, tags
from sa_crablet.exceptions import (
    AppendOnlyError,
    ConcurrencyError,
    CrabletError,
    MutationNotAllowedError,
    OperationTimeoutError,
    ReadNotFinishedError,
    SchemaError,
    TooManyAppendsError,
    TooManyProjectionsError,
    UnsupportedSetupError,
    ValidationError,
)
from sa_crablet.executor import CommandExecutor, Handler, RetryPolicy
from sa_crablet.maintenance import allow_mutation
from sa_crablet.migrate import create_schema, downgrade, include_object, upgrade
from sa_crablet.projection import (
    DecisionModel,
    ProjectionProgress,
    StateProjector,
    by_type,
    counter,
    exists,
    fold,
    last_event,
)
from sa_crablet.query import AppendCondition, Head, Query, QueryItem, Snapshot, fail_if_exists
from sa_crablet.schema import commands as commands_table
from sa_crablet.schema import events, metadata
from sa_crablet.sqlite import create_sqlite_engine
from sa_crablet.statements import query_clause
from sa_crablet.store import EventStore
from sa_crablet.streams import ProjectionStream, ReadResult

__version__ = "0.1.0"

__all__ = [
    "Command",
    "CommandExecutor",
    "CommandRecord",
    "CommandResult",
    "Decision",
    "Handler",
    "RetryPolicy",
    "AppendCondition",
    "AppendOnlyError",
    "ConcurrencyError",
    "CrabletError",
    "DecisionModel",
    "Event",
    "EventStore",
    "EventStoreConfig",
    "Head",
    "MutationNotAllowedError",
    "OperationTimeoutError",
    "ProjectionProgress",
    "ProjectionStream",
    "Query",
    "QueryItem",
    "ReadNotFinishedError",
    "ReadResult",
    "SchemaError",
    "SequencedEvent",
    "Snapshot",
    "StateProjector",
    "TooManyAppendsError",
    "TooManyProjectionsError",
    "UnsupportedSetupError",
    "ValidationError",
    "__version__",
    "allow_mutation",
    "as_tags",
    "by_type",
    "commands_table",
    "counter",
    "create_schema",
    "create_sqlite_engine",
    "downgrade",
    "events",
    "exists",
    "fail_if_exists",
    "fold",
    "include_object",
    "last_event",
    "metadata",
    "query_clause",
    "split_tag",
    "tag",
    "tags",
    "upgrade",
]
