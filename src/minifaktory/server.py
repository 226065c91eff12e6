"""TCP and Unix-socket listeners and the per-connection command loop.

Each connection is an asyncio ``Protocol`` feeding the sans-I/O ``LineReader``
plus one task that performs the handshake and then runs commands one at a
time, so replies leave in the order commands arrived. asyncio's transports
are used directly (not anyio streams) because this is the per-command hot path.

The hot verbs (PUSH, ACK, and a FETCH that finds a job) skip the task: while the
task waits for a line and nothing of the connection is in flight, they run as
they arrive, and their reply is written by the commit (or the fsync) that makes
them durable, through a ``Pending`` reply (a ``state.Waiter``). Lines that come
meanwhile wait for that reply; everything else goes to the task. That saves two
task switches and event loop iterations per command.

With TLS the event loop runs the handshake before ``connection_made``; a
connection whose handshake fails or never finishes (a plain client on a TLS
port) is closed by the loop and logged here at debug level.

What one connection can make the server hold is bounded: before HELLO, a first
line of ``MAX_HELLO_BYTES``; then a partial line of ``max_line_bytes`` (longer
lines are discarded as they arrive), unprocessed lines up to ``MAX_PENDING_LINES``
or ``MAX_PENDING_BYTES`` plus one read (reading pauses beyond), and replies up to
the transport's high-water mark plus one reply (its commands wait beyond: the
client is not reading). Pipelined commands yield to the loop between each other.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from pathlib import Path

import msgspec

from minifaktory import protocol
from minifaktory.commands import Services, Session, dispatch, error_reply, run_now
from minifaktory.config import Config
from minifaktory.errors import StoreError
from minifaktory.payloads import decode_lenient, hello_decoder
from minifaktory.protocol import OVERLONG, Challenge, LineReader, parse_command

log = logging.getLogger(__name__)

#: Stop reading from a client that has this many unprocessed lines queued ...
MAX_PENDING_LINES = 256
#: ... or unprocessed lines holding this many bytes.
MAX_PENDING_BYTES = 1024 * 1024
#: A connection whose first line grows past this without ending is closed: no HELLO is
#: this long, and memory before the handshake stays small for unauthenticated peers.
MAX_HELLO_BYTES = 64 * 1024
#: Bytes taken from a socket per read; clients' commands are lines of a few hundred.
READ_BUFFER_BYTES = 65536

#: The kernel caps a listen backlog at somaxconn; older kernels keep it in 16 bits.
MAX_BACKLOG = 65535
SOMAXCONN_PATH = Path("/proc/sys/net/core/somaxconn")
#: Seconds to wait for a TLS peer's close_notify before dropping the socket.
TLS_SHUTDOWN_TIMEOUT = 5.0
#: A closed or timed-out TLS handshake is noticed this long after the handshake deadline.
TLS_WATCH_MARGIN = 0.1


def listen_backlog(path: Path = SOMAXCONN_PATH) -> int:
    """The accept backlog: the system's somaxconn, as Go's net package (and so Faktory) uses.

    asyncio's default of 100 drops the SYNs of a burst of connects, which then wait
    for retransmits (1 s, 3 s, ...).
    """
    try:
        value = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return socket.SOMAXCONN
    return min(value, MAX_BACKLOG) if value > 0 else socket.SOMAXCONN


class Listener:
    """Accepts connections and owns the set of live ones."""

    def __init__(
        self, services: Services, config: Config, tls: ssl.SSLContext | None = None
    ) -> None:
        self.services = services
        self.config = config
        #: TCP connections start with a TLS handshake when set; the Unix socket stays plain.
        self.tls = tls
        self.connections: set[Connection] = set()
        self.closing = False
        #: Every connection of this listener reads into this buffer, and keeps only the
        #: bytes that arrived (one event loop thread: no two reads overlap).
        self.read_buffer = memoryview(bytearray(READ_BUFFER_BYTES))
        self._servers: list[asyncio.Server] = []

    async def listen_tcp(self, host: str, port: int) -> tuple[str, int]:
        """Listen on TCP; returns the bound (host, port) of the first socket."""
        loop = asyncio.get_running_loop()
        backlog = listen_backlog()
        if self.tls is None:
            server = await loop.create_server(
                lambda: Connection(self), host, port, reuse_address=True, backlog=backlog
            )
        else:
            server = await loop.create_server(
                self._tls_connection,
                host,
                port,
                reuse_address=True,
                backlog=backlog,
                ssl=self.tls,
                # The TLS handshake gets the same deadline as HELLO (Faktory: 2 s).
                ssl_handshake_timeout=self.config.handshake_timeout,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
            )
        self._servers.append(server)
        sockname = server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    def _tls_connection(self) -> Connection:
        """A connection whose TLS handshake is still to come; logged if it never completes."""
        conn = Connection(self)
        delay = self.config.handshake_timeout + TLS_WATCH_MARGIN
        conn.tls_watch = asyncio.get_running_loop().call_later(delay, _tls_handshake_missed)
        return conn

    async def listen_unix(self, path: Path) -> None:
        """Listen on a Unix socket at ``path`` (replacing a stale socket file)."""
        loop = asyncio.get_running_loop()
        if path.is_socket():
            path.unlink()
        server = await loop.create_unix_server(
            lambda: Connection(self), str(path), backlog=listen_backlog()
        )
        self._servers.append(server)

    async def close(self) -> None:
        """Stop accepting, then close every connection."""
        self.closing = True
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.close()
            if conn.tls:
                # close() sent close_notify; waiting for the client's own (an idle client
                # sends none) would hold the exit, so drop the socket as Go's tls.Conn does.
                conn.abort()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()


def _tls_handshake_missed() -> None:
    # asyncio drops a failed TLS handshake silently (the peer's address is not known here).
    log.debug(
        "closed a connection on the TLS port that did not complete the TLS handshake "
        "(a plain tcp:// client, an old TLS version, or a client that does not trust "
        "the certificate)"
    )


class Connection(asyncio.BufferedProtocol):
    """One client connection.

    A ``BufferedProtocol``: asyncio's plain ``Protocol`` allocates 256 KiB for each
    read (glibc serves that with an mmap, a page fault and a munmap every time),
    which cost the standard event loop half its throughput.
    """

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        #: Cancelled by ``connection_made``: fires only when a TLS handshake failed.
        self.tls_watch: asyncio.TimerHandle | None = None
        self.services = listener.services
        self.session = Session(self.services)
        self.transport: asyncio.Transport | None = None
        self._reader = LineReader(listener.config.max_line_bytes)
        self._lines: deque[bytes | object] = deque()
        #: Bytes held by the lines in ``_lines``.
        self._pending_bytes = 0
        #: True until the first complete line (the HELLO) has arrived.
        self._first_line = True
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._paused = False
        self._counted = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop
        self._drained: asyncio.Future[None] | None = None
        #: After the handshake, hot verbs may run outside the task.
        self._ready = False
        #: The reply of a hot verb waiting for its commit; later lines wait for it.
        self._pending: Pending | None = None

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.tls_watch is not None:
            self.tls_watch.cancel()
            self.tls_watch = None
        self.transport = transport  # type: ignore[assignment]
        self.listener.connections.add(self)
        self._loop = asyncio.get_running_loop()
        self.session.hangup = self._loop.create_future()
        self._task = self._loop.create_task(self._serve())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.listener.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.listener.read_buffer[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        """Take bytes from the client (``buffer_updated`` hands over each read)."""
        lines = self._reader.feed(data)
        if not lines:
            if self._first_line and self._reader.buffered > MAX_HELLO_BYTES:
                log.debug("closing %s: a first line over %d bytes", self._peer(), MAX_HELLO_BYTES)
                self.abort()
            return
        self._first_line = False
        self._lines.extend(lines)
        self._pending_bytes += sum(len(line) for line in lines if isinstance(line, bytes))
        if (
            not self._paused
            and self.transport
            and (len(self._lines) > MAX_PENDING_LINES or self._pending_bytes > MAX_PENDING_BYTES)
        ):
            self._paused = True
            self.transport.pause_reading()
        self._pump()

    def eof_received(self) -> bool:
        # The client closed its side. As with Faktory, the lines it sent still run and
        # their replies go out before the connection closes; but a FETCH stops waiting
        # for a job (the client may be gone: a job handed to it would sit reserved
        # until its reservation expired).
        self._eof = True
        self._hang_up()
        self._pump()
        return not self.tls  # asyncio's TLS transport cannot stay half-open

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._hang_up()
        self._wake()
        self.resume_writing()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop running its commands.
        if self._drained is None:
            self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def close(self) -> None:
        """Close the socket (used by reaping and shutdown)."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the socket at once, discarding unsent bytes."""
        if self.transport is not None:
            self.transport.abort()

    @property
    def buffered(self) -> int:
        """Bytes received from the client and not yet run as commands."""
        return self._reader.buffered + self._pending_bytes

    @property
    def tls(self) -> bool:
        """Whether this connection runs over TLS."""
        transport = self.transport
        return transport is not None and transport.get_extra_info("sslcontext") is not None

    # -- reading -------------------------------------------------------------------

    def _hang_up(self) -> None:
        hangup = self.session.hangup
        if hangup is not None and not hangup.done():
            hangup.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pump(self) -> None:
        """Run the hot verbs among the waiting lines here while the task idles; wake the
        task for anything else. Nothing runs while a reply is pending."""
        if self._pending is not None:
            return
        waiter = self._waiter
        if (
            self._ready
            and waiter is not None
            and not waiter.done()
            and self._drained is None
            and not self.listener.closing
        ):
            while self._lines:
                line = self._lines[0]
                if not isinstance(line, bytes):
                    break
                pending = Pending(self)
                try:
                    outcome = run_now(self.session, parse_command(line), pending)
                except Exception:
                    log.exception("command failed: %.200r", line)
                    outcome = protocol.error("internal error"), False
                if outcome is None:
                    break
                self._pop_line()
                reply, wait = outcome
                if wait:
                    pending.reply = reply
                    self._pending = pending
                    return
                self._write(reply)
        if self._lines or self._eof:
            self._wake()

    def _replied(self, reply: bytes) -> None:
        """A pending reply is due: write it, then go on with the lines that waited."""
        self._pending = None
        self._write(reply)
        if self._lines or self._eof:
            self._loop.call_soon(self._pump)

    async def _next_line(self) -> bytes | object | None:
        while not self._lines:
            if self._eof:
                return None
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._pop_line()

    def _pop_line(self) -> bytes | object:
        line = self._lines.popleft()
        if isinstance(line, bytes):
            self._pending_bytes -= len(line)
        if (
            self._paused
            and self.transport
            and len(self._lines) < MAX_PENDING_LINES // 2
            and self._pending_bytes < MAX_PENDING_BYTES // 2
        ):
            self._paused = False
            self.transport.resume_reading()
        return line

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- the connection's life -----------------------------------------------------

    async def _serve(self) -> None:
        try:
            if await self._handshake():
                await self._command_loop()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("connection failed")
        finally:
            self._finish()

    def _peer(self) -> str:
        """The client's address for log lines."""
        peer = self.transport.get_extra_info("peername") if self.transport else None
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return str(peer or "a Unix socket client")

    async def _handshake(self) -> bool:
        """Greet, read HELLO within the deadline, check the password (spec §1.2)."""
        config = self.listener.config
        challenge = Challenge.new() if config.password else None
        self._write(protocol.greeting(challenge))
        try:
            line = await asyncio.wait_for(self._next_line(), config.handshake_timeout)
        except TimeoutError:
            log.debug("closing %s: no HELLO within %g s", self._peer(), config.handshake_timeout)
            return False
        if not isinstance(line, bytes) or not line.startswith(protocol.HELLO_PREFIX):
            # A TLS client on a plain port ends here too: its ClientHello is no HELLO.
            log.debug("closing %s: the connection did not start with HELLO", self._peer())
            return False
        try:
            hello = decode_lenient(hello_decoder, line[len(b"HELLO ") :])
        except msgspec.DecodeError:
            return False
        if challenge is not None and not challenge.verify(config.password, hello.pwdhash, hello.v):
            self._write(protocol.error("Invalid password"))
            return False
        if hello.wid:
            services = self.services
            self.session.wid = hello.wid
            self.session.worker = services.registry.attach(
                hello.wid,
                self.close,
                hostname=hello.hostname,
                pid=hello.pid,
                labels=list(hello.labels or []),
                now=services.clock.now_ns(),
            )
        self._write(protocol.OK)
        stats = self.services.stats
        stats.connections += 1
        self._counted = True
        if stats.connections > config.max_connections:
            self._write(protocol.error(f"too many connections: {stats.connections}"))
            return False
        return True

    async def _command_loop(self) -> None:
        session = self.session
        self._ready = True
        while True:
            line = await self._next_line()
            if line is None:
                return
            if self.listener.closing:
                self._write(protocol.error("shutdown in progress"))
                return
            if line is OVERLONG:
                limit = self.listener.config.max_line_bytes
                reply: bytes | None = protocol.error(f"command line too long (limit {limit} bytes)")
            else:
                assert isinstance(line, bytes)
                try:
                    reply = await dispatch(session, parse_command(line))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("command failed: %.200r", line)
                    reply = protocol.error("internal error")
            if reply is None:
                return
            self._write(reply)
            if self._drained is not None:
                await self._drained
            elif self._lines:
                # Pipelined commands (INFO, errors) may not suspend at all: let the
                # other connections run between two of them.
                await asyncio.sleep(0)

    def _finish(self) -> None:
        self.listener.connections.discard(self)
        if self._counted:
            self.services.stats.connections -= 1
            self._counted = False
        worker = self.session.worker
        if worker is not None:
            self.services.registry.detach(worker, self.close)
            self.session.worker = None
        self.close()


class Pending:
    """A hot verb's reply, written once its change is committed (or durable).

    A ``state.Waiter`` the broker resolves from the commit itself; ``reply`` stays
    None while the command is still running (it may fail and reply at once), and
    a Pending without a reply writes nothing.
    """

    __slots__ = ("_connection", "_done", "reply")

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._done = False
        self.reply: bytes | None = None

    def done(self) -> bool:
        return self._done

    def set_result(self, result: None, /) -> None:
        self._done = True
        if self.reply is not None:
            self._connection._replied(self.reply)

    def set_exception(self, exception: BaseException, /) -> None:
        self._done = True
        if self.reply is not None:
            failure = exception if isinstance(exception, StoreError) else StoreError(str(exception))
            self._connection._replied(error_reply(failure))
