"""A blocking Faktory client: what the ``minifaktory`` tools use, and any script may.

It speaks to minifaktory and to the real Faktory alike. The server is named by a
URL as every Faktory client names it (spec §6.2): ``tcp://[:password@]host:port``
or ``tcp+tls://…``; ``FAKTORY_PROVIDER`` names the variable holding the URL,
else ``FAKTORY_URL``, else ``tcp://localhost:7419``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import ssl
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from minifaktory.protocol import PROTOCOL_VERSION, Reply, ReplyReader, pwdhash

T = TypeVar("T")

DEFAULT_URL = "tcp://localhost:7419"
DEFAULT_PORT = 7419
#: Seconds to wait for the TCP (and TLS) connection and the greeting.
CONNECT_TIMEOUT = 5.0


class FaktoryError(Exception):
    """Any failure talking to a Faktory server."""


class ServerError(FaktoryError):
    """An ``-ERR``-style reply; ``code`` is its first word (ERR, NOTUNIQUE, …)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code} {message}" if message else code)
        self.code = code
        self.message = message


class NotUnique(ServerError):
    """PUSH of a unique job whose lock is held (``-NOTUNIQUE``)."""


class ConnectionFailed(FaktoryError):
    """The server could not be reached, or it closed the connection."""


@dataclass(frozen=True, slots=True)
class Location:
    """Where a server is and how to reach it."""

    host: str
    port: int
    password: str
    tls: bool

    @property
    def display(self) -> str:
        """The URL without its password."""
        scheme = "tcp+tls" if self.tls else "tcp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


def url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The server URL the environment names, as Faktory's clients read it."""
    env = os.environ if environ is None else environ
    provider = env.get("FAKTORY_PROVIDER", "")
    if provider:
        if ":" in provider:
            raise FaktoryError(
                "FAKTORY_PROVIDER names the variable that holds the URL, not the URL itself"
            )
        return env.get(provider, "") or DEFAULT_URL
    return env.get("FAKTORY_URL", "") or DEFAULT_URL


def parse_url(url: str) -> Location:
    """``tcp://[user:password@]host:port`` or ``tcp+tls://…`` → ``Location``."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    if parts.scheme not in ("tcp", "tcp+tls"):
        raise FaktoryError(f"unsupported URL scheme {parts.scheme!r}: use tcp:// or tcp+tls://")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise FaktoryError(f"invalid port in {url!r}") from None
    return Location(
        host=parts.hostname or "localhost",
        port=port,
        password=unquote(parts.password or ""),
        tls=parts.scheme == "tcp+tls",
    )


# -- the conversation without I/O: a request is a line and how to read its reply ------


@dataclass(frozen=True, slots=True)
class Request(Generic[T]):
    """One command line, and what its reply means."""

    line: bytes
    read: Callable[[Reply], T]


def command(verb: str, payload: Any = None) -> bytes:
    """``VERB payload\\r\\n``; ``payload`` is JSON-encoded unless ``str``/``bytes``."""
    line = verb.encode()
    if payload is not None:
        if isinstance(payload, bytes):
            body = payload
        elif isinstance(payload, str):
            body = payload.encode()
        else:
            body = json.dumps(payload, separators=(",", ":")).encode()
        line += b" " + body
    return line + b"\r\n"


def raise_for(reply: Reply) -> None:
    """The typed error of an error reply."""
    if reply.kind == "-":
        text = (reply.data or b"").decode("utf-8", "replace")
        code, _, message = text.partition(" ")
        raise (NotUnique if code == "NOTUNIQUE" else ServerError)(code, message)


def expect_ok(reply: Reply) -> None:
    raise_for(reply)
    if reply.kind != "+":
        raise FaktoryError(f"expected OK, got {reply.data!r}")


def read_json(reply: Reply) -> Any:
    raise_for(reply)
    return None if reply.data is None else json.loads(reply.data)


def hello(
    greeting: Reply, location: Location, wid: str | None, labels: Iterable[str]
) -> Request[None]:
    """The HELLO that answers a server's greeting."""
    raise_for(greeting)
    text = (greeting.data or b"").decode("utf-8", "replace")
    if not text.startswith("HI "):
        raise FaktoryError(f"unexpected greeting {text[:80]!r}")
    offer = json.loads(text[3:])
    body: dict[str, Any] = {"v": PROTOCOL_VERSION}
    if wid is not None:
        body.update(wid=wid, hostname=socket.gethostname(), pid=os.getpid(), labels=list(labels))
    if "s" in offer:
        if not location.password:
            raise FaktoryError("the server requires a password: put it in the URL")
        body["pwdhash"] = pwdhash(location.password, offer["s"], int(offer.get("i", 1)))
    return Request(command("HELLO", body), expect_ok)


class Requests:
    """Every command a client sends, as ``Request`` values (shared by both clients)."""

    @staticmethod
    def push(job: Mapping[str, Any]) -> Request[str]:
        body = _with_defaults(job)

        def read(reply: Reply) -> str:
            expect_ok(reply)
            return str(body["jid"])

        return Request(command("PUSH", body), read)

    @staticmethod
    def push_bulk(jobs: Iterable[Mapping[str, Any]]) -> Request[dict[str, str]]:
        return Request(
            command("PUSHB", [_with_defaults(j) for j in jobs]),
            lambda reply: dict(read_json(reply) or {}),
        )

    @staticmethod
    def fetch(queues: Sequence[str]) -> Request[dict[str, Any] | None]:
        def read(reply: Reply) -> dict[str, Any] | None:
            job = read_json(reply)
            return dict(job) if job is not None else None

        return Request(command("FETCH", " ".join(queues or ("default",))), read)

    @staticmethod
    def ack(jid: str) -> Request[None]:
        return Request(command("ACK", {"jid": jid}), expect_ok)

    @staticmethod
    def fail(jid: str, errtype: str, message: str, backtrace: list[str] | None) -> Request[None]:
        body = {"jid": jid, "errtype": errtype, "message": message, "backtrace": backtrace or []}
        return Request(command("FAIL", body), expect_ok)

    @staticmethod
    def beat(wid: str | None, current_state: str = "", rss_kb: int = 0) -> Request[str]:
        def read(reply: Reply) -> str:
            if reply.kind == "+":
                return ""
            state = read_json(reply)
            return str(state.get("state", "")) if isinstance(state, dict) else ""

        body: dict[str, Any] = {"wid": wid}
        if current_state:
            body["current_state"] = current_state
        if rss_kb:
            body["rss_kb"] = rss_kb
        return Request(command("BEAT", body), read)

    @staticmethod
    def info() -> Request[dict[str, Any]]:
        return Request(command("INFO"), lambda reply: dict(read_json(reply)))

    @staticmethod
    def mutate(operation: Mapping[str, Any]) -> Request[None]:
        return Request(command("MUTATE", operation), expect_ok)

    @staticmethod
    def queue(action: str, queues: Sequence[str]) -> Request[None]:
        return Request(command("QUEUE", " ".join((action.upper(), *queues))), expect_ok)

    @staticmethod
    def flush() -> Request[None]:
        return Request(command("FLUSH"), expect_ok)

    @staticmethod
    def track_set(
        jid: str, percent: int | None, desc: str | None, reserve_until: str | None
    ) -> Request[None]:
        body: dict[str, Any] = {"jid": jid}
        if percent is not None:
            body["percent"] = percent
        if desc is not None:
            body["desc"] = desc
        if reserve_until is not None:
            body["reserve_until"] = reserve_until
        return Request(
            command("TRACK", "SET " + json.dumps(body, separators=(",", ":"))), expect_ok
        )

    @staticmethod
    def batch_new(spec: Mapping[str, Any]) -> Request[str]:
        return Request(command("BATCH", "NEW " + json.dumps(spec, separators=(",", ":"))), _bid)

    @staticmethod
    def batch(action: str, bid: str) -> Request[str]:
        return Request(command("BATCH", f"{action} {bid}"), _bid)

    @staticmethod
    def batch_status(bid: str) -> Request[dict[str, Any]]:
        return Request(command("BATCH", f"STATUS {bid}"), lambda reply: dict(read_json(reply)))

    @staticmethod
    def track_get(jid: str) -> Request[dict[str, Any]]:
        return Request(command("TRACK", f"GET {jid}"), lambda reply: dict(read_json(reply)))


# -- the blocking client ---------------------------------------------------------------


class _Conversation:
    """What both clients keep: where the server is, who we are, replies not yet read."""

    def __init__(self, url: str | None, wid: str | None) -> None:
        self.location = parse_url(url if url is not None else url_from_env())
        self.wid = wid
        self._reader = ReplyReader()
        self._pending: list[Reply] = []

    def _received(self, data: bytes) -> None:
        if not data:
            raise ConnectionFailed(f"{self.location.display} closed the connection")
        self._pending += _feed(self._reader, data)


class Client(_Conversation):
    """One connection to a Faktory server. Use it from one thread at a time.

    ``with Client(url) as c: c.push({"jobtype": "Email", "args": [1]})``
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = CONNECT_TIMEOUT,
        wid: str | None = None,
        labels: Iterable[str] = (),
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(url, wid)
        self._sock: socket.socket | None = self._connect(timeout, tls_context)
        try:
            self._run(hello(self._reply(), self.location, wid, labels))
        except BaseException:
            self.close()
            raise

    def _connect(self, timeout: float, tls_context: ssl.SSLContext | None) -> socket.socket:
        where = self.location
        try:
            sock = socket.create_connection((where.host, where.port), timeout=timeout)
            if where.tls:
                context = tls_context if tls_context is not None else ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=where.host)
        except OSError as exc:
            raise ConnectionFailed(f"{where.display}: cannot connect: {exc}") from None
        return sock

    def close(self) -> None:
        """Say goodbye (``END``) and close the socket."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.sendall(b"END\r\n")
        sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, verb: str, payload: Any = None) -> Reply:
        """Send any command and return its raw reply."""
        return self._run(Request(command(verb, payload), lambda reply: reply))

    def _run(self, request: Request[T]) -> T:
        if self._sock is None:
            raise ConnectionFailed("the connection is closed")
        try:
            self._sock.sendall(request.line)
        except OSError as exc:
            raise ConnectionFailed(f"{self.location.display}: {exc}") from None
        return request.read(self._reply())

    def _reply(self) -> Reply:
        while not self._pending:
            if self._sock is None:
                raise ConnectionFailed("the connection is closed")
            try:
                data = self._sock.recv(65536)
            except OSError as exc:
                raise ConnectionFailed(f"{self.location.display}: {exc}") from None
            self._received(data)
        return self._pending.pop(0)

    def push(self, job: Mapping[str, Any]) -> str:
        """PUSH one job (a jid is made when it has none); its jid."""
        return self._run(Requests.push(job))

    def push_bulk(self, jobs: Iterable[Mapping[str, Any]]) -> dict[str, str]:
        """PUSHB: jid → error text of every job the server refused ({} when none)."""
        return self._run(Requests.push_bulk(jobs))

    def fetch(self, *queues: str) -> dict[str, Any] | None:
        """FETCH the next job of these queues (default: ``default``), or None."""
        return self._run(Requests.fetch(queues))

    def ack(self, jid: str) -> None:
        """ACK a fetched job."""
        self._run(Requests.ack(jid))

    def fail(
        self, jid: str, errtype: str, message: str, backtrace: list[str] | None = None
    ) -> None:
        """FAIL a fetched job."""
        self._run(Requests.fail(jid, errtype, message, backtrace))

    def beat(self) -> str:
        """BEAT (worker connections): '' or the state the server asks for."""
        return self._run(Requests.beat(self.wid))

    def info(self) -> dict[str, Any]:
        """INFO."""
        return self._run(Requests.info())

    def mutate(self, operation: Mapping[str, Any]) -> None:
        """MUTATE a set: ``{"cmd": "kill", "target": "retries", "filter": {...}}``."""
        self._run(Requests.mutate(operation))

    def queue(self, action: str, *queues: str) -> None:
        """QUEUE PAUSE / RESUME / REMOVE of these queues (``*`` for all)."""
        self._run(Requests.queue(action, queues))

    def flush(self) -> None:
        """FLUSH: delete everything (tests and development only)."""
        self._run(Requests.flush())

    def track_set(
        self,
        jid: str,
        percent: int | None = None,
        desc: str | None = None,
        reserve_until: str | None = None,
    ) -> None:
        """TRACK SET: progress of a tracked job and/or a longer reservation."""
        self._run(Requests.track_set(jid, percent, desc, reserve_until))

    def track_get(self, jid: str) -> dict[str, Any]:
        """TRACK GET: a tracked job's state, percent and description."""
        return self._run(Requests.track_get(jid))

    def batch_new(self, spec: Mapping[str, Any]) -> str:
        """BATCH NEW: ``{"description", "success": job, "complete": job, "parent_bid"}``;
        the new bid. Push members with ``custom.bid``, then ``batch_commit``."""
        return self._run(Requests.batch_new(spec))

    def batch_open(self, bid: str) -> None:
        """BATCH OPEN: add members to a committed batch."""
        self._run(Requests.batch("OPEN", bid))

    def batch_commit(self, bid: str) -> None:
        """BATCH COMMIT: every member is pushed."""
        self._run(Requests.batch("COMMIT", bid))

    def batch_status(self, bid: str) -> dict[str, Any]:
        """BATCH STATUS."""
        return self._run(Requests.batch_status(bid))


# -- the anyio client --------------------------------------------------------------------


class AsyncClient(_Conversation):
    """The same client for async code (asyncio or trio, through anyio).

    ``async with AsyncClient(url) as c: await c.push({"jobtype": "Email"})``;
    one command at a time per client (a lock keeps concurrent callers in line).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = CONNECT_TIMEOUT,
        wid: str | None = None,
        labels: Iterable[str] = (),
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(url, wid)
        self.labels = list(labels)
        self._timeout, self._tls_context = timeout, tls_context
        self._stream: anyio.abc.ByteStream | None = None
        self._lock = anyio.Lock()

    async def connect(self) -> AsyncClient:
        """Open the connection and say HELLO (``async with`` does this)."""
        where = self.location
        try:
            with anyio.fail_after(self._timeout):
                tcp = await anyio.connect_tcp(where.host, where.port)
                self._stream = tcp
                if where.tls:
                    context = self._tls_context or ssl.create_default_context()
                    self._stream = await TLSStream.wrap(
                        tcp, hostname=where.host, ssl_context=context, standard_compatible=False
                    )
                await self._run(hello(await self._reply(), where, self.wid, self.labels))
        except (OSError, TimeoutError, anyio.BrokenResourceError) as exc:
            await self.close()
            raise ConnectionFailed(f"{where.display}: cannot connect: {exc}") from None
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Say goodbye (``END``) and close the connection."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        broken = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)
        with anyio.CancelScope(shield=True):  # a cancelled caller must not leak the socket
            with contextlib.suppress(*broken), anyio.move_on_after(1):
                await stream.send(b"END\r\n")
            with contextlib.suppress(*broken):
                await stream.aclose()

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, verb: str, payload: Any = None) -> Reply:
        """Send any command and return its raw reply."""
        return await self._run(Request(command(verb, payload), lambda reply: reply))

    async def _run(self, request: Request[T]) -> T:
        async with self._lock:
            if self._stream is None:
                raise ConnectionFailed("the connection is closed")
            try:
                await self._stream.send(request.line)
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                raise ConnectionFailed(f"{self.location.display}: {exc}") from None
            return request.read(await self._reply())

    async def _reply(self) -> Reply:
        while not self._pending:
            if self._stream is None:
                raise ConnectionFailed("the connection is closed")
            try:
                data = await self._stream.receive(65536)
            except anyio.EndOfStream:
                data = b""
            except (OSError, anyio.BrokenResourceError) as exc:
                raise ConnectionFailed(f"{self.location.display}: {exc}") from None
            self._received(data)
        return self._pending.pop(0)

    async def push(self, job: Mapping[str, Any]) -> str:
        """PUSH one job (a jid is made when it has none); its jid."""
        return await self._run(Requests.push(job))

    async def push_bulk(self, jobs: Iterable[Mapping[str, Any]]) -> dict[str, str]:
        """PUSHB: jid → error text of every job the server refused ({} when none)."""
        return await self._run(Requests.push_bulk(jobs))

    async def fetch(self, *queues: str) -> dict[str, Any] | None:
        """FETCH the next job of these queues (default: ``default``), or None."""
        return await self._run(Requests.fetch(queues))

    async def ack(self, jid: str) -> None:
        """ACK a fetched job."""
        await self._run(Requests.ack(jid))

    async def fail(
        self, jid: str, errtype: str, message: str, backtrace: list[str] | None = None
    ) -> None:
        """FAIL a fetched job."""
        await self._run(Requests.fail(jid, errtype, message, backtrace))

    async def beat(self, current_state: str = "", rss_kb: int = 0) -> str:
        """BEAT (worker connections), telling the worker's state (quiet, terminate) and
        memory; '' or the state the server asks for."""
        return await self._run(Requests.beat(self.wid, current_state, rss_kb))

    async def info(self) -> dict[str, Any]:
        """INFO."""
        return await self._run(Requests.info())

    async def mutate(self, operation: Mapping[str, Any]) -> None:
        """MUTATE a set."""
        await self._run(Requests.mutate(operation))

    async def queue(self, action: str, *queues: str) -> None:
        """QUEUE PAUSE / RESUME / REMOVE of these queues (``*`` for all)."""
        await self._run(Requests.queue(action, queues))

    async def flush(self) -> None:
        """FLUSH: delete everything (tests and development only)."""
        await self._run(Requests.flush())

    async def track_set(
        self,
        jid: str,
        percent: int | None = None,
        desc: str | None = None,
        reserve_until: str | None = None,
    ) -> None:
        """TRACK SET: progress of a tracked job and/or a longer reservation."""
        await self._run(Requests.track_set(jid, percent, desc, reserve_until))

    async def track_get(self, jid: str) -> dict[str, Any]:
        """TRACK GET: a tracked job's state, percent and description."""
        return await self._run(Requests.track_get(jid))

    async def batch_new(self, spec: Mapping[str, Any]) -> str:
        """BATCH NEW; the new bid."""
        return await self._run(Requests.batch_new(spec))

    async def batch_open(self, bid: str) -> None:
        """BATCH OPEN."""
        await self._run(Requests.batch("OPEN", bid))

    async def batch_commit(self, bid: str) -> None:
        """BATCH COMMIT."""
        await self._run(Requests.batch("COMMIT", bid))

    async def batch_status(self, bid: str) -> dict[str, Any]:
        """BATCH STATUS."""
        return await self._run(Requests.batch_status(bid))


class Pool:
    """A few blocking connections shared by threads: ``with pool.client() as c: ...``.

    A connection that broke is dropped, not returned; at most ``size`` are open.
    """

    def __init__(self, url: str | None = None, *, size: int = 5, **options: Any) -> None:
        self.url, self.options = url, options
        self._idle: queue.LifoQueue[Client] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(max(size, 1))

    @contextlib.contextmanager
    def client(self, timeout: float | None = None) -> Iterator[Client]:
        """Borrow a connection (waiting up to ``timeout`` s for a free one)."""
        if not self._slots.acquire(timeout=timeout):
            raise FaktoryError("no free connection in the pool")
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = Client(self.url, **self.options)
            try:
                yield conn
            except ConnectionFailed:
                conn.close()
                raise
            self._idle.put(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close the idle connections."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class AsyncPool:
    """``AsyncClient`` connections shared by tasks: ``async with pool.client() as c:``."""

    def __init__(self, url: str | None = None, *, size: int = 5, **options: Any) -> None:
        self.url, self.options = url, options
        self._idle: list[AsyncClient] = []
        self._slots = anyio.Semaphore(max(size, 1))

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[AsyncClient]:
        """Borrow a connection (waiting for a free one)."""
        async with self._slots:
            conn = (
                self._idle.pop()
                if self._idle
                else await AsyncClient(self.url, **self.options).connect()
            )
            try:
                yield conn
            except ConnectionFailed:
                await conn.close()
                raise
            self._idle.append(conn)

    async def close(self) -> None:
        """Close the idle connections."""
        while self._idle:
            await self._idle.pop().close()


def _bid(reply: Reply) -> str:
    raise_for(reply)
    return (reply.data or b"").decode()


def _feed(reader: ReplyReader, data: bytes) -> list[Reply]:
    try:
        return reader.feed(data)
    except ValueError as exc:
        raise FaktoryError(str(exc)) from None


def _with_defaults(job: Mapping[str, Any]) -> dict[str, Any]:
    body = dict(job)
    body.setdefault("jid", uuid.uuid4().hex)
    body.setdefault("args", [])
    return body
