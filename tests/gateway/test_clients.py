"""Real S3 clients besides boto3 read the gateway byte-exact: aws, rclone, s3cmd, pyarrow, s3fs.

The command-line clients run as subprocesses with their credentials in the
environment or on the command line; a client that is not installed skips
its test with the install line (Debian: ``apt-get install -y rclone s3cmd``;
``aws`` and ``s3cmd`` also come with the test dependency group).
"""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest
from tests.gateway.support import ACCESS_KEY, SECRET_KEY

if TYPE_CHECKING:
    from pathlib import Path

    from tests.gateway.support import DataSet

CLIENT_TIMEOUT = 120


def _tool(name: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed ({install})")
    return path


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False
    )
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _expected(dataset: DataSet, bucket: str, prefix: str = "") -> dict[str, bytes]:
    return {
        key[len(prefix) :]: dataset.objects[(bucket, key)]
        for key in dataset.keys(bucket)
        if key.startswith(prefix)
    }


def test_aws_cli_ls_cp_and_sync(
    client_env: dict[str, str], gateway_url: str, dataset: DataSet, tmp_path: Path
) -> None:
    """``aws s3 ls``, ``cp --recursive`` and ``sync`` list and download the bucket byte-exact."""
    aws = _tool("aws", "uv sync --group test")
    endpoint = ["--endpoint-url", gateway_url]
    root = _run([aws, "s3", "ls", "s3://demo/", *endpoint], client_env).stdout
    assert "PRE 1.0.0/" in root
    assert "PRE 2.0.0/" in root
    assert "0.9.0" not in root
    buckets = _run([aws, "s3", "ls", *endpoint], client_env).stdout
    assert "demo" in buckets
    target = tmp_path / "cp"
    _run([aws, "s3", "cp", "--recursive", "s3://demo/", str(target), *endpoint], client_env)
    assert _tree(target) == _expected(dataset, "demo")
    synced = tmp_path / "sync"
    _run([aws, "s3", "sync", "s3://demo/1.0.0/", str(synced), *endpoint], client_env)
    assert _tree(synced) == _expected(dataset, "demo", "1.0.0/")
    again = _run([aws, "s3", "sync", "s3://demo/1.0.0/", str(synced), *endpoint], client_env)
    assert "download:" not in again.stdout  # nothing changed, nothing fetched


def _rclone_env(env: dict[str, str], gateway_url: str) -> dict[str, str]:
    # A remote named "gw" configured entirely through the environment.
    return {
        **env,
        "RCLONE_CONFIG": "/dev/null",
        "RCLONE_CONFIG_GW_TYPE": "s3",
        "RCLONE_CONFIG_GW_PROVIDER": "Other",
        "RCLONE_CONFIG_GW_ENDPOINT": gateway_url,
        "RCLONE_CONFIG_GW_ACCESS_KEY_ID": ACCESS_KEY,
        "RCLONE_CONFIG_GW_SECRET_ACCESS_KEY": SECRET_KEY,
        "RCLONE_CONFIG_GW_REGION": "us-east-1",
        "RCLONE_CONFIG_GW_FORCE_PATH_STYLE": "true",
    }


def test_rclone_lsf_copy_and_check(
    client_env: dict[str, str], gateway_url: str, dataset: DataSet, tmp_path: Path
) -> None:
    """``rclone lsf``, ``copy`` and ``check --download`` agree with the published bytes."""
    rclone = _tool("rclone", "apt-get install -y rclone")
    env = _rclone_env(client_env, gateway_url)
    listed = _run([rclone, "lsf", "-R", "--files-only", "gw:demo"], env).stdout.splitlines()
    assert sorted(listed, key=str.encode) == dataset.keys("demo")
    target = tmp_path / "rclone"
    _run([rclone, "copy", "gw:demo/2.0.0", str(target)], env)
    assert _tree(target) == _expected(dataset, "demo", "2.0.0/")
    _run([rclone, "check", "--download", "gw:demo/2.0.0", str(target)], env)


def test_s3cmd_ls_and_get(
    client_env: dict[str, str], gateway_url: str, dataset: DataSet, tmp_path: Path
) -> None:
    """``s3cmd ls`` and ``get`` with a generated config (no TLS, SigV4) download byte-exact."""
    s3cmd = _tool("s3cmd", "apt-get install -y s3cmd")
    host = gateway_url.removeprefix("http://")
    config = tmp_path / "s3cfg"
    config.write_text(
        "[default]\n"
        f"access_key = {ACCESS_KEY}\n"
        f"secret_key = {SECRET_KEY}\n"
        f"host_base = {host}\n"
        f"host_bucket = {host}\n"
        "use_https = False\n"
        "signature_v2 = False\n"
        "bucket_location = us-east-1\n",
        encoding="utf-8",
    )
    base = [s3cmd, "-c", str(config)]
    listed = _run([*base, "ls", "s3://demo/1.0.0/"], client_env).stdout
    assert "s3://demo/1.0.0/README.md" in listed
    assert any(line.split() == ["DIR", "s3://demo/1.0.0/dist/"] for line in listed.splitlines())
    target = tmp_path / "app.tar.gz"
    _run([*base, "get", "s3://demo/1.0.0/dist/app.tar.gz", str(target)], client_env)
    assert target.read_bytes() == dataset.objects[("demo", "1.0.0/dist/app.tar.gz")]


def test_pyarrow_s3filesystem_reads_parquet(gateway_url: str, dataset: DataSet) -> None:
    """The S3FileSystem of pyarrow reads the published Parquet file into the same table."""
    import pyarrow.fs as pafs  # type: ignore[import-untyped] # noqa: PLC0415 - heavy
    import pyarrow.parquet as pq  # type: ignore[import-untyped] # noqa: PLC0415

    fs = pafs.S3FileSystem(
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        endpoint_override=gateway_url,
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=False,
    )
    table = pq.read_table("demo/1.0.0/data/table.parquet", filesystem=fs)
    assert table.num_rows == 1000
    assert table.column("name")[999].as_py() == "row-999"
    with fs.open_input_file("demo/1.0.0/data/table.parquet") as fh:
        assert fh.read() == dataset.objects[("demo", "1.0.0/data/table.parquet")]


def test_s3fs_reads_parquet(gateway_url: str, dataset: DataSet) -> None:
    """s3fs lists the version and pyarrow reads the Parquet file through it byte-exact."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - heavy
    import s3fs  # type: ignore[import-untyped] # noqa: PLC0415

    fs = s3fs.S3FileSystem(
        key=ACCESS_KEY,
        secret=SECRET_KEY,
        client_kwargs={"endpoint_url": gateway_url, "region_name": "us-east-1"},
        skip_instance_cache=True,
        use_listings_cache=False,
    )
    assert "demo/1.0.0/data/table.parquet" in fs.find("demo/1.0.0/")
    path = "demo/1.0.0/data/table.parquet"
    with fs.open(path, "rb") as fh:
        table = pq.read_table(fh)
    assert table.num_rows == 1000
    assert fs.cat_file(path) == dataset.objects[("demo", "1.0.0/data/table.parquet")]
