"""Starting and stopping: run(), serve() in a task group, Unix sockets, shutdown, the CLI."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import minifaktory
from minifaktory.app import RunningServer
from tests.conftest import WireClient, job


def test_run_gives_a_ready_server_with_a_url() -> None:
    with minifaktory.run() as srv:
        assert srv.host == "127.0.0.1" and srv.port > 0
        assert srv.url == f"tcp://127.0.0.1:{srv.port}"
        c = WireClient(srv.host, srv.port)
        assert c.call("HELLO {}") == b"+OK\r\n"
        c.close()
        db = Path(str(srv.db_path))
        assert db.exists()
    assert not db.exists()  # the temporary database is removed


def test_run_with_password_puts_it_in_the_url() -> None:
    with minifaktory.run(password="pw") as srv:
        assert srv.url == f"tcp://:pw@127.0.0.1:{srv.port}"


def test_run_rejects_unknown_options() -> None:
    with pytest.raises(TypeError, match="unknown server option"), minifaktory.run(colour="red"):
        pass


def test_run_reports_a_busy_port() -> None:
    with (
        minifaktory.run() as first,
        pytest.raises(OSError, match="address already in use"),
        minifaktory.run(binding=f"127.0.0.1:{first.port}"),
    ):
        pass


def test_serve_inside_a_task_group(tmp_path: Path) -> None:
    async def main() -> bytes:
        async with minifaktory.serve(db_path=tmp_path / "s.db") as server:
            stream = await anyio.connect_tcp(server.host, server.port)
            async with stream:
                greeting = await stream.receive()
                await stream.send(b"HELLO {}\r\nPUSH " + job().encode() + b"\r\n")
                replies = b""
                while replies.count(b"\r\n") < 2:
                    replies += await stream.receive()
            assert server.info()["faktory"]["total_enqueued"] == 1
            return greeting + replies

    assert anyio.run(main) == b'+HI {"v":2}\r\n+OK\r\n+OK\r\n'


def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "faktory.sock"
    with minifaktory.run(unix_socket=path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(path))
        f = sock.makefile("rwb")
        assert f.readline() == b'+HI {"v":2}\r\n'
        f.write(b"HELLO {}\r\nINFO\r\n")
        f.flush()
        assert f.readline() == b"+OK\r\n"
        assert f.readline().startswith(b"$")
        f.close()
        sock.close()


def test_shutdown_in_progress(server: RunningServer) -> None:
    c = WireClient(server.host, server.port)
    assert c.call("HELLO {}") == b"+OK\r\n"

    async def start_closing() -> None:
        assert server.server.listener is not None
        server.server.listener.closing = True

    server.call(start_closing())
    assert c.call("INFO") == b"-ERR shutdown in progress\r\n"
    assert c.closed()
    c.close()


def test_command_line_server_starts_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "FAKTORY_ENV": "development"}
    env.pop("FAKTORY_PASSWORD", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minifaktory",
            "-b",
            "127.0.0.1:0",
            "-w",
            "127.0.0.1:0",
            "-l",
            "info",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        if "listening at" in line:
            break
    port = int(re.findall(r"127\.0\.0\.1:(\d+)", lines[-1])[0])
    c = WireClient("127.0.0.1", port)
    assert c.call("HELLO {}") == b"+OK\r\n"
    assert c.call("PUSH " + job()) == b"+OK\r\n"
    c.close()
    os.kill(proc.pid, signal.SIGHUP)
    for line in proc.stderr:
        lines.append(line)
        if "reloaded" in line:
            break
    os.kill(proc.pid, signal.SIGTERM)
    rest = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(10) == 0
    text = "".join(lines) + rest
    expected = tmp_path / ".faktory" / "db" / "minifaktory.db"
    assert str(expected) in text
    assert expected.exists()
    assert "Traceback" not in text
    assert "reloaded 0 cron entries and 0 throttles" in text


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_event_loop_choice(monkeypatch: pytest.MonkeyPatch, choice: str) -> None:
    """uvloop by default; asyncio's own loop with MINIFAKTORY_LOOP=asyncio."""
    import asyncio

    import uvloop

    if choice == "asyncio":
        monkeypatch.setenv("MINIFAKTORY_LOOP", "asyncio")
    else:
        monkeypatch.delenv("MINIFAKTORY_LOOP", raising=False)
    with minifaktory.run() as srv:
        uses_uvloop = isinstance(srv._loop, uvloop.Loop)
        assert isinstance(srv._loop, asyncio.AbstractEventLoop)
        with minifaktory.Client(srv.url) as c:
            c.push({"jid": "loop-choice-1", "jobtype": "T", "args": []})
    assert uses_uvloop is (choice == "uvloop")
