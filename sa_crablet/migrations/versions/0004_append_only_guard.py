"""The commands table gets the append-only guard; only the tables' owner can lift it.

Revision ID: 0004_append_only_guard
Revises: 0003_sqlite_tag_index
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from sa_crablet.schema import (
    PG_DROP_COMMANDS_GUARD,
    PG_GUARD_0004,
    PG_GUARD_FUNCTION_0001,
    SQLITE_COMMANDS_GUARD_TRIGGERS,
    SQLITE_DROP_COMMANDS_GUARD,
)

revision: str = "0004_append_only_guard"
down_revision: str | Sequence[str] | None = "0003_sqlite_tag_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # On PostgreSQL the guard function is replaced in place (the events table's triggers keep
    # calling it), so a role with write grants can no longer lift the guard with a setting.
    statements = (
        PG_GUARD_0004
        if op.get_bind().dialect.name == "postgresql"
        else SQLITE_COMMANDS_GUARD_TRIGGERS
    )
    for statement in statements:
        op.execute(sa.text(statement))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        statements = (*PG_DROP_COMMANDS_GUARD, PG_GUARD_FUNCTION_0001)
    else:
        statements = SQLITE_DROP_COMMANDS_GUARD
    for statement in statements:
        op.execute(sa.text(statement))
