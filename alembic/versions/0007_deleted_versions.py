"""Deleted versions (DESIGN section 11): ``v1.package.deleted`` folds here.

A deleted version's rows leave ``package_versions`` and ``package_files``
(so every listing drops it with no extra condition) and a row here keeps
its name taken: publishing it again is refused with ``version_deleted``.
A view table: ``artifactstore events replay`` rebuilds it from the log.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deleted_versions",
        sa.Column("package", sa.Text(collation="C"), nullable=False),
        sa.Column("version", sa.Text(collation="C"), nullable=False),
        sa.Column("manifest_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_seq", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("package", "version", name=op.f("pk_deleted_versions")),
    )
    op.create_index(
        "ix_deleted_versions_deleted_seq", "deleted_versions", ["deleted_seq"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_deleted_versions_deleted_seq", table_name="deleted_versions")
    op.drop_table("deleted_versions")
