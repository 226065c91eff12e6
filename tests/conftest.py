"""Shared fixtures: a server with a fake clock and a raw-bytes wire client."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import minifaktory
from minifaktory.app import RunningServer
from minifaktory.clock import FakeClock

#: FETCH waits this long in tests instead of Faktory's 2 s.
TEST_FETCH_TIMEOUT = 0.3


class WireClient:
    """A blocking socket client that returns the server's replies as exact bytes."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()

    def send(self, line: bytes | str) -> None:
        data = line.encode() if isinstance(line, str) else line
        self.sock.sendall(data + b"\r\n")

    def reply(self) -> bytes:
        """Read one RESP reply, raw: ``+OK\\r\\n``, ``$-1\\r\\n``, ``$3\\r\\nabc\\r\\n``."""
        first = self.file.readline()
        if first.startswith(b"$") and first != b"$-1\r\n":
            size = int(first[1:].strip())
            return first + self.file.read(size + 2)
        return first

    def call(self, line: bytes | str) -> bytes:
        self.send(line)
        return self.reply()

    def json(self, line: bytes | str) -> Any:
        """Send a command whose reply is a bulk JSON string; return it decoded."""
        raw = self.call(line)
        assert raw.startswith(b"$") and raw != b"$-1\r\n", raw
        return json.loads(raw.split(b"\r\n", 1)[1])

    def hello(self, **fields: Any) -> bytes:
        return self.call("HELLO " + json.dumps(fields, separators=(",", ":")))

    def closed(self) -> bool:
        """True when the server has closed the connection (EOF with nothing sent)."""
        try:
            return self.file.read(1) == b""
        except (ConnectionResetError, TimeoutError):
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[RunningServer]:
    with minifaktory.run(clock=clock, fetch_timeout=TEST_FETCH_TIMEOUT) as srv:
        yield srv


@pytest.fixture
def connect(server: RunningServer) -> Iterator[Callable[[], WireClient]]:
    """Factory of raw connections to ``server`` (closed after the test)."""
    opened: list[WireClient] = []

    def factory() -> WireClient:
        client = WireClient(server.host, server.port)
        opened.append(client)
        return client

    yield factory
    for client in opened:
        client.close()


@pytest.fixture
def client(connect: Callable[[], WireClient]) -> WireClient:
    """A producer connection that has completed ``HELLO {}``."""
    conn = connect()
    assert conn.call("HELLO {}") == b"+OK\r\n"
    return conn


def job(jid: str = "12345678901234567890abcd", **fields: Any) -> str:
    """A compact job JSON with sensible defaults."""
    body: dict[str, Any] = {"jid": jid, "jobtype": "Thing", "args": [123]}
    body.update(fields)
    return json.dumps(body, separators=(",", ":"))
