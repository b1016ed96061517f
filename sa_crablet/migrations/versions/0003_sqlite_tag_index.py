"""SQLite: index tags in a side table kept in step by triggers (PostgreSQL has its GIN).

Revision ID: 0003_sqlite_tag_index
Revises: 0002_commands
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from sa_crablet.schema import SQLITE_DROP_TAG_INDEX, SQLITE_TAG_INDEX, SQLITE_TAG_INDEX_BACKFILL

revision: str = "0003_sqlite_tag_index"
down_revision: str | Sequence[str] | None = "0002_commands"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for statement in SQLITE_TAG_INDEX:
        op.execute(sa.text(statement))
    op.execute(sa.text(SQLITE_TAG_INDEX_BACKFILL))


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for statement in SQLITE_DROP_TAG_INDEX:
        op.execute(sa.text(statement))
