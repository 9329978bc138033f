"""``artifactstore.client``: the Python library for programs that publish or fetch artifacts.

``Client`` for ordinary programs, ``AsyncClient`` for asyncio ones; both
take the server and token as the CLI does (``ARTIFACTSTORE_SERVER``,
``ARTIFACTSTORE_TOKEN``, the admin-token file on loopback) and raise the
``artifactstore.errors`` classes. docs/CLIENT.md has examples.
"""

from artifactstore.client.aio import AsyncClient
from artifactstore.client.download import DownloadResult
from artifactstore.client.errors import ServerUnreachableError
from artifactstore.client.progress import TransferProgress
from artifactstore.client.publish import UploadOptions, UploadResult
from artifactstore.client.reader import AsyncFileReader
from artifactstore.client.sync import Client, FileReader
from artifactstore.models import BlobInfo, EventInfo, PackageInfo, VersionInfo

__all__ = [
    "AsyncClient",
    "AsyncFileReader",
    "BlobInfo",
    "Client",
    "DownloadResult",
    "EventInfo",
    "FileReader",
    "PackageInfo",
    "ServerUnreachableError",
    "TransferProgress",
    "UploadOptions",
    "UploadResult",
    "VersionInfo",
]
