"""Errors only a client has: the server could not be reached."""

from __future__ import annotations

from artifactstore import errors

__all__ = ["ServerUnreachableError"]


class ServerUnreachableError(errors.UnavailableError):
    """Raised when the server cannot be connected to, or the connection broke."""

    code = "server_unreachable"
