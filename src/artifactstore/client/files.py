"""Local files to publish: which files, under which paths, with which media type and blake3.

Each argument is a file or a directory walked recursively; manifest paths
are relative to the argument's parent (``upload(..., ["build/dist"])``
publishes ``dist/...``). Symlinks are followed when their target lies inside
the argument's tree (the target's bytes are published under the link's
path; manifests hold no links) and refused when they point outside it,
dangle, or loop. FIFOs, sockets and devices are refused. Empty directories
cannot be represented and are reported (logged as a warning). Nothing is
skipped silently: every refusal is an ``InvalidInputError``.

Media types come from a fixed table of file extensions, not from the
platform's ``mimetypes`` database: the manifest, and so the version's
identity, must not depend on the machine that uploads.

Files are named by blake3 only (on every core, reads alongside): the
cheaper of the two digests and a 256-bit cryptographic hash, so it names
the bytes end to end; the server computes sha256 from bytes it checked
against the blake3 and answers with it (docs/API.md).
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import blake3

from artifactstore import errors
from artifactstore.digests import Digest
from artifactstore.manifest import DEFAULT_MEDIA_TYPE
from artifactstore.names import validate_visible_path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "MEDIA_TYPES",
    "SourceFile",
    "blake3_file",
    "check_unchanged",
    "collect_files",
    "media_type_for",
]

HASH_BUFFER = 16 * 1024 * 1024  # per blake3 call: enough to spread over every core

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
                validate_visible_path(item.path)
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


def blake3_file(item: SourceFile, on_bytes: Callable[[int], None]) -> Digest:
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


def check_unchanged(item: SourceFile) -> None:
    """Refuse to send a file that is not the one listed (its size or mtime moved).

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
