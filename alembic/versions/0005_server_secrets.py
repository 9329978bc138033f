"""Server-wide secrets in the database, so every replica shares them (DESIGN section 13).

``server_secrets`` holds small named values that every ``artifactstore
serve`` on one database must agree on, such as the key that signs S3
continuation tokens (``gateway/listing.py``). It is operational state, not
history: nothing here is an event (events are public, these are secrets), a
replay neither reads nor rebuilds it, and its rows are created once with
``INSERT ... ON CONFLICT DO NOTHING`` (``registry/server_secrets.py``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_secrets")),
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
