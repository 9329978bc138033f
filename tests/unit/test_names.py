"""Name syntax: package names, versions and file paths (DESIGN sections 1 and 3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactstore.errors import InvalidInputError, InvalidNameError
from artifactstore.names import (
    MAX_PATH_BYTES,
    MAX_SEGMENT_BYTES,
    PACKAGE_NAME_PATTERN,
    VERSION_PATTERN,
    validate_file_path,
    validate_package_name,
    validate_version,
    validate_visible_path,
)


@pytest.mark.parametrize("name", ["a", "0", "my-pkg", "my_pkg.v2", "a" * 128, "9lives"])
def test_valid_package_names_are_returned_unchanged(name: str) -> None:
    """Names matching the DESIGN pattern pass through as they are."""
    assert validate_package_name(name) == name


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("", "empty"),
        ("Foo", "must start"),
        ("fOo", "'O' at index 1"),
        ("-pkg", "must start"),
        (".pkg", "must start"),
        ("_pkg", "must start"),
        ("a" * 129, "129 characters"),
        ("pkg\n", "'\\\\n' at index 3"),
        ("pkg name", "' ' at index 3"),
        ("pkg/x", "'/' at index 3"),
        ("pk\u00e9", "index 2"),
        ("pkg+1", "'\\+' at index 3"),
    ],
)
def test_invalid_package_names_are_refused_with_the_reason(name: str, words: str) -> None:
    """Each bad name raises InvalidNameError naming the field and the first offence."""
    with pytest.raises(InvalidNameError, match=words) as info:
        validate_package_name(name)
    assert info.value.message.startswith("package name")
    assert info.value.code == "invalid_name"
    assert isinstance(info.value, InvalidInputError)


@pytest.mark.parametrize(
    "version", ["1", "1.0.0", "1.0.0+build.5", "2024-01-02", "V1_RC1", "a" * 128]
)
def test_valid_versions_are_returned_unchanged(version: str) -> None:
    """Versions matching the DESIGN pattern pass through as they are."""
    assert validate_version(version) == version


@pytest.mark.parametrize(
    "version", ["", "+1", ".1", "-1", "1.0 beta", "1.0\n", "1/2", "v" * 129, "1.0~rc1"]
)
def test_invalid_versions_are_refused(version: str) -> None:
    """Versions outside the DESIGN pattern raise InvalidNameError, trailing newline included."""
    with pytest.raises(InvalidNameError, match=r"^version"):
        validate_version(version)


@pytest.mark.parametrize("value", [None, 1, b"pkg", ["pkg"]])
def test_non_text_names_are_refused(value: object) -> None:
    """Only str is a name; bytes and other types are refused, not coerced."""
    with pytest.raises(InvalidNameError, match="must be text"):
        validate_package_name(value)
    with pytest.raises(InvalidNameError, match="must be text"):
        validate_version(value)
    with pytest.raises(InvalidNameError, match="must be text"):
        validate_file_path(value)


def test_field_name_prefixes_the_message() -> None:
    """The caller's field name starts the message and is kept in detail."""
    with pytest.raises(
        InvalidNameError, match=r"^files\[3\]\.path: segment '\.\.' not allowed$"
    ) as info:
        validate_file_path("a/../b", field="files[3].path")
    assert info.value.detail["field"] == "files[3].path"


@settings(max_examples=200, deadline=None)
@given(
    st.from_regex(PACKAGE_NAME_PATTERN, fullmatch=True),
    st.from_regex(VERSION_PATTERN, fullmatch=True),
)
def test_everything_the_patterns_generate_is_accepted(name: str, version: str) -> None:
    """Any string fully matching the published patterns is accepted."""
    assert validate_package_name(name) == name
    assert validate_version(version) == version


@pytest.mark.parametrize(
    "path",
    [
        "a",
        "a.txt",
        "dist/app.tar.gz",
        "a/b/c/d/e",
        "..a",
        "a..",
        "...",
        ".hidden/.config",
        "with space/and:colon",
        "unicode/\u00fcber/\u6c34.txt",
        "emoji/\U0001f600",
        "x" * MAX_SEGMENT_BYTES,
        "/".join(["y" * 200] * 20),
        "\u00e9" * (MAX_SEGMENT_BYTES // 2),
    ],
)
def test_valid_paths_are_returned_unchanged(path: str) -> None:
    """Relative, "/"-separated paths without dot segments or control characters pass."""
    assert validate_file_path(path) == path


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("../x", "segment '..' not allowed"),
        ("a/../b", "segment '..' not allowed"),
        ("a/..", "segment '..' not allowed"),
        ("..", "segment '..' not allowed"),
        (".", "segment '.' not allowed"),
        ("a/./b", "segment '.' not allowed"),
        ("./a", "segment '.' not allowed"),
        ("/abs", "relative"),
        ("//abs", "relative"),
        ("a//b", "empty segment"),
        ("a\\b", "backslash"),
        ("..\\x", "backslash"),
        ("a\x00b", "control character '\\\\x00'"),
        ("a\nb", "control character"),
        ("a\tb", "control character"),
        ("a\x7fb", "control character"),
        ("a\x85b", "control character"),
        ("", "empty"),
        ("a/", "trailing"),
        ("a\udc80b", "UTF-8"),
        ("\ud800", "UTF-8"),
        ("x" * (MAX_SEGMENT_BYTES + 1), "segment longer"),
        ("\u00e9" * (MAX_SEGMENT_BYTES // 2 + 1), "segment longer"),
        ("/".join(["y" * 200] * 21), "bytes long"),
        ("\u6c34" * (MAX_PATH_BYTES // 3 + 1), "bytes long"),
    ],
)
def test_unsafe_paths_are_refused_with_the_reason(path: str, words: str) -> None:
    """Traversal, absolute, empty-segment, backslash, control and oversized paths are refused."""
    with pytest.raises(InvalidNameError, match=words) as info:
        validate_file_path(path)
    assert info.value.message.startswith("path: ")


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("invoice\u202efdp.exe", "reordering character '\\\\u202e' \\(RIGHT-TO-LEFT OVERRIDE\\)"),
        ("a\u2066b", "reordering"),
        ("zero\u200bwidth", "ZERO WIDTH SPACE"),
        ("join\u200d", "ZERO WIDTH JOINER"),
        ("\ufeffbom", "invisible"),
        ("soft\u00adhyphen", "SOFT HYPHEN"),
        ("no\u00a0break", "NO-BREAK SPACE"),
        ("ideographic\u3000space", "invisible"),
        ("line\u2028sep", "invisible"),
        ("private\ue000use", "invisible"),
        ("hangul\u3164filler", "HANGUL FILLER"),
    ],
)
def test_characters_that_hide_or_reorder_text_are_refused_in_new_names(
    path: str, words: str
) -> None:
    """A published path may not hold characters that hide or reorder text; reading still may."""
    with pytest.raises(InvalidNameError, match=words):
        validate_visible_path(path)
    assert validate_file_path(path) == path


visible_segment = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Cf", "Zl", "Zp", "Co"),
        blacklist_characters="/\\\u115f\u1160\u3164\uffa0\u034f",
    ).filter(lambda c: c == " " or not c.isspace()),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in {".", ".."})


@settings(max_examples=200, deadline=None)
@given(st.lists(visible_segment, min_size=1, max_size=6))
def test_visible_segments_are_accepted_in_new_names(segments: list[str]) -> None:
    """Paths of letters, marks, digits, symbols, punctuation and U+0020 pass the publish rule."""
    path = "/".join(segments)
    assert validate_visible_path(path) == path


segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in {".", ".."})


@settings(max_examples=200, deadline=None)
@given(st.lists(segment, min_size=1, max_size=6))
def test_joined_safe_segments_are_accepted(segments: list[str]) -> None:
    """Any non-empty list of safe segments joined with "/" is a valid path."""
    path = "/".join(segments)
    assert validate_file_path(path) == path


@settings(max_examples=200, deadline=None)
@given(
    st.lists(segment, max_size=4), st.sampled_from(["..", ".", ""]), st.lists(segment, max_size=4)
)
def test_a_dot_or_empty_segment_anywhere_is_refused(
    before: list[str], bad: str, after: list[str]
) -> None:
    """A ".", ".." or empty segment in any position makes the path invalid."""
    with pytest.raises(InvalidNameError):
        validate_file_path("/".join([*before, bad, *after]))
