"""Package views: packages, their versions, and the files of each version.

Consumes ``v1.package.published`` (whose payload carries the canonical
manifest, so the views need nothing but the log), ``v1.package.yanked`` and
``v1.package.deleted`` (the version's rows go; ``deleted_versions`` keeps
its name taken and the package row stays, one version fewer).
``package_files`` is keyed by ``(package, "<version>/<path>")``: the S3
gateway's listing order, served from the primary key index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from artifactstore.db.batch import Changes, StatementBatch, delete_rows, insert_rows, update_rows
from artifactstore.db.tables import deleted_versions, package_files, package_versions, packages
from artifactstore.events.payloads import PackageDeleted, PackagePublished, PackageYanked
from artifactstore.manifest import trusted_file_entries

if TYPE_CHECKING:
    from collections.abc import Mapping

    from artifactstore.events.log import Event

__all__ = ["PackageFold"]

_FILES_PER_STATEMENT = 50_000


class PackageFold:
    """A batch's changes to ``packages``, ``package_versions`` and ``package_files``.

    Semantics (those of one statement per event): a publish upserts its
    package (first ``created_*`` kept, ``updated_at`` moved, count + 1) and
    inserts the version and its files (a second publish of a version is a
    unique violation, as before); a yank updates the version and its files
    if they exist by then, and does nothing otherwise; a delete removes the
    version and its files (after the batch's inserts, so a version published
    and deleted in one batch goes too) and records it in ``deleted_versions``.
    """

    def __init__(self) -> None:
        self.packages: dict[str, dict[str, Any]] = {}
        self.versions: Changes[tuple[str, str]] = Changes()
        self.files: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.yanked_files: dict[tuple[str, str], bool] = {}
        self.clashes: list[dict[str, Any]] = []
        self.deleted: list[dict[str, Any]] = []
        self.deleted_counts: dict[str, int] = {}

    def add(self, event: Event, data: PackagePublished | PackageYanked | PackageDeleted) -> None:
        """Fold one package event into the batch."""
        at = event.occurred_at
        key = (data.package, data.version)
        if isinstance(data, PackageDeleted):
            self.deleted.append(
                {
                    "package": data.package,
                    "version": data.version,
                    "manifest_sha256": data.manifest_sha256,
                    "deleted_at": at,
                    "deleted_seq": event.seq,
                    "actor": event.actor,
                    "reason": data.reason,
                }
            )
            self.deleted_counts[data.package] = self.deleted_counts.get(data.package, 0) + 1
            return
        if isinstance(data, PackageYanked):
            yank = {"yanked": True, "yanked_at": at, "yank_reason": data.reason}
            self.versions.update(key, yank)
            if key in self.files:
                for row in self.files[key]:
                    row["yanked"] = True
            else:
                self.yanked_files[key] = True
            return
        entries = trusted_file_entries(data.manifest)
        package = self.packages.get(data.package)
        if package is None:
            self.packages[data.package] = {
                "name": data.package,
                "created_at": at,
                "created_seq": event.seq,
                "updated_at": at,
                "version_count": 1,
            }
        else:
            package["updated_at"] = at
            package["version_count"] += 1
        row = {
            "package": data.package,
            "version": data.version,
            "manifest_sha256": data.manifest_sha256,
            "published_at": at,
            "published_seq": event.seq,
            "actor": event.actor,
            "producer": data.producer,
            "retention_class": data.retention_class,
            "file_count": len(entries),
            "total_size": sum(f["size"] for f in entries),
            "yanked": False,
            "yanked_at": None,
            "yank_reason": None,
        }
        if key in self.versions.rows:  # inserted too, so the flush fails as the old INSERT did
            self.clashes.append(row)
            return
        self.versions.rows[key] = row
        self.files[key] = [
            {
                "package": data.package,
                "key": f"{data.version}/{f['path']}",
                "version": data.version,
                "path": f["path"],
                "size": f["size"],
                "sha256": f["sha256"],
                "blake3": f["blake3"],
                "media_type": f["media_type"],
                "published_at": at,
                "yanked": False,
            }
            for f in entries
        ]

    def collect(self, batch: StatementBatch, targets: Mapping[str, str]) -> None:
        """Queue the batch's statements: yanks of existing versions first, then new rows."""
        update_rows(
            batch,
            package_versions,
            self.versions,
            targets,
            match=("package", "version"),
            assign={c: f"v.{c}" for c in ("yanked", "yanked_at", "yank_reason")},
        )
        update_rows(
            batch,
            package_files,
            [{"package": k[0], "version": k[1]} for k in self.yanked_files],
            targets,
            match=("package", "version"),
            assign={"yanked": "true"},
        )
        insert_rows(
            batch,
            packages,
            list(self.packages.values()),
            targets,
            on_conflict=(
                "ON CONFLICT (name) DO UPDATE SET updated_at = excluded.updated_at,"
                " version_count = t.version_count + excluded.version_count"
            ),
        )
        versions = [*self.versions.rows.values(), *self.clashes]
        insert_rows(batch, package_versions, versions, targets)
        files = [row for rows in self.files.values() for row in rows]
        for start in range(0, len(files), _FILES_PER_STATEMENT):
            chunk = files[start : start + _FILES_PER_STATEMENT]
            insert_rows(batch, package_files, chunk, targets)
        self._collect_deletes(batch, targets)

    def _collect_deletes(self, batch: StatementBatch, targets: Mapping[str, str]) -> None:
        """Queue the deletes last: they see the rows this batch inserted."""
        keys = [{"package": d["package"], "version": d["version"]} for d in self.deleted]
        match = ("package", "version")
        delete_rows(batch, package_files, keys, targets, match=match)
        delete_rows(batch, package_versions, keys, targets, match=match)
        update_rows(
            batch,
            packages,
            [{"name": n, "version_count": c} for n, c in self.deleted_counts.items()],
            targets,
            match=("name",),
            assign={"version_count": "t.version_count - v.version_count"},
        )
        insert_rows(batch, deleted_versions, self.deleted, targets)
