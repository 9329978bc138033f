"""artifactstore.models: what the server writes, the client reads back; bad shapes refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from artifactstore import errors
from artifactstore.digests import Digest
from artifactstore.models import BlobInfo, EventInfo, LocationInfo, VersionInfo

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SHA = Digest("sha256", bytes(range(32)))
B3 = Digest("blake3", bytes(range(32, 64)))


def test_records_round_trip_through_json() -> None:
    blob = BlobInfo(SHA, B3, 5, NOW, (LocationInfo("local", "verified", None, NOW, None),))
    assert blob.to_json()["sha256"] == f"sha256:{SHA.hex}"
    assert BlobInfo.from_json(blob.to_json()) == blob
    bare = BlobInfo(SHA, B3, 5)
    assert set(bare.to_json()) == {"sha256", "blake3", "size"}
    assert BlobInfo.from_json(bare.to_json()) == bare
    version = VersionInfo(
        package="p",
        version="1",
        manifest_sha256=SHA,
        published_at=NOW,
        actor="ci",
        producer=None,
        retention_class="keep",
        file_count=2,
        total_size=10,
        yanked=True,
        yanked_at=NOW,
        yank_reason="bad",
    )
    assert VersionInfo.from_json({**version.to_json(), "manifest": {}}) == version
    event = EventInfo(1, "id", "v1.x", NOW, "a", "00", "11", {"k": [1]})
    assert EventInfo.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    "broken",
    [
        {"blake3": f"blake3:{B3.hex}", "size": 5},  # no sha256
        {"sha256": f"blake3:{B3.hex}", "blake3": f"blake3:{B3.hex}", "size": 5},  # wrong algorithm
        {"sha256": f"sha256:{SHA.hex}", "blake3": f"blake3:{B3.hex}", "size": "5"},  # not an int
        {"sha256": f"sha256:{SHA.hex}", "blake3": f"blake3:{B3.hex}", "size": 5, "stored_at": "x"},
        ["not", "an", "object"],
    ],
)
def test_an_answer_of_another_shape_is_an_integrity_error(broken: object) -> None:
    with pytest.raises(errors.IntegrityError, match="not a BlobInfo"):
        BlobInfo.from_json(broken)
