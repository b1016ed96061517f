"""The documented escape hatch from the append-only guard, for maintenance only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from sa_crablet.schema import (
    ALLOW_MUTATION_SETTING,
    SQLITE_DROP_GUARD,
    SQLITE_GUARD_TRIGGERS,
)


@contextmanager
def allow_mutation(session: Session) -> Iterator[None]:
    """Let the current transaction UPDATE, DELETE (and on PostgreSQL TRUNCATE) stored events.

    PostgreSQL: sets ``sa_crablet.allow_mutation`` for this transaction only (``SET LOCAL``
    semantics), and clears it on exit. SQLite: drops the guard triggers inside the
    transaction and recreates them on exit (SQLite DDL is transactional, other connections
    never see the guard missing). Commit or roll back the session afterwards as usual.
    """
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.set_config(ALLOW_MUTATION_SETTING, "on", True)))
        try:
            yield
        finally:
            conn.execute(select(func.set_config(ALLOW_MUTATION_SETTING, "off", True)))
        return
    for statement in SQLITE_DROP_GUARD:
        conn.execute(text(statement))
    try:
        yield
    finally:
        for statement in SQLITE_GUARD_TRIGGERS:
            conn.execute(text(statement))
