"""Configuration loading: defaults, TOML, environment overrides, secrets, clear errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from artifactstore.config import (
    LocalBackendSettings,
    S3BackendSettings,
    is_loopback,
    load_settings,
)
from artifactstore.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "artifactstore.toml"
    path.write_text(text)
    return path


def test_zero_configuration_is_embedded_and_local(tmp_path: Path) -> None:
    """With nothing set: embedded database, one local backend under the data dir."""
    settings = load_settings(environ={"XDG_DATA_HOME": str(tmp_path)})
    assert settings.data_dir == tmp_path / "artifactstore"
    assert settings.database.url is None
    storage = settings.effective_storage
    assert storage.default == "local"
    assert storage.backends["local"] == LocalBackendSettings("local", settings.data_dir / "blobs")


def test_file_and_environment_overrides(tmp_path: Path) -> None:
    """Environment variables override single values of the file."""
    path = _write(
        tmp_path,
        """
[database]
url = "postgresql+asyncpg://a@db/x"
[server]
port = 8081
[storage]
default = "ceph"
[storage.backends.ceph]
type = "s3"
bucket = "artifacts"
endpoint_url = "http://127.0.0.1:7480"
access_key_ref = "env:CEPH_KEY"
secret_key_ref = "file:/run/secrets/ceph"
[storage.backends.fast]
type = "local"
root = "blobs-fast"
[[storage.routes]]
match = { retention_class = "long", producer = "ci-*" }
backends = ["ceph", "fast"]
""",
    )
    env = {
        "ARTIFACTSTORE_DATABASE_URL": "postgresql+asyncpg://b@db/y",
        "ARTIFACTSTORE_SERVER_PORT": "9999",
        "ARTIFACTSTORE_DATA_DIR": str(tmp_path / "d"),
    }
    s = load_settings(path, environ=env)
    assert s.database.url == "postgresql+asyncpg://b@db/y"
    assert s.server.port == 9999
    assert s.storage is not None
    ceph = s.storage.backends["ceph"]
    assert isinstance(ceph, S3BackendSettings)
    assert ceph.access_key_ref is not None
    assert "CEPH_KEY" not in repr(ceph.access_key_ref)
    assert s.storage.backends["fast"] == LocalBackendSettings("fast", tmp_path / "d" / "blobs-fast")
    assert s.storage.routes[0].backends == ("ceph", "fast")
    assert s.storage.routes[0].producer == "ci-*"
    assert "ARTIFACTSTORE_SERVER_PORT" in s.source


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[server]\nport = 'x'", "server.port"),
        ("[server]\nport = 70000", "server.port"),
        ("[server]\nprot = 1", "server.prot"),
        ("[storage.backends.a]\ntype = 'nfs'", "storage.backends.a.type"),
        ("[storage]\ndefault = 'nope'\n[storage.backends.a]\ntype='local'", "storage.default"),
        (
            (
                "[storage.backends.s]\ntype='s3'\nbucket='b'\naccess_key_ref='AKIAINLINE'\n"
                "secret_key_ref='env:X'"
            ),
            "storage.backends.s.access_key_ref",
        ),
        (
            "[storage.backends.a]\ntype='local'\n[[storage.routes]]\nbackends=['zzz']",
            "storage.routes[0].backends",
        ),
        ("[[gateway.credentials]]\naccess_key_id='r'\nsecret_access_key_ref='plain'", "secret"),
        ("[uploads]\nmax_blob_bytes = -1", "uploads.max_blob_bytes"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    """Every bad value fails at load time with the offending key in the message."""
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_settings(_write(tmp_path, text), environ={})


def test_timeouts_and_limits_have_defaults_and_are_configurable(tmp_path: Path) -> None:
    """Every wait on a peer has a default bound, and each one can be set in the file."""
    s3_only = _write(tmp_path, "[storage.backends.s]\ntype='s3'\nbucket='b'")
    default = load_settings(s3_only, environ={})
    s3 = default.effective_storage.backends["s"]
    assert isinstance(s3, S3BackendSettings)
    assert (s3.connect_timeout_seconds, s3.read_timeout_seconds, s3.max_attempts) == (5, 30, 3)
    assert default.database.connect_timeout_seconds == 10
    assert default.database.command_timeout_seconds == 60
    srv = default.server
    assert (srv.header_timeout_seconds, srv.body_timeout_seconds) == (30, 60)
    assert (srv.keep_alive_timeout_seconds, srv.max_connections) == (5, 1000)
    assert (srv.readiness_timeout_seconds, srv.max_header_bytes) == (2, 65536)
    text = """
[database]
connect_timeout_seconds = 3
command_timeout_seconds = 4
[server]
header_timeout_seconds = 5
body_timeout_seconds = 6
keep_alive_timeout_seconds = 7
max_connections = 8
readiness_timeout_seconds = 9
max_header_bytes = 10
[storage.backends.s]
type = "s3"
bucket = "b"
connect_timeout_seconds = 1
read_timeout_seconds = 2
max_attempts = 1
"""
    s = load_settings(_write(tmp_path, text), environ={})
    s3 = s.effective_storage.backends["s"]
    assert isinstance(s3, S3BackendSettings)
    assert (s3.connect_timeout_seconds, s3.read_timeout_seconds, s3.max_attempts) == (1, 2, 1)
    assert (s.database.connect_timeout_seconds, s.database.command_timeout_seconds) == (3, 4)
    assert (s.server.header_timeout_seconds, s.server.body_timeout_seconds) == (5, 6)
    assert (s.server.keep_alive_timeout_seconds, s.server.max_connections) == (7, 8)
    assert (s.server.readiness_timeout_seconds, s.server.max_header_bytes) == (9, 10)
    with pytest.raises(ConfigError, match=r"server\.max_connections"):
        load_settings(_write(tmp_path, "[server]\nmax_connections = 0"), environ={})


def test_drain_and_expiry_interval_default_and_validate(tmp_path: Path) -> None:
    """server.drain_seconds defaults to 5 and may be 0; uploads.expiry_interval_seconds to 60."""
    default = load_settings(environ={})
    assert default.server.drain_seconds == 5
    assert default.uploads.expiry_interval_seconds == 60
    text = "[server]\ndrain_seconds = 0\n[uploads]\nexpiry_interval_seconds = 2"
    s = load_settings(_write(tmp_path, text), environ={})
    assert (s.server.drain_seconds, s.uploads.expiry_interval_seconds) == (0, 2)
    with pytest.raises(ConfigError, match=r"server\.drain_seconds.*zero or a positive"):
        load_settings(_write(tmp_path, "[server]\ndrain_seconds = -1"), environ={})
    with pytest.raises(ConfigError, match=r"uploads\.expiry_interval_seconds"):
        load_settings(_write(tmp_path, "[uploads]\nexpiry_interval_seconds = 0"), environ={})


def test_tracing_is_off_by_default_and_must_be_a_boolean(tmp_path: Path) -> None:
    """[tracing] enabled defaults to false; a non-boolean names tracing.enabled."""
    assert load_settings(environ={}).tracing.enabled is False
    on = load_settings(_write(tmp_path, "[tracing]\nenabled = true"), environ={})
    assert on.tracing.enabled is True
    with pytest.raises(ConfigError, match=r"tracing\.enabled"):
        load_settings(_write(tmp_path, "[tracing]\nenabled = 'yes'"), environ={})


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    """A non-integer port in the environment names both key and variable."""
    with pytest.raises(ConfigError, match=r"server\.port.*ARTIFACTSTORE_SERVER_PORT"):
        load_settings(environ={"ARTIFACTSTORE_SERVER_PORT": "eighty"})


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    """Broken TOML and unreadable files are ConfigErrors, not tracebacks."""
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(_write(tmp_path, "[server"), environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", environ={})


def test_secret_references_resolve_on_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """env: and file: references resolve when revealed and fail naming the key when absent."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cr3t\n")
    path = _write(
        tmp_path,
        f"""
[storage.backends.s]
type = "s3"
bucket = "b"
access_key_ref = "env:MY_KEY"
secret_key_ref = "file:{secret_file}"
""",
    )
    s = load_settings(path, environ={})
    assert s.storage is not None
    backend = s.storage.backends["s"]
    assert isinstance(backend, S3BackendSettings)
    assert backend.secret_key_ref is not None
    assert backend.access_key_ref is not None
    assert backend.secret_key_ref.reveal() == "s3cr3t"
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"access_key_ref.*MY_KEY"):
        backend.access_key_ref.reveal()
    monkeypatch.setenv("MY_KEY", "id")
    assert backend.access_key_ref.reveal() == "id"


def test_a_secret_file_that_is_not_utf8_names_the_key(tmp_path: Path) -> None:
    """A file: secret holding non-UTF-8 bytes fails as a ConfigError naming the key and file."""
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(b"caf\xe9\n")
    path = _write(
        tmp_path,
        f"""
[[gateway.credentials]]
access_key_id = "reader"
secret_access_key_ref = "file:{secret_file}"
""",
    )
    credentials = load_settings(path, environ={}).gateway.credentials
    with pytest.raises(ConfigError, match=r"secret_access_key_ref.*not UTF-8.*0xe9 at offset 3"):
        credentials[0].secret_access_key.reveal()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104 - a value under test
        ("10.0.0.1", False),
        ("example.org", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    """Anonymous access hinges on this: only loopback addresses count."""
    assert is_loopback(host) is loopback
