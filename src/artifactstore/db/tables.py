"""SQLAlchemy Core tables: the event log, the views derived from it, and operational state.

One ``MetaData`` with a naming convention, so Alembic migrations name
constraints predictably. Three kinds of table live here:

* ``events`` - the append-only log, the only source of truth (DESIGN section 2),
  and ``log_head``, its newest seq and hash (kept by a trigger, locked by appenders).
* views (``blobs``, ``storage_locations``, ``packages``, ``package_versions``,
  ``package_files``, ``api_tokens``, ``view_positions``) - derived from events
  only; ``registry.rebuild`` rebuilds every table of ``VIEW_TABLES`` in
  shadow copies and swaps them in, so a view added here is replayed too.
* operational state (``upload_sessions``, ``upload_parts``, ``blob_blocks``,
  ``blob_objects``, ``server_secrets``) - not history: staged uploads, the postgres backend's
  bytes, and secrets every replica shares (never events: events are public).
  Never replayed.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

__all__ = [
    "VIEW_TABLES",
    "api_tokens",
    "blob_blocks",
    "blob_objects",
    "blobs",
    "deleted_versions",
    "events",
    "log_head",
    "metadata",
    "package_files",
    "package_versions",
    "packages",
    "server_secrets",
    "storage_locations",
    "upload_parts",
    "upload_sessions",
    "view_positions",
]

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TZ = sa.DateTime(timezone=True)

events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("id", pg.UUID(as_uuid=True), nullable=False, unique=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("occurred_at", TZ, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("prev_hash", sa.LargeBinary, nullable=False),
    sa.Column("hash", sa.LargeBinary, nullable=False),
    sa.CheckConstraint("seq > 0", name="seq_positive"),
    sa.CheckConstraint("octet_length(prev_hash) = 32", name="prev_hash_len"),
    sa.CheckConstraint("octet_length(hash) = 32", name="hash_len"),
)

log_head = sa.Table(
    "log_head",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.LargeBinary, nullable=False),
    sa.CheckConstraint("id = 1", name="one_row"),
    sa.CheckConstraint("octet_length(hash) = 32", name="hash_len"),
)
"""The newest event's seq and hash, one row; appenders lock it (migration 0004)."""

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("sha256", sa.LargeBinary, primary_key=True),
    sa.Column("blake3", sa.LargeBinary, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("stored_at", TZ, nullable=False),
    sa.Column("stored_seq", sa.BigInteger, nullable=False),
    sa.Index("ix_blobs_blake3", "blake3"),  # clients may name blobs by blake3 alone
)

storage_locations = sa.Table(
    "storage_locations",
    metadata,
    sa.Column("sha256", sa.LargeBinary, primary_key=True),
    sa.Column("backend", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, nullable=False),
    # stored / verified / failed / missing / deleted (DESIGN section 1)
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Column("updated_at", TZ, nullable=False),
    sa.Column("updated_seq", sa.BigInteger, nullable=False),
    sa.Column("verified_at", TZ, nullable=True),
    sa.Index("ix_storage_locations_backend_state", "backend", "state"),
)

packages = sa.Table(
    "packages",
    metadata,
    sa.Column("name", sa.Text(collation="C"), primary_key=True),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("created_seq", sa.BigInteger, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
    sa.Column("version_count", sa.Integer, nullable=False),
)

package_versions = sa.Table(
    "package_versions",
    metadata,
    sa.Column("package", sa.Text(collation="C"), primary_key=True),
    sa.Column("version", sa.Text(collation="C"), primary_key=True),
    sa.Column("manifest_sha256", sa.LargeBinary, nullable=False),
    sa.Column("published_at", TZ, nullable=False),
    sa.Column("published_seq", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("producer", sa.Text, nullable=True),
    sa.Column("retention_class", sa.Text, nullable=True),
    sa.Column("file_count", sa.Integer, nullable=False),
    sa.Column("total_size", sa.BigInteger, nullable=False),
    sa.Column("yanked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("yanked_at", TZ, nullable=True),
    sa.Column("yank_reason", sa.Text, nullable=True),
)

package_files = sa.Table(
    "package_files",
    metadata,
    sa.Column("package", sa.Text(collation="C"), primary_key=True),
    # "<version>/<path>": the S3 gateway's object key; keyset-paginated listings
    # walk this primary key index, so a page costs the same at any table size.
    sa.Column("key", sa.Text(collation="C"), primary_key=True),
    sa.Column("version", sa.Text(collation="C"), nullable=False),
    sa.Column("path", sa.Text(collation="C"), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.LargeBinary, nullable=False),
    sa.Column("blake3", sa.LargeBinary, nullable=False),
    sa.Column("media_type", sa.Text, nullable=False),
    sa.Column("published_at", TZ, nullable=False),
    sa.Column("yanked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_package_files_version", "package", "version", "path", unique=True),
    sa.Index("ix_package_files_sha256", "sha256"),
)

deleted_versions = sa.Table(
    "deleted_versions",
    metadata,
    # A deleted version leaves package_versions/package_files; this row keeps
    # its name taken (never published again) and says when and why it went.
    sa.Column("package", sa.Text(collation="C"), primary_key=True),
    sa.Column("version", sa.Text(collation="C"), primary_key=True),
    sa.Column("manifest_sha256", sa.LargeBinary, nullable=False),
    sa.Column("deleted_at", TZ, nullable=False),
    sa.Column("deleted_seq", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    # The gateway's caches ask for the newest deletion after every announcement.
    sa.Index("ix_deleted_versions_deleted_seq", "deleted_seq"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    # sha256 of the token; the token itself is shown once and never stored.
    sa.Column("token_hash", sa.LargeBinary, nullable=False, unique=True),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("revoked_at", TZ, nullable=True),
)

view_positions = sa.Table(
    "view_positions",
    metadata,
    sa.Column("view", sa.Text, primary_key=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
)

upload_sessions = sa.Table(
    "upload_sessions",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("expires_at", TZ, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("declared_size", sa.BigInteger, nullable=True),
    sa.Column("expected_sha256", sa.LargeBinary, nullable=True),
    sa.Column("expected_blake3", sa.LargeBinary, nullable=True),
    sa.Column("producer", sa.Text, nullable=True),
    sa.Column("retention_class", sa.Text, nullable=True),
    # Where the staged bytes are: "local" (a file in one server's staging dir)
    # or "database" (``upload_parts``, reachable from every replica; 0006).
    sa.Column("staged_in", sa.Text, nullable=False, server_default="local"),
    # A database-staged session's finalize intent (``registry.finalize.Intent``
    # JSON), set once its digests checked out: the bytes are then frozen.
    sa.Column("claim", sa.LargeBinary, nullable=True),
    sa.Index("ix_upload_sessions_expires_at", "expires_at"),
)

upload_parts = sa.Table(
    "upload_parts",
    metadata,
    # The staged bytes of a database-staged session, piece by piece; the
    # primary key makes two writers at one offset impossible. Only
    # ``registry/staged_parts.py`` reads or writes it.
    sa.Column(
        "session_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey("upload_sessions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("offset", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

blob_blocks = sa.Table(
    "blob_blocks",
    metadata,
    sa.Column("backend", sa.Text, primary_key=True),
    sa.Column("sha256", sa.LargeBinary, primary_key=True),
    sa.Column("block_no", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

blob_objects = sa.Table(
    "blob_objects",
    metadata,
    # One row per complete object of the postgres backend, written in the same
    # transaction as its blocks: the row's presence is what makes it visible.
    sa.Column("backend", sa.Text, primary_key=True),
    sa.Column("sha256", sa.LargeBinary, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("block_size", sa.Integer, nullable=False),
    sa.Column("created_at", TZ, nullable=False),
)

server_secrets = sa.Table(
    "server_secrets",
    metadata,
    # Named values every replica on this database must agree on, e.g. the key that
    # signs S3 continuation tokens; created once, never rewritten (migration 0005).
    # Only ``registry/server_secrets.py`` reads or writes it.
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
)

VIEW_TABLES = (
    blobs,
    storage_locations,
    packages,
    package_versions,
    package_files,
    deleted_versions,
    api_tokens,
    view_positions,
)
