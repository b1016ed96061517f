"""Statements that steer a PostgreSQL connection rather than query the store: the transaction
an operation owns, server-side cursors, and per-operation timeouts. Pure builders, no I/O.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Select,
    String,
    TextClause,
    TextualSelect,
    bindparam,
    column,
    func,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.visitors import InternalTraversal

from sa_crablet._clauses import EVENT_COLUMNS
from sa_crablet.schema import events

# An operation that finds no transaction open (an AUTOCOMMIT connection) runs in one of its
# own. It always asks for READ COMMITTED: each statement then takes a fresh snapshot, which
# is what "lock, then check in a new statement" relies on, whatever the server's default.
BEGIN = text("BEGIN ISOLATION LEVEL READ COMMITTED")
COMMIT = text("COMMIT")
ROLLBACK = text("ROLLBACK")


class DeclareCursor(Executable, ClauseElement):
    """``DECLARE <name> NO SCROLL CURSOR [WITH HOLD] FOR <select>``.

    A cursor the store declares itself (rather than the driver's named cursors) so that
    every page is a statement of its own, which the configured timeouts can cover one round
    trip at a time, and so that a connection in AUTOCOMMIT can hold one (``WITH HOLD``: it
    outlives the implicit transaction of its ``DECLARE``).
    """

    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy's own convention
        ("name", InternalTraversal.dp_string),
        ("hold", InternalTraversal.dp_boolean),
        ("query", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, name: str, query: Select[Any], hold: bool) -> None:
        self.name = name
        self.query = query
        self.hold = hold


@compiles(DeclareCursor)
def _declare_cursor(element: DeclareCursor, compiler: SQLCompiler, **kw: Any) -> str:
    hold = "WITH HOLD" if element.hold else "WITHOUT HOLD"
    query = compiler.process(element.query, **kw)
    return f"DECLARE {element.name} NO SCROLL CURSOR {hold} FOR {query}"


def cursor_name(index: int) -> str:
    """The name of the store's ``index``-th open cursor on a connection. Names come from a
    small set (a connection rarely has more than one or two reads open), so the statements
    that carry them are cached like any other."""
    return f"sa_crablet_cursor_{int(index)}"


@lru_cache(maxsize=64)
def declare_cursor(name: str, query: Select[Any], hold: bool) -> DeclareCursor:
    return DeclareCursor(name, query, hold)


@lru_cache(maxsize=64)
def fetch_events(name: str, count: int) -> TextualSelect:
    """The next ``count`` rows of a cursor over the events' read columns, typed as those
    columns (so SQLAlchemy Core decodes tags, payloads and times as for a plain read)."""
    return text(f"FETCH FORWARD {int(count)} FROM {name}").columns(
        *(events.c[column] for column in EVENT_COLUMNS)
    )


@lru_cache(maxsize=64)
def close_cursor(name: str) -> TextClause:
    return text(f"CLOSE {name}")


@lru_cache(maxsize=1)
def existing_cursors() -> Select[Any]:
    """Which of parameter ``names`` are cursors open on this connection."""
    cursors = table("pg_cursors", column("name"), schema="pg_catalog")
    wanted = bindparam("names", type_=ARRAY(String))
    return select(cursors.c.name).where(cursors.c.name == func.any(wanted))


# -- per-operation timeouts ----------------------------------------------------------------------


@lru_cache(maxsize=4)
def timeouts_set(names: tuple[str, ...]) -> Select[Any]:
    """Save each named setting in ``sa_crablet.saved_<name>`` and set it to parameter
    ``<name>``, transaction-locally (``SET LOCAL`` style); left to right, so the saved value
    is the host's. Sent in the same query string as the operation it covers."""
    columns: list[Any] = []
    for name in names:
        setting, saved = _setting_name(name), _setting_name(f"sa_crablet.saved_{name}")
        columns.append(func.set_config(saved, func.current_setting(setting), True))
        columns.append(func.set_config(setting, bindparam(name, type_=String), True))
    return select(*columns)


@lru_cache(maxsize=4)
def timeouts_restore(names: tuple[str, ...]) -> Select[Any]:
    """Put back the settings :func:`timeouts_set` saved."""
    return select(
        *(
            func.set_config(
                _setting_name(name),
                func.current_setting(_setting_name(f"sa_crablet.saved_{name}")),
                True,
            )
            for name in names
        )
    )


def _setting_name(name: str) -> Any:
    """A setting's name as an SQL literal (names are the store's own constants)."""
    if name.replace("_", "").replace(".", "").isalnum():
        return literal_column(f"'{name}'")
    raise ValueError(f"not a setting name: {name!r}")
