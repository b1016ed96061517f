"""A conflict check on a fresh snapshot, in another connection, for a host transaction whose
own snapshot is fixed (REPEATABLE READ, SERIALIZABLE)."""

from __future__ import annotations

import threading
import weakref

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.pool import Pool

from sa_crablet._plans.steps import Rows, Step
from sa_crablet._runners.timeouts import custom_plans

# One small pool per application engine. It is separate so a check never waits for a
# connection that a host transaction (itself waiting for this check) holds; made from the
# engine's own pool (``recreate()``: the same connect arguments and pool listeners).
_side_engines: weakref.WeakKeyDictionary[Pool, Engine] = weakref.WeakKeyDictionary()
_side_lock = threading.Lock()


def fresh_rows(conn: Connection, step: Step) -> Rows:
    """The rows of ``step`` on a fresh snapshot: another connection, in a new transaction
    whose first statement it is, with the host connection's execution options (a
    ``schema_translate_map`` above all) except its isolation level.

    The host transaction already holds the condition's locks, so no conflicting append can
    commit between this check and the host's commit. Events of the host transaction itself
    are invisible here; the check inside the insert covers them.
    """
    pool = conn.engine.pool  # shared by every execution_options() view of the engine
    with _side_lock:
        side = _side_engines.get(pool)
        if side is None:
            side = _side_engines[pool] = _side_engine(conn.engine, pool)
    options = {k: v for k, v in conn.get_execution_options().items() if k != "isolation_level"}
    with side.connect() as fresh:
        if options:
            fresh = fresh.execution_options(**options)
        with custom_plans(fresh, True):
            rows = list(fresh.execute(step.statement, step.params).all())
        fresh.rollback()
    return rows


def _side_engine(engine: Engine, pool: Pool) -> Engine:
    """An engine like ``engine`` (its URL, its dialect's sync or async flavour) on a new pool
    made the way ``pool`` makes connections."""
    if engine.dialect.is_async:
        # Only SQLAlchemy's asyncio layer makes the async flavour of a dialect whose URL
        # names both (postgresql+psycopg); its sync face runs inside the greenlet bridge.
        from sqlalchemy.ext.asyncio import create_async_engine

        return create_async_engine(engine.url, pool=pool.recreate()).sync_engine
    return create_engine(engine.url, pool=pool.recreate())
