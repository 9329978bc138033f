"""Shared helpers of the gateway tests: the credential, the data-set record, a threaded server."""

from __future__ import annotations

import io
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import uvicorn

if TYPE_CHECKING:
    from collections.abc import Iterator

    from artifactstore.gateway.app import GatewayApp

ACCESS_KEY = "reader"
SECRET_KEY = "gateway-test-secret-0123456789"
MANY_FILES = 1205


@dataclass
class DataSet:
    """What was published: object bytes by ``(bucket, key)``; yanked keys apart."""

    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    yanked: set[tuple[str, str]] = field(default_factory=set)

    def keys(self, bucket: str, *, include_yanked: bool = False) -> list[str]:
        """The bucket's keys in S3 (UTF-8 byte) order."""
        keys = [
            k
            for (b, k) in self.objects
            if b == bucket and (include_yanked or (b, k) not in self.yanked)
        ]
        return sorted(keys, key=lambda k: k.encode())


def parquet_bytes() -> bytes:
    """A small Parquet file: 1000 rows of ints, floats and text."""
    table = pa.table(
        {
            "id": list(range(1000)),
            "value": [i / 7 for i in range(1000)],
            "name": [f"row-{i}" for i in range(1000)],
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadServer:
    """A real uvicorn server in a thread (its own event loop), stopped on demand."""

    def __init__(self, app: GatewayApp, port: int) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="on", log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        """Start and wait until the socket accepts (or the thread died)."""
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(30)


class RawBody:
    """The slice of a urllib3 response that botocore reads (for ``before-send`` handlers)."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, *_: object, **__: object) -> Iterator[bytes]:
        """The whole body as one chunk."""
        yield self._body

    def read(self, *_: object, **__: object) -> bytes:
        """The body once, then nothing."""
        body, self._body = self._body, b""
        return body
