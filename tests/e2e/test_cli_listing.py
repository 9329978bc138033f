"""``artifactstore ls`` against the real server: packages, versions (yanked marked), files."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest
from tests.e2e.serverproc import Server, cli

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.e2e


def _publish(server: Server, tmp_path: Path, package: str, version: str, text: str) -> str:
    src = tmp_path / f"{package}-{version}" / "files"
    (src / "sub").mkdir(parents=True)
    (src / "readme.txt").write_text(text)
    (src / "sub" / "data.bin").write_bytes(text.encode() * 100)
    up = cli("upload", package, version, str(src), env=server.client_env())
    assert up.returncode == 0, up.stderr
    return up.stdout.strip()


def test_ls_lists_packages_versions_and_files(server: Server, tmp_path: Path) -> None:
    """Each level of ls names what was published, with yanked versions marked."""
    _publish(server, tmp_path, "alpha", "1.0", "a1\n")
    digest = _publish(server, tmp_path, "alpha", "2.0", "a2\n")
    _publish(server, tmp_path, "beta", "0.1", "b\n")
    token = server.env["ARTIFACTSTORE_TOKEN"]
    yanked = httpx.post(
        f"{server.url}/v1/packages/alpha/versions/1.0/yank",
        json={"reason": "broken build"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert yanked.status_code == 200, yanked.text
    env = server.client_env()

    packages = cli("ls", env=env)
    assert packages.returncode == 0, packages.stderr
    names = [line.split()[0] for line in packages.stdout.splitlines()[1:]]
    assert names == ["alpha", "beta"]

    versions = cli("ls", "alpha", env=env)
    assert versions.returncode == 0, versions.stderr
    rows = {line.split()[0]: line for line in versions.stdout.splitlines()[1:]}
    assert set(rows) == {"1.0", "2.0"}
    assert "(yanked)" in rows["1.0"]
    assert "(yanked)" not in rows["2.0"]
    assert digest in rows["2.0"]

    files = cli("ls", "alpha", "2.0", env=env)
    assert files.returncode == 0, files.stderr
    lines = files.stdout.splitlines()
    assert lines[0].split() == ["PATH", "SIZE", "SHA256"]
    assert [line.split()[0] for line in lines[1:]] == ["files/readme.txt", "files/sub/data.bin"]
    assert lines[1].split()[1] == "3"

    marked = cli("ls", "alpha", "1.0", env=env)
    assert marked.stdout.startswith("# yanked: broken build")


def test_ls_json_documents(server: Server, tmp_path: Path) -> None:
    """``--json`` prints one parseable document per level in the REST shapes."""
    digest = _publish(server, tmp_path, "gamma", "3.1.4", "pi\n")
    env = server.client_env()
    packages = json.loads(cli("ls", "--json", env=env).stdout)
    assert [p["name"] for p in packages["packages"]] == ["gamma"]
    package = json.loads(cli("ls", "gamma", "--json", env=env).stdout)
    assert [v["version"] for v in package["versions"]] == ["3.1.4"]
    assert package["versions"][0]["yanked"] is False
    version = json.loads(cli("ls", "gamma", "3.1.4", "--json", env=env).stdout)
    assert version["manifest_sha256"] == digest
    assert [f["path"] for f in version["manifest"]["files"]] == [
        "files/readme.txt",
        "files/sub/data.bin",
    ]


def test_ls_unknown_package_exits_2(server: Server) -> None:
    """Listing a package that does not exist is a usage error with one line on stderr."""
    result = cli("ls", "nope", env=server.client_env())
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
