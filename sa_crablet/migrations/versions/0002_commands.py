"""Add the commands table and link events to the command that produced them.

Revision ID: 0002_commands
Revises: 0001_events
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from sa_crablet.schema import (
    COMMANDS_TABLE,
    EVENTS_TABLE,
    IX_EVENTS_COMMAND,
    JSONB_PAYLOAD,
    MAX_COMMAND_ID_LENGTH,
    PG_COMMANDS_TRANSACTION_DEFAULT,
    TransactionId,
)

revision: str = "0002_commands"
down_revision: str | Sequence[str] | None = "0001_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        COMMANDS_TABLE,
        sa.Column("id", sa.String(MAX_COMMAND_ID_LENGTH), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("data", JSONB_PAYLOAD, nullable=True),
        sa.Column("metadata", JSONB_PAYLOAD, nullable=True),
        sa.Column("transaction_id", TransactionId(), nullable=True),
        sa.Column(
            "executed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column(
            "last_position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{COMMANDS_TABLE}")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.text(PG_COMMANDS_TRANSACTION_DEFAULT))
    # A nullable column without a default: no table rewrite, no row is touched.
    op.add_column(
        EVENTS_TABLE, sa.Column("command_id", sa.String(MAX_COMMAND_ID_LENGTH), nullable=True)
    )
    # On a large existing events table, build this index without blocking writers instead:
    #   with op.get_context().autocommit_block():
    #       op.create_index(..., postgresql_concurrently=True)
    # (see docs/low-level-implementation.md); on a new table the plain build is instant.
    op.create_index(IX_EVENTS_COMMAND, EVENTS_TABLE, ["command_id"])


def downgrade() -> None:
    op.drop_index(IX_EVENTS_COMMAND, table_name=EVENTS_TABLE)
    op.drop_column(EVENTS_TABLE, "command_id")
    op.drop_table(COMMANDS_TABLE)
