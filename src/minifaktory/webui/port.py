"""The Web UI's port: bound at start, served by the web stack from its first connection.

A server nobody browses to never imports uvicorn, Starlette or Jinja (about
11 MB of a fresh process). Connections that arrive while the stack loads wait in
the listen backlog and are accepted once it serves.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from minifaktory.commands import Services
from minifaktory.config import Config
from minifaktory.shutdown import to_the_end

if TYPE_CHECKING:
    from minifaktory.webui.server import WebServer

log = logging.getLogger(__name__)

#: Connections waiting for the web stack to load; uvicorn raises it when it serves.
BACKLOG = 128


class WebPort:
    """A listening socket for the Web UI; ``serve()`` starts uvicorn on its first connection."""

    def __init__(
        self,
        services: Services,
        config: Config,
        db_path: Path | str,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(BACKLOG)
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.port = int(self.socket.getsockname()[1])
        self._services, self._config, self._db_path, self._tls = services, config, db_path, tls
        self._stopping = asyncio.Event()
        self.server: WebServer | None = None
        log.info("Web UI at %s://%s:%d/", "http" if tls is None else "https", host, self.port)

    async def serve(self) -> None:
        """Wait for a first connection (or ``stop()``), then serve until ``stop()``."""
        try:
            first = await self._first_connection()
        except BaseException:  # cancelled before anyone connected
            self.socket.close()
            raise
        if not first:
            self.socket.close()
            return
        try:
            from minifaktory.webui.server import WebServer  # the web stack loads here

            self.server = WebServer(
                self._services, self._config, self._db_path, self.socket, tls=self._tls
            )
        except Exception:
            # The jobs matter more than their pages: the job server keeps serving.
            log.exception("Web UI not started: its stack failed to load")
            self.socket.close()
            return
        except BaseException:
            self.socket.close()
            raise
        if self._stopping.is_set():
            self.server.stop()
        serving = asyncio.ensure_future(self.server.serve())
        try:
            await asyncio.shield(serving)
        except asyncio.CancelledError:  # uvicorn closes its connections itself
            self.server.stop()
            await to_the_end(serving)
            raise

    def stop(self) -> None:
        """Ask the Web UI to stop: at once when it never served, gracefully otherwise."""
        self._stopping.set()
        if self.server is not None:
            self.server.stop()

    async def _first_connection(self) -> bool:
        """True once a connection waits to be accepted, False when stopped first."""
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future[None] = loop.create_future()
        fd = self.socket.fileno()

        def readable() -> None:
            if not arrived.done():
                arrived.set_result(None)

        loop.add_reader(fd, readable)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((arrived, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(fd)
            stopping.cancel()
            arrived.cancel()
        return not self._stopping.is_set()
