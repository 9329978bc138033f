"""Upload sessions any replica can continue: bytes staged in the database (DESIGN section 13).

A session whose blob goes only to shared backends (no ``local`` target) on an
external database stages its bytes in ``upload_parts`` instead of one
server's staging dir, so every call of the session may reach another
replica (docs/design/0007). ``staged_in`` says where a session's bytes are;
``claim`` holds a database-staged finalize's intent. ``upload_parts.data``
is stored out of line and uncompressed (as ``blob_blocks``, migration 0002):
staged bytes are written once and read back once or twice.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "upload_sessions",
        sa.Column("staged_in", sa.Text(), server_default="local", nullable=False),
    )
    op.add_column("upload_sessions", sa.Column("claim", sa.LargeBinary(), nullable=True))
    op.create_table(
        "upload_parts",
        sa.Column("session_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("offset", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["upload_sessions.id"],
            name=op.f("fk_upload_parts_session_id_upload_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "offset", name=op.f("pk_upload_parts")),
    )
    op.execute("ALTER TABLE upload_parts ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("upload_parts")
    op.drop_column("upload_sessions", "claim")
    op.drop_column("upload_sessions", "staged_in")
