"""The log after a fault, read with plain SQL (nothing of sa_crablet's own read path), and
compared with what the application was told.

Every kind of damage is counted separately; ``partial_writes`` is their sum and must be 0:

* ``partial_batches``: a marked batch with some of its events stored, not all;
* ``lost``: an acknowledged batch missing (or partial);
* ``phantoms``: a batch whose append failed before COMMIT, yet stored;
* ``commands_without_events``: a command row whose ``event_count`` / ``last_position`` do
  not match the events stored with its id;
* ``events_without_command``: events carrying a command id that has no row;
* ``duplicate_positions``: a position stored twice.

Batches whose COMMIT was in flight when the connection died (``unknown``) may be stored or
not; only all-or-nothing is required of them, and the report says how many were stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, text

from benchmarks.fault_kit import Ledger
from sa_crablet import commands_table, events_table

BATCHES = text(
    f"SELECT data ->> 'fault_batch', count(*), count(DISTINCT (data ->> 'i')::int), "
    f"min((data ->> 'n')::int), max((data ->> 'n')::int) "
    f"FROM {events_table.name} WHERE data ->> 'fault_batch' IS NOT NULL GROUP BY 1"
)
COMMANDS_WITHOUT_EVENTS = text(
    f"SELECT count(*) FROM {commands_table.name} c "
    f"LEFT JOIN LATERAL (SELECT count(*) AS n, max(e.position) AS last "
    f"FROM {events_table.name} e WHERE e.command_id = c.id) e ON true "
    f"WHERE e.n <> c.event_count OR e.last IS DISTINCT FROM c.last_position"
)
EVENTS_WITHOUT_COMMAND = text(
    f"SELECT count(*) FROM {events_table.name} e WHERE e.command_id IS NOT NULL "
    f"AND NOT EXISTS (SELECT 1 FROM {commands_table.name} c WHERE c.id = e.command_id)"
)
DUPLICATE_POSITIONS = text(f"SELECT count(*) - count(DISTINCT position) FROM {events_table.name}")


@dataclass(frozen=True, slots=True)
class LogReport:
    batches: int
    partial_batches: int
    lost: int
    phantoms: int
    commands_without_events: int
    events_without_command: int
    duplicate_positions: int
    unknown_stored: int
    unknown_absent: int

    @property
    def partial_writes(self) -> int:
        return (
            self.partial_batches
            + self.lost
            + self.phantoms
            + self.commands_without_events
            + self.events_without_command
            + self.duplicate_positions
        )


def inspect_log(engine: Engine, ledger: Ledger) -> LogReport:
    """Check the whole log, and the batches ``ledger`` knows of against what it was told."""
    with engine.connect() as conn:
        rows = conn.execute(BATCHES).all()
        orphan_commands = int(conn.execute(COMMANDS_WITHOUT_EVENTS).scalar_one())
        orphan_events = int(conn.execute(EVENTS_WITHOUT_COMMAND).scalar_one())
        duplicates = int(conn.execute(DUPLICATE_POSITIONS).scalar_one())
    complete: set[str] = set()
    partial: set[str] = set()
    for batch, stored, distinct, size, other_size in rows:
        whole = stored == distinct == size == other_size
        (complete if whole else partial).add(batch)
    stored_batches = complete | partial
    unknown_stored = len(ledger.unknown & stored_batches)
    return LogReport(
        batches=len(stored_batches),
        partial_batches=len(partial),
        lost=len(ledger.acknowledged - complete),
        phantoms=len(ledger.failed & stored_batches),
        commands_without_events=orphan_commands,
        events_without_command=orphan_events,
        duplicate_positions=duplicates,
        unknown_stored=unknown_stored,
        unknown_absent=len(ledger.unknown) - unknown_stored,
    )


COMMAND_STATE = text(
    f"SELECT (SELECT count(*) FROM {commands_table.name} WHERE id = :id), "
    f"(SELECT count(*) FROM {events_table.name} WHERE command_id = :id)"
)


def command_state(engine: Engine, command_id: str) -> tuple[int, int]:
    """How many command rows and how many events carry ``command_id``."""
    with engine.connect() as conn:
        rows, stored = conn.execute(COMMAND_STATE, {"id": command_id}).one()
    return int(rows), int(stored)
