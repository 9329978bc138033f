"""The event log: vocabulary, payloads, hash chain and append (DESIGN section 2).

This package never imports ``views``: views consume events, not the reverse.
"""

from artifactstore.events.log import (
    GENESIS_HASH,
    ChainReport,
    Event,
    LogHead,
    append,
    chain_events,
    chain_hash,
    iter_events,
    last_seq,
    lock_log,
    read_events,
    verify_chain,
)
from artifactstore.events.payloads import (
    BlobStored,
    EventPayload,
    LocationDeleted,
    LocationFailed,
    LocationMissing,
    LocationVerified,
    PackagePublished,
    PackageYanked,
    TokenCreated,
    TokenRevoked,
    decode_payload,
)
from artifactstore.events.types import EventType

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
    "PackagePublished",
    "PackageYanked",
    "TokenCreated",
    "TokenRevoked",
    "append",
    "chain_events",
    "chain_hash",
    "decode_payload",
    "iter_events",
    "last_seq",
    "lock_log",
    "read_events",
    "verify_chain",
]
