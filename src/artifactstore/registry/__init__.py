"""Registry services: the use cases (ingest, uploads, publish, yank, tokens, verify).

No HTTP and no S3 vocabulary: the API, the gateway and the CLI call in here.
"""

from artifactstore.registry.ingest import Expected
from artifactstore.registry.records import (
    BlobRecord,
    FileRecord,
    LocationRecord,
    PackageRecord,
    Page,
    PublishResult,
    VersionRecord,
)
from artifactstore.registry.service import Registry
from artifactstore.registry.tokens import Tokens
from artifactstore.registry.uploads import Uploads, UploadSession

__all__ = [
    "BlobRecord",
    "Expected",
    "FileRecord",
    "LocationRecord",
    "PackageRecord",
    "Page",
    "PublishResult",
    "Registry",
    "Tokens",
    "UploadSession",
    "Uploads",
    "VersionRecord",
]
