"""What a server process loads: only what serving needs until a feature is used.

The idle footprint target (``benchmarks/bench_throughput.py``) rests on these.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import minifaktory
from minifaktory import cli

ROOT = Path(__file__).resolve().parent.parent

#: Runs ``minifaktory`` in this process, reports its modules once it serves, opens a
#: Web UI page, reports again, then stops itself with SIGTERM.
SCRIPT = """
import json, os, signal, socket, sys, threading, time
port, web_port, db = sys.argv[1:4]
sys.argv = ["minifaktory", "-b", f"127.0.0.1:{port}", "-w", f"127.0.0.1:{web_port}",
            "--db", db, "-l", "warn"]
from minifaktory import cli

def probe():
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
            break
        except OSError:
            time.sleep(0.02)
    idle = sorted(sys.modules)
    with socket.create_connection(("127.0.0.1", int(web_port)), timeout=20) as web:
        web.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        status = int(web.makefile("rb").readline().split()[1])
    print(json.dumps({"idle": idle, "browsed": sorted(sys.modules), "status": status}))
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=probe, daemon=True).start()
raise SystemExit(cli.main())
"""

#: Never loaded by a server that nobody browses to and that has no cron, password,
#: statsd or unique job yet.
NOT_WHILE_IDLE = {
    "anyio",  # the server runs on plain asyncio; the web stack and clients use anyio
    "uvicorn",
    "starlette",
    "jinja2",
    "croniter",
    "zoneinfo",
    "hmac",
    "secrets",
    "shutil",  # argparse's help formatter asks it for the terminal size
    "importlib.metadata",
    "minifaktory.client",
    "minifaktory.worker",
    "minifaktory.webui.app",
}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_idle_server_loads_neither_the_web_stack_nor_unused_features(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(free_port()), str(free_port()), str(tmp_path / "f.db")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MINIFAKTORY_LOOP": "asyncio"},
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    idle = set(report["idle"])
    assert NOT_WHILE_IDLE & idle == set()
    assert "minifaktory.webui.port" in idle  # the Web UI's port is bound from the start
    # The first connection to the Web UI loads its stack and is answered.
    assert report["status"] == 200
    assert {"uvicorn", "starlette", "minifaktory.webui.app"} <= set(report["browsed"])


def test_public_names_load_on_first_use() -> None:
    code = (
        "import sys, minifaktory; before = 'minifaktory.client' in sys.modules;"
        "minifaktory.Client; print(before, 'minifaktory.client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
    assert set(minifaktory.__all__) <= set(dir(minifaktory))
    for name in minifaktory.__all__:
        assert getattr(minifaktory, name) is not None
    with pytest.raises(AttributeError, match="Nope"):
        minifaktory.Nope  # type: ignore[attr-defined]  # noqa: B018


def test_the_version_is_the_package_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert cli.version() == minifaktory.__version__ == project["version"]
