"""Retention rules: parsed and validated at load time; which versions they delete (DESIGN 11)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from artifactstore.config import RetentionRule, load_settings
from artifactstore.errors import ConfigError
from artifactstore.registry.retention import VersionFacts, expired_versions, governing_rule

if TYPE_CHECKING:
    from pathlib import Path

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


def _versions(package: str, count: int, **facts: object) -> list[VersionFacts]:
    """``count`` versions, v1 oldest (one day apart, the newest published an hour ago)."""
    return [
        VersionFacts(
            package=package,
            version=f"v{i}",
            published_at=NOW - timedelta(days=count - i, hours=1),
            **facts,  # type: ignore[arg-type]
        )
        for i in range(1, count + 1)
    ]


def _names(found: list[VersionFacts]) -> set[str]:
    return {f"{v.package}@{v.version}" for v in found}


def test_keep_last_alone_keeps_exactly_the_newest() -> None:
    """``keep_last = 5`` alone: of 30 CI versions the 25 oldest go, whatever their age."""
    rules = [RetentionRule(package="ci-*", keep_last=5)]
    found = expired_versions(rules, _versions("ci-app", 30), NOW)
    assert _names(found) == {f"ci-app@v{i}" for i in range(1, 26)}


def test_keep_last_and_max_age_together() -> None:
    """Outside the newest 3, only versions older than 10 days go."""
    rules = [RetentionRule(keep_last=3, max_age_days=10)]
    found = expired_versions(rules, _versions("app", 20), NOW)
    # v20..v18 are the newest three; v1..v10 are 10-19 days old (+1 h): past 10 days.
    assert _names(found) == {f"app@v{i}" for i in range(1, 11)}


def test_max_age_alone_and_no_rule_keeps_everything() -> None:
    """An age-only rule deletes by age; a package no rule matches keeps every version."""
    rules = [RetentionRule(package="nightly", max_age_days=7)]
    versions = _versions("nightly", 10) + _versions("release", 10)
    assert _names(expired_versions(rules, versions, NOW)) == {f"nightly@v{i}" for i in range(1, 4)}
    assert expired_versions([], versions, NOW) == []


def test_first_matching_rule_wins_and_globs_match_each_field() -> None:
    """Rules are tried in order; package, producer and retention_class must all match."""
    rules = [
        RetentionRule(package="app-*", retention_class="release", keep_last=100),
        RetentionRule(package="app-*", keep_last=1),
    ]
    release = VersionFacts("app-x", "1", NOW, retention_class="release")
    ci = VersionFacts("app-x", "2", NOW, retention_class="ci")
    other = VersionFacts("lib", "1", NOW)
    assert (governing_rule(rules, release), governing_rule(rules, ci)) == (0, 1)
    assert governing_rule(rules, other) is None
    assert governing_rule([RetentionRule(producer="ci-*", keep_last=1)], other) is None


def test_yanked_versions_go_after_their_grace_even_among_the_newest() -> None:
    """A version yanked 8 days ago goes under ``yanked_max_age_days = 7``; pinned ones never."""
    rules = [RetentionRule(keep_last=10, yanked_max_age_days=7)]
    fresh = VersionFacts("app", "3", NOW - timedelta(days=9), yanked_at=NOW - timedelta(days=1))
    stale = VersionFacts("app", "2", NOW - timedelta(days=9), yanked_at=NOW - timedelta(days=8))
    pinned = VersionFacts(
        "app", "1", NOW - timedelta(days=9), yanked_at=NOW - timedelta(days=8), pinned=True
    )
    assert _names(expired_versions(rules, [fresh, stale, pinned], NOW)) == {"app@2"}


def test_pinned_versions_survive_keep_last() -> None:
    """A pinned version outside the newest N stays (and still counts as one of the package's)."""
    versions = _versions("ci-app", 4)
    versions[0] = VersionFacts("ci-app", "v1", versions[0].published_at, pinned=True)
    found = expired_versions([RetentionRule(keep_last=1)], versions, NOW)
    assert _names(found) == {"ci-app@v2", "ci-app@v3"}


def test_rules_load_from_toml(tmp_path: Path) -> None:
    """``[[retention.rules]]`` with ``match`` globs and limits becomes ``Settings.retention``."""
    path = tmp_path / "artifactstore.toml"
    path.write_text(
        "[[retention.rules]]\n"
        'match = { package = "app-*", retention_class = "ci" }\n'
        "keep_last = 20\nmax_age_days = 30\nyanked_max_age_days = 7\n"
        "[[retention.rules]]\nkeep_last = 5\n"
    )
    settings = load_settings(path, environ={})
    assert settings.retention == (
        RetentionRule(
            package="app-*",
            retention_class="ci",
            keep_last=20,
            max_age_days=30,
            yanked_max_age_days=7,
        ),
        RetentionRule(keep_last=5),
    )
    assert load_settings(environ={"XDG_DATA_HOME": str(tmp_path)}).retention == ()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[[retention.rules]]\nmatch = { package = 'a' }\n", "retention.rules[0].keep_last"),
        ("[[retention.rules]]\nkeep_last = -1\n", "retention.rules[0].keep_last"),
        ("[[retention.rules]]\nkeep_last = 'five'\n", "retention.rules[0].keep_last"),
        ("[[retention.rules]]\nkeep_last = 1\nmax_age = 3\n", "retention.rules[0].max_age"),
        (
            "[[retention.rules]]\nkeep_last = 1\nmatch = { pkg = 'a' }\n",
            "retention.rules[0].match.pkg",
        ),
        (
            "[[retention.rules]]\nkeep_last = 1\nmatch = { package = '' }\n",
            "retention.rules[0].match.package",
        ),
        ("[retention]\nrule = []\n", "retention.rule"),
    ],
)
def test_bad_rules_fail_at_load_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    """A typo or a bad value stops the server at start-up with the offending key."""
    path = tmp_path / "artifactstore.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_settings(path, environ={})
