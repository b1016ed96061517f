"""Appends and checks: their statements and their plans.

On PostgreSQL a conditional append takes advisory locks (:mod:`sa_crablet._plans.locks`),
then checks and inserts in one *later* statement, which runs on a snapshot taken after the
locks were granted; an unconditional append takes shared locks inside its own insert. On
SQLite one writer at a time makes the conditional insert one statement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import msgspec
from sqlalchemy import (
    BigInteger,
    Boolean,
    CompoundSelect,
    Insert,
    Select,
    String,
    bindparam,
    case,
    cast,
    false,
    func,
    literal_column,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from sa_crablet._plans import locks
from sa_crablet._plans.commands import columns_of, record_appended_command
from sa_crablet._plans.conditions import conflict_statement
from sa_crablet._plans.locks import LockPlan
from sa_crablet._plans.shapes import HeadShape, QueryShape, Scope
from sa_crablet._plans.steps import Plan, Rows, Step
from sa_crablet._validation import to_json
from sa_crablet.commands import Command
from sa_crablet.events import Event
from sa_crablet.query import Query
from sa_crablet.schema import POSTGRESQL, events, sqlite_payload

_INSERTED = ["type", "tags", "data", "metadata", "transaction_id", "recorded_at", "command_id"]


# -- statements ----------------------------------------------------------------------------------


def _locks_taken() -> Any:
    """A scalar subquery that takes the transaction-scoped advisory locks of parameters
    ``keys`` and ``exclusive`` (see :func:`lock_params`), in the order given, and counts them.

    One statement takes them all in ascending key order, so two appends can never wait for
    each other in opposite orders (no deadlock between single appends). The lists travel as
    text: bound client side (as the direct path sends these statements), arrays of numbers
    cost psycopg far more to quote than one string.
    """
    keys = func.string_to_array(bindparam("keys", type_=String), ",")
    exclusive = func.string_to_array(bindparam("exclusive", type_=String), ",")
    wanted = (
        func.unnest(cast(keys, ARRAY(BigInteger)), cast(exclusive, ARRAY(Boolean)))
        .table_valued("k", "x")
        .render_derived(name="lk")
    )
    return select(
        func.count(
            case(
                (wanted.c.x, cast(func.pg_advisory_xact_lock(wanted.c.k), String)),
                else_=cast(func.pg_advisory_xact_lock_shared(wanted.c.k), String),
            )
        )
    ).scalar_subquery()


@lru_cache(maxsize=1)
def lock_select() -> Select[Any]:
    """Take the advisory locks of :func:`lock_params` and report the isolation level. A
    check that must see what the locks waited for runs in a *later* statement: this one's
    snapshot was taken before the locks were granted."""
    return select(func.current_setting("transaction_isolation"), _locks_taken())


def lock_params(plan: LockPlan) -> dict[str, str]:
    """The parameters of :func:`lock_select` (and of an unconditional insert on
    PostgreSQL) for a lock plan."""
    return {
        "keys": ",".join(map(str, plan.keys)),
        "exclusive": ",".join("t" if x else "f" for x in plan.exclusive),
    }


def _insert_source(dialect: str) -> Select[Any]:
    """The rows of parameter ``batch`` (a JSON list of ``[type, tags, data_json,
    metadata_json]``), in order, as the events table's columns; parameter ``command_id``
    links them to the command that produced them (or NULL)."""
    if dialect == POSTGRESQL:
        rows = func.jsonb_array_elements(cast(bindparam("batch", type_=String), JSONB))
        batch = rows.table_valued("value", with_ordinality="n").render_derived(name="b")
        element = batch.c.value
        columns = [
            element.op("->>")(literal_column("0")),
            func.array(
                select(func.jsonb_array_elements_text(element.op("->")(literal_column("1"))))
                .correlate(batch)
                .scalar_subquery()
            ),
            # The payloads travel as JSON text inside the batch and are stored as that text.
            cast(element.op("->>")(literal_column("2")), events.c.data.type),
            cast(element.op("->>")(literal_column("3")), events.c.metadata.type),
            func.pg_current_xact_id(),
            func.statement_timestamp(),
            bindparam("command_id", type_=String),
        ]
        order = batch.c.n
    else:
        batch = func.json_each(bindparam("batch", type_=String)).table_valued(
            "key", "value", name="b"
        )
        element = batch.c.value
        type_, tags, data, metadata = (
            func.json_extract(element, literal_column(f"'$[{i}]'")) for i in range(4)
        )
        # Metadata is always an object, never the bare number sqlite_payload() guards against.
        columns = [
            type_,
            tags,
            sqlite_payload(data),
            metadata,
            null(),
            func.strftime("%Y-%m-%d %H:%M:%f000", "now"),
            bindparam("command_id", type_=String),
        ]
        order = batch.c.key
    return select(*columns).select_from(batch).order_by(order)


@lru_cache(maxsize=4)
def plain_insert(dialect: str) -> Insert:
    """Insert a batch unconditionally; returns the new positions.

    On PostgreSQL the statement first takes the advisory locks of parameters ``keys`` /
    ``exclusive`` (shared keys for the events written): an uncorrelated condition becomes a
    one-time filter that PostgreSQL evaluates before it produces the first row, so the locks
    are held before any position is drawn. No check follows, so taking them in the same
    statement is enough (see :mod:`sa_crablet._plans.locks`).
    """
    source = _insert_source(dialect)
    if dialect == POSTGRESQL:
        source = source.where(_locks_taken() >= 0)
    return events.insert().from_select(_INSERTED, source).returning(events.c.position)


@lru_cache(maxsize=512)
def conditional_insert(dialect: str, query: QueryShape, head: HeadShape | None) -> Insert:
    """SQLite: insert a batch unless the condition matches, in one statement (under SQLite's
    single write lock): nothing is written when it fails, and the transaction stays usable."""
    source = _insert_source(dialect).where(~conflict_statement(dialect, query, head).exists())
    return events.insert().from_select(_INSERTED, source).returning(events.c.position)


@lru_cache(maxsize=512)
def checked_insert(query: QueryShape, head: HeadShape | None) -> CompoundSelect[Any]:
    """PostgreSQL's conditional append in one statement: rows ``(position, false)`` for
    the events inserted, or one row ``(conflicting position, true)`` and nothing written.

    The check runs once (a CTE read by the INSERT and by the result), so a rejection
    reports the first conflicting event without a second statement, on the same snapshot.

    Parameter ``isolation_checked``: unless it is true, nothing is inserted outside READ
    COMMITTED. That lets the lock statement and this one travel together (one round trip)
    before the isolation level is known: at a fixed-snapshot level this statement does
    nothing, and the store checks on a fresh snapshot and runs it again.
    """
    conflict = conflict_statement(POSTGRESQL, query, head).cte("conflict")
    source = _insert_source(POSTGRESQL)
    read_committed = func.current_setting("transaction_isolation") == "read committed"
    guarded = source.where(
        ~select(conflict.c.position).exists(),
        or_(bindparam("isolation_checked", type_=Boolean), read_committed),
    )
    inserted = (
        events.insert().from_select(_INSERTED, guarded).returning(events.c.position).cte("ins")
    )
    return union_all(
        select(inserted.c.position, false().label("conflict")),
        select(conflict.c.position, true().label("conflict")),
    )


@lru_cache(maxsize=1)
def sqlite_write_lock() -> Insert:
    """SQLite: an insert of nothing, which still opens a write transaction and so takes the
    database's write lock, as an append would: on a transaction whose snapshot went stale it
    fails as the append would, and afterwards nobody else can append until it ends."""
    return events.insert().from_select(["type", "tags"], select(null(), null()).where(false()))


# -- plans ---------------------------------------------------------------------------------------

READ_COMMITTED = "read committed"


@dataclass(frozen=True, slots=True)
class Appended:
    """What an append did: the new ``positions``, or the first ``conflict`` (the condition
    failed: nothing was written); ``recorded``, whether the command record sent with it was
    written (``None``: none was sent); ``unchecked``: on a fixed snapshot (REPEATABLE READ,
    SERIALIZABLE) nothing was tried yet: check on a fresh snapshot first."""

    positions: tuple[int, ...] = ()
    conflict: int | None = None
    recorded: bool | None = None
    unchecked: bool = False

    @property
    def failed(self) -> bool:
        return not self.positions and not self.unchecked


@dataclass(frozen=True, slots=True)
class AppendPlan:
    """``main`` runs first. On PostgreSQL with a condition, ``fresh_check`` is the conflict
    check for a fresh snapshot and ``after_check`` the insert to run once it passed (when
    ``main`` came back ``unchecked``); on SQLite ``report`` finds the conflicting position
    of a failed condition, and ``record_after`` says the command record could not travel
    with the insert: the caller records it in a second unit of the same transaction."""

    main: Plan[Appended]
    fresh_check: Step | None = None
    after_check: Plan[Appended] | None = None
    report: Step | None = None
    record_after: bool = False


def encode_batch(batch: Sequence[Event]) -> str:
    """A batch as the one JSON parameter the insert statements expand (``batch``); raises
    ``ValidationError`` for a payload JSON cannot keep."""
    rows = [
        [e.type, list(e.tags), to_json("data", e.data), to_json("metadata", e.metadata)]
        for e in batch
    ]
    # Only strings, lists of strings and None here (payloads are already JSON text), which
    # msgspec encodes exactly as the standard library would, in a tenth of the time.
    return msgspec.json.encode(rows).decode()


def wanted_locks(dialect: str, query: Query | None, batch: Sequence[Event]) -> LockPlan | None:
    """The advisory locks an append (or, without events, a check) takes: PostgreSQL only,
    SQLite's single writer needs none."""
    return locks.plan(query, batch) if dialect == POSTGRESQL else None


def append_plan(
    dialect: str,
    batch: Sequence[Event],
    condition: Scope | None,
    locks: LockPlan | None,
    command: Command | None = None,
) -> AppendPlan:
    """The plan of an append of ``batch`` under an optional condition, with ``locks`` on
    PostgreSQL. With ``command`` the events are linked to it, and on PostgreSQL the command
    is recorded in the same unit (``Appended.recorded``); on SQLite the caller records it."""
    params: dict[str, Any] = {
        "batch": encode_batch(batch),
        "command_id": None if command is None else command.id,
    }
    trailer: tuple[Step, ...] = ()
    if command is not None and dialect == POSTGRESQL:
        trailer = (Step(record_appended_command(), columns_of(command)),)
    later = command is not None and not trailer
    if condition is None:
        if locks is not None:
            params |= lock_params(locks)
        insert = Step(plain_insert(dialect), params, prepare=True)
        return AppendPlan(Plan((insert, *trailer), _inserted(bool(trailer))), record_after=later)
    params |= condition.params
    if dialect != POSTGRESQL:
        insert = Step(conditional_insert(dialect, condition.query, condition.head), params)
        report = Step(
            conflict_statement(dialect, condition.query, condition.head), condition.params
        )
        return AppendPlan(
            Plan((insert, *trailer), _inserted(bool(trailer))), report=report, record_after=later
        )
    assert locks is not None
    checked = checked_insert(condition.query, condition.head)
    lock = Step(lock_select(), lock_params(locks))
    guarded = Step(checked, params | {"isolation_checked": False})
    insert = Step(checked, params | {"isolation_checked": True})
    return AppendPlan(
        Plan((lock, guarded, *trailer), _locked_insert(bool(trailer))),
        fresh_check=Step(
            conflict_statement(POSTGRESQL, condition.query, condition.head), condition.params
        ),
        after_check=Plan((insert, *trailer), _checked_inserted(bool(trailer))),
    )


def _inserted(trailer: bool) -> Callable[[Sequence[Rows]], Appended]:
    def read(results: Sequence[Rows]) -> Appended:
        positions = tuple(row[0] for row in results[0])
        return Appended(positions, recorded=bool(results[1]) if trailer else None)

    return read


def _checked_inserted(trailer: bool) -> Callable[[Sequence[Rows]], Appended]:
    """The rows of :func:`checked_insert`: positions, or one conflict."""

    def read(results: Sequence[Rows]) -> Appended:
        rows = results[0]
        positions = tuple(position for position, failed in rows if not failed)
        if not positions:
            conflicts = [position for position, failed in rows if failed]
            return Appended(conflict=conflicts[0] if conflicts else None)
        return Appended(positions, recorded=bool(results[1]) if trailer else None)

    return read


def _locked_insert(trailer: bool) -> Callable[[Sequence[Rows]], Appended]:
    checked = _checked_inserted(trailer)

    def read(results: Sequence[Rows]) -> Appended:
        if results[0][0][0] != READ_COMMITTED:
            return Appended(unchecked=True)
        return checked(results[1:])

    return read


@dataclass(frozen=True, slots=True)
class Checked:
    """What ``check()`` found: the first ``conflict`` (``None``: the condition holds), and
    ``unchecked``: on a fixed snapshot the check must also run on a fresh one."""

    conflict: int | None
    unchecked: bool = False


@dataclass(frozen=True, slots=True)
class CheckPlan:
    main: Plan[Checked]
    fresh_check: Step


def check_plan(dialect: str, condition: Scope, locks: LockPlan | None) -> CheckPlan:
    """The condition's locks (PostgreSQL) or SQLite's write lock, as an append would take
    them, then the conflict check in a later statement."""
    conflict = Step(conflict_statement(dialect, condition.query, condition.head), condition.params)
    if dialect == POSTGRESQL:
        assert locks is not None
        first = Step(lock_select(), lock_params(locks))
    else:
        # The write lock first, as an append takes it: the check then runs on the latest
        # state (a stale snapshot fails instead), and holds until the transaction ends.
        first = Step(sqlite_write_lock())
    return CheckPlan(Plan((first, conflict), _checked(dialect)), conflict)


def _checked(dialect: str) -> Callable[[Sequence[Rows]], Checked]:
    def read(results: Sequence[Rows]) -> Checked:
        conflict = results[1][0][0] if results[1] else None
        fixed = dialect == POSTGRESQL and results[0][0][0] != READ_COMMITTED
        return Checked(conflict, unchecked=fixed and conflict is None)

    return read


def first_position(rows: Rows) -> int | None:
    """The position a conflict check returned, if any."""
    return rows[0][0] if rows else None
