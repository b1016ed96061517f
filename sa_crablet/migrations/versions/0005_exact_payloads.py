"""PostgreSQL: payloads as ``json`` (the text as written) instead of ``jsonb``.

``jsonb`` normalises what it stores: ``1e16`` comes back as the integer
``10000000000000000``, ``-0.0`` as ``0``, object keys in its own order. ``json`` keeps the
text, so a payload reads back as it was appended. Payloads already stored keep what
``jsonb`` made of them. SQLite stores JSON as text already: nothing to do there.

The type change rewrites both tables (once each: both columns in one statement) under an
ACCESS EXCLUSIVE lock, so reads and writes of the store wait for it: on a large store, run
it in a maintenance window.

Revision ID: 0005_exact_payloads
Revises: 0004_append_only_guard
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from sa_crablet.schema import COMMANDS_TABLE, EVENTS_TABLE

revision: str = "0005_exact_payloads"
down_revision: str | Sequence[str] | None = "0004_append_only_guard"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _retype(type_: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in (EVENTS_TABLE, COMMANDS_TABLE):
        columns = ", ".join(
            f"ALTER COLUMN {column} TYPE {type_} USING {column}::{type_}"
            for column in ("data", "metadata")
        )
        op.execute(sa.text(f"ALTER TABLE {table} {columns}"))


def upgrade() -> None:
    _retype("json")


def downgrade() -> None:
    # Fails if a payload holds what jsonb refuses (an escaped NUL, written by other tools).
    _retype("jsonb")
