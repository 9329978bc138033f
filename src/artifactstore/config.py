"""Configuration: ``artifactstore.toml`` plus environment overrides, read once.

Zero configuration works (DESIGN section 7): everything lives under the data
dir, with an embedded PostgreSQL and one ``local`` backend. A file (from
``--config`` or ``ARTIFACTSTORE_CONFIG``) can set anything; single
environment variables override single values (the table ``ENV_OVERRIDES``).
Secrets are never inline: they are ``env:NAME`` or ``file:/path`` references,
resolved when used, and never printed (``SecretRef.__repr__``).

Every bad value fails at load time with a ``ConfigError`` naming the key and
where it came from. The result is frozen dataclasses; nothing else in the
code reads the environment for settings.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from artifactstore.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_API_PORT",
    "DEFAULT_GATEWAY_PORT",
    "DEFAULT_SERVER_URL",
    "ENV_CONFIG",
    "ENV_DATABASE_URL",
    "ENV_DATA_DIR",
    "ENV_SERVER",
    "BackendSettings",
    "DatabaseSettings",
    "GatewayCredential",
    "GatewaySettings",
    "LocalBackendSettings",
    "PostgresBackendSettings",
    "Route",
    "S3BackendSettings",
    "SecretRef",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "TracingSettings",
    "UploadSettings",
    "default_data_dir",
    "is_loopback",
    "load_settings",
]

ENV_CONFIG = "ARTIFACTSTORE_CONFIG"
ENV_DATA_DIR = "ARTIFACTSTORE_DATA_DIR"
ENV_DATABASE_URL = "ARTIFACTSTORE_DATABASE_URL"
ENV_SERVER = "ARTIFACTSTORE_SERVER"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8080
DEFAULT_GATEWAY_PORT = 9000
DEFAULT_SERVER_URL = f"http://{DEFAULT_HOST}:{DEFAULT_API_PORT}"
DEFAULT_BACKEND_NAME = "local"
DEFAULT_BLOCK_SIZE = 1024 * 1024
DEFAULT_MULTIPART_THRESHOLD = 64 * 1024 * 1024
DEFAULT_MULTIPART_CHUNK = 16 * 1024 * 1024
DEFAULT_MAX_BLOB_BYTES = 1024**4  # 1 TiB
DEFAULT_MAX_CHUNK_BYTES = 16 * 1024**3  # 16 GiB per PATCH
DEFAULT_MAX_INLINE_BYTES = 16 * 1024**2  # 16 MiB per POST /v1/blobs
DEFAULT_UPLOAD_EXPIRY_SECONDS = 24 * 3600
DEFAULT_EXPIRY_INTERVAL_SECONDS = 60  # how often a replica tries the upload-expiry job
# Slow peers (docs/OPERATOR.md "Timeouts and limits"): every wait has an end.
DEFAULT_HEADER_TIMEOUT_SECONDS = 30  # a request head must be complete within this
DEFAULT_BODY_TIMEOUT_SECONDS = 60  # longest wait for the next piece of a request body
DEFAULT_KEEP_ALIVE_TIMEOUT_SECONDS = 5  # idle keep-alive connections are closed after this
DEFAULT_MAX_CONNECTIONS = 1000  # per listener; more are answered 503 and closed
DEFAULT_MAX_HEADER_BYTES = 64 * 1024  # a longer request head is answered 431 and closed
DEFAULT_READINESS_TIMEOUT_SECONDS = 2  # per /readyz check (the database, each backend)
DEFAULT_DRAIN_SECONDS = 5  # on SIGTERM: /readyz 503 while still serving, before closing listeners
DEFAULT_DB_CONNECT_TIMEOUT_SECONDS = 10
DEFAULT_DB_COMMAND_TIMEOUT_SECONDS = 60
DEFAULT_S3_CONNECT_TIMEOUT_SECONDS = 5
DEFAULT_S3_READ_TIMEOUT_SECONDS = 30
DEFAULT_S3_MAX_ATTEMPTS = 3

# Environment variable -> (section, key, kind). Each name is written once, here.
ENV_OVERRIDES: dict[str, tuple[str, str, type]] = {
    ENV_DATABASE_URL: ("database", "url", str),
    "ARTIFACTSTORE_SERVER_HOST": ("server", "host", str),
    "ARTIFACTSTORE_SERVER_PORT": ("server", "port", int),
    "ARTIFACTSTORE_SERVER_DRAIN_SECONDS": ("server", "drain_seconds", int),
    "ARTIFACTSTORE_GATEWAY_PORT": ("gateway", "port", int),
    "ARTIFACTSTORE_STORAGE_DEFAULT": ("storage", "default", str),
    "ARTIFACTSTORE_UPLOADS_MAX_BLOB_BYTES": ("uploads", "max_blob_bytes", int),
    "ARTIFACTSTORE_UPLOADS_EXPIRY_SECONDS": ("uploads", "expiry_seconds", int),
}

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A reference to a secret (``env:NAME`` or ``file:/path``), resolved on use."""

    ref: str
    key: str

    def __repr__(self) -> str:
        return f"SecretRef({self.ref.split(':', 1)[0]}:..., key={self.key!r})"

    def reveal(self) -> str:
        """Read the secret now.

        Raises:
            ConfigError: the variable is unset, or the file unreadable, not
                UTF-8 text or empty; the message names the config key.
        """
        scheme, _, target = self.ref.partition(":")
        if scheme == "env":
            value = os.environ.get(target)
            if not value:
                raise ConfigError(f"{self.key}: environment variable {target} is not set")
            return value
        try:
            value = Path(target).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{self.key}: cannot read secret file {target}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{self.key}: secret file {target} is not UTF-8 text"
                f" (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
            ) from exc
        if not value:
            raise ConfigError(f"{self.key}: secret file {target} is empty")
        return value


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """``[database]``: absent ``url`` means the embedded cluster under the data dir."""

    url: str | None = None
    connect_timeout_seconds: int = DEFAULT_DB_CONNECT_TIMEOUT_SECONDS
    command_timeout_seconds: int = DEFAULT_DB_COMMAND_TIMEOUT_SECONDS


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """``[server]``: the REST API listener and its access policy."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_API_PORT
    # None: anonymous reads exactly when bound to loopback.
    anonymous_read: bool | None = None
    # Slow clients, on both listeners (the REST API and the S3 gateway).
    header_timeout_seconds: int = DEFAULT_HEADER_TIMEOUT_SECONDS
    body_timeout_seconds: int = DEFAULT_BODY_TIMEOUT_SECONDS
    keep_alive_timeout_seconds: int = DEFAULT_KEEP_ALIVE_TIMEOUT_SECONDS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    readiness_timeout_seconds: int = DEFAULT_READINESS_TIMEOUT_SECONDS
    # Stopping: seconds of /readyz 503 (load balancers move away) before listeners close.
    drain_seconds: int = DEFAULT_DRAIN_SECONDS


@dataclass(frozen=True, slots=True)
class UploadSettings:
    """``[uploads]``: limits and expiry of upload sessions."""

    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    expiry_seconds: int = DEFAULT_UPLOAD_EXPIRY_SECONDS
    expiry_interval_seconds: int = DEFAULT_EXPIRY_INTERVAL_SECONDS
    max_inline_bytes: int = DEFAULT_MAX_INLINE_BYTES


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """``[tracing]``: W3C ``traceparent`` in and out of the REST API, trace ids in the log."""

    enabled: bool = False


@dataclass(frozen=True, slots=True)
class GatewayCredential:
    """One ``[[gateway.credentials]]`` entry: an access key and its secret's reference."""

    access_key_id: str
    secret_access_key: SecretRef


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """``[gateway]``: the S3 read gateway listener."""

    host: str | None = None  # None: same as server.host
    port: int = DEFAULT_GATEWAY_PORT
    anonymous_read: bool = True  # honoured only on loopback
    list_yanked: bool = False
    credentials: tuple[GatewayCredential, ...] = ()


@dataclass(frozen=True, slots=True)
class LocalBackendSettings:
    """``type = "local"``: blobs as files under ``root``."""

    name: str
    root: Path
    type: Literal["local"] = "local"


@dataclass(frozen=True, slots=True)
class PostgresBackendSettings:
    """``type = "postgres"``: blobs as bytea blocks; ``url`` absent means the registry DB."""

    name: str
    block_size: int = DEFAULT_BLOCK_SIZE
    url: str | None = None
    type: Literal["postgres"] = "postgres"


@dataclass(frozen=True, slots=True)
class S3BackendSettings:
    """``type = "s3"``: blobs as objects in one bucket of any S3 endpoint."""

    name: str
    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    key_prefix: str = ""
    access_key_ref: SecretRef | None = None
    secret_key_ref: SecretRef | None = None
    storage_class: str | None = None
    sse: str | None = None
    multipart_threshold_bytes: int = DEFAULT_MULTIPART_THRESHOLD
    multipart_chunk_bytes: int = DEFAULT_MULTIPART_CHUNK
    connect_timeout_seconds: int = DEFAULT_S3_CONNECT_TIMEOUT_SECONDS
    read_timeout_seconds: int = DEFAULT_S3_READ_TIMEOUT_SECONDS
    max_attempts: int = DEFAULT_S3_MAX_ATTEMPTS
    type: Literal["s3"] = "s3"


BackendSettings: TypeAlias = LocalBackendSettings | PostgresBackendSettings | S3BackendSettings


@dataclass(frozen=True, slots=True)
class Route:
    """One ``[[storage.routes]]`` entry; ``None`` matchers match anything."""

    backends: tuple[str, ...]
    retention_class: str | None = None
    producer: str | None = None  # fnmatch glob


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """``[storage]``: the configured backends, the default, and routes (first match wins)."""

    default: str
    backends: dict[str, BackendSettings]
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """One ``[[retention.rules]]`` entry (DESIGN section 11); ``None`` matchers match anything.

    Matchers are fnmatch globs; of the limits, at least one is set.
    """

    package: str | None = None
    producer: str | None = None
    retention_class: str | None = None
    keep_last: int | None = None
    max_age_days: int | None = None
    yanked_max_age_days: int | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything artifactstore reads from configuration, validated."""

    data_dir: Path
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    uploads: UploadSettings = field(default_factory=UploadSettings)
    storage: StorageSettings | None = None
    tracing: TracingSettings = field(default_factory=TracingSettings)
    retention: tuple[RetentionRule, ...] = ()
    source: str = "defaults"

    @property
    def staging_dir(self) -> Path:
        """Where upload sessions keep their bytes until finalized."""
        return self.data_dir / "staging"

    @property
    def effective_storage(self) -> StorageSettings:
        """``storage`` as configured, or one ``local`` backend under the data dir."""
        if self.storage is not None:
            return self.storage
        local = LocalBackendSettings(name=DEFAULT_BACKEND_NAME, root=self.data_dir / "blobs")
        return StorageSettings(default=DEFAULT_BACKEND_NAME, backends={local.name: local})

    def api_anonymous_read(self, host: str) -> bool:
        """Whether the REST API serves reads without a token when bound to ``host``."""
        if self.server.anonymous_read is None:
            return is_loopback(host)
        return self.server.anonymous_read


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/artifactstore``, i.e. ``~/.local/share/artifactstore`` by default."""
    xdg = (os.environ if environ is None else environ).get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "artifactstore"


class _Reader:
    """Typed access to one TOML table that names keys in its errors."""

    def __init__(self, table: dict[str, Any], where: str, source: str) -> None:
        self.table = table
        self.where = where
        self.source = source
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def fail(self, name: str, why: str) -> ConfigError:
        return ConfigError(f"{self.key(name)} ({self.source}): {why}", key=self.key(name))

    def get(self, name: str, kind: type, default: Any = None) -> Any:
        self.seen.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        if kind is int and isinstance(value, bool):
            raise self.fail(name, "expected an integer, got a boolean")
        if not isinstance(value, kind):
            raise self.fail(name, f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    def positive_int(self, name: str, default: int) -> int:
        value: int = self.get(name, int, default)
        if value <= 0:
            raise self.fail(name, "must be a positive integer")
        return value

    def non_negative_int(self, name: str, default: int) -> int:
        value: int = self.get(name, int, default)
        if value < 0:
            raise self.fail(name, "must be zero or a positive integer")
        return value

    def port(self, name: str, default: int) -> int:
        value: int = self.get(name, int, default)
        if not 0 <= value <= 65535:  # noqa: PLR2004 - the TCP port range
            raise self.fail(name, "must be a port number (0-65535)")
        return value

    def secret(self, name: str) -> SecretRef | None:
        ref: str | None = self.get(name, str)
        if ref is None:
            return None
        scheme, sep, target = ref.partition(":")
        if not sep or scheme not in {"env", "file"} or not target:
            raise self.fail(
                name,
                "must be a secret reference 'env:NAME' or 'file:/path'; inline secrets are refused",
            )
        return SecretRef(ref, self.key(name))

    def table_of(self, name: str) -> dict[str, Any]:
        return self.get(name, dict, {})  # type: ignore[no-any-return]

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.seen)
        if unknown:
            raise self.fail(unknown[0], "unknown setting")


def _apply_env(raw: dict[str, Any], environ: dict[str, str] | os._Environ[str]) -> list[str]:
    applied = []
    for var, (section, key, kind) in ENV_OVERRIDES.items():
        value = environ.get(var)
        if value is None or value == "":
            continue
        if kind is int:
            try:
                parsed: Any = int(value)
            except ValueError:
                raise ConfigError(
                    f"{section}.{key} (environment {var}): expected an integer, got {value!r}",
                    key=f"{section}.{key}",
                ) from None
        else:
            parsed = value
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{section} must be a table", key=section)
        table[key] = parsed
        applied.append(var)
    return applied


def _backend(name: str, r: _Reader, data_dir: Path) -> BackendSettings:
    if not _NAME_RE.fullmatch(name):
        raise r.fail("", f"backend name {name!r} must match {_NAME_RE.pattern}")
    kind = r.get("type", str)
    backend: BackendSettings
    if kind == "local":
        root_text = r.get("root", str, str(data_dir / "blobs" / name))
        root = Path(root_text).expanduser()
        backend = LocalBackendSettings(
            name=name, root=root if root.is_absolute() else data_dir / root
        )
    elif kind == "postgres":
        backend = PostgresBackendSettings(
            name=name,
            block_size=r.positive_int("block_size", DEFAULT_BLOCK_SIZE),
            url=r.get("url", str),
        )
    elif kind == "s3":
        bucket = r.get("bucket", str)
        if not bucket:
            raise r.fail("bucket", "required for an s3 backend")
        threshold = r.positive_int("multipart_threshold_bytes", DEFAULT_MULTIPART_THRESHOLD)
        chunk = r.positive_int("multipart_chunk_bytes", DEFAULT_MULTIPART_CHUNK)
        if chunk < 5 * 1024 * 1024:
            raise r.fail("multipart_chunk_bytes", "S3 parts must be at least 5 MiB")
        backend = S3BackendSettings(
            name=name,
            bucket=bucket,
            endpoint_url=r.get("endpoint_url", str),
            region=r.get("region", str, "us-east-1"),
            key_prefix=r.get("key_prefix", str, "").strip("/"),
            access_key_ref=r.secret("access_key_ref"),
            secret_key_ref=r.secret("secret_key_ref"),
            storage_class=r.get("storage_class", str),
            sse=r.get("sse", str),
            multipart_threshold_bytes=threshold,
            multipart_chunk_bytes=chunk,
            connect_timeout_seconds=r.positive_int(
                "connect_timeout_seconds", DEFAULT_S3_CONNECT_TIMEOUT_SECONDS
            ),
            read_timeout_seconds=r.positive_int(
                "read_timeout_seconds", DEFAULT_S3_READ_TIMEOUT_SECONDS
            ),
            max_attempts=r.positive_int("max_attempts", DEFAULT_S3_MAX_ATTEMPTS),
        )
        if (backend.access_key_ref is None) != (backend.secret_key_ref is None):
            raise r.fail("access_key_ref", "set both access_key_ref and secret_key_ref, or neither")
    else:
        raise r.fail("type", f"must be one of local, postgres, s3; got {kind!r}")
    r.finish()
    return backend


def _storage(r: _Reader, data_dir: Path) -> StorageSettings | None:
    if not r.table:
        return None
    backends_table = r.table_of("backends")
    backends: dict[str, BackendSettings] = {}
    for name, table in backends_table.items():
        if not isinstance(table, dict):
            raise r.fail(f"backends.{name}", "must be a table")
        backends[name] = _backend(
            name, _Reader(table, r.key(f"backends.{name}"), r.source), data_dir
        )
    if not backends:
        local = LocalBackendSettings(name=DEFAULT_BACKEND_NAME, root=data_dir / "blobs")
        backends[local.name] = local
    default = r.get("default", str, next(iter(backends)))
    if default not in backends:
        raise r.fail("default", f"names no configured backend (have: {', '.join(backends)})")
    routes = []
    for i, entry in enumerate(r.get("routes", list, [])):
        if not isinstance(entry, dict):
            raise r.fail(f"routes[{i}]", "must be a table")
        rr = _Reader(entry, r.key(f"routes[{i}]"), r.source)
        match = _Reader(rr.table_of("match"), rr.key("match"), r.source)
        names = rr.get("backends", list, [])
        if not names or not all(isinstance(n, str) for n in names):
            raise rr.fail("backends", "must be a non-empty list of backend names")
        for n in names:
            if n not in backends:
                raise rr.fail("backends", f"names unknown backend {n!r}")
        routes.append(
            Route(
                backends=tuple(dict.fromkeys(names)),
                retention_class=match.get("retention_class", str),
                producer=match.get("producer", str),
            )
        )
        match.finish()
        rr.finish()
    r.finish()
    return StorageSettings(default=default, backends=backends, routes=tuple(routes))


_RETENTION_LIMITS = ("keep_last", "max_age_days", "yanked_max_age_days")


def _retention(r: _Reader) -> tuple[RetentionRule, ...]:
    """``[[retention.rules]]``: validated now, so a typo fails at start-up naming its key."""
    rules = []
    for i, entry in enumerate(r.get("rules", list, [])):
        if not isinstance(entry, dict):
            raise r.fail(f"rules[{i}]", "must be a table")
        rr = _Reader(entry, r.key(f"rules[{i}]"), r.source)
        match = _Reader(rr.table_of("match"), rr.key("match"), r.source)
        globs = {name: match.get(name, str) for name in ("package", "producer", "retention_class")}
        for name, glob in globs.items():
            if glob is not None and not glob:
                raise match.fail(name, "must be a non-empty glob")
        limits = {name: rr.get(name, int) for name in _RETENTION_LIMITS}
        for name, value in limits.items():
            if value is not None and value < 0:
                raise rr.fail(name, "must be zero or a positive integer")
        if all(value is None for value in limits.values()):
            raise rr.fail(
                "keep_last", f"a rule needs at least one of {', '.join(_RETENTION_LIMITS)}"
            )
        match.finish()
        rr.finish()
        rules.append(RetentionRule(**globs, **limits))
    r.finish()
    return tuple(rules)


def load_settings(
    config_path: Path | None = None,
    *,
    data_dir: Path | None = None,
    environ: dict[str, str] | os._Environ[str] | None = None,
) -> Settings:
    """Read configuration: explicit path, else ``ARTIFACTSTORE_CONFIG``, else defaults.

    Raises:
        ConfigError: unreadable file, bad TOML, unknown key or bad value (named).
    """
    env = os.environ if environ is None else environ
    if config_path is None and env.get(ENV_CONFIG):
        config_path = Path(env[ENV_CONFIG])
    raw: dict[str, Any] = {}
    source = "defaults"
    if config_path is not None:
        source = str(config_path)
        try:
            raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: invalid TOML: {exc}") from exc
    applied = _apply_env(raw, env)
    if applied:
        source += " + environment " + ", ".join(applied)

    top = _Reader(raw, "", source)
    if data_dir is None:
        if env.get(ENV_DATA_DIR):
            data_dir = Path(env[ENV_DATA_DIR])
        else:
            configured = top.get("data_dir", str)
            data_dir = Path(configured) if configured else default_data_dir(env)
    else:
        top.seen.add("data_dir")
    data_dir = data_dir.expanduser().absolute()

    db = _Reader(top.table_of("database"), "database", source)
    database = DatabaseSettings(
        url=db.get("url", str),
        connect_timeout_seconds=db.positive_int(
            "connect_timeout_seconds", DEFAULT_DB_CONNECT_TIMEOUT_SECONDS
        ),
        command_timeout_seconds=db.positive_int(
            "command_timeout_seconds", DEFAULT_DB_COMMAND_TIMEOUT_SECONDS
        ),
    )
    db.finish()

    srv = _Reader(top.table_of("server"), "server", source)
    server = ServerSettings(
        host=srv.get("host", str, DEFAULT_HOST),
        port=srv.port("port", DEFAULT_API_PORT),
        anonymous_read=srv.get("anonymous_read", bool),
        header_timeout_seconds=srv.positive_int(
            "header_timeout_seconds", DEFAULT_HEADER_TIMEOUT_SECONDS
        ),
        body_timeout_seconds=srv.positive_int("body_timeout_seconds", DEFAULT_BODY_TIMEOUT_SECONDS),
        keep_alive_timeout_seconds=srv.positive_int(
            "keep_alive_timeout_seconds", DEFAULT_KEEP_ALIVE_TIMEOUT_SECONDS
        ),
        max_connections=srv.positive_int("max_connections", DEFAULT_MAX_CONNECTIONS),
        max_header_bytes=srv.positive_int("max_header_bytes", DEFAULT_MAX_HEADER_BYTES),
        readiness_timeout_seconds=srv.positive_int(
            "readiness_timeout_seconds", DEFAULT_READINESS_TIMEOUT_SECONDS
        ),
        drain_seconds=srv.non_negative_int("drain_seconds", DEFAULT_DRAIN_SECONDS),
    )
    srv.finish()

    up = _Reader(top.table_of("uploads"), "uploads", source)
    uploads = UploadSettings(
        max_blob_bytes=up.positive_int("max_blob_bytes", DEFAULT_MAX_BLOB_BYTES),
        max_chunk_bytes=up.positive_int("max_chunk_bytes", DEFAULT_MAX_CHUNK_BYTES),
        expiry_seconds=up.positive_int("expiry_seconds", DEFAULT_UPLOAD_EXPIRY_SECONDS),
        expiry_interval_seconds=up.positive_int(
            "expiry_interval_seconds", DEFAULT_EXPIRY_INTERVAL_SECONDS
        ),
        max_inline_bytes=up.positive_int("max_inline_bytes", DEFAULT_MAX_INLINE_BYTES),
    )
    up.finish()

    gw = _Reader(top.table_of("gateway"), "gateway", source)
    creds = []
    for i, entry in enumerate(gw.get("credentials", list, [])):
        if not isinstance(entry, dict):
            raise gw.fail(f"credentials[{i}]", "must be a table")
        cr = _Reader(entry, gw.key(f"credentials[{i}]"), source)
        key_id = cr.get("access_key_id", str)
        secret = cr.secret("secret_access_key_ref")
        if not key_id or secret is None:
            raise cr.fail(
                "access_key_id", "both access_key_id and secret_access_key_ref are required"
            )
        cr.finish()
        creds.append(GatewayCredential(key_id, secret))
    gateway = GatewaySettings(
        host=gw.get("host", str),
        port=gw.port("port", DEFAULT_GATEWAY_PORT),
        anonymous_read=gw.get("anonymous_read", bool, True),
        list_yanked=gw.get("list_yanked", bool, False),
        credentials=tuple(creds),
    )
    gw.finish()

    tr = _Reader(top.table_of("tracing"), "tracing", source)
    tracing = TracingSettings(enabled=tr.get("enabled", bool, False))
    tr.finish()

    storage = _storage(_Reader(top.table_of("storage"), "storage", source), data_dir)
    retention = _retention(_Reader(top.table_of("retention"), "retention", source))
    top.finish()
    return Settings(
        data_dir=data_dir,
        database=database,
        server=server,
        gateway=gateway,
        uploads=uploads,
        storage=storage,
        tracing=tracing,
        retention=retention,
        source=source,
    )
