"""The log's head row: one round trip to lock the log, and the database keeps the chain linear.

``log_head`` holds the newest event's ``seq`` and ``hash`` in its one row.
Appenders lock that row (``SELECT ... FOR UPDATE``, ``events.lock_log``):
under READ COMMITTED a waiter that gets the lock re-reads the row as the
previous appender committed it, so locking and reading the head are one
statement (the table lock it replaces needed two). A statement-level
trigger on ``events`` then, for every INSERT or COPY:

- checks the new rows continue the chain: ``seq`` is head + 1, + 2, ...
  and each ``prev_hash`` is the hash before it, so an appender that skipped
  the lock (or a forged row) is refused by the database itself;
- moves the head row to the newest event;
- ``NOTIFY artifactstore_events`` with the newest seq (delivered at commit),
  which appenders used to send as a statement of their own.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 17:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ADVANCE_FUNCTION = """
CREATE OR REPLACE FUNCTION artifactstore_events_advance_head() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    head_seq bigint;
    head_hash bytea;
    first_bad bigint;
    newest record;
BEGIN
    SELECT seq, hash INTO head_seq, head_hash FROM log_head WHERE id = 1 FOR UPDATE;
    SELECT n.seq INTO first_bad
    FROM (
        SELECT seq, prev_hash,
               lag(seq) OVER (ORDER BY seq) AS before_seq,
               lag(hash) OVER (ORDER BY seq) AS before_hash
        FROM new_events
    ) AS n
    WHERE n.seq <> coalesce(n.before_seq, head_seq) + 1
       OR n.prev_hash <> coalesce(n.before_hash, head_hash)
    ORDER BY n.seq
    LIMIT 1;
    IF first_bad IS NOT NULL THEN
        RAISE EXCEPTION 'events: seq % does not continue the chain at head %', first_bad, head_seq
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    SELECT seq, hash INTO newest FROM new_events ORDER BY seq DESC LIMIT 1;
    IF FOUND THEN
        UPDATE log_head SET seq = newest.seq, hash = newest.hash WHERE id = 1;
        PERFORM pg_notify('artifactstore_events', newest.seq::text);
    END IF;
    RETURN NULL;
END;
$$
"""


def upgrade() -> None:
    op.create_table(
        "log_head",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_log_head_one_row")),
        sa.CheckConstraint("octet_length(hash) = 32", name=op.f("ck_log_head_hash_len")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_head")),
    )
    op.execute(
        "INSERT INTO log_head (id, seq, hash) "
        "SELECT 1, coalesce(max(seq), 0), "
        "coalesce((SELECT hash FROM events ORDER BY seq DESC LIMIT 1), "
        "decode(repeat('00', 32), 'hex')) FROM events"
    )
    op.execute(ADVANCE_FUNCTION)
    op.execute(
        "CREATE TRIGGER events_advance_head AFTER INSERT ON events "
        "REFERENCING NEW TABLE AS new_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION artifactstore_events_advance_head()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS events_advance_head ON events")
    op.execute("DROP FUNCTION IF EXISTS artifactstore_events_advance_head()")
    op.drop_table("log_head")
