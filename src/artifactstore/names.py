"""Names: the syntax of package names, versions and file paths.

This module owns the rules of DESIGN section 1 (package and version
patterns) and section 3 (manifest file paths). Each validator returns its
argument unchanged when it is valid and raises ``InvalidNameError`` with a
message that says which rule broke, prefixed by the field being checked.

It does not normalise anything (no lower-casing, no Unicode normalisation,
no stripping): a name is accepted byte for byte or refused. It knows nothing
of storage or HTTP; the REST API, the gateway, the CLI and ``manifest.py``
call it at their edges.

Patterns are applied with ``re.fullmatch``: ``$`` would also match before a
trailing newline.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import TypeGuard

from artifactstore.errors import InvalidNameError

__all__ = [
    "MAX_PATH_BYTES",
    "MAX_SEGMENT_BYTES",
    "PACKAGE_NAME_PATTERN",
    "VERSION_PATTERN",
    "validate_file_path",
    "validate_package_name",
    "validate_version",
    "validate_visible_path",
]

PACKAGE_NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,127}"
"""DESIGN section 1; matched in full (``re.fullmatch``)."""

VERSION_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}"
"""DESIGN section 1; matched in full (``re.fullmatch``)."""

MAX_PATH_BYTES = 4096
"""Longest file path, in UTF-8 bytes (Linux ``PATH_MAX``)."""

MAX_SEGMENT_BYTES = 255
"""Longest path segment, in UTF-8 bytes (``NAME_MAX`` of common filesystems),
so every published path can be written out by ``artifactstore download``."""

_MAX_NAME_CHARS = 128


@dataclasses.dataclass(frozen=True, slots=True)
class _NameRule:
    """One name syntax: the whole pattern plus its parts, for precise messages."""

    pattern: str
    first: re.Pattern[str]
    rest: re.Pattern[str]
    full: re.Pattern[str] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "full", re.compile(self.pattern))


_PACKAGE_RULE = _NameRule(PACKAGE_NAME_PATTERN, re.compile(r"[a-z0-9]"), re.compile(r"[a-z0-9._-]"))
_VERSION_RULE = _NameRule(
    VERSION_PATTERN, re.compile(r"[A-Za-z0-9]"), re.compile(r"[A-Za-z0-9._+-]")
)

# C0 controls, DEL and C1 controls: invisible in listings, hostile in terminals.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# Characters that print as nothing, as a blank other than a space, or reorder
# the text around them (U+202E shows "exe.txt" as "txt.exe"): a listing could
# show one name for another. Categories: format (Cf: bidi controls, zero-width
# joiners, soft hyphen, BOM), line/paragraph separators, spaces other than
# U+0020 and private use. Not "unassigned": that depends on the Unicode
# version of the Python that checks, and a new emoji is not a spoof.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Zl", "Zp", "Zs", "Co"})
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u034f")  # Hangul fillers, CGJ


_PRINTABLE_ASCII_RE = re.compile(r"[\x20-\x5b\x5d-\x7e]+")  # without backslash (0x5c)


def _show(value: str) -> str:
    """A short, printable rendering of a rejected value for error messages."""
    shown = ascii(value[:80])
    return shown if len(value) <= 80 else shown[:-1] + "...'"  # noqa: PLR2004


def _check_name(value: object, name: str, rule: _NameRule) -> str:
    if not isinstance(value, str):
        raise InvalidNameError(f"{name}: must be text, got {type(value).__name__}", field=name)
    if rule.full.fullmatch(value):
        return value
    if not value:
        reason = "must not be empty"
    elif len(value) > _MAX_NAME_CHARS:
        reason = f"is {len(value)} characters long; at most {_MAX_NAME_CHARS} are allowed"
    elif not rule.first.fullmatch(value[0]):
        reason = f"must start with a character of {rule.first.pattern}, not {value[0]!a}"
    else:
        index, char = next((i, c) for i, c in enumerate(value) if i and not rule.rest.fullmatch(c))
        reason = f"character {char!a} at index {index} is not allowed"
    raise InvalidNameError(
        f"{name} {_show(value)}: {reason} (pattern ^{rule.pattern}$)", field=name, value=value[:200]
    )


def validate_package_name(name: object, *, field: str = "package name") -> str:
    """Return ``name`` if it matches ``^[a-z0-9][a-z0-9._-]{0,127}$``.

    Raises:
        InvalidNameError: not text, empty, too long, or a character outside
            the pattern; the message names ``field`` and the first offence.
    """
    return _check_name(name, field, _PACKAGE_RULE)


def validate_version(version: object, *, field: str = "version") -> str:
    """Return ``version`` if it matches ``^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$``.

    Raises:
        InvalidNameError: not text, empty, too long, or a character outside
            the pattern; the message names ``field`` and the first offence.
    """
    return _check_name(version, field, _VERSION_RULE)


def _path_error(field: str, reason: str, path: str) -> InvalidNameError:
    return InvalidNameError(f"{field}: {reason}", field=field, value=path[:200])


def _is_plain_ascii_path(path: object) -> TypeGuard[str]:
    """Fast path for the common case: a valid path of printable ASCII only.

    ASCII has one byte per character, so lengths in characters are lengths in
    bytes. ``False`` means "check in detail", not "invalid".
    """
    if type(path) is not str or len(path) > MAX_PATH_BYTES:
        return False
    if not _PRINTABLE_ASCII_RE.fullmatch(path):
        return False
    segments = path.split("/")
    return (
        "" not in segments
        and "." not in segments
        and ".." not in segments
        and max(map(len, segments)) <= MAX_SEGMENT_BYTES
    )


def validate_file_path(path: object, *, field: str = "path") -> str:
    """Return ``path`` if it is a safe relative file path (DESIGN section 3).

    A valid path is non-empty text of at most ``MAX_PATH_BYTES`` UTF-8 bytes,
    ``/``-separated, with no leading or trailing ``/``, no empty, ``.`` or
    ``..`` segment, no segment over ``MAX_SEGMENT_BYTES``, no backslash, and
    no NUL or other control character (C0, DEL, C1). Lone surrogates (text
    that is not valid UTF-8) are refused. Joined under any directory it can
    never escape that directory.

    Raises:
        InvalidNameError: the message names ``field`` and the first rule broken,
            e.g. ``files[3].path: segment '..' not allowed``.
    """
    if _is_plain_ascii_path(path):
        return path
    if not isinstance(path, str):
        raise InvalidNameError(f"{field}: must be text, got {type(path).__name__}", field=field)
    if not path:
        raise _path_error(field, "must not be empty", path)
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise _path_error(
            field, f"not valid UTF-8 (lone surrogate at index {exc.start})", path
        ) from exc
    if size > MAX_PATH_BYTES:
        raise _path_error(field, f"{size} bytes long; at most {MAX_PATH_BYTES} allowed", path)
    control = _CONTROL_RE.search(path)
    if control:
        raise _path_error(
            field, f"control character {control.group()!a} at index {control.start()}", path
        )
    if "\\" in path:
        raise _path_error(field, "backslash not allowed; separate segments with '/'", path)
    if path.startswith("/"):
        raise _path_error(field, "must be relative (no leading '/')", path)
    if path.endswith("/"):
        raise _path_error(field, "must name a file (no trailing '/')", path)
    _check_segments(path, field)
    return path


def validate_visible_path(path: object, *, field: str = "path") -> str:
    """Return ``path`` if it is valid (``validate_file_path``) and shows as what it is.

    The rule for names being published (and uploaded by the CLI): no
    character that displays as nothing or reorders the text around it (bidi
    controls such as U+202E, which shows "fdp.exe" as "exe.pdf"; zero-width
    characters; spaces other than U+0020; private-use code points), so a
    listing cannot show one name for another. Versions published before the
    rule stay readable: reading checks ``validate_file_path`` only.

    Raises:
        InvalidNameError: the message names ``field``, the character and its index.
    """
    text = validate_file_path(path, field=field)
    if text.isascii():
        return text
    for index, char in enumerate(text):
        if char.isascii():  # controls were refused above; U+0020 is the one space allowed
            continue
        if unicodedata.category(char) in _INVISIBLE_CATEGORIES or char in _INVISIBLE_LETTERS:
            name = unicodedata.name(char, "unnamed")
            raise _path_error(
                field, f"invisible or reordering character {char!a} ({name}) at index {index}", text
            )
    return text


def _check_segments(path: str, field: str) -> None:
    for segment in path.split("/"):
        if not segment:
            raise _path_error(field, "empty segment ('//') not allowed", path)
        if segment in {".", ".."}:
            raise _path_error(field, f"segment {segment!r} not allowed", path)
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise _path_error(
                field, f"segment longer than {MAX_SEGMENT_BYTES} bytes: {_show(segment)}", path
            )
