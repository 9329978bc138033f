"""Retention: which versions the rules of ``[[retention.rules]]`` delete (DESIGN section 11).

Pure decisions over facts the caller reads from the views, so the same
answer comes from ``gc --dry-run``, ``gc`` and the periodic pass, and the
rules can be tested without a database. Not here: reading the versions,
recording ``v1.package.deleted`` (the GC pass does both).

The rules, as DESIGN section 11 words them:

* the first rule whose globs all match a version governs it; a version no
  rule matches is kept;
* ``keep_last = N``: the newest N versions (by publish time) a rule governs
  in one package are never deleted for age; older ones go when they are
  older than ``max_age_days``, or at once when the rule sets no age
  (``keep_last = 5`` alone keeps exactly the newest five);
* ``max_age_days`` alone: every version older than that goes;
* ``yanked_max_age_days``: a yanked version also goes once it has been
  yanked that long, newest or not;
* a pinned version is never deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from artifactstore.config import RetentionRule

__all__ = ["VersionFacts", "expired_versions", "governing_rule"]


@dataclass(frozen=True, slots=True)
class VersionFacts:
    """What retention needs to know of one live (not deleted) version."""

    package: str
    version: str
    published_at: datetime
    producer: str | None = None
    retention_class: str | None = None
    yanked_at: datetime | None = None
    pinned: bool = False


def _matches(glob: str | None, value: str | None) -> bool:
    if glob is None:
        return True
    return value is not None and fnmatchcase(value, glob)


def governing_rule(rules: Sequence[RetentionRule], v: VersionFacts) -> int | None:
    """The index of the first rule matching ``v``; None when no rule does (keep it)."""
    for i, rule in enumerate(rules):
        if (
            _matches(rule.package, v.package)
            and _matches(rule.producer, v.producer)
            and _matches(rule.retention_class, v.retention_class)
        ):
            return i
    return None


def expired_versions(
    rules: Sequence[RetentionRule], versions: Iterable[VersionFacts], now: datetime
) -> list[VersionFacts]:
    """The versions the rules delete at ``now``, newest first within each package and rule."""
    groups: dict[tuple[str, int], list[VersionFacts]] = {}
    for v in versions:
        index = governing_rule(rules, v)
        if index is not None:
            groups.setdefault((v.package, index), []).append(v)
    doomed: list[VersionFacts] = []
    for (_, index), members in sorted(groups.items()):
        rule = rules[index]
        members.sort(key=lambda v: (v.published_at, v.version), reverse=True)
        for rank, v in enumerate(members):
            if v.pinned:
                continue
            if _yanked_long_enough(rule.yanked_max_age_days, v, now) or _aged_out(
                rule, rank, v, now
            ):
                doomed.append(v)
    return doomed


def _yanked_long_enough(days: int | None, v: VersionFacts, now: datetime) -> bool:
    return days is not None and v.yanked_at is not None and now - v.yanked_at > timedelta(days)


def _aged_out(rule: RetentionRule, rank: int, v: VersionFacts, now: datetime) -> bool:
    """Outside the newest ``keep_last`` and past ``max_age_days`` (whichever of the two is set)."""
    if rule.keep_last is None and rule.max_age_days is None:
        return False  # a yanked-only rule
    if rule.keep_last is not None and rank < rule.keep_last:
        return False
    return rule.max_age_days is None or now - v.published_at > timedelta(rule.max_age_days)
