"""A bare asyncio line-echo server that answers like a Faktory server does at its cheapest.

Baseline for the throughput benchmark: it greets with ``+HI {"v":2}`` and answers
every line with ``+OK``, so the benchmark's own client (handshake included) can
drive it exactly as it drives minifaktory. The gap between this server's round
trips per second and minifaktory's commands per second is the cost of parsing,
job rules, SQLite and group commit, on top of the event loop and the sockets.

Run: ``python benchmarks/echo_server.py HOST PORT [uvloop|asyncio]`` (default uvloop).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, cast

GREETING = b'+HI {"v":2}\r\n'
OK = b"+OK\r\n"


class Echo(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(GREETING)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        lines = buf.count(b"\n")
        if not lines:
            self.buf = buf
            return
        self.buf = buf[buf.rfind(b"\n") + 1 :]
        assert self.transport is not None
        self.transport.write(OK * lines)


async def serve_until_signalled(
    factory: Callable[[], asyncio.BaseProtocol], host: str, port: int
) -> None:
    """Serve ``factory``'s protocol on ``host:port`` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def finish() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, finish)
    server = await loop.create_server(factory, host, port, reuse_address=True, backlog=1024)
    async with server:
        await stop


def run(main: Coroutine[Any, Any, None], loop: str) -> None:
    """Run ``main`` on uvloop, or on asyncio's own loop when asked (or without uvloop)."""
    try:
        import uvloop
    except ImportError:
        loop = "asyncio"
    if loop == "asyncio":
        asyncio.run(main)
    else:
        uvloop.run(main)


if __name__ == "__main__":
    run(
        serve_until_signalled(Echo, sys.argv[1], int(sys.argv[2])),
        sys.argv[3] if len(sys.argv) > 3 else "uvloop",
    )
