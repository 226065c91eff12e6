"""Garbage over a real socket: every line gets one well-formed reply, nothing
crashes, and the connection keeps working afterwards. The last section pins what
the long run (benchmarks/bench_fuzz.py) found."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minifaktory
from minifaktory.app import RunningServer
from minifaktory.clock import FakeClock
from tests.conftest import WireClient, job

VERBS = ["PUSH", "PUSHB", "FETCH", "ACK", "FAIL", "BEAT", "INFO", "FLUSH", "MUTATE", "QUEUE",
         "BATCH NEW", "BATCH OPEN", "BATCH COMMIT", "BATCH STATUS", "BATCH CHILD", "BATCH",
         "TRACK SET", "TRACK GET", "TRACK", "REQUEUE", "HELLO", "NOPE", "push"]  # fmt: skip
REPLY = re.compile(rb"\+[^\r\n]*\r\n|-[A-Z]+ [^\r\n]*\r\n|\$-1\r\n|\$(\d+)\r\n", re.S)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
job_like = st.fixed_dictionaries(
    {},
    optional={
        "jid": st.text(max_size=30) | json_values, "jobtype": st.text(max_size=10) | json_values,
        "args": st.lists(json_values, max_size=3) | json_values,
        "queue": st.sampled_from(["default", "a", "", "bad name", "x" * 300]) | json_values,
        "retry": st.integers(-3, 30) | json_values, "reserve_for": st.integers(-10, 10**6),
        "at": st.sampled_from(["", "2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "soon"]),
        "custom": st.fixed_dictionaries({}, optional={
            key: json_values | st.sampled_from([1, 0.5, "1h", "x", "2999-01-01T00:00:00Z"])
            for key in ["unique_for", "unique_until", "expires_at", "expires_in", "bid",
                        "track", "_bid", "_cb"]
        }) | json_values,
        "failure": json_values, "wid": json_values, "cmd": json_values, "target": json_values,
        "priority": st.integers(-2, 12) | json_values, "percent": st.integers(-5, 105),
        "reserve_until": st.sampled_from(["", "2999-01-01T00:00:00Z", "x"]),
        "success": json_values, "complete": json_values, "parent_bid": json_values,
    },
)  # fmt: skip
payloads = (
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b" "))
    | job_like.map(lambda d: json.dumps(d).encode())
    | st.lists(job_like, max_size=3).map(lambda d: json.dumps(d).encode())
    | st.text(max_size=40).map(lambda t: t.replace("\n", " ").encode())
)
lines = st.tuples(st.sampled_from(VERBS), st.none() | payloads).map(
    lambda vp: vp[0].encode() if vp[1] is None else vp[0].encode() + b" " + vp[1]
)


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[RunningServer]:
    with minifaktory.run(fetch_timeout=0.01) as srv:
        yield srv


def read_reply(client: WireClient) -> bytes:
    first = client.file.readline()
    m = REPLY.fullmatch(first)
    assert m is not None, first
    if m.group(1) is not None:
        body = client.file.read(int(m.group(1)) + 2)
        assert body.endswith(b"\r\n")
        return first + body
    return first


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(lines, min_size=1, max_size=8))
def test_garbage_commands_get_one_reply_each(
    fuzz_server: RunningServer, caplog: pytest.LogCaptureFixture, batch: list[bytes]
) -> None:
    caplog.set_level(logging.ERROR)
    client = WireClient(fuzz_server.host, fuzz_server.port)
    try:
        assert client.call("HELLO {}") == b"+OK\r\n"
        for line in batch:
            client.send(line)
            read_reply(client)
        assert client.call("INFO").startswith(b"$")
    finally:
        client.close()
    failures = [r for r in caplog.records if r.name.startswith("minifaktory")]
    assert not failures, failures[0].getMessage()


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=200))
def test_garbage_handshake_never_hurts_the_server(fuzz_server: RunningServer, data: bytes) -> None:
    client = WireClient(fuzz_server.host, fuzz_server.port)
    try:
        client.sock.sendall(data + b"\n")
        client.sock.settimeout(3)
        try:
            rest = client.file.read()
        except TimeoutError:
            rest = b"(still open)"
        assert rest in (
            b"",
            b"+OK\r\n",
            b"-ERR Invalid password\r\n",
            b"(still open)",
        ) or rest.startswith(b"+OK\r\n")
    finally:
        client.close()
    healthy = WireClient(fuzz_server.host, fuzz_server.port)
    assert healthy.call("HELLO {}") == b"+OK\r\n"
    healthy.close()


# -- found by benchmarks/bench_fuzz.py -------------------------------------------------


def test_queue_remove_naming_a_queue_twice(client: WireClient) -> None:
    """Once answered -ERR internal error (a KeyError) and rolled back its whole tick,
    other clients' commands included."""
    assert client.call("PUSH " + job(queue="q")) == b"+OK\r\n"
    assert client.call("QUEUE REMOVE q q") == b"+OK\r\n"
    assert "q" not in client.json("INFO")["faktory"]["queues"]


def test_hello_with_a_lone_surrogate_escape(connect: Callable[[], WireClient]) -> None:
    """Go decodes half a surrogate pair as U+FFFD; the connection was once closed instead."""
    conn = connect()
    assert conn.call('HELLO {"hostname":"\\ud800","labels":["\\udc00"]}') == b"+OK\r\n"


def test_push_with_a_lone_surrogate_escape(client: WireClient) -> None:
    """Once refused as 'invalid JSON: unexpected end of JSON input'."""
    assert client.call("PUSH " + job(args=["\ud800"])) == b"+OK\r\n"
    fetched = client.json("FETCH default")
    assert fetched["args"] == ["\ufffd"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def server_subprocess(tmp_path: Path) -> Iterator[int]:
    """``python -m minifaktory`` in its own process (a stuck event loop cannot stall the
    test); yields its port and is killed by PID afterwards."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "minifaktory", "-b", f"127.0.0.1:{port}", "-w", "127.0.0.1:0",
         "--db", str(tmp_path / "glob.db"), "-l", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the server exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def test_mutate_glob_with_many_stars_answers_promptly(server_subprocess: int) -> None:
    """Each '*' once became a backtracking '.*': this glob ran for hours on the event loop
    and every client hung (the server in its own process is killed afterwards)."""
    conn = WireClient("127.0.0.1", server_subprocess, timeout=5)
    try:
        assert conn.call("HELLO {}") == b"+OK\r\n"
        args = [chr(97 + i % 26) for i in range(40)]  # 80 quote characters in the payload
        assert conn.call("PUSH " + job(args=args, at="2999-01-01T00:00:00Z")) == b"+OK\r\n"
        glob = "*" + "*".join('"' * 14) + "*Q"  # never matches: it must end with Q
        op = {"cmd": "kill", "target": "scheduled", "filter": {"regexp": glob}}
        conn.sock.settimeout(3)
        assert conn.call("MUTATE " + json.dumps(op, separators=(",", ":"))) == b"+OK\r\n"
    finally:
        conn.close()


def test_recent_jobs_of_departed_workers_are_forgotten(
    server: RunningServer, client: WireClient, connect: Callable[[], WireClient], clock: FakeClock
) -> None:
    for i in range(20):
        wid = f"departed-{i:02d}"
        assert client.call("PUSH " + job(jid=f"{wid}-job")) == b"+OK\r\n"
        worker = connect()
        assert worker.hello(wid=wid) == b"+OK\r\n"
        fetched = worker.json("FETCH default")
        assert worker.call("ACK " + json.dumps({"jid": fetched["jid"]})) == b"+OK\r\n"
        worker.send("END")
        assert worker.closed()
    clock.advance(120)  # past the heartbeat timeout: the reaper has run too
    server.run_due_tasks()

    async def departed() -> list[str]:
        services = server.server.services
        assert services is not None
        return [wid for wid in services.broker.recent if wid not in services.registry.workers]

    assert server.call(departed()) == []
