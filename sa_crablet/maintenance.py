"""The documented escape hatch from the append-only guard, for maintenance only.

The guard is lifted for the session's current transaction and nothing else: another
connection never sees it missing, a rollback restores it, and on PostgreSQL only a role with
the privileges of the tables' owner can lift it at all (the owner could disable the triggers
anyway; every other role, whatever it was granted, cannot).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Boolean, Connection, Text, cast, column, event, func, select, table
from sqlalchemy.orm import Session, scoped_session

from sa_crablet.exceptions import MutationNotAllowedError, ValidationError
from sa_crablet.schema import (
    ALLOW_MUTATION_SETTING,
    COMMANDS_TABLE,
    EVENTS_TABLE,
    SQLITE_DROP_ALL_GUARD,
    SQLITE_RESTORE_ALL_GUARD,
)

# libpq's transaction states (psycopg's ``pq.TransactionStatus``, psycopg2's
# ``extensions.TRANSACTION_STATUS_*``): no transaction open, and one open and not failed.
_PG_IDLE = 0
_PG_IN_TRANSACTION = 2

_pg_class = table(
    "pg_class", column("oid"), column("relname"), column("relowner"), schema="pg_catalog"
)


@contextmanager
def allow_mutation(session: Session | scoped_session[Session]) -> Iterator[None]:
    """Let the session's current transaction UPDATE and DELETE (on PostgreSQL also TRUNCATE)
    rows of the events and commands tables, until the block ends.

    A transaction is opened first if none is (an ``AUTOCOMMIT`` engine, or pysqlite before
    its first write). Commit or roll back the session after the block as usual; a rollback
    undoes the block's changes and never leaves the guard lifted.

    PostgreSQL: the current role must have the privileges of the tables' owner (be the owner,
    a member of the owning role, or a superuser); otherwise ``MutationNotAllowedError`` is
    raised before anything changes. The lift is the setting ``sa_crablet.allow_mutation``,
    set for this transaction only to the transaction's own id, and cleared when the block
    ends. An error inside the block propagates as it is (the session must then be rolled
    back, which clears the setting too).

    SQLite (no roles: whoever can write the file can change it): the guard triggers are
    dropped inside the transaction and recreated before it commits (also when the session
    commits inside the block), so other connections never see them missing.

    Blocks do not nest: the end of an inner block ends the lift.
    """
    if isinstance(session, scoped_session):  # e.g. Flask-SQLAlchemy's db.session
        session = session()
    if not isinstance(session, Session):
        raise ValidationError("session", session, "allow_mutation needs a SQLAlchemy Session")
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        with _lifted_on_postgresql(conn):
            yield
    else:
        with _lifted_on_sqlite(session, conn):
            yield


@contextmanager
def _lifted_on_postgresql(conn: Connection) -> Iterator[None]:
    not_owned = conn.execute(
        select(func.current_user(), _pg_class.c.relname).where(
            _pg_class.c.oid.in_(
                [func.to_regclass(name) for name in (EVENTS_TABLE, COMMANDS_TABLE)]
            ),
            ~func.pg_has_role(func.current_user(), _pg_class.c.relowner, "USAGE", type_=Boolean),
        )
    ).all()
    if not_owned:
        raise MutationNotAllowedError(
            str(not_owned[0][0]), tuple(sorted(str(r[1]) for r in not_owned))
        )
    if _pg_status(conn) == _PG_IDLE and getattr(
        conn.connection.driver_connection, "autocommit", False
    ):
        conn.exec_driver_sql("BEGIN")  # an AUTOCOMMIT engine: the setting needs a transaction
    transaction_id = cast(func.pg_current_xact_id(), Text)
    conn.execute(select(func.set_config(ALLOW_MUTATION_SETTING, transaction_id, True)))
    try:
        yield
    finally:
        # Only while the block's transaction is still open and healthy. After a database
        # error it is aborted (its rollback clears the setting anyway) and a statement there
        # would replace the block's own error with InFailedSqlTransaction; after a commit or
        # rollback inside the block the lift has ended with its transaction.
        if not conn.closed and _pg_status(conn) == _PG_IN_TRANSACTION:
            conn.execute(select(func.set_config(ALLOW_MUTATION_SETTING, "", True)))


def _pg_status(conn: Connection) -> int | None:
    info = getattr(conn.connection.driver_connection, "info", None)
    status: Any = getattr(info, "transaction_status", None)
    return None if status is None else int(status)


@contextmanager
def _lifted_on_sqlite(session: Session, conn: Connection) -> Iterator[None]:
    raw = conn.connection.driver_connection
    assert raw is not None
    # pysqlite opens a transaction only before data-changing statements, never before DDL:
    # without one the DROP TRIGGER would commit at once and outlive a rollback.
    if not raw.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    def still_open() -> bool:
        return not conn.closed and bool(raw.in_transaction)

    def restore() -> None:
        # IF NOT EXISTS: when the transaction was rolled back and begun again inside the
        # block, the triggers are already back.
        if still_open():
            for statement in SQLITE_RESTORE_ALL_GUARD:
                conn.exec_driver_sql(statement)

    def restore_before_commit(committing: Session) -> None:
        if committing.in_nested_transaction():
            return  # a savepoint's release: the block's transaction goes on
        committing.flush()  # the block's pending ORM changes, while the guard is lifted
        restore()

    for statement in SQLITE_DROP_ALL_GUARD:
        conn.exec_driver_sql(statement)
    event.listen(session, "before_commit", restore_before_commit)
    try:
        yield
    finally:
        event.remove(session, "before_commit", restore_before_commit)
        restore()
