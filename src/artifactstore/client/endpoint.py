"""Which server, with which token, and how to reach it: a client's settings.

- the server: the argument, else ``ARTIFACTSTORE_SERVER``, else
  ``http://127.0.0.1:8080``;
- the token: the argument, else ``ARTIFACTSTORE_TOKEN``, else, when the
  server is on loopback, the ``admin-token`` file the server writes under
  its data dir (``ARTIFACTSTORE_DATA_DIR`` or the platform's default), so a
  local admin token never leaves the machine;
- timeouts, the retry budget, a proxy (default: the environment's
  ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``) and a CA bundle for https.

Standard library and ``config`` only: settings resolve before any HTTP module loads.
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from artifactstore import errors
from artifactstore.config import (
    DEFAULT_SERVER_URL,
    ENV_DATA_DIR,
    ENV_SERVER,
    default_data_dir,
    is_loopback,
)
from artifactstore.protocol import ADMIN_TOKEN_FILE, ENV_TOKEN

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_RETRY_SECONDS",
    "Endpoint",
    "resolve_endpoint",
    "resolve_server",
    "resolve_token",
]

DEFAULT_RETRY_SECONDS = 120.0
"""How long one operation is retried by default: long enough for a server to restart."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where requests go, with which credentials, and how long they may take."""

    url: str
    token: str | None
    timeout: float = 60.0
    """Seconds a connection may sit without progress (read or write)."""
    connect_timeout: float = 10.0
    retry_seconds: float = DEFAULT_RETRY_SECONDS
    """Longest one operation is retried (transport failures and 5xx answers)."""
    proxy: str | None = None
    """A proxy URL; None: the environment's, unless ``trust_env`` is False."""
    ca_bundle: str | None = None
    """A PEM file of CAs to trust for https; None: the system's."""
    trust_env: bool = True

    def __repr__(self) -> str:
        return f"Endpoint(url={self.url!r}, token={'set' if self.token else 'none'})"

    @property
    def host(self) -> str:
        """The server's host name or address."""
        return urlsplit(self.url).hostname or ""

    def proxy_for_bulk(self) -> str | None:
        """The proxy bulk bodies must go through, or None when they may go straight."""
        if self.proxy is not None:
            return self.proxy
        if not self.trust_env:
            return None
        proxies = urllib.request.getproxies()
        scheme = urlsplit(self.url).scheme
        found = proxies.get(scheme) or proxies.get("all")
        if not found or urllib.request.proxy_bypass(self.host):
            return None
        return found


def resolve_server(option: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The server's base URL without a trailing slash.

    Raises:
        InvalidInputError: the URL is not ``http://`` or ``https://`` with a host.
    """
    env = os.environ if environ is None else environ
    text = (option or env.get(ENV_SERVER) or DEFAULT_SERVER_URL).strip()
    try:
        parts = urlsplit(text)
        valid = parts.scheme in {"http", "https"} and bool(parts.hostname)
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        valid = False
    if not valid or any(c.isspace() for c in text):
        raise errors.InvalidInputError(
            f"server URL {text!r} must look like http://host:port", value=text
        )
    return text.rstrip("/")


def resolve_token(
    server_url: str, option: str | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The bearer token to send, or None to go anonymous (reads on loopback need none).

    The ``admin-token`` file is only ever sent to a loopback server. An
    unreadable file counts as absent.
    """
    env = os.environ if environ is None else environ
    if option:
        return option.strip()
    if env.get(ENV_TOKEN):
        return env[ENV_TOKEN].strip()
    if not is_loopback(urlsplit(server_url).hostname or ""):
        return None
    data_dir = Path(env[ENV_DATA_DIR]) if env.get(ENV_DATA_DIR) else default_data_dir(env)
    try:
        token = (data_dir.expanduser() / ADMIN_TOKEN_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None


def resolve_endpoint(
    server: str | None = None,
    token: str | None = None,
    *,
    timeout: float = 60.0,
    connect_timeout: float = 10.0,
    retry_seconds: float = DEFAULT_RETRY_SECONDS,
    proxy: str | None = None,
    ca_bundle: str | None = None,
    trust_env: bool = True,
) -> Endpoint:
    """The endpoint from the arguments and the environment (see the module doc)."""
    url = resolve_server(server)
    return Endpoint(
        url=url,
        token=resolve_token(url, token),
        timeout=timeout,
        connect_timeout=connect_timeout,
        retry_seconds=retry_seconds,
        proxy=proxy,
        ca_bundle=ca_bundle,
        trust_env=trust_env,
    )
