"""sa_crablet: a Dynamic Consistency Boundary event store for SQLAlchemy applications.

The names below are the public surface. More lives in modules of its own: projector helpers
in :mod:`sa_crablet.projectors`, tag helpers in :mod:`sa_crablet.events`, heads' snapshots
in :mod:`sa_crablet.query`, read results and projection streams in :mod:`sa_crablet.streams`
(their async forms in :mod:`sa_crablet.async_store`), projection progress in
:mod:`sa_crablet.projection`, command
records in :mod:`sa_crablet.commands`, migrations in :mod:`sa_crablet.migrate`, the tables'
``MetaData`` in :mod:`sa_crablet.schema`, statements for inspection in
:mod:`sa_crablet.statements`.
"""

from typing import TYPE_CHECKING

from sa_crablet._clauses import query_clause
from sa_crablet.commands import Command, CommandResult, Decision
from sa_crablet.config import EventStoreConfig
from sa_crablet.events import Event, SequencedEvent
from sa_crablet.exceptions import (
    AppendOnlyError,
    ConcurrencyError,
    CrabletError,
    DuplicateCommandError,
    MutationNotAllowedError,
    OperationTimeoutError,
    ReadNotFinishedError,
    SchemaError,
    TooManyAppendsError,
    TooManyProjectionsError,
    UnsupportedSetupError,
    ValidationError,
)
from sa_crablet.executor import CommandExecutor, RetryPolicy
from sa_crablet.maintenance import allow_mutation
from sa_crablet.migrate import create_schema, upgrade, upgrade_async
from sa_crablet.projection import DecisionModel, StateProjector
from sa_crablet.query import AppendCondition, Head, Query, QueryItem, fail_if_exists
from sa_crablet.schema import commands as commands_table
from sa_crablet.schema import events as events_table
from sa_crablet.sqlite import create_sqlite_engine
from sa_crablet.store import EngineEventStore, EventStore

if TYPE_CHECKING:
    from sa_crablet.async_executor import AsyncCommandExecutor
    from sa_crablet.async_store import AsyncEventStore
    from sa_crablet.sqlite import create_async_sqlite_engine

__version__ = "0.1.0"
"""The one source of the version: pyproject.toml reads it from here (setuptools' dynamic
``attr``, without importing the package), so the distribution's metadata always agrees."""

_ASYNC = {
    "AsyncCommandExecutor": "sa_crablet.async_executor",
    "AsyncEventStore": "sa_crablet.async_store",
    "create_async_sqlite_engine": "sa_crablet.sqlite",
}


def __getattr__(name: str) -> object:
    """The async API, imported on first use: a synchronous program does not load
    SQLAlchemy's asyncio layer."""
    module = _ASYNC.get(name)
    if module is None:
        raise AttributeError(f"module 'sa_crablet' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    # values
    "AppendCondition",
    "Event",
    "Head",
    "Query",
    "QueryItem",
    "SequencedEvent",
    "fail_if_exists",
    # the store and its decision models
    "AsyncEventStore",
    "DecisionModel",
    "EngineEventStore",
    "EventStore",
    "EventStoreConfig",
    "StateProjector",
    # commands
    "AsyncCommandExecutor",
    "Command",
    "CommandExecutor",
    "CommandResult",
    "Decision",
    "RetryPolicy",
    # errors
    "AppendOnlyError",
    "ConcurrencyError",
    "CrabletError",
    "DuplicateCommandError",
    "MutationNotAllowedError",
    "OperationTimeoutError",
    "ReadNotFinishedError",
    "SchemaError",
    "TooManyAppendsError",
    "TooManyProjectionsError",
    "UnsupportedSetupError",
    "ValidationError",
    # schema, migrations, set-up
    "allow_mutation",
    "commands_table",
    "create_async_sqlite_engine",
    "create_schema",
    "create_sqlite_engine",
    "events_table",
    "query_clause",
    "upgrade",
    "upgrade_async",
    "__version__",
]
