"""Read-side SQL over the views, one module per view family.

``blobs`` reads ``blobs`` and ``storage_locations``; ``packages`` reads
``packages``, ``package_versions`` and ``package_files``; ``paging`` holds the
cursors and page sizes both use. Nothing here writes: the write side of every
view is ``views/``. ``api_tokens`` is read in ``registry/tokens.py`` and
``upload_sessions`` in ``registry/session_rows.py``, ``upload_parts`` in
``registry/staged_parts.py``, each its table's only home.
Callers use ``from artifactstore.registry import queries`` and the names
re-exported here.
"""

from artifactstore.registry.queries.blobs import (
    RecordedBlob,
    blob_page,
    count_locations,
    get_blob,
    held_blobs,
    live_locations,
    live_totals,
    location_states,
    locations_in_states,
    readable_backends,
    readable_backends_of,
    recorded_blobs,
    sha256_of_blake3,
)
from artifactstore.registry.queries.packages import (
    find_version,
    get_file,
    get_package,
    get_version,
    is_deleted,
    last_deletion,
    list_files,
    list_packages,
    list_versions,
    live_versions,
)
from artifactstore.registry.queries.paging import MAX_PAGE, decode_cursor, encode_cursor

__all__ = [
    "MAX_PAGE",
    "RecordedBlob",
    "blob_page",
    "count_locations",
    "decode_cursor",
    "encode_cursor",
    "find_version",
    "get_blob",
    "get_file",
    "get_package",
    "get_version",
    "held_blobs",
    "is_deleted",
    "last_deletion",
    "list_files",
    "list_packages",
    "list_versions",
    "live_locations",
    "live_totals",
    "live_versions",
    "location_states",
    "locations_in_states",
    "readable_backends",
    "readable_backends_of",
    "recorded_blobs",
    "sha256_of_blake3",
]
