"""Create the events table, its indexes and the append-only guard.

Revision ID: 0001_events
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from sa_crablet.schema import (
    EVENTS_TABLE,
    IX_EVENTS_TAGS,
    IX_EVENTS_TRANSACTION,
    IX_EVENTS_TYPE,
    JSONB_PAYLOAD,
    PG_DROP_GUARD,
    SQLITE_DROP_GUARD,
    SQLITE_GUARD_TRIGGERS,
    TagArray,
    TransactionId,
    postgresql_extra_ddl,
)

revision: str = "0001_events"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("sa_crablet",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        EVENTS_TABLE,
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=True),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("tags", TagArray(), nullable=False),
        sa.Column("data", JSONB_PAYLOAD, nullable=True),
        sa.Column("metadata", JSONB_PAYLOAD, nullable=True),
        sa.Column("transaction_id", TransactionId(), nullable=True),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.PrimaryKeyConstraint("position", name=op.f(f"pk_{EVENTS_TABLE}")),
        sqlite_autoincrement=True,
    )
    op.create_index(IX_EVENTS_TYPE, EVENTS_TABLE, ["type", "position"])
    if dialect == "postgresql":
        op.create_index(IX_EVENTS_TAGS, EVENTS_TABLE, ["tags"], postgresql_using="gin")
        op.create_index(IX_EVENTS_TRANSACTION, EVENTS_TABLE, ["transaction_id"])
        for statement in postgresql_extra_ddl():
            op.execute(sa.text(statement))
    elif dialect == "sqlite":
        for statement in SQLITE_GUARD_TRIGGERS:
            op.execute(sa.text(statement))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in PG_DROP_GUARD if dialect == "postgresql" else SQLITE_DROP_GUARD:
        op.execute(sa.text(statement))
    op.drop_table(EVENTS_TABLE)
