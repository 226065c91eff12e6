"""Overload: ten thousand held connections, a burst of connects, slow and non-reading
clients, oversized lines, and the open-file limit. Memory figures are printed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import minifaktory
from minifaktory import app
from minifaktory.app import RunningServer
from minifaktory.config import MAX_LINE_BYTES, Config
from minifaktory.protocol import LineReader
from minifaktory.server import (
    MAX_HELLO_BYTES,
    MAX_PENDING_BYTES,
    Connection,
    listen_backlog,
)
from tests.conftest import WireClient, job

LISTENING = re.compile(r"listening at tcp://([\d.]+):(\d+)")
HELD = 10_000
BURST = 1_000
#: Descriptors the test process needs beyond the held connections.
SPARE_FILES = 200
MB = 1024 * 1024


# -- a server process of its own ---------------------------------------------------------


@dataclass
class ServerProcess:
    """``python -m minifaktory`` started by this module; ``log`` collects its stderr."""

    popen: subprocess.Popen[str]
    port: int
    log: list[str]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def status_kb(self, field: str) -> int:
        """A ``/proc/PID/status`` figure in KiB (VmRSS, VmHWM)."""
        text = Path(f"/proc/{self.pid}/status").read_text()
        m = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
        assert m is not None, field
        return int(m[1])

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (Linux 4.0+); False where that is not allowed."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True


#: How the server command is started.
COMMAND = (sys.executable, "-m", "minifaktory")


@contextlib.contextmanager
def server_process(
    tmp: Path, toml: str = "", command: tuple[str, ...] = COMMAND
) -> Iterator[ServerProcess]:
    """Start a server on a free 127.0.0.1 port with ``toml`` as conf.d; SIGTERM it after."""
    (tmp / "conf.d").mkdir(parents=True, exist_ok=True)
    (tmp / "conf.d" / "x.toml").write_text(toml, encoding="utf-8")
    cmd = [*command, "-b", "127.0.0.1:0", "-w", "127.0.0.1:0", "-c", str(tmp),
           "--db", str(tmp / "overload.db"), "--durability", "normal", "-l", "info"]  # fmt: skip
    env = {**os.environ, "FAKTORY_ENV": "development"}
    env.pop("FAKTORY_PASSWORD", None)
    popen = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    log: list[str] = []
    drain: threading.Thread | None = None
    try:
        assert popen.stderr is not None
        port = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = popen.stderr.readline()
            if not line:
                break
            log.append(line)
            m = LISTENING.search(line)
            if m:
                port = int(m[2])
                break
        assert port, "server did not report its port:\n" + "".join(log)
        stream = popen.stderr
        drain = threading.Thread(target=lambda: log.extend(stream), daemon=True)
        drain.start()
        yield ServerProcess(popen, port, log)
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(15)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(10)
        if drain is not None:
            drain.join(10)
        if popen.stderr is not None:
            popen.stderr.close()


@pytest.fixture
def file_limit() -> Iterator[Callable[[int], None]]:
    """``need(n)`` raises this process's soft open-file limit to the hard one (skipping the
    test if even that is below ``n``); the old limit is restored afterwards."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)

    def need(count: int) -> None:
        soft, hard = old
        if hard != resource.RLIM_INFINITY and hard < count:
            pytest.skip(f"the hard open-file limit is {hard}; this test needs {count}")
        if soft != resource.RLIM_INFINITY and soft < count:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    yield need
    resource.setrlimit(resource.RLIMIT_NOFILE, old)


@pytest.fixture(scope="module")
def crowd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server process allowing more than ten thousand connections (the command raises
    its own open-file limit to the hard one)."""
    toml = f"[faktory]\nmax_connections = {HELD + 100}\n"
    with server_process(tmp_path_factory.mktemp("crowd"), toml) as proc:
        yield proc


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """Print a figure into the test run's output even when output is captured."""
    with capsys.disabled():
        print(f"\n  [overload] {text}")


# -- many connections from one asyncio client --------------------------------------------


class Handshake(asyncio.Protocol):
    """Waits for ``+HI``, answers ``HELLO {}``, and resolves ``done`` with the reply."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[bytes] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.greeted = False
        self.finished = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.greeted and b"\r\n" in self.buf:
            greeting, self.buf = self.buf.split(b"\r\n", 1)
            self.greeted = greeting.startswith(b"+HI ")
            if self.greeted and self.transport is not None:
                self.transport.write(b"HELLO {}\r\n")
        if self.greeted and b"\r\n" in self.buf and not self.done.done():
            self.finished = time.perf_counter()
            self.done.set_result(self.buf.split(b"\r\n", 1)[0])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(b"closed")
        if not self.lost.done():
            self.lost.set_result(None)


async def handshakes(port: int, count: int, gate: int | None = None) -> list[Handshake]:
    """``count`` connections that completed the handshake (at most ``gate`` at a time);
    if any connect fails, every one opened is closed."""
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(gate or count)
    opened: list[Handshake] = []

    async def one() -> Handshake:
        async with limit:
            _, proto = await loop.create_connection(Handshake, "127.0.0.1", port)
            opened.append(proto)
            await proto.done
        return proto

    try:
        return await asyncio.gather(*(one() for _ in range(count)))
    except BaseException:
        close_all(opened)
        raise


def close_all(protos: list[Handshake]) -> None:
    for proto in protos:
        if proto.transport is not None:
            proto.transport.close()


def run_async(coro: Any, timeout: float) -> Any:
    """Run ``coro`` on a fresh event loop within ``timeout`` seconds."""

    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def info(client: WireClient) -> dict[str, Any]:
    data: dict[str, Any] = client.json("INFO")
    return data


def round_trip(port: int, jid: str) -> None:
    """A fresh client: HELLO, PUSH, FETCH and ACK one job."""
    client = WireClient("127.0.0.1", port)
    try:
        assert client.call("HELLO {}") == b"+OK\r\n"
        assert client.call("PUSH " + job(jid=jid, queue="probe")) == b"+OK\r\n"
        assert client.json("FETCH probe")["jid"] == jid
        assert client.call("ACK " + json.dumps({"jid": jid})) == b"+OK\r\n"
    finally:
        client.close()


def connections(port: int) -> int:
    client = WireClient("127.0.0.1", port)
    try:
        client.call("HELLO {}")
        return int(info(client)["server"]["connections"]) - 1
    finally:
        client.close()


def wait_for_connections(port: int, expected: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    count = connections(port)
    while count != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        count = connections(port)
    return count


@pytest.mark.timeout(90)
def test_ten_thousand_connections_held(
    crowd_server: ServerProcess,
    file_limit: Callable[[int], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    file_limit(HELD + SPARE_FILES)
    port = crowd_server.port
    assert wait_for_connections(port, 0, 10) == 0
    idle_kb = crowd_server.status_kb("VmRSS")

    async def crowd() -> tuple[float, int, int]:
        started = time.perf_counter()
        held = await handshakes(port, HELD, gate=500)
        elapsed = time.perf_counter() - started
        try:
            refused = [p.done.result() for p in held if p.done.result() != b"+OK"]
            assert refused == [], refused[:5]
            # Every connection is still open, and the server counts them all.
            loop = asyncio.get_running_loop()
            counted = await loop.run_in_executor(None, connections, port)
            await loop.run_in_executor(None, round_trip, port, "crowd-probe-000000000001")
            assert not any(p.lost.done() for p in held)
            return elapsed, counted, crowd_server.status_kb("VmRSS")
        finally:
            close_all(held)

    elapsed, counted, held_kb = run_async(crowd(), 60)
    assert counted == HELD
    per_connection = (held_kb - idle_kb) / HELD
    report(
        capsys,
        f"{HELD} connections opened and handshaken in {elapsed:.1f} s; server RSS "
        f"{idle_kb / 1024:.0f} MB idle, {held_kb / 1024:.0f} MB with them "
        f"({per_connection:.1f} KB each)",
    )
    assert held_kb < 1024 * 1024  # under 1 GB
    # The server lets go of every one of them.
    assert wait_for_connections(port, 0, 20) == 0


@pytest.mark.timeout(60)
def test_burst_of_simultaneous_connects_all_handshake(
    crowd_server: ServerProcess,
    file_limit: Callable[[int], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    file_limit(BURST + SPARE_FILES)

    async def burst() -> tuple[float, list[Handshake]]:
        started = time.perf_counter()
        protos = await handshakes(crowd_server.port, BURST)
        close_all(protos)
        return started, protos

    started, protos = run_async(burst(), 30)
    assert all(p.greeted for p in protos)
    # None was cut by the 2 s handshake deadline: every one got +OK.
    assert [p.done.result() for p in protos] == [b"+OK"] * BURST
    times = sorted(p.finished - started for p in protos)
    report(
        capsys,
        f"{BURST} simultaneous connects handshaken: p50 {statistics.median(times):.3f} s, "
        f"max {times[-1]:.3f} s",
    )


def test_listen_backlog_is_somaxconn(crowd_server: ServerProcess) -> None:
    """asyncio's backlog of 100 would drop most SYNs of a burst of connects."""
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed")
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{crowd_server.port}"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    # For a listening socket, ss shows the backlog as Send-Q.
    fields = out.split()
    assert fields[0] == "LISTEN", out
    assert int(fields[2]) == listen_backlog()


def test_listen_backlog_reads_somaxconn(tmp_path: Path) -> None:
    path = tmp_path / "somaxconn"
    path.write_text("4096\n")
    assert listen_backlog(path) == 4096
    path.write_text("1000000\n")
    assert listen_backlog(path) == 65535
    path.write_text("garbage\n")
    assert listen_backlog(path) == socket.SOMAXCONN
    assert listen_backlog(tmp_path / "missing") == socket.SOMAXCONN


# -- slow clients --------------------------------------------------------------------------


def closed_by_peer(sock: socket.socket, seconds: float) -> bool:
    """True when the peer closes within ``seconds`` (EOF or reset); any data is skipped."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if sock.recv(65536) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


@pytest.mark.timeout(30)
def test_slow_clients_are_cut_at_the_handshake_deadline(
    crowd_server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """A silent client and one dripping a HELLO byte by byte, on the default 2 s deadline."""
    line = b'HELLO {"hostname":"' + b"h" * 200 + b'"}\r\n'
    silent = socket.create_connection(("127.0.0.1", crowd_server.port), timeout=10)
    drip = socket.create_connection(("127.0.0.1", crowd_server.port), timeout=10)
    started = time.monotonic()
    sent = 0
    stop = threading.Event()

    def dripping() -> None:
        nonlocal sent
        while sent < len(line) and not stop.wait(0.05):
            try:
                drip.send(line[sent : sent + 1])
            except OSError:
                return
            sent += 1

    thread = threading.Thread(target=dripping)
    thread.start()
    try:
        assert closed_by_peer(silent, 10)
        silent_after = time.monotonic() - started
        assert closed_by_peer(drip, 10)
        drip_after = time.monotonic() - started
    finally:
        stop.set()
        thread.join(10)
        silent.close()
        drip.close()
    # The drip kept the line going, but the deadline covers the whole HELLO line.
    assert 0 < sent < len(line)
    report(
        capsys,
        f"silent client closed after {silent_after:.2f} s, dripping client after "
        f"{drip_after:.2f} s ({sent} of {len(line)} bytes sent)",
    )


def test_overlong_first_line_closes_before_the_deadline() -> None:
    """No HELLO is 64 KiB: a peer streaming a huge first line is dropped, not buffered."""
    with minifaktory.run(handshake_timeout=60) as srv:
        sock = socket.create_connection((srv.host, srv.port), timeout=10)
        try:
            assert sock.recv(100).startswith(b"+HI")
            with contextlib.suppress(OSError):
                sock.sendall(b'HELLO {"hostname":"' + b"h" * (MAX_HELLO_BYTES + 65536))
            assert closed_by_peer(sock, 10)
        finally:
            sock.close()
        # A HELLO followed at once by a large command in the same write is fine.
        big = job(jid="big-after-hello-00000001", args=["x" * (2 * MAX_HELLO_BYTES)])
        with contextlib.closing(WireClient(srv.host, srv.port)) as client:
            client.sock.sendall(b"HELLO {}\r\nPUSH " + big.encode() + b"\r\n")
            assert client.reply() == b"+OK\r\n"
            assert client.reply() == b"+OK\r\n"


# -- oversized payloads ----------------------------------------------------------------------


def overlong_push(size: int) -> Iterator[bytes]:
    """One PUSH line of ``size`` bytes (plus CRLF), in 1 MiB pieces."""
    head = b'PUSH {"jid":"too-big-000000000000000001","jobtype":"Big","args":["'
    tail = b'"]}'
    yield head
    filler = b"x" * MB
    left = size - len(head) - len(tail)
    while left > 0:
        piece = filler[: min(left, MB)]
        left -= len(piece)
        yield piece
    yield tail + b"\r\n"


@pytest.mark.timeout(60)
def test_oversized_line_is_refused_and_not_buffered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = 64 * MB
    with (
        server_process(tmp_path) as proc,
        contextlib.closing(WireClient("127.0.0.1", proc.port)) as client,
    ):
        assert client.call("HELLO {}") == b"+OK\r\n"
        assert client.call("PUSH " + job(jid="kept-job-000000000000001")) == b"+OK\r\n"
        before = info(client)["server"]["command_count"]
        rss_kb = proc.status_kb("VmRSS")
        peak_known = proc.reset_peak()
        for piece in overlong_push(size):
            client.sock.sendall(piece)
        assert client.reply() == (
            f"-ERR command line too long (limit {MAX_LINE_BYTES} bytes)\r\n".encode()
        )
        peak_kb = proc.status_kb("VmHWM")
        # The connection and the data are intact; the next command works.
        state = info(client)
        assert state["faktory"]["queues"] == {"default": 1}
        assert state["server"]["command_count"] == before + 1
        assert client.json("FETCH default")["jid"] == "kept-job-000000000000001"
        assert client.call("PUSH " + job(jid="next-job-000000000000001")) == b"+OK\r\n"
    growth_mb = (peak_kb - rss_kb) / 1024
    report(
        capsys,
        f"{size // MB} MiB line refused; server RSS {rss_kb / 1024:.0f} MB before, "
        + (f"peak {peak_kb / 1024:.0f} MB (+{growth_mb:.0f} MB)" if peak_known else "peak n/a"),
    )
    if peak_known:
        # Discarded as it arrives: the peak stays well under the line's size.
        assert growth_mb < size / MB / 2


def test_line_reader_scans_each_byte_once() -> None:
    """A long line arriving in small pieces is searched for its newline in linear time."""

    class CountingBuffer(bytearray):
        scanned = 0

        def find(self, sub: Any, start: Any = 0, *args: Any) -> int:
            CountingBuffer.scanned += max(len(self) - int(start), 0)
            return super().find(sub, start, *args)

    reader = LineReader(MAX_LINE_BYTES)
    reader._buf = CountingBuffer()
    fed = 0
    piece = b"x" * 1024
    for _ in range(2048):
        assert reader.feed(piece) == []
        fed += len(piece)
    assert reader.feed(b"\r\n") == [b"x" * fed]
    assert CountingBuffer.scanned <= 2 * fed


# -- clients that pipeline and never read ---------------------------------------------------


def server_connections(srv: RunningServer) -> list[Connection]:
    async def get() -> list[Connection]:
        assert srv.server.listener is not None
        return list(srv.server.listener.connections)

    result: list[Connection] = srv.call(get())
    return result


def send_until_blocked(
    sock: socket.socket, lines: Callable[[int], bytes], limit: int
) -> tuple[int, bytes]:
    """Send lines without reading replies until the socket takes nothing for 0.5 s
    (or ``limit`` bytes went out). Returns the lines started and the rest of the last one."""
    sock.setblocking(False)
    started, sent_total = 0, 0
    pending = b""
    idle_since: float | None = None
    deadline = time.monotonic() + 20
    while sent_total < limit and time.monotonic() < deadline:
        if not pending:
            pending = lines(started)
            started += 1
        try:
            n = sock.send(pending)
        except BlockingIOError:
            n = 0
        if n:
            pending, sent_total, idle_since = pending[n:], sent_total + n, None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > 0.5:
            break
        else:
            time.sleep(0.01)
    sock.settimeout(30)
    return started, pending


def test_pending_bytes_of_a_stalled_client_are_bounded() -> None:
    """A client whose first command blocks keeps pipelining large PUSHes: the server
    stops reading after about MAX_PENDING_BYTES, then catches up when the command ends."""
    line_size = 512 * 1024
    with (
        minifaktory.run(fetch_timeout=30) as srv,
        contextlib.closing(WireClient(srv.host, srv.port, timeout=30)) as greedy,
        contextlib.closing(WireClient(srv.host, srv.port)) as other,
    ):
        assert greedy.call("HELLO {}") == b"+OK\r\n"
        greedy.send("FETCH stalled")  # nothing there: it waits up to 30 s

        def push_line(i: int) -> bytes:
            body = job(jid=f"pipelined-{i:014d}", args=["y" * line_size])
            return b"PUSH " + body.encode() + b"\r\n"

        started, rest = send_until_blocked(greedy.sock, push_line, 64 * MB)
        held = max(c.buffered for c in server_connections(srv))
        # Without the byte bound the server would read on until 256 lines (128 MiB).
        assert held <= MAX_PENDING_BYTES + 2 * line_size + 512 * 1024, held
        # Wake the FETCH: the server resumes reading and runs every pipelined PUSH.
        assert other.call("HELLO {}") == b"+OK\r\n"
        wake = job(jid="wakes-the-fetch-00000001", queue="stalled")
        assert other.call("PUSH " + wake) == b"+OK\r\n"
        greedy.sock.sendall(rest)
        assert json.loads(greedy.reply().split(b"\r\n")[1])["jid"] == "wakes-the-fetch-00000001"
        for _ in range(started):
            assert greedy.reply() == b"+OK\r\n"
        assert info(other)["faktory"]["queues"]["default"] == started


def test_pipelined_backlog_does_not_hold_up_other_clients() -> None:
    """Commands that never suspend (INFO) pipelined by one client are interleaved with
    other clients' commands instead of running as one block on the event loop."""
    backlog = 5000
    with (
        minifaktory.run() as srv,
        contextlib.closing(WireClient(srv.host, srv.port)) as greedy,
        contextlib.closing(WireClient(srv.host, srv.port)) as other,
    ):
        assert greedy.call("HELLO {}") == b"+OK\r\n"
        assert other.call("HELLO {}") == b"+OK\r\n"
        replies = 0

        def read_replies() -> None:  # so that the replies never fill the socket
            nonlocal replies
            for _ in range(backlog):
                greedy.reply()
                replies += 1

        reader = threading.Thread(target=read_replies)
        reader.start()
        before = info(other)["server"]["command_count"]
        greedy.sock.sendall(b"INFO\r\n" * backlog)
        served_at = info(other)["server"]["command_count"]
        reader.join(30)
        assert replies == backlog
        # The other client's INFO ran before the backlog was through.
        assert served_at - before < backlog


# -- the open-file limit -------------------------------------------------------------------


class FakeLimits:
    """Stands in for getrlimit/setrlimit; ``refuse`` lists soft limits setrlimit rejects."""

    def __init__(self, soft: int, hard: int, refuse: tuple[int, ...] = ()) -> None:
        self.limits = (soft, hard)
        self.refuse = refuse
        self.calls: list[tuple[int, int]] = []

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.limits

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        self.calls.append(limits)
        if limits[0] in self.refuse:
            raise ValueError("not allowed")
        self.limits = limits


@pytest.fixture
def fake_limits(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeLimits]:
    def install(soft: int, hard: int, refuse: tuple[int, ...] = ()) -> FakeLimits:
        fake = FakeLimits(soft, hard, refuse)
        monkeypatch.setattr(resource, "getrlimit", fake.getrlimit)
        monkeypatch.setattr(resource, "setrlimit", fake.setrlimit)
        return fake

    return install


def test_open_file_limit_raised_to_hard(fake_limits: Callable[..., FakeLimits]) -> None:
    fake = fake_limits(1024, 20000)
    assert app.raise_open_file_limit() == 20000
    assert fake.calls == [(20000, 20000)]


def test_open_file_limit_already_at_hard(fake_limits: Callable[..., FakeLimits]) -> None:
    fake = fake_limits(20000, 20000)
    assert app.raise_open_file_limit() == 20000
    assert fake.calls == []


def test_open_file_limit_failure_keeps_the_old_limit(
    fake_limits: Callable[..., FakeLimits],
) -> None:
    fake = fake_limits(1024, 4096, refuse=(4096,))
    assert app.raise_open_file_limit() == 1024
    assert fake.limits == (1024, 4096)


def test_open_file_limit_unlimited_hard_falls_back_to_open_max(
    fake_limits: Callable[..., FakeLimits],
) -> None:
    unlimited = resource.RLIM_INFINITY
    fake = fake_limits(256, unlimited, refuse=(unlimited,))
    assert app.raise_open_file_limit() == app.OPEN_MAX
    assert fake.calls == [(unlimited, unlimited), (app.OPEN_MAX, unlimited)]


def test_low_open_file_limit_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    config = Config(max_connections=10_000)
    with caplog.at_level("WARNING", logger="minifaktory.app"):
        app.check_open_file_limit(config, 20_000)
        assert caplog.records == []
        app.check_open_file_limit(config, 1024)
    assert "max_connections is 10000 but this process may open only 1024 files" in caplog.text


def test_in_process_server_leaves_the_limit_alone() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 4096) - 1 if soft != resource.RLIM_INFINITY else 4095
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        with minifaktory.run() as srv:
            assert srv.port
            assert resource.getrlimit(resource.RLIMIT_NOFILE) == (lowered, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(60)
def test_command_raises_its_open_file_limit(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard open-file limit is only {hard}")
    if not Path("/proc/self/limits").exists():
        pytest.skip("needs /proc")
    # Start the command with a low soft limit, as a default shell (ulimit -n 1024) would.
    launcher = (
        "import resource, runpy, sys; "
        "NOFILE = resource.RLIMIT_NOFILE; "
        "resource.setrlimit(NOFILE, (256, resource.getrlimit(NOFILE)[1])); "
        "sys.argv = ['minifaktory', *sys.argv[1:]]; "
        "runpy.run_module('minifaktory', run_name='__main__')"
    )
    with server_process(tmp_path, command=(sys.executable, "-c", launcher)) as proc:
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        m = re.search(r"^Max open files\s+(\S+)\s+(\S+)", limits, re.MULTILINE)
        assert m is not None, limits
        assert m[1] == m[2] != "256"
        round_trip(proc.port, "limit-probe-000000000001")


def test_reads_share_one_buffer_instead_of_allocating_one_each(tmp_path: Path) -> None:
    """asyncio's plain ``Protocol`` allocates 256 KiB per read (an mmap and a munmap in
    glibc); the server's connections read into their listener's buffer instead."""
    import tracemalloc

    def talk(host: str, port: int, rounds: int) -> list[bytes]:
        with socket.create_connection((host, port), timeout=10) as sock:
            wire = sock.makefile("rwb", buffering=0)
            replies = [wire.readline()]
            wire.write(b"HELLO {}\r\n")
            replies.append(wire.readline())
            for _ in range(rounds):
                wire.write(b"QUEUE LATENCY default\r\n")
                replies.append(wire.readline() + wire.readline())
            return replies

    async def main() -> tuple[int, list[bytes]]:
        async with minifaktory.serve(db_path=tmp_path / "r.db") as server:
            await asyncio.to_thread(talk, server.host, server.port, 5)  # warm up
            tracemalloc.start()
            try:
                replies = await asyncio.to_thread(talk, server.host, server.port, 200)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            return peak, replies

    peak, replies = asyncio.run(main())  # the standard event loop: the case that allocated
    assert replies[1] == b"+OK\r\n"
    assert all(r.startswith(b"$") for r in replies[2:])
    assert peak < 128 * 1024, f"a read allocated a large buffer: peak {peak} bytes"
