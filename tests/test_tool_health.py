"""``minifaktory health``: one line and an exit status, for container health checks."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import minifaktory
from minifaktory.cli import main


def health(capsys: pytest.CaptureFixture[str], *args: str, **environ: str) -> tuple[int, str]:
    status = main(["health", *args], environ=environ)
    return status, capsys.readouterr().out.strip()


def test_a_healthy_server(capsys: pytest.CaptureFixture[str]) -> None:
    with minifaktory.run() as srv:
        status, line = health(capsys, f"tcp://{srv.host}:{srv.port}")
    assert status == 0, line
    assert line.startswith(f"OK tcp://{srv.host}:{srv.port}: Faktory 1.10.0 answers")


def test_password_from_url_or_from_the_servers_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with minifaktory.run(password="s3cret") as srv:
        bare = f"tcp://{srv.host}:{srv.port}"
        status, line = health(capsys, bare)
        assert (status, line) == (1, f"UNHEALTHY {bare}: the server requires a password: put it"
                                     " in the URL")  # fmt: skip
        assert health(capsys, f"tcp://:s3cret@{srv.host}:{srv.port}")[0] == 0
        assert health(capsys, bare, FAKTORY_PASSWORD="s3cret")[0] == 0
        secret = tmp_path / "password"
        secret.write_text("s3cret\n")
        assert health(capsys, FAKTORY_URL=bare, FAKTORY_PASSWORD=str(secret))[0] == 0
        status, line = health(capsys, bare, FAKTORY_PASSWORD="wrong")
        assert status == 1 and "Invalid password" in line


def test_a_database_that_stopped_taking_writes(capsys: pytest.CaptureFixture[str]) -> None:
    with minifaktory.run() as srv:
        assert srv.server.services is not None
        broker = srv.server.services.broker
        deadline = time.monotonic() + 10
        while not broker.last_write_ns and time.monotonic() < deadline:
            time.sleep(0.01)  # the start-up probe has written
        broker.write_error = "commit failed: disk I/O error"
        status, line = health(capsys, f"tcp://{srv.host}:{srv.port}")
        assert status == 1
        assert line.endswith("the database does not take writes: commit failed: disk I/O error")
        # The periodic probe (at each 10th second) may write in between and make the
        # file fresh again; it writes once per 10 s, so a second try cannot meet it.
        for _ in range(3):
            broker.write_error, broker.last_write_ns = "", 1
            status, line = health(capsys, f"tcp://{srv.host}:{srv.port}")
            if status == 1:
                break
        assert status == 1 and "was last written" in line


def test_nothing_listening(capsys: pytest.CaptureFixture[str]) -> None:
    with minifaktory.run() as srv:
        port = srv.port
    status, line = health(capsys, f"tcp://127.0.0.1:{port}", "--timeout", "1")
    assert status == 1 and line.startswith(f"UNHEALTHY tcp://127.0.0.1:{port}: cannot connect")


def test_as_a_command() -> None:
    with minifaktory.run() as srv:
        done = subprocess.run(
            [sys.executable, "-m", "minifaktory", "health", f"tcp://{srv.host}:{srv.port}"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("OK "), done
    listed = subprocess.run([sys.executable, "-m", "minifaktory", "--help"], capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert "health" in listed.stdout
