"""A small asyncio Faktory Work Protocol client for load generation.

It speaks just enough of the protocol to drive a server hard: the handshake
(``+HI`` -> ``HELLO`` -> ``+OK``, no password), PUSH, PUSHB, FETCH, ACK, INFO
and END. Replies are parsed incrementally from an ``asyncio.Protocol``; each
command gets a future that the parser resolves in order, so several commands
may be in flight on one connection (pipelining) when the caller wants that.

Payloads are passed as ready-made bytes wherever possible: building JSON in the
load generator costs CPU that the server under test would otherwise get.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
from collections import deque
from typing import Any, cast

import msgspec

#: A reply: the text of a simple string (``+OK`` -> ``b"OK"``), a bulk
#: string's bytes, or ``None`` for a null bulk (``$-1``).
Reply = bytes | None


class FaktoryError(Exception):
    """The server answered ``-CODE message``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ConnectionClosed(Exception):
    """The connection closed while replies were still expected."""


class _JidOnly(msgspec.Struct):
    jid: str


_jid_decoder = msgspec.json.Decoder(_JidOnly)


def job_jid(job: bytes) -> str:
    """The ``jid`` of a job as FETCH returns it (decodes only that field)."""
    return _jid_decoder.decode(job).jid


class _ReplyParser(asyncio.Protocol):
    """Turns the RESP2 byte stream into replies for the waiting futures, in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiters: deque[asyncio.Future[Reply]] = deque()
        self.buf = bytearray()
        self.closed_exc: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only lookalikes.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        end = len(buf)
        waiters = self.waiters
        while pos < end:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            kind = buf[pos]
            reply: Reply | FaktoryError
            if kind == 0x24:  # '$' bulk string
                size = int(buf[pos + 1 : nl])
                if size < 0:
                    reply = None
                    pos = nl + 2
                else:
                    stop = nl + 2 + size
                    if stop + 2 > end:
                        break
                    reply = bytes(buf[nl + 2 : stop])
                    pos = stop + 2
            elif kind == 0x2B:  # '+' simple string
                reply = bytes(buf[pos + 1 : nl])
                pos = nl + 2
            elif kind == 0x2D:  # '-' error
                reply = FaktoryError(buf[pos + 1 : nl].decode("utf-8", "replace"))
                pos = nl + 2
            else:
                self._fail(ConnectionClosed(f"unexpected reply byte {bytes(buf[pos : nl + 2])!r}"))
                if self.transport is not None:
                    self.transport.close()
                return
            if not waiters:
                self._fail(ConnectionClosed(f"unsolicited reply {reply!r}"))
                if self.transport is not None:
                    self.transport.close()
                return
            fut = waiters.popleft()
            if not fut.done():
                if isinstance(reply, FaktoryError):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionClosed(f"connection closed ({exc})" if exc else "connection closed"))

    def _fail(self, exc: BaseException) -> None:
        self.closed_exc = exc
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)


class Client:
    """One connection to a Faktory server.

    ``await Client.connect(host, port)`` performs the handshake; pass ``wid`` to
    identify as a worker (consumer), omit it for a producer.
    """

    def __init__(self, parser: _ReplyParser, loop: asyncio.AbstractEventLoop) -> None:
        self._parser = parser
        self._loop = loop
        assert parser.transport is not None
        self._transport = parser.transport

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        wid: str | None = None,
        timeout: float = 5.0,
        greeting_only: bool = False,
    ) -> Client:
        """Connect and complete the handshake within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            parser = _ReplyParser()
            greeting: asyncio.Future[Reply] = loop.create_future()
            parser.waiters.append(greeting)
            await loop.create_connection(lambda: parser, host, port)
            client = cls(parser, loop)
            hi = await greeting
            if hi is None or not hi.startswith(b"HI "):
                client.abort()
                raise FaktoryError(f"unexpected greeting {hi!r}")
            if json.loads(hi[3:]).get("s") is not None:
                client.abort()
                raise FaktoryError("the server wants a password; this client has none")
            if greeting_only:
                return client
            hello: dict[str, Any] = {"v": 2, "hostname": socket.gethostname(), "pid": os.getpid()}
            if wid is not None:
                hello["wid"] = wid
                hello["labels"] = ["bench"]
            reply = await client.call(b"HELLO " + json.dumps(hello).encode())
            if reply != b"OK":
                client.abort()
                raise FaktoryError(f"unexpected HELLO reply {reply!r}")
        return client

    # -- raw commands --------------------------------------------------------------

    def send(self, line: bytes) -> asyncio.Future[Reply]:
        """Write one command line; the future resolves with its reply."""
        parser = self._parser
        fut: asyncio.Future[Reply] = self._loop.create_future()
        if parser.closed_exc is not None:
            fut.set_exception(parser.closed_exc)
            return fut
        parser.waiters.append(fut)
        self._transport.write(line + b"\r\n")
        return fut

    async def call(self, line: bytes) -> Reply:
        """Send one command and wait for its reply."""
        return await self.send(line)

    # -- the verbs -----------------------------------------------------------------

    async def push(self, job: bytes) -> None:
        """PUSH a job given as its JSON bytes."""
        reply = await self.send(b"PUSH " + job)
        if reply != b"OK":
            raise FaktoryError(f"unexpected PUSH reply {reply!r}")

    async def pushb(self, jobs_json_array: bytes) -> dict[str, str]:
        """PUSHB a JSON array of jobs; returns the map of rejected jid -> error."""
        reply = await self.send(b"PUSHB " + jobs_json_array)
        if reply is None:
            raise FaktoryError("unexpected null PUSHB reply")
        if reply == b"{}":
            return {}
        errors: dict[str, str] = json.loads(reply)
        return errors

    async def fetch(self, *queues: str) -> bytes | None:
        """FETCH from the queues in priority order; the job's JSON or ``None``."""
        return await self.send(b"FETCH " + " ".join(queues).encode())

    async def ack(self, jid: str) -> None:
        reply = await self.send(b'ACK {"jid":"' + jid.encode() + b'"}')
        if reply != b"OK":
            raise FaktoryError(f"unexpected ACK reply {reply!r}")

    async def info_raw(self) -> bytes:
        reply = await self.send(b"INFO")
        if reply is None:
            raise FaktoryError("unexpected null INFO reply")
        return reply

    async def info(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(await self.info_raw())
        return data

    async def close(self) -> None:
        """Send END and close the socket."""
        if self._parser.closed_exc is None and not self._transport.is_closing():
            self._transport.write(b"END\r\n")
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()


def new_wid() -> str:
    return secrets.token_hex(8)


def job_bytes(jid: str, jobtype: str = "bench", queue: str = "default", arg: int = 0) -> bytes:
    """A minimal valid job as JSON bytes."""
    return b'{"jid":"%s","jobtype":"%s","queue":"%s","args":[%d]}' % (
        jid.encode(),
        jobtype.encode(),
        queue.encode(),
        arg,
    )
