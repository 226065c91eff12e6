"""The Web UI's HTTP server: uvicorn, embedded in the server's task group."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from pathlib import Path

import anyio
import uvicorn

from minifaktory.commands import Services
from minifaktory.config import Config
from minifaktory.store.reader import Reader
from minifaktory.webui.app import create_app
from minifaktory.webui.views import Web

log = logging.getLogger(__name__)


class WebServer:
    """uvicorn on a socket bound up front (so the port is known before it serves)."""

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
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.port = int(self.socket.getsockname()[1])
        self.web = Web(services, Reader(db_path), config)
        app = create_app(self.web)
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, log_level="warning", lifespan="off", access_log=False,
                timeout_graceful_shutdown=2,
                # The server's own context (TLS 1.2+), read once; uvicorn reads no files.
                ssl_context_factory=None if tls is None else lambda _config, _default: tls,
            )
        )  # fmt: skip
        # The command's own SIGINT/SIGTERM handlers stay in charge.
        self.server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        log.info("Web UI at %s://%s:%d/", "http" if tls is None else "https", host, self.port)

    async def serve(self) -> None:
        """Serve until ``stop()``; shielded from cancellation so that uvicorn can close
        its sockets and connections itself."""
        with anyio.CancelScope(shield=True):
            try:
                await self.server.serve([self.socket])
            finally:
                self.web.close()

    def stop(self) -> None:
        """Ask uvicorn for its graceful shutdown."""
        self.server.should_exit = True
