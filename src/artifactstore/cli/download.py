"""``artifactstore download``: write a version's files and verify every byte on the way.

The manifest is fetched in its canonical CBOR form, decoded strictly and
checked against the ``manifest_sha256`` the server reports (and against
``--expect-manifest`` when given, which pins the version end to end). Every
file streams from ``/v1/blobs/sha256:<hex>`` into a temporary file in its
target directory while ``DualHasher`` hashes it; only when size, sha256 and
blake3 all match is it fsynced and renamed into place (then the directory is
fsynced). A mismatch is an ``IntegrityError`` (exit 1) and the temporary file
is removed, so a bad file is never left under its real name. Broken
connections resume with ``Range`` from the bytes already written.

Paths are checked again here, whatever the server says (defence in depth):
each must pass ``names.validate_file_path`` and its directory must resolve
inside the output directory, so no manifest can write elsewhere.

Files with the same content are fetched once and copied locally (the copy is
hashed and checked too). The command does not delete files in the output
directory that the manifest does not name.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

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
from artifactstore.digests import DualHasher
from artifactstore.manifest import Manifest, ManifestFile, decode_manifest
from artifactstore.names import validate_file_path, validate_package_name, validate_version
from artifactstore.staged_file import StagedFile, fsync_dir
from artifactstore.storage.streams import coalesce

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_CONCURRENCY", "download_command", "target_path"]

DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 64
WRITE_BLOCK = 1024 * 1024
CBOR = "application/cbor"


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _refuse(path: str, why: str) -> errors.InvalidNameError:
    return errors.InvalidNameError(f"manifest path {path!a}: {why}; nothing written there")


def target_path(root: Path, path: str) -> Path:
    """Where manifest ``path`` goes under ``root`` (a resolved directory), creating parents.

    Each directory on the way is created if missing; an existing one that is
    a symlink must resolve inside ``root``, anything else that is not a
    directory is refused.

    Raises:
        InvalidNameError: the path is not a valid manifest path, or would
            leave ``root``.
    """
    try:
        validate_file_path(path)
    except errors.InvalidNameError as exc:
        raise _refuse(path, exc.message) from exc
    parts = path.split("/")
    current = root
    for part in parts[:-1]:
        current /= part
        try:
            current.mkdir()
        except FileExistsError:
            mode = current.lstat().st_mode
            if stat.S_ISLNK(mode):
                if not current.resolve().is_relative_to(root):
                    raise _refuse(path, f"{current} is a symlink out of {root}") from None
            elif not stat.S_ISDIR(mode):
                raise _refuse(path, f"{current} exists and is not a directory") from None
    target = current / parts[-1]
    if not target.parent.resolve().is_relative_to(root):
        raise _refuse(path, f"it would be written outside {root}")
    return target


def _check(file: ManifestFile, hasher: DualHasher) -> None:
    """Raise unless the bytes hashed are exactly ``file``'s."""
    got = hasher.result()
    if got.size != file.size:
        raise errors.SizeMismatchError(
            f"{file.path}: received {got.size} bytes, the manifest says {file.size};"
            " the file was not written",
            path=file.path,
            expected=file.size,
            actual=got.size,
        )
    for want, have in ((file.sha256, got.sha256), (file.blake3, got.blake3)):
        if not want.matches(have):
            raise errors.DigestMismatchError(
                f"{file.path}: {want.algorithm} is {have.hex}, the manifest says {want.hex};"
                " the file was not written",
                path=file.path,
                algorithm=want.algorithm,
                expected=str(want),
                actual=str(have),
            )


class _Sink:
    """A temporary file beside the target, hashed as it is written.

    Written with ``StagedFile`` (direct I/O where the filesystem allows it)
    while sha256 runs on its own lane: the download runs at the pace of the
    slowest of network, sha256 and disk, not their sum.
    """

    def __init__(self, target: Path) -> None:
        fd, name = tempfile.mkstemp(
            prefix=f".{target.name[:40]}.", suffix=".part", dir=target.parent
        )
        # mkstemp creates 0600; a finished file gets the mode a plain open() would give it.
        os.fchmod(fd, 0o666 & ~_UMASK)
        os.close(fd)
        self.target = target
        self.tmp = Path(name)
        self.out = StagedFile(self.tmp, create=False)
        self.hasher = DualHasher()

    @property
    def written(self) -> int:
        return self.hasher.size

    def write(self, data: bytes) -> None:
        self.hasher.update_stream(data, lambda: self.out.append(data))

    def restart(self) -> None:
        """Forget everything written (the server ignored a Range request)."""
        self.hasher.drain()
        self.out.close()
        os.truncate(self.tmp, 0)
        self.out = StagedFile(self.tmp, create=False)
        self.hasher = DualHasher()

    def commit(self, file: ManifestFile) -> None:
        """Verify, fsync and rename into place, then fsync the directory."""
        self.hasher.drain()
        _check(file, self.hasher)
        self.out.sync()
        self.out.close()
        self.tmp.replace(self.target)
        fsync_dir(self.target.parent)

    def discard(self) -> None:
        """Close and remove the temporary file (idempotent)."""
        with contextlib.suppress(Exception):
            self.hasher.drain()
        with contextlib.suppress(OSError):
            self.out.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def _copy_verified(source: Path, file: ManifestFile, target: Path) -> None:
    """Copy a file already verified, hashing the copy, and rename it into place."""
    sink = _Sink(target)
    try:
        with source.open("rb") as fh:
            while block := fh.read(WRITE_BLOCK):
                sink.write(block)
        sink.commit(file)
    finally:
        sink.discard()


@dataclass(frozen=True, slots=True)
class _Options:
    package: str
    version: str
    output: Path | None
    server: str | None
    token: str | None
    concurrency: int
    expect_manifest: str | None


class _Downloader:
    def __init__(self, api: ApiClient, progress: Progress, bar: int) -> None:
        self.api = api
        self.progress = progress
        self.bar = bar

    async def fetch(self, file: ManifestFile, target: Path) -> None:
        """Stream one blob into ``target``, verified; resumes broken transfers with Range."""
        sink = await asyncio.to_thread(_Sink, target)
        try:

            async def get(attempt: int) -> None:
                if attempt and sink.written >= file.size:
                    return  # everything arrived before the connection broke
                headers = {"Range": f"bytes={sink.written}-"} if sink.written else {}
                async with self.api.stream(
                    "GET", f"/v1/blobs/{file.sha256}", headers=headers
                ) as response:
                    await self._receive(file, sink, response)

            await self.api.retrying(f"{file.path}: download", get)
            await asyncio.to_thread(sink.commit, file)
        finally:
            await asyncio.to_thread(sink.discard)

    async def _receive(self, file: ManifestFile, sink: _Sink, response: httpx.Response) -> None:
        if sink.written and response.status_code != 206:  # noqa: PLR2004 - Partial Content
            self.progress.advance(self.bar, -sink.written)
            await asyncio.to_thread(sink.restart)
        # Raw bytes (the registry never encodes blob bodies) joined into 1 MiB
        # pieces; each piece is hashed and written on a thread while the next
        # one arrives, so receiving, hashing and writing overlap.
        body = (
            response.aiter_bytes()
            if response.headers.get("content-encoding", "identity") != "identity"
            else response.aiter_raw()
        )
        writing: asyncio.Future[None] | None = None
        received = sink.written  # sink.written lags by the block being written
        try:
            async for block in coalesce(body, WRITE_BLOCK):
                received += len(block)
                if received > file.size:
                    raise errors.SizeMismatchError(
                        f"{file.path}: the server sent more than the {file.size} bytes the"
                        " manifest names; the file was not written",
                        path=file.path,
                    )
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(asyncio.to_thread(sink.write, block))
                self.progress.advance(self.bar, len(block))
        finally:
            if writing is not None:
                await writing


async def _manifest(
    api: ApiClient, options: _Options, path: str
) -> tuple[Manifest, dict[str, Any]]:
    info = await api.get_json(path)
    cbor = (await api.request("GET", path, headers={"Accept": CBOR})).content
    digest = f"sha256:{hashlib.sha256(cbor).hexdigest()}"
    if digest != info.get("manifest_sha256"):
        raise errors.DigestMismatchError(
            f"the manifest the server sent hashes to {digest},"
            f" but the server names {info.get('manifest_sha256')}"
        )
    if options.expect_manifest is not None:
        expected = options.expect_manifest
        if not expected.startswith("sha256:"):
            expected = f"sha256:{expected}"
        if digest != expected:
            raise errors.DigestMismatchError(
                f"{options.package} {options.version} has manifest {digest}, not {expected}",
                expected=expected,
                actual=digest,
            )
    manifest = decode_manifest(cbor)
    if (manifest.package, manifest.version) != (options.package, options.version):
        raise errors.IntegrityError(
            f"the server sent the manifest of {manifest.package} {manifest.version}"
        )
    return manifest, {"manifest_sha256": digest, "yanked": bool(info.get("yanked"))}


async def _run(options: _Options) -> dict[str, Any]:
    validate_package_name(options.package)
    validate_version(options.version)
    endpoint = resolve_endpoint(options.server, options.token)
    version_path = f"/v1/packages/{quote(options.package)}/versions/{quote(options.version)}"
    with Progress() as progress:
        async with ApiClient(
            endpoint, on_retry=progress.note, max_connections=options.concurrency + 2
        ) as api:
            manifest, facts = await _manifest(api, options, version_path)
            if facts["yanked"]:
                progress.note(f"warning: {options.package} {options.version} is yanked")
            output = options.output or Path.cwd() / f"{options.package}-{options.version}"
            await asyncio.to_thread(output.mkdir, parents=True, exist_ok=True)
            root = output.resolve()
            groups: dict[str, list[ManifestFile]] = {}
            for file in manifest.files:
                groups.setdefault(file.sha256.hex, []).append(file)
            downloader = _Downloader(
                api, progress, progress.task("downloading", manifest.total_size)
            )
            gate = asyncio.Semaphore(options.concurrency)

            async def one(files: list[ManifestFile]) -> None:
                async with gate:
                    first = files[0]
                    target = await asyncio.to_thread(target_path, root, first.path)
                    await downloader.fetch(first, target)
                    for other in files[1:]:
                        copy = await asyncio.to_thread(target_path, root, other.path)
                        await asyncio.to_thread(_copy_verified, target, other, copy)

            try:
                async with asyncio.TaskGroup() as group:
                    for files in groups.values():
                        group.create_task(one(files))
            except BaseExceptionGroup as failed:
                raise first_error(failed) from None
    return {
        "package": options.package,
        "version": options.version,
        "manifest_sha256": facts["manifest_sha256"],
        "yanked": facts["yanked"],
        "output": str(output),
        "files": len(manifest.files),
        "bytes": manifest.total_size,
    }


def download_command(  # noqa: PLR0917 - typer passes every option as a parameter
    package: Annotated[str, typer.Argument(help="Package name.", show_default=False)],
    version: Annotated[str, typer.Argument(help="Version.", show_default=False)],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Directory to write into (default ./PACKAGE-VERSION)."),
    ] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=MAX_CONCURRENCY, help="Files downloaded at once.")
    ] = DEFAULT_CONCURRENCY,
    expect_manifest: Annotated[
        str | None,
        typer.Option(
            "--expect-manifest",
            metavar="SHA256",
            help="Refuse unless the version's manifest has this sha256.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Download PACKAGE VERSION, verifying sha256 and blake3 of every file.

    A file whose bytes do not match the manifest is not left in place (exit 1).
    """
    summary = asyncio.run(
        _run(
            _Options(
                package=package,
                version=version,
                output=output,
                server=server,
                token=token,
                concurrency=concurrency,
                expect_manifest=expect_manifest,
            )
        )
    )
    if as_json:
        print(json.dumps(summary))
        return
    print(summary["output"])
    print(
        f"downloaded {package} {version}: {summary['files']} files,"
        f" {format_size(summary['bytes'])}, all digests verified",
        file=sys.stderr,
    )
