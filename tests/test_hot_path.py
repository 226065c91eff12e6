"""PUSH, FETCH and ACK run as they arrive and reply from their commit, skipping the
connection's task; the order of replies and the errors stay as they were."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import minifaktory
from minifaktory import commands
from minifaktory.app import RunningServer
from minifaktory.errors import StoreError
from minifaktory.protocol import Command
from tests.conftest import WireClient, job

Connect = Callable[[], WireClient]


@pytest.fixture
def dispatched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The verbs that went through the connection task's ``dispatch``."""
    seen: list[str] = []
    original = commands.dispatch

    async def counting(session: commands.Session, cmd: Command) -> bytes | None:
        seen.append(cmd.verb)
        return await original(session, cmd)

    monkeypatch.setattr("minifaktory.server.dispatch", counting)
    return seen


def test_hot_verbs_skip_the_connection_task(connect: Connect, dispatched: list[str]) -> None:
    worker = connect()
    assert worker.hello(wid="w1") == b"+OK\r\n"
    assert worker.call("PUSH " + job("a" * 24)) == b"+OK\r\n"
    fetched = worker.json("FETCH default")
    assert fetched["jid"] == "a" * 24
    assert worker.call('ACK {"jid":"' + "a" * 24 + '"}') == b"+OK\r\n"
    assert worker.call('ACK {"jid":"unknown"}') == b"+OK\r\n"  # nothing to commit
    assert worker.call("PUSH {").startswith(b"-ERR invalid JSON")
    assert worker.call("INFO").startswith(b"$")
    # Only INFO needed the task; a FETCH on an empty queue waits there too.
    assert worker.call("FETCH empty") == b"$-1\r\n"
    assert dispatched == ["INFO", "FETCH"]


def test_pipelined_replies_keep_their_order(server: RunningServer) -> None:
    jids = [f"{i:024d}" for i in range(6)]
    lines = [
        b'HELLO {"wid":"w2"}',
        b"PUSH " + job(jids[0]).encode(),
        b"PUSH " + job(jids[1]).encode(),
        b"INFO",
        b"FETCH default",
        b"PUSH {",
        b'ACK {"jid":"' + jids[0].encode() + b'"}',
        b"QUEUE LATENCY default",
        b"FETCH default",
        b'ACK {"jid":"' + jids[1].encode() + b'"}',
        b"PUSH " + job(jids[2]).encode(),
        b'BEAT {"wid":"w2"}',
    ]
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"".join(line + b"\r\n" for line in lines))
        data = b""
        while len(replies := _split(data)) < len(lines) + 1:
            data += sock.recv(65536)
    assert replies[0].startswith(b"+HI")
    kinds = [r[:1] + (json.loads(r.split(b"\r\n")[1])["jid"][-1:].encode() if r.startswith(b"$")
                      and b'"jid"' in r else b"") for r in replies[1:]]  # fmt: skip
    assert kinds == [b"+", b"+", b"+", b"$", b"$0", b"-", b"+", b"$", b"$1", b"+", b"+", b"+"]
    assert replies[6].startswith(b"-ERR invalid JSON")


def test_a_failed_commit_answers_the_waiting_push(
    server: RunningServer, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = server.server.services
    assert services is not None
    store = services.broker.store

    def broken_commit() -> bool:
        raise StoreError("commit failed: disk I/O error")

    client = connect()
    assert client.hello() == b"+OK\r\n"
    monkeypatch.setattr(store, "commit", broken_commit)
    assert client.call("PUSH " + job()) == (
        b"-ERR storage error: commit failed: disk I/O error\r\n"
    )
    monkeypatch.undo()
    assert client.call("PUSH " + job()) == b"+OK\r\n"
    assert client.json("INFO")["faktory"]["queues"] == {"default": 1}


def _split(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    while data:
        head, _, rest = data.partition(b"\r\n")
        if head.startswith(b"$") and head != b"$-1":
            size = int(head[1:])
            out.append(head + b"\r\n" + rest[: size + 2])
            data = rest[size + 2 :]
        else:
            out.append(head + b"\r\n")
            data = rest
    return out


def test_a_half_closed_client_gets_every_reply_and_its_fetch_does_not_wait(
    server: RunningServer, connect: Connect
) -> None:
    lines = [
        b"HELLO {}",
        b"PUSH " + job("h" * 24).encode(),
        b"INFO",
        b"FETCH default",
        b'ACK {"jid":"' + b"h" * 24 + b'"}',
        b"FETCH default",  # empty now: answered at once, nothing is reserved later
    ]
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"".join(line + b"\r\n" for line in lines))
        sock.shutdown(socket.SHUT_WR)  # as Faktory does, the server answers before closing
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    replies = _split(data)
    assert [r[:1] for r in replies] == [b"+", b"+", b"+", b"$", b"$", b"+", b"$"]
    assert replies[-1] == b"$-1\r\n"
    producer = connect()
    assert producer.hello() == b"+OK\r\n"
    assert producer.call("PUSH " + job("i" * 24)) == b"+OK\r\n"
    state = producer.json("INFO")["faktory"]
    assert state["queues"] == {"default": 1} and state["sets"]["working"] == 0


def test_a_waiting_fetch_ends_when_its_client_closes_its_side(tmp_path: Path) -> None:
    with minifaktory.run(db_path=tmp_path / "h.db", fetch_timeout=60) as srv:
        with socket.create_connection((srv.host, srv.port), timeout=20) as sock:
            wire = sock.makefile("rb")
            wire.readline()
            sock.sendall(b'HELLO {"wid":"gone"}\r\nFETCH default\r\n')
            assert wire.readline() == b"+OK\r\n"
            time.sleep(0.2)  # let the FETCH wait for a job
            sock.shutdown(socket.SHUT_WR)
            # Answered now, not after the 60 s fetch timeout (the socket gives up at 20 s).
            assert wire.readline() == b"$-1\r\n"
            assert wire.read() == b""
        producer = WireClient(srv.host, srv.port)
        assert producer.hello() == b"+OK\r\n"
        assert producer.call("PUSH " + job("j" * 24)) == b"+OK\r\n"
        state = producer.json("INFO")["faktory"]
        assert state["queues"] == {"default": 1} and state["sets"]["working"] == 0
        producer.close()
