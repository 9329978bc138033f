"""``artifactstore upload``: name local files by blake3, send the missing blobs, publish.

Steps (DESIGN sections 5 and 6):

1. Collect files. Each argument is a file or a directory walked recursively;
   manifest paths are relative to the argument's parent (``upload p 1
   build/dist`` publishes ``dist/...``). Symlinks are followed when their
   target lies inside the argument's tree (the target's bytes are published
   under the link's path; manifests hold no links) and refused when they
   point outside it, dangle, or loop. FIFOs, sockets and devices are refused.
   Empty directories cannot be represented and are reported as such on
   stderr. Nothing is skipped silently: every refusal is an error (exit 2).
2. Hash every file once with blake3 only (on every core, reads alongside):
   the cheaper of the two digests and a 256-bit cryptographic hash, so it
   names the bytes end to end. The client does not compute sha256: the
   server computes it from bytes it checked against the client's blake3 and
   answers with it (docs/API.md). On this machine this took the client's
   hashing of 1 GiB from ~0.8 s (both digests) to ~0.3 s.
3. If the version is already published, compare the local files with its
   manifest: all equal is a no-op success, any difference is a conflict,
   found before a byte is sent.
4. Ask which distinct blake3s the server holds, 1,000 per ``POST
   /v1/blobs/exists`` (their sha256 comes with the answer). Each missing file
   of at most 1 MiB goes as the body of one ``POST /v1/blobs?blake3=<hex>``
   (``cli/small_blobs.py``). Each larger one, and every one on a server
   without those routes: ``POST /v1/uploads`` with the blake3 and the size;
   the server either says the blob exists (and gives its sha256) or opens a
   session. Sessions are fed chunk by chunk, never whole in memory: to a
   server on this machine the open file is handed over its socket
   (``cli/handoff.py``), otherwise each chunk is a ``PATCH`` whose body leaves
   with ``sendfile(2)`` (``cli/bulk.py``). ``PUT`` with the blake3 closes the
   session and its answer carries the sha256; ``--concurrency`` blobs move at
   once.
5. Transport failures and 5xx answers are retried with backoff
   (``client.RETRY_BUDGET_SECONDS`` per operation); before re-sending, the
   client asks ``HEAD`` for the server's offset and resumes there. Session ids
   are kept under the user cache dir, keyed by blake3, so re-running an
   interrupted command resumes too.
6. Build the manifest (local paths, sizes, blake3; the server's sha256),
   publish its canonical CBOR with ``PUT``, check the server names the same
   manifest digest, print it.

Media types come from a fixed table of file extensions in this module, not
from the platform's ``mimetypes`` database: the manifest, and so the
version's identity, must not depend on the machine that uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import stat
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, unquote

import blake3
import typer

from artifactstore import errors
from artifactstore.cli.client import (
    ApiClient,
    Progress,
    ServerOption,
    TokenOption,
    first_error,
    format_size,
    resolve_endpoint,
)
from artifactstore.cli.small_blobs import (
    Blob,
    SmallBlobs,
    Totals,
    check_unchanged,
    received_other_bytes,
    routing_labels,
)
from artifactstore.client.handoff import HandoffClient, HandoffUnavailableError
from artifactstore.digests import Digest
from artifactstore.manifest import (
    DEFAULT_MEDIA_TYPE,
    Manifest,
    ManifestFile,
    build_manifest,
    decode_manifest,
    encode_manifest,
)
from artifactstore.names import validate_file_path, validate_package_name, validate_version
from artifactstore.protocol import HANDOFF_HEADER

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import httpx

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CONCURRENCY",
    "SessionState",
    "SourceFile",
    "collect_files",
    "media_type_for",
    "parse_size",
    "upload_command",
]

log = logging.getLogger("artifactstore.cli.upload")

HASH_BUFFER = 16 * 1024 * 1024  # per blake3 call: enough to spread over every core
# Each PATCH ends with the server catching up on sha256 and an fsync, a pipeline
# bubble of ~25 ms; a broken PATCH keeps what arrived, so big ones cost no resends.
DEFAULT_CHUNK_SIZE = 256 * 1024 * 1024
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 64
MAX_SESSION_RESTARTS = 3
CBOR = "application/cbor"

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}

# Fixed on purpose (see the module docstring); lower-cased suffixes.
MEDIA_TYPES: dict[str, str] = {
    ".7z": "application/x-7z-compressed",
    ".bz2": "application/x-bzip2",
    ".css": "text/css",
    ".csv": "text/csv",
    ".deb": "application/vnd.debian.binary-package",
    ".gif": "image/gif",
    ".gz": "application/gzip",
    ".htm": "text/html",
    ".html": "text/html",
    ".iso": "application/x-iso9660-image",
    ".jar": "application/java-archive",
    ".jpeg": "image/jpeg",
    ".jpg": "image/jpeg",
    ".js": "text/javascript",
    ".json": "application/json",
    ".md": "text/markdown",
    ".parquet": "application/vnd.apache.parquet",
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".rpm": "application/x-rpm",
    ".svg": "image/svg+xml",
    ".tar": "application/x-tar",
    ".tgz": "application/gzip",
    ".toml": "application/toml",
    ".txt": "text/plain",
    ".wasm": "application/wasm",
    ".whl": "application/zip",
    ".xml": "application/xml",
    ".xz": "application/x-xz",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".zip": "application/zip",
    ".zst": "application/zstd",
}


def media_type_for(path: str) -> str:
    """The media type recorded for ``path``: by its last suffix, else octet-stream."""
    name = path.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    if dot <= 0:
        return DEFAULT_MEDIA_TYPE
    return MEDIA_TYPES.get(name[dot:].lower(), DEFAULT_MEDIA_TYPE)


def parse_size(text: str | int) -> int:
    """Bytes from ``8388608``, ``8M``, ``8MiB`` or ``512k`` (units are powers of 1024).

    Raises:
        ValueError: not a positive size.
    """
    if isinstance(text, int):
        if text <= 0:
            raise ValueError("size must be positive")
        return text
    cleaned = text.strip().lower()
    digits = cleaned.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = cleaned[len(digits) :].strip()
    if not digits.isdigit() or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size (examples: 8388608, 8M, 8MiB)")
    size = int(digits) * _SIZE_UNITS[unit]
    if size <= 0:
        raise ValueError("size must be positive")
    return size


# --------------------------------------------------------------------------- collecting


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One local file and the manifest path it is published under."""

    path: str
    source: Path
    size: int
    mtime_ns: int


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _stat(path: Path, *, follow: bool = True) -> os.stat_result:
    try:
        return path.stat() if follow else path.lstat()
    except FileNotFoundError:
        raise errors.InvalidInputError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise errors.InvalidInputError(f"{path}: {exc.strerror or exc}") from exc


def _walk_dir(
    directory: Path,
    prefix: str,
    root: Path,
    ancestors: frozenset[tuple[int, int]],
    note: Callable[[str], None],
) -> Iterator[SourceFile]:
    """Files under ``directory`` (a real path inside ``root``), in name order."""
    try:
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda e: e.name)
    except OSError as exc:
        raise errors.InvalidInputError(f"{directory}: cannot list: {exc.strerror or exc}") from exc
    if not entries:
        note(f"note: empty directory {directory} is not recorded (manifests hold files only)")
    for entry in entries:
        rel = f"{prefix}/{entry.name}"
        path = Path(entry.path)
        if entry.is_symlink():
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):
                raise errors.InvalidInputError(
                    f"{path}: symlink is dangling or loops; fix or remove it"
                ) from None
            if not target.is_relative_to(root):
                raise errors.InvalidInputError(
                    f"{path}: symlink points outside {root} (to {target}); refusing to follow it"
                )
            st = _stat(target)
        else:
            target = path
            st = _stat(path, follow=False)
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                raise errors.InvalidInputError(
                    f"{path}: symlink to its own ancestor {target}; refusing to loop"
                )
            yield from _walk_dir(target, rel, root, ancestors | {key}, note)
        elif stat.S_ISREG(st.st_mode):
            yield SourceFile(rel, target, st.st_size, st.st_mtime_ns)
        else:
            raise errors.InvalidInputError(
                f"{path}: {_kind(st.st_mode)} cannot be uploaded;"
                " remove it or name the other files explicitly"
            )


def _walk_argument(argument: Path, note: Callable[[str], None]) -> Iterator[SourceFile]:
    text = os.fspath(argument)
    st = _stat(argument)  # an explicitly named symlink is followed
    name = Path(os.path.normpath(text)).name
    if name in {"", ".", ".."}:
        name = argument.resolve().name
    if not name:
        raise errors.InvalidInputError(f"{text}: cannot upload the filesystem root")
    if stat.S_ISREG(st.st_mode):
        yield SourceFile(name, argument, st.st_size, st.st_mtime_ns)
    elif stat.S_ISDIR(st.st_mode):
        root = argument.resolve()
        yield from _walk_dir(root, name, root, frozenset({(st.st_dev, st.st_ino)}), note)
    else:
        raise errors.InvalidInputError(f"{text}: {_kind(st.st_mode)} cannot be uploaded")


def collect_files(arguments: Sequence[Path], note: Callable[[str], None]) -> list[SourceFile]:
    """Every file the arguments name, sorted by manifest path (see the module docstring).

    Raises:
        InvalidInputError: a missing argument, a refused symlink or special
            file, a name that is not a valid manifest path, two files with one
            manifest path, or no files at all.
    """
    found: dict[str, SourceFile] = {}
    for argument in arguments:
        for item in _walk_argument(argument, note):
            try:
                validate_file_path(item.path)
            except errors.InvalidNameError as exc:
                raise errors.InvalidInputError(
                    f"{item.source}: cannot be published as {item.path!a}: {exc.message}"
                ) from exc
            if item.path in found:
                raise errors.InvalidInputError(
                    f"{found[item.path].source} and {item.source} would both be published"
                    f" as {item.path!r}"
                )
            found[item.path] = item
    if not found:
        raise errors.InvalidInputError("nothing to upload: the arguments hold no files")
    return sorted(found.values(), key=lambda f: f.path)


def _blake3_file(item: SourceFile, on_bytes: Callable[[int], None]) -> Digest:
    """The blake3 of one file, read once: blake3 on every core, the next read alongside.

    A file that fits one buffer is read in one call. A larger one goes
    through two reused buffers, the next filled on a second thread while
    blake3 (which releases the GIL) hashes the current one. Buffers are sized
    to the file: zero-filling two 16 MiB buffers costs ~20 ms, which would
    dominate a tree of small files. Not ``mmap``: a file truncated under a
    mapping kills the process with SIGBUS instead of raising an error.

    Raises:
        InvalidInputError: the file cannot be read.
        SizeMismatchError: it changed size since it was listed.
    """
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    size = min(HASH_BUFFER, item.size + 1)  # one byte more: growth shows as a long read
    buffers = (bytearray(size), bytearray(size if item.size >= HASH_BUFFER else 0))
    total = 0
    try:
        fd = os.open(item.source, os.O_RDONLY)  # not inheritable (PEP 446)
        try:
            if not buffers[1]:
                total = os.preadv(fd, [buffers[0]], 0)
                hasher.update(memoryview(buffers[0])[:total])
                on_bytes(total)
            else:
                with ThreadPoolExecutor(1, thread_name_prefix="upload-read") as reader:
                    pending = reader.submit(os.preadv, fd, [buffers[0]], 0)
                    turn = 0
                    while count := pending.result():
                        current = buffers[turn]
                        total += count
                        turn ^= 1
                        pending = reader.submit(os.preadv, fd, [buffers[turn]], total)
                        hasher.update(memoryview(current)[:count])
                        on_bytes(count)
        finally:
            os.close(fd)
    except OSError as exc:
        raise errors.InvalidInputError(f"{item.source}: {exc.strerror or exc}") from exc
    if total != item.size:
        raise errors.SizeMismatchError(
            f"{item.source} changed while it was read ({item.size} -> {total} bytes)"
        )
    return Digest("blake3", hasher.digest())


# --------------------------------------------------------------------------- resume state


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "artifactstore"


class SessionState:
    """Upload session ids by blob blake3, under the user cache dir, for resuming later.

    Best effort: a cache that cannot be read or written only costs the
    resume, never the upload. One small JSON file per blob, written atomically.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or _cache_dir() / "uploads"

    def _file(self, blake3_hex: str) -> Path:
        return self.directory / f"{blake3_hex}.json"

    def load(self, server: str, blake3_hex: str, size: int) -> str | None:
        """The session id saved for this blob on this server, if any."""
        try:
            data = json.loads(self._file(blake3_hex).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("server") != server or data.get("size") != size:
            return None
        session = data.get("session")
        return session if isinstance(session, str) else None

    def save(self, server: str, blake3_hex: str, size: int, session: str) -> None:
        """Remember ``session`` for this blob."""
        path = self._file(blake3_hex)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp.write_text(
                json.dumps({"server": server, "session": session, "size": size}), encoding="utf-8"
            )
            tmp.replace(path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def forget(self, blake3_hex: str) -> None:
        """Drop what was saved for this blob (idempotent)."""
        with contextlib.suppress(OSError):
            self._file(blake3_hex).unlink()


# --------------------------------------------------------------------------- uploading


class _Uploader:
    """Moves blobs through upload sessions; one instance per command run."""

    def __init__(
        self,
        api: ApiClient,
        state: SessionState,
        progress: Progress,
        *,
        chunk_size: int,
        producer: str | None,
        retention_class: str | None,
        handoff: bool = True,
    ) -> None:
        self.api = api
        self.state = state
        self.progress = progress
        self.chunk_size = chunk_size
        self.producer = producer
        self.retention_class = retention_class
        self.totals = Totals()
        self.bar = -1
        self.handoff_allowed = handoff
        self.handoff: HandoffClient | None = None

    def _learn_handoff(self, response: httpx.Response) -> None:
        """Note the server's same-host socket (sent to loopback peers only), once."""
        path = response.headers.get(HANDOFF_HEADER)
        if path and self.handoff_allowed and self.handoff is None:
            self.handoff = HandoffClient(unquote(path))

    def _no_handoff(self, reason: str) -> None:
        log.debug("same-host handoff off: %s; sending bytes over HTTP", reason)
        self.handoff_allowed = False
        self.handoff = None

    async def _create(self, blob: Blob) -> tuple[str, int] | None:
        """Open a session (id, offset), or None when the server already holds the blob."""
        body: dict[str, Any] = {"size": blob.size, "blake3": str(blob.blake3)}
        if self.producer:
            body["producer"] = self.producer
        if self.retention_class:
            body["retention_class"] = self.retention_class

        async def post(_attempt: int) -> tuple[str, int] | None:
            response = await self.api.request("POST", "/v1/uploads", json=body)
            self._learn_handoff(response)
            data = response.json()
            if response.status_code == 200 and data.get("status") == "exists":  # noqa: PLR2004
                blob.learn(data)
                return None
            return str(data["id"]), int(data.get("offset", 0))

        return await self.api.retrying(f"{blob.source.path}: open session", post)

    async def _offset(self, session: str) -> int:
        response = await self.api.request("HEAD", f"/v1/uploads/{session}")
        self._learn_handoff(response)
        return int(response.headers.get("upload-offset", "0"))

    async def _hand_over(self, session: str, file: Path, start: int, length: int) -> int | None:
        """Append the range through the same-host socket; None to send it over HTTP."""
        if self.handoff is None:
            return None
        try:
            after = await self.handoff.append(session, file, start, length)
        except HandoffUnavailableError as exc:
            self._no_handoff(str(exc))
            return None
        except errors.UploadNotFoundError:
            # The socket's server does not know the session, so it is another
            # server's socket; HTTP gives the authoritative answer.
            self._no_handoff("the socket's server does not know the session")
            return None
        self.progress.advance(self.bar, after - start)
        return after

    async def _patch(self, session: str, file: Path, start: int, length: int) -> int:
        """PATCH the range over HTTP; the new offset."""
        sent = [0]

        def progressed(n: int) -> None:
            sent[0] += n
            self.progress.advance(self.bar, n)

        try:
            response = await self.api.send_file(
                "PATCH",
                f"/v1/uploads/{session}",
                file,
                start,
                length,
                headers={
                    "Upload-Offset": str(start),
                    "Content-Type": "application/offset+octet-stream",
                },
                on_progress=progressed,
            )
        except BaseException:
            # What the server did not acknowledge is sent again later.
            self.progress.advance(self.bar, -sent[0])
            raise
        return int(response.headers.get("upload-offset", start + length))

    async def _send_chunks(self, blob: Blob, session: str, offset: int) -> int:
        """Send the rest of the blob from ``offset`` (handed over or PATCHed); the final offset."""
        item, size = blob.source, blob.size
        state = {"offset": offset}

        async def patch(attempt: int) -> int:
            if attempt:
                resume = await self._offset(session)  # the server's resume point
                self.progress.advance(self.bar, resume - state["offset"])
                state["offset"] = resume
            start = state["offset"]
            length = min(self.chunk_size, size - start)
            if length <= 0:
                return start
            check_unchanged(item)
            handed = await self._hand_over(session, item.source, start, length)
            if handed is not None:
                return handed
            return await self._patch(session, item.source, start, length)

        def busy(exc: BaseException) -> bool:
            # 409 "conflict": an earlier PATCH of this session is still being
            # written (its connection broke); the server will let go shortly.
            return type(exc) is errors.ConflictError

        while state["offset"] < size:
            before = state["offset"]
            try:
                after = await self.api.retrying(f"{item.path}: send bytes", patch, also_retry=busy)
            except errors.UploadOffsetMismatchError as exc:
                current = exc.detail.get("offset")
                if not isinstance(current, int):
                    raise
                self.progress.advance(self.bar, current - state["offset"])
                state["offset"] = current
                continue
            self.totals.bytes_uploaded += max(0, after - before)
            state["offset"] = after
        return state["offset"]

    async def _finalize(self, blob: Blob, session: str) -> None:
        params = {"blake3": blob.blake3.hex}

        async def put(_attempt: int) -> None:
            response = await self.api.request("PUT", f"/v1/uploads/{session}", params=params)
            blob.learn(response.json())

        try:
            await self.api.retrying(f"{blob.source.path}: finish upload", put)
        except errors.DigestMismatchError as exc:
            self.state.forget(blob.blake3.hex)
            raise received_other_bytes(blob, exc) from exc
        self.totals.uploaded_blobs.add(blob.blake3.hex)

    async def _upload_once(self, blob: Blob) -> None:
        key = blob.blake3.hex
        session = self.state.load(self.api.endpoint.url, key, blob.size)
        offset = 0
        if session is not None:
            saved = session

            async def head(_attempt: int) -> int:
                return await self._offset(saved)

            try:
                offset = await self.api.retrying(f"{blob.source.path}: resume", head)
            except errors.UploadNotFoundError:
                self.state.forget(key)
                session = None
        if session is None:
            created = await self._create(blob)
            if created is None:
                self.progress.advance(self.bar, blob.size)
                return
            session, offset = created
            self.state.save(self.api.endpoint.url, key, blob.size, session)
        self.progress.advance(self.bar, offset)
        await self._send_chunks(blob, session, offset)
        await self._finalize(blob, session)
        self.state.forget(key)

    async def upload(self, blob: Blob) -> None:
        """Make sure the server holds ``blob``, resuming or restarting sessions as needed.

        A session that vanished (expired, or finished by a PUT whose answer
        was lost) is replaced by a new one, whose POST then finds the blob if
        it was stored.
        """
        for restart in range(MAX_SESSION_RESTARTS + 1):
            try:
                await self._upload_once(blob)
            except errors.UploadNotFoundError:
                self.state.forget(blob.blake3.hex)
                if restart == MAX_SESSION_RESTARTS:
                    raise
                continue
            return


# --------------------------------------------------------------------------- command


@dataclass(frozen=True, slots=True)
class _Options:
    package: str
    version: str
    paths: list[Path]
    server: str | None
    token: str | None
    producer: str | None
    retention_class: str | None
    annotations: dict[str, str]
    concurrency: int
    chunk_size: int
    handoff: bool = True


async def _hash_all(
    files: Sequence[SourceFile], concurrency: int, progress: Progress
) -> list[Digest]:
    bar = progress.task("hashing", sum(f.size for f in files))
    gate = asyncio.Semaphore(max(1, min(concurrency, os.cpu_count() or 1)))

    async def one(item: SourceFile) -> Digest:
        async with gate:
            return await asyncio.to_thread(_blake3_file, item, lambda n: progress.advance(bar, n))

    return list(await asyncio.gather(*(one(f) for f in files)))


def _version_path(options: _Options) -> str:
    return f"/v1/packages/{quote(options.package)}/versions/{quote(options.version)}"


def _conflict(options: _Options, **detail: Any) -> errors.VersionConflictError:
    return errors.VersionConflictError(
        f"{options.package} {options.version} is already published with different content;"
        " a published version never changes: publish a new version",
        **detail,
    )


def _build(
    options: _Options, files: Sequence[SourceFile], blobs: dict[str, Blob], hashes: list[Digest]
) -> tuple[bytes, str]:
    """The canonical CBOR manifest of the local files and its ``sha256:`` digest."""
    entries = []
    for item, b3 in zip(files, hashes, strict=True):
        sha = blobs[b3.hex].sha256
        if sha is None:  # pragma: no cover - every blob was uploaded or found first
            raise errors.ArtifactStoreError(f"{item.path}: no sha256 learnt for {b3}")
        entries.append(ManifestFile(item.path, item.size, sha, b3, media_type_for(item.path)))
    manifest = build_manifest(options.package, options.version, entries, options.annotations)
    body = encode_manifest(manifest)
    return body, f"sha256:{hashlib.sha256(body).hexdigest()}"


async def _published(api: ApiClient, options: _Options) -> tuple[Manifest, str] | None:
    """The manifest the version already has and its digest, or None when unpublished."""
    try:
        response = await api.request("GET", _version_path(options), headers={"Accept": CBOR})
    except errors.NotFoundError:
        return None
    digest = f"sha256:{hashlib.sha256(response.content).hexdigest()}"
    return decode_manifest(response.content), digest


def _learn_from(published: Manifest, blobs: dict[str, Blob]) -> bool:
    """Take sha256s from a published manifest; False when a local file is not in it."""
    known = {(f.blake3.raw, f.size): f.sha256 for f in published.files}
    for blob in blobs.values():
        sha = known.get((blob.blake3.raw, blob.size))
        if sha is None:
            return False
        blob.sha256 = sha
    return True


async def _publish(api: ApiClient, options: _Options, body: bytes) -> dict[str, Any]:
    path = _version_path(options)
    params = routing_labels(options.producer, options.retention_class)

    async def put(_attempt: int) -> dict[str, Any]:
        response = await api.request(
            "PUT", path, content=body, params=params, headers={"Content-Type": CBOR}
        )
        data: dict[str, Any] = response.json()
        return data

    try:
        return await api.retrying("publish", put)
    except errors.VersionConflictError as exc:
        raise _conflict(options, **exc.detail) from exc


async def _send_missing(
    api: ApiClient,
    options: _Options,
    progress: Progress,
    uploader: _Uploader,
    blobs: Sequence[Blob],
) -> None:
    """Make the server hold every blob: ask which it has, then send the rest.

    Small files go in one request each (``cli/small_blobs.py``), the others
    (and all of them on a server without that route) through sessions;
    ``--concurrency`` blobs move at once.
    """
    small = SmallBlobs(
        api,
        progress,
        uploader.totals,
        producer=options.producer,
        retention_class=options.retention_class,
    )
    await small.learn_held(blobs)
    todo = [b for b in blobs if b.sha256 is None]
    uploader.bar = small.bar = progress.task("uploading", sum(b.size for b in todo))
    gate = asyncio.Semaphore(options.concurrency)

    async def one(blob: Blob) -> None:
        async with gate:
            if not await small.send(blob):
                await uploader.upload(blob)

    try:
        async with asyncio.TaskGroup() as group:
            for blob in todo:
                group.create_task(one(blob))
    except BaseExceptionGroup as failed:
        raise first_error(failed) from None


async def _run(options: _Options) -> dict[str, Any]:
    validate_package_name(options.package)
    validate_version(options.version)
    endpoint = resolve_endpoint(options.server, options.token)
    with Progress() as progress:
        files = collect_files(options.paths, progress.note)
        hashes = await _hash_all(files, options.concurrency, progress)
        blobs: dict[str, Blob] = {}
        for item, b3 in zip(files, hashes, strict=True):
            blobs.setdefault(b3.hex, Blob(b3, item.size, [])).files.append(item)

        async with ApiClient(
            endpoint, on_retry=progress.note, max_connections=options.concurrency + 2
        ) as api:
            uploader = _Uploader(
                api,
                SessionState(),
                progress,
                chunk_size=options.chunk_size,
                producer=options.producer,
                retention_class=options.retention_class,
                # A configured proxy is meant to carry the bytes; keep it so.
                handoff=options.handoff and api.direct,
            )
            # A version never changes: if it exists, either this is a re-run
            # (nothing to send) or a conflict (fail before sending anything).
            published = await _published(api, options)
            if published is not None:
                manifest, existing = published
                if not _learn_from(manifest, blobs):
                    raise _conflict(options, published=existing)
                body, manifest_sha256 = _build(options, files, blobs, hashes)
                if manifest_sha256 != existing:
                    raise _conflict(options, published=existing, local=manifest_sha256)
                blobs.clear()
            await _send_missing(api, options, progress, uploader, list(blobs.values()))
            if published is None:
                body, manifest_sha256 = _build(options, files, blobs, hashes)
            published_answer = await _publish(api, options, body)

    if published_answer.get("manifest_sha256") != manifest_sha256:
        raise errors.DigestMismatchError(
            f"the server recorded manifest {published_answer.get('manifest_sha256')},"
            f" this client computed {manifest_sha256}",
            expected=manifest_sha256,
            actual=published_answer.get("manifest_sha256"),
        )
    uploaded = len(uploader.totals.uploaded_blobs)
    return {
        "package": options.package,
        "version": options.version,
        "manifest_sha256": manifest_sha256,
        "created": bool(published_answer.get("created")),
        "files": len(files),
        "uploaded": uploaded,
        "skipped": len(files) - uploaded,
        "bytes_uploaded": uploader.totals.bytes_uploaded,
    }


def _parse_annotations(pairs: Sequence[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--annotation")
        if key in result:
            raise typer.BadParameter(f"key {key!r} given twice", param_hint="--annotation")
        result[key] = value
    return result


def upload_command(  # noqa: PLR0917 - typer passes every option as a parameter
    package: Annotated[str, typer.Argument(help="Package name.", show_default=False)],
    version: Annotated[str, typer.Argument(help="Version to publish.", show_default=False)],
    paths: Annotated[
        list[Path],
        typer.Argument(help="Files and directories (recursive).", show_default=False),
    ],
    server: ServerOption = None,
    token: TokenOption = None,
    producer: Annotated[
        str | None, typer.Option(help="Who produced the files (e.g. ci-release).")
    ] = None,
    retention_class: Annotated[
        str | None, typer.Option(help="Retention class (storage routing).")
    ] = None,
    annotation: Annotated[
        list[str] | None,
        typer.Option("--annotation", metavar="KEY=VALUE", help="Manifest annotation; repeatable."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    concurrency: Annotated[
        int,
        typer.Option(min=1, max=MAX_CONCURRENCY, help="Blobs uploaded at once."),
    ] = DEFAULT_CONCURRENCY,
    chunk_size: Annotated[
        str,
        typer.Option(metavar="BYTES", help="Bytes per PATCH request (256MiB, 8M, 8388608)."),
    ] = "256MiB",
    handoff: Annotated[
        bool,
        typer.Option(
            help="On a server on this machine, hand files over a local socket"
            " instead of sending their bytes over HTTP.",
        ),
    ] = True,
) -> None:
    """Upload files and directories as PACKAGE VERSION and print the manifest digest.

    Re-running an upload that succeeded is a no-op success; a version already
    published with other content is an error (exit 1).
    """
    try:
        chunk_bytes = parse_size(chunk_size)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--chunk-size") from exc
    options = _Options(
        package=package,
        version=version,
        paths=paths,
        server=server,
        token=token,
        producer=producer,
        retention_class=retention_class,
        annotations=_parse_annotations(annotation or []),
        concurrency=concurrency,
        chunk_size=chunk_bytes,
        handoff=handoff,
    )
    summary = asyncio.run(_run(options))
    if as_json:
        print(json.dumps(summary))
        return
    print(summary["manifest_sha256"])
    state = "published" if summary["created"] else "already published (unchanged)"
    print(
        f"{package} {version} {state}: {summary['files']} files,"
        f" {summary['uploaded']} uploaded ({format_size(summary['bytes_uploaded'])}),"
        f" {summary['skipped']} already stored",
        file=sys.stderr,
    )
