"""A program that only uploads and downloads imports none of the server's dependencies."""

from __future__ import annotations

import subprocess
import sys

from artifactstore.cli.main import SERVER_MODULES


def test_importing_the_client_loads_no_server_module() -> None:
    code = (
        "import sys, artifactstore.client;"
        f"print(sorted(m for m in {sorted(SERVER_MODULES)!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_server_command_without_the_server_extra_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['uvloop'] = None; sys.modules['sqlalchemy'] = None\n"
        "from artifactstore.cli.main import run\n"
        "sys.exit(run(sys.argv[1:]))"
    )
    for command in (["serve"], ["storage", "status"]):
        out = subprocess.run(
            [sys.executable, "-c", code, *command], capture_output=True, text=True, check=False
        )
        assert out.returncode == 2, out.stderr
        assert "pip install 'artifactstore[server]'" in out.stderr
