"""The Web UI's HTTP server: uvicorn, embedded in the server's task group.

``webui.port.WebPort`` binds the socket and starts this on the first connection.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from pathlib import Path

import uvicorn

from minifaktory.commands import Services
from minifaktory.config import Config
from minifaktory.store.reader import Reader
from minifaktory.webui.app import create_app
from minifaktory.webui.views import Web


class WebServer:
    """uvicorn on a socket that is already listening (``webui.port`` bound it)."""

    def __init__(
        self,
        services: Services,
        config: Config,
        db_path: Path | str,
        sock: socket.socket,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.socket = sock
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

    async def serve(self) -> None:
        """Serve until ``stop()`` (``WebPort`` keeps cancellations away, so that uvicorn
        closes its sockets and connections itself)."""
        try:
            await self.server.serve([self.socket])
        finally:
            self.web.close()

    def stop(self) -> None:
        """Ask uvicorn for its graceful shutdown."""
        self.server.should_exit = True
