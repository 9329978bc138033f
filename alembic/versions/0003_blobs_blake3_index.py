"""Index blobs by blake3, so a client that names blobs by blake3 finds them.

The upload API accepts blake3 alone for the "does the server hold this blob"
check and at finalize (docs/API.md): the CLI hashes files with blake3 only,
the cheaper of the two digests, and lets the server compute sha256 from the
bytes it verified. Not unique: two blobs with one blake3 would be a blake3
collision, which the registry reports rather than refuses to record.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 20:10:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_blobs_blake3", "blobs", ["blake3"])


def downgrade() -> None:
    op.drop_index("ix_blobs_blake3", table_name="blobs")
