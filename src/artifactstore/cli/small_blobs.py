"""What ``artifactstore upload`` must send, what the server holds, small files in one request each.

Owns, for ``cli/upload.py`` (DESIGN section 10, docs/API.md):

- ``Blob``: one distinct content (by blake3) and the files that share it;
  its sha256 is learnt from the server, never computed here.
- ``SmallBlobs.learn_held``: one ``POST /v1/blobs/exists`` per up to 1,000
  blobs; each held blob (on the backends this producer and retention class
  route to) gets its sha256 and is not sent.
- ``SmallBlobs.send``: a file of at most ``SMALL_FILE_BYTES`` goes as the
  body of one ``POST /v1/blobs?blake3=<hex>``; the server checks it against
  the blake3 and answers with the blob (its sha256). One request instead of
  three (create, append, finalize), so a tree of small files is bound by the
  server's per-blob work, not by round trips. The body leaves like a PATCH
  body, with ``sendfile(2)`` (``ApiClient.send_file``): through httpx the
  client spent twice the CPU on 2,000 such requests (3.0 s against 1.6 s),
  on the cores the server needs.

Larger files go through upload sessions (``cli/upload.py``), which resume;
a small file that fails halfway is simply sent again. A server without these
routes (older: 404 or 405) turns the one-request path off for the run, and
a 413 lowers the size sent this way below the refused one, so those files
take sessions too. It does not hash, publish or print.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from artifactstore import errors
from artifactstore.digests import Digest

if TYPE_CHECKING:
    from collections.abc import Iterable

    from artifactstore.cli.client import ApiClient, Progress
    from artifactstore.cli.upload import SourceFile

__all__ = [
    "EXISTS_BATCH",
    "SMALL_FILE_BYTES",
    "Blob",
    "SmallBlobs",
    "Totals",
    "check_unchanged",
    "received_other_bytes",
    "routing_labels",
]

# At or below this size a file goes in one request. The body is held in memory
# on both sides (--concurrency of them at once), and per request the server
# hashes it on the event loop up to 256 KiB; above ~1 MiB the three requests of
# a session cost little next to moving the bytes, and sessions hand files over
# or sendfile(2) them, and resume. 1/16 of the server's default limit (16 MiB).
SMALL_FILE_BYTES = 1024 * 1024
EXISTS_BATCH = 1000  # the server's maximum per POST /v1/blobs/exists
_ROUTE_MISSING = frozenset({404, 405})  # an older server: no such route or method


@dataclass(slots=True)
class Blob:
    """One distinct content to make sure the server holds, and the files that share it.

    ``sha256`` is learnt from the server (an "exists" answer or a stored blob).
    """

    blake3: Digest
    size: int
    files: list[SourceFile]
    sha256: Digest | None = None

    @property
    def source(self) -> SourceFile:
        """The file whose bytes are sent."""
        return self.files[0]

    def learn(self, blob_json: dict[str, Any]) -> None:
        """Take the sha256 from a blob answer after checking it names these bytes."""
        if blob_json.get("blake3") != str(self.blake3) or blob_json.get("size") != self.size:
            raise errors.IntegrityError(
                f"{self.source.path}: the server answered with another blob"
                f" ({blob_json.get('blake3')}, {blob_json.get('size')} bytes)"
            )
        self.sha256 = Digest.parse(str(blob_json.get("sha256")), algorithm="sha256")


@dataclass(slots=True)
class Totals:
    """What this run sent: distinct blobs stored by it and their bytes."""

    uploaded_blobs: set[str] = field(default_factory=set)
    bytes_uploaded: int = 0


def routing_labels(producer: str | None, retention_class: str | None) -> dict[str, str]:
    """The routing labels given, as request parameters (both are optional)."""
    given = (("producer", producer), ("retention_class", retention_class))
    return {key: value for key, value in given if value}


def _ignore(_count: int) -> None:
    """Progress moves once the server has answered (a small body goes out at once)."""


def _route_missing(exc: errors.ArtifactStoreError) -> bool:
    return exc.detail.get("http_status") in _ROUTE_MISSING


def check_unchanged(item: SourceFile) -> None:
    """Refuse to send a file that is not the one hashed (its size or mtime moved).

    Raises:
        IntegrityError: it changed since it was listed.
        InvalidInputError: it is gone or cannot be examined.
    """
    try:
        st = os.stat(item.source)  # noqa: PTH116 - one call, no Path object per file
    except OSError as exc:
        raise errors.InvalidInputError(f"{item.source}: {exc.strerror or exc}") from exc
    if (st.st_size, st.st_mtime_ns) != (item.size, item.mtime_ns):
        raise errors.IntegrityError(
            f"{item.source} changed after it was hashed; run the upload again"
        )


def received_other_bytes(blob: Blob, exc: errors.DigestMismatchError) -> errors.DigestMismatchError:
    """The error to report when the server's digests of a blob's bytes differ from ours."""
    return errors.DigestMismatchError(
        f"{blob.source.source}: the server received different bytes ({exc.message});"
        " did the file change during the upload?",
        **exc.detail,
    )


class SmallBlobs:
    """The batch look-up and the one-request path; one instance per command run."""

    def __init__(
        self,
        api: ApiClient,
        progress: Progress,
        totals: Totals,
        *,
        producer: str | None,
        retention_class: str | None,
        max_bytes: int = SMALL_FILE_BYTES,
    ) -> None:
        self.api = api
        self.progress = progress
        self.totals = totals
        self.max_bytes = max_bytes  # lowered (to -1: off) by what the server refuses
        self.bar = -1
        self._labels = routing_labels(producer, retention_class)

    async def learn_held(self, blobs: Iterable[Blob]) -> None:
        """Give every blob the server already holds its sha256, asking 1,000 at a time.

        An older server without ``POST /v1/blobs/exists`` leaves every blob
        unknown and turns the one-request path off: sessions find held blobs.
        """
        todo = list(blobs)
        for start in range(0, len(todo), EXISTS_BATCH):
            batch = todo[start : start + EXISTS_BATCH]
            body = {"blobs": [{"blake3": b.blake3.hex} for b in batch], **self._labels}

            async def post(_attempt: int, body: dict[str, Any] = body) -> list[Any]:
                response = await self.api.request("POST", "/v1/blobs/exists", json=body)
                answer = response.json().get("blobs")
                if not isinstance(answer, list) or len(answer) != len(body["blobs"]):
                    raise errors.ArtifactStoreError("the server's exists answer has another length")
                return answer

            try:
                answer = await self.api.retrying("ask which blobs are held", post)
            except errors.ArtifactStoreError as exc:
                if not _route_missing(exc):
                    raise
                self.max_bytes = -1
                return
            for blob, found in zip(batch, answer, strict=True):
                if isinstance(found, dict):
                    blob.learn(found)

    async def send(self, blob: Blob) -> bool:
        """Store a small blob with one request; False when it must go through a session."""
        if blob.size > self.max_bytes:
            return False
        params = {"blake3": blob.blake3.hex, **self._labels}

        async def post(_attempt: int) -> int:
            check_unchanged(blob.source)
            response = await self.api.send_file(
                "POST",
                "/v1/blobs",
                blob.source.source,
                0,
                blob.size,
                headers={"Content-Type": "application/octet-stream"},
                params=params,
                on_progress=_ignore,
            )
            blob.learn(response.json())
            return response.status_code

        try:
            status = await self.api.retrying(f"{blob.source.path}: upload", post)
        except errors.TooLargeError:
            self.max_bytes = min(self.max_bytes, blob.size - 1)
            return False
        except errors.DigestMismatchError as exc:
            raise received_other_bytes(blob, exc) from exc
        except errors.ArtifactStoreError as exc:
            if not _route_missing(exc):
                raise
            self.max_bytes = -1
            return False
        if status == 201:  # noqa: PLR2004 - stored by this request; 200: it was held
            self.totals.uploaded_blobs.add(blob.blake3.hex)
            self.totals.bytes_uploaded += blob.size
        self.progress.advance(self.bar, blob.size)
        return True
