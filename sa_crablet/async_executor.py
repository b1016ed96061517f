"""The command executor for ``AsyncSession`` applications: ``async def`` handlers, the sync
executor's one logic (look-up, savepoint, append with the record, duplicates) run in
SQLAlchemy's greenlet bridge, the handler awaited from inside it."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sa_crablet._awaiting import await_
from sa_crablet._observe import commands as observe
from sa_crablet.async_store import AsyncEventStore
from sa_crablet.commands import Command, CommandResult
from sa_crablet.config import EventStoreConfig
from sa_crablet.exceptions import ConcurrencyError, ValidationError
from sa_crablet.executor import DEFAULT_RETRY, RetryPolicy, Routes, commit, run_command

AsyncHandler = Callable[[AsyncEventStore, Command], Awaitable[Any]]
"""``async def handler(store, command)`` reads or projects through ``store`` (bound to the
command's transaction) and returns a ``Decision``, events, ``(events, condition)`` or
``None``."""


class AsyncCommandExecutor:
    """Executes commands with async handlers, in the caller's transaction or in its own.

    ``bind`` is an ``AsyncSession`` (the host's transaction: never committed, never retried
    in), or an ``async_sessionmaker`` / ``AsyncEngine`` (each execution gets its own
    transaction, committed on success and retried on conflicts per ``retry``).
    """

    def __init__(
        self,
        bind: AsyncSession | async_sessionmaker[AsyncSession] | AsyncEngine,
        *,
        config: EventStoreConfig | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        require_events: bool = True,
    ) -> None:
        if not isinstance(bind, AsyncSession | async_sessionmaker | AsyncEngine):
            raise ValidationError(
                "bind", bind, "must be an AsyncSession, an async_sessionmaker or an AsyncEngine"
            )
        self.bind = bind
        self.config = config
        self.retry = retry
        self.require_events = require_events
        self._routes = Routes[AsyncHandler]()

    def register(self, command_type: str, handler: AsyncHandler) -> None:
        """Route commands of ``command_type`` to ``handler`` when ``execute`` gets none."""
        self._routes.register(command_type, handler)

    def handles(self, command_type: str) -> Callable[[AsyncHandler], AsyncHandler]:
        """Decorator form of :meth:`register`."""

        def decorate(handler: AsyncHandler) -> AsyncHandler:
            self.register(command_type, handler)
            return handler

        return decorate

    @observe.executing_async
    async def execute(self, command: Command, handler: AsyncHandler | None = None) -> CommandResult:
        """Run ``handler`` for ``command`` and append what it decides, atomically with the
        command's record. A command id executed before returns its first outcome."""
        handler = self._routes.handler_for(command, handler)
        if isinstance(self.bind, AsyncSession):
            return await self._execute_in(self.bind, command, handler, attempts=1, host=True)
        factory = (
            self.bind
            if isinstance(self.bind, async_sessionmaker)
            else async_sessionmaker(self.bind)
        )
        retry = 0
        while True:
            try:
                async with factory() as session:
                    result = await self._execute_in(
                        session, command, handler, attempts=retry + 1, host=False
                    )
                    await session.run_sync(commit)
                    return result
            except ConcurrencyError as error:
                retry += 1
                if retry >= self.retry.attempts:
                    error.attempts = retry
                    observe.gave_up(command, retry)
                    raise
                delay = self.retry.delay(retry - 1)
                observe.retrying(command, retry, delay, error)
                await asyncio.sleep(delay)

    async def _execute_in(
        self,
        session: AsyncSession,
        command: Command,
        handler: AsyncHandler,
        *,
        attempts: int,
        host: bool,
    ) -> CommandResult:
        store = AsyncEventStore(session, self.config)

        def decide() -> Any:
            # Called by the sync logic inside the bridge: the handler's coroutine runs on
            # the event loop meanwhile, and its own awaits on the store bridge again.
            outcome = handler(store, command)
            return await_(outcome) if inspect.isawaitable(outcome) else outcome

        return await session.run_sync(
            lambda _session: run_command(
                store.sync,
                command,
                decide,
                host=host,
                require_events=self.require_events,
                attempts=attempts,
            )
        )
