"""The event log: vocabulary, payloads, hash chain and append (DESIGN section 2).

This package never imports ``views``: views consume events, not the reverse.
"""

from artifactstore.events.log import (
    GENESIS_HASH,
    Event,
    LogHead,
    chain_events,
    chain_hash,
    iter_events,
    last_seq,
    lock_log,
    queue_append,
    read_events,
)
from artifactstore.events.payloads import (
    BlobStored,
    EventPayload,
    LocationDeleted,
    LocationFailed,
    LocationMissing,
    LocationVerified,
    PackageDeleted,
    PackagePublished,
    PackageYanked,
    TokenCreated,
    TokenRevoked,
    decode_payload,
)
from artifactstore.events.types import EventType
from artifactstore.events.verify import ChainReport, verify_chain

__all__ = [
    "GENESIS_HASH",
    "BlobStored",
    "ChainReport",
    "Event",
    "EventPayload",
    "EventType",
    "LocationDeleted",
    "LocationFailed",
    "LocationMissing",
    "LocationVerified",
    "LogHead",
    "PackageDeleted",
    "PackagePublished",
    "PackageYanked",
    "TokenCreated",
    "TokenRevoked",
    "chain_events",
    "chain_hash",
    "decode_payload",
    "iter_events",
    "last_seq",
    "lock_log",
    "queue_append",
    "read_events",
    "verify_chain",
]
