"""Which remembered upload sessions a re-run may resume where (``client.session_cache``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from artifactstore.client.session_cache import MAX_RECORDS, SessionCache

if TYPE_CHECKING:
    from pathlib import Path

BLOB = "ab" * 32
LB, REPLICA, OTHER = "http://lb:8080", "http://replica-2:8080", "http://elsewhere:8080"


def _ids(cache: SessionCache, server: str, deployment: str | None) -> list[str]:
    return [r.session for r in cache.candidates(server, deployment, BLOB, 10)]


def test_a_session_opened_through_one_url_is_offered_through_another(tmp_path: Path) -> None:
    """No deployment named: another URL may reach the same deployment, so its session is tried."""
    cache = SessionCache(tmp_path)
    cache.save(LB, None, BLOB, 10, "s-lb")
    assert _ids(cache, REPLICA, None) == ["s-lb"]
    (found,) = cache.candidates(REPLICA, None, BLOB, 10)
    assert not found.same_place(REPLICA, None)  # its 404 there would not prove it gone
    assert found.same_place(LB, None)


def test_this_urls_session_comes_first(tmp_path: Path) -> None:
    """The record of the URL asked is tried before records of other URLs."""
    cache = SessionCache(tmp_path)
    cache.save(REPLICA, None, BLOB, 10, "s-replica")
    cache.save(LB, None, BLOB, 10, "s-lb")
    assert _ids(cache, REPLICA, None) == ["s-replica", "s-lb"]
    assert _ids(cache, LB, None) == ["s-lb", "s-replica"]


def test_a_foreign_deployments_session_is_never_offered(tmp_path: Path) -> None:
    """Same URL, another deployment behind it now: its id is not sent there."""
    cache = SessionCache(tmp_path)
    cache.save(LB, "dep-a", BLOB, 10, "s-a")
    assert _ids(cache, LB, "dep-b") == []
    assert _ids(cache, OTHER, "dep-a") == ["s-a"]
    (found,) = cache.candidates(OTHER, "dep-a", BLOB, 10)
    assert found.same_place(OTHER, "dep-a")  # one deployment: a 404 anywhere is final


def test_save_keeps_one_session_per_place_and_forget_drops_one(tmp_path: Path) -> None:
    """A new session replaces the place's old one; forgetting one keeps the others."""
    cache = SessionCache(tmp_path)
    cache.save(LB, "dep-a", BLOB, 10, "s-old")
    cache.save(REPLICA, "dep-a", BLOB, 10, "s-new")  # same deployment: replaces s-old
    cache.save(OTHER, "dep-b", BLOB, 10, "s-b")
    assert _ids(cache, LB, "dep-a") == ["s-new"]
    cache.forget(BLOB, "s-new")
    assert _ids(cache, LB, "dep-a") == []
    assert _ids(cache, OTHER, "dep-b") == ["s-b"]
    cache.forget(BLOB, "s-b")
    assert not list(tmp_path.glob("*.json"))


def test_records_are_bounded_and_sizes_must_match(tmp_path: Path) -> None:
    """At most MAX_RECORDS per blob, the newest; a record of another size is not offered."""
    cache = SessionCache(tmp_path)
    for i in range(MAX_RECORDS + 3):
        cache.save(f"http://r{i}:8080", None, BLOB, 10, f"s{i}")
    found = _ids(cache, "http://r0:8080", None)
    assert len(found) == MAX_RECORDS
    assert "s0" not in found
    assert found[0] == f"s{MAX_RECORDS + 2}"
    assert cache.candidates(LB, None, BLOB, 11) == []


def test_a_record_in_the_format_before_deployments_is_read(tmp_path: Path) -> None:
    """``{"server", "session", "size"}`` at the top level still resumes."""
    (tmp_path / f"{BLOB}.json").write_text(json.dumps({"server": LB, "session": "s1", "size": 10}))
    assert _ids(SessionCache(tmp_path), LB, "dep-a") == ["s1"]
